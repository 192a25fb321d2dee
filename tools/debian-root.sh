#!/usr/bin/env bash
# debian-root.sh DIR [PACKAGE...]: a minimal Debian bookworm root (debootstrap minbase) in DIR
# with PACKAGEs added, built once. A finished root carries a stamp naming its package list; a
# root whose list differs, or an unfinished one, is rebuilt. `make fresh-test` runs the project
# in such a root under chroot, and `make docker-test` imports one as its base image, so neither
# depends on anything this machine installed by hand or on an image registry.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [PACKAGE...]" >&2; exit 2; }
dir=$(realpath -m "$1")
shift
packages=$(printf '%s\n' "$@" | sed '/^$/d' | sort -u | paste -sd, -)
stamp="$dir/.debian-root"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages" ]; then
    exit 0
fi
# A chroot left mounted by an interrupted run must never be deleted through its bind mounts.
if findmnt -rn -o TARGET | grep -q "^$dir/"; then
    echo "$dir has file systems mounted under it; unmount them first" >&2
    exit 1
fi
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
echo "building a Debian bookworm root in $dir (packages: ${packages:-none})"
debootstrap --variant=minbase ${packages:+--include="$packages"} bookworm "$dir" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
echo "$packages" >"$stamp"
