"""Build the stack's images from wheels made on this host, and push them to a registry.

Nothing inside a build reaches a package index or an image registry: pip runs here (where the
package index is trusted) and the images install its wheels with --no-index. The base image is
any Debian-based one with python3 -m venv: python:3.11-slim-bookworm by default, or
archiver-base:bookworm made by ``base`` from a debootstrap root where no registry is reachable.

    python docker/images.py base                    # archiver-base:bookworm
    python docker/images.py build [--base IMAGE] [--tag TAG]
    python docker/images.py push REGISTRY [--tag TAG]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
BASE_IMAGE = "archiver-base:bookworm"
BASE_PACKAGES = ["python3", "python3-venv"]
# What an image needs none of: the root's stamp, apt's downloads and lists, docs, man pages, locales.
IMPORT_EXCLUDES = [".debian-root", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*",
                   "usr/share/man/*", "usr/share/locale/*"]
TAHOE_PIN = "tahoe-lafs==1.20.0"
# image name -> (Dockerfile directory, files of that directory the build needs, wheel set)
IMAGES = {
    "archiver": (ROOT / "docker", ["archiver.toml"], "archiver"),
    "archiver-tahoe": (ROOT / "docker" / "tahoe", ["node.sh"], "tahoe"),
}


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run a command, echoed; a failure ends the program with its exit status."""
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, env=env)


def docker_env() -> dict[str, str]:
    # The legacy builder: docker.io 20.10's daemon with any client, no buildx plugin needed.
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def build_base(image: str = BASE_IMAGE) -> None:
    """A Debian bookworm root from debootstrap (cached by tools/debian-root.sh), imported as
    ``image`` unless that root is already: each import makes a new image, and a new base would
    rebuild every image on it from scratch."""
    root = CACHE / "docker-base"
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    run(*sudo, ROOT / "tools" / "debian-root.sh", root, *BASE_PACKAGES)
    stamp = root / ".debian-root"
    made = f"{stamp.stat().st_mtime_ns}:{stamp.read_text().strip()}"
    label = "archiver.debian-root"
    current = subprocess.run(["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{label}"}}}}', image],
                             capture_output=True, text=True).stdout.strip()
    if current == made:
        print(f"{image} holds {root} as built at {made.split(':')[0]}", flush=True)
        return
    excluded = [f"--exclude=./{path}" for path in IMPORT_EXCLUDES]
    tar = subprocess.Popen([*sudo, "tar", "-C", str(root), *excluded, "-c", "."], stdout=subprocess.PIPE)
    print(f"+ tar -C {root} -c . | docker import - {image}", flush=True)
    subprocess.run(["docker", "import", "--change", f"LABEL {label}={made}", "-", image], stdin=tar.stdout, check=True,
                   stdout=subprocess.DEVNULL)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0:
        sys.exit(f"tar of {root} failed")


def build_wheels(python: str = sys.executable) -> dict[str, Path]:
    """The wheels of each image's Python packages, under .cache/wheels/<set>. archiver's own is
    rebuilt every time (its source changes); tahoe-lafs's set is kept once complete."""
    wheels = {name: CACHE / "wheels" / name for name in ("archiver", "tahoe")}
    shutil.rmtree(wheels["archiver"], ignore_errors=True)
    pip = [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir"]
    run(*pip, wheels["archiver"], f"{ROOT}[zstd]")
    done = wheels["tahoe"] / ".complete"
    if not done.exists():
        shutil.rmtree(wheels["tahoe"], ignore_errors=True)
        run(*pip, wheels["tahoe"], TAHOE_PIN)  # netifaces has no wheel: built here, with the host's compiler
        done.touch()
    return wheels


def build_images(base: str | None, tag: str, wheels: dict[str, Path]) -> None:
    """Each image from a context of its Dockerfile's files and its wheels only."""
    for name, (directory, files, wheel_set) in IMAGES.items():
        context = CACHE / "docker-context" / name
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        for file in files:
            shutil.copy2(directory / file, context / file)
        shutil.copytree(wheels[wheel_set], context / "wheels", ignore=shutil.ignore_patterns(".complete"))
        base_arg = ["--build-arg", f"BASE={base}"] if base else []
        run("docker", "build", "-f", directory / "Dockerfile", *base_arg, "-t", f"{name}:{tag}", context,
            env=docker_env())


def push(registry: str, tag: str) -> list[str]:
    """Tag each image as ``registry/name:tag`` and push it; returns the names pushed."""
    pushed = []
    for name in IMAGES:
        remote = f"{registry.rstrip('/')}/{name}:{tag}"
        run("docker", "tag", f"{name}:{tag}", remote)
        run("docker", "push", "--quiet", remote)
        pushed.append(remote)
    return pushed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("base", help=f"build {BASE_IMAGE} from a debootstrap root")
    build = commands.add_parser("build", help="build the wheels and the images")
    build.add_argument("--base", help="base image (default: the Dockerfiles' python:3.11-slim-bookworm)")
    build.add_argument("--tag", default="latest")
    push_cmd = commands.add_parser("push", help="tag and push the images to REGISTRY (host:port)")
    push_cmd.add_argument("registry")
    push_cmd.add_argument("--tag", default="latest")
    args = parser.parse_args()
    if args.command == "base":
        build_base()
    elif args.command == "build":
        build_images(args.base, args.tag, build_wheels())
    else:
        push(args.registry, args.tag)


if __name__ == "__main__":
    main()
