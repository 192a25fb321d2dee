#!/usr/bin/env bash
# fresh-test.sh: `make test` and a `make run` smoke test as a new user on a minimal Debian 12
# would run them, under chroot in a throwaway copy of a cached debootstrap root, so an install
# step that the project's own files lack fails here rather than on someone's new machine. The
# cached root stays as debootstrap left it: nothing one run installs is there for the next.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "fresh-test: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
cd "$(dirname "$0")/.."
repo=$(pwd -P)
cache=$(realpath -m "${FRESH_CACHE:-$repo/.cache}")
pristine=$cache/fresh-root
packages=(python3 python3-venv python3-pip make git ca-certificates curl)
host_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
# What a login shell on the new machine has; nothing of this machine's environment but CI.
chroot_env=(env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    ${CI:+CI=$CI})

# Not in an `||` list: that would turn off errexit inside the phase.
phase() {
    local name=$1 start=$SECONDS
    shift
    echo "== fresh ${name}"
    "$@"
    echo "== fresh ${name}: done in $((SECONDS - start)) s"
}

mounts_under() { findmnt -rn -o TARGET | grep "^$1/" || true; }

# Every file system mounted under $1 (ours, and any a test left), innermost first.
unmount_all() {
    local target
    mounts_under "$1" | sort -r | while read -r target; do
        umount "$target" || umount --lazy "$target"
    done
}

# The PIDs of processes whose root is $1.
in_copy() {
    local proc
    for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/root" 2>/dev/null)" = "$1" ] && echo "${proc#/proc/}"
    done
    return 0
}

# Processes whose root is the copy (daemons a test or `make run` left behind), by PID.
stop_leftovers() {
    local pids pid
    pids=$(in_copy "$1")
    [ -n "$pids" ] || return 0
    for pid in $pids; do
        echo "fresh-test: stopping pid $pid left running in the root: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 5
    for pid in $(in_copy "$1"); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# A copy is deleted only once nothing is mounted under it: never through a bind mount of /dev.
remove_copy() {
    local dir=$1
    [ -e "$dir/root" ] && stop_leftovers "$dir/root"
    unmount_all "$dir"
    if [ -n "$(mounts_under "$dir")" ]; then
        echo "fresh-test: $dir still has mounts, left in place:" >&2
        mounts_under "$dir" >&2
        return 1
    fi
    rm -rf "$dir"
}

mkdir -p "$cache"
exec 9>"$cache/fresh-test.lock"
flock -n 9 || { echo "fresh-test: another fresh-test runs on $cache" >&2; exit 1; }
# Copies left by a run that was killed before its trap could run.
for stale in "$cache"/fresh-run.*; do
    [ -d "$stale" ] && remove_copy "$stale"
done

phase "root (debootstrap, cached in $pristine)" tools/debian-root.sh "$pristine" "${packages[@]}"

work=$(mktemp -d "$cache/fresh-run.XXXXXX")
root=$work/root
run_pid=
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    local start=$SECONDS
    remove_copy "$work" || status=1
    echo "== fresh removal of the copy: $((SECONDS - start)) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_root() { chroot "$root" "${chroot_env[@]}" bash -c "cd /root/archiver && $1"; }

# The CA certificates of this machine's bundle that Debian's lacks (an egress proxy's), as local
# CAs of the root, so any update-ca-certificates inside it keeps them.
trust_host_cas() {
    local local_cas=$root/usr/local/share/ca-certificates
    awk -v dir="$local_cas" '
        FNR == 1 { file++ }
        /-----BEGIN CERTIFICATE-----/ { cert = "" }
        { cert = cert $0 "\n" }
        /-----END CERTIFICATE-----/ {
            if (file == 1) known[cert] = 1
            else if (!(cert in known)) { out = dir "/host-" ++n ".crt"; printf "%s", cert > out; close(out) }
        }' "$root/etc/ssl/certs/ca-certificates.crt" "$host_bundle"
    chroot "$root" "${chroot_env[@]}" update-ca-certificates >/dev/null 2>&1
}

# What the root needs of this machine to reach the package registries: its resolver and its CAs.
# /etc/hosts is what a Debian install writes and debootstrap does not.
setup_root() {
    cp -a "$pristine" "$root"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    local fs
    for fs in proc sys dev dev/pts dev/shm; do
        mount --bind "/$fs" "$root/$fs"
    done
    trust_host_cas
    git clone --quiet --no-hardlinks "$repo" "$root/root/archiver"
}

# Each line stamped with the seconds since the start: apt, the venvs and pytest in one log.
make_test() {
    local start=$SECONDS
    in_root 'make test' 2>&1 | while IFS= read -r line; do printf '[%4d s] %s\n' $((SECONDS - start)) "$line"; done
}

free_port() {
    local port
    for port in 8000 $(shuf -i 10000-32000 -n 50); do
        ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$port"; return; }
    done
    echo "fresh-test: no free port" >&2
    return 1
}

# `make run` answers /_health and takes a record, then stops on SIGTERM with exit 0.
smoke_run() {
    local port url pid_file=$root/root/archiver/data/sink.pid deadline=$((SECONDS + 120))
    port=$(free_port)
    url=http://127.0.0.1:$port
    in_root "ARCHIVER_SERVER_PORT=$port exec make run" >"$work/run.log" 2>&1 &
    run_pid=$!
    until chroot "$root" "${chroot_env[@]}" curl -fsS --max-time 10 "$url/_health" >/dev/null 2>&1; do
        kill -0 "$run_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] || {
            echo "fresh-test: make run did not answer $url/_health:" >&2
            cat "$work/run.log" >&2
            return 1
        }
        sleep 1
    done
    local code
    code=$(chroot "$root" "${chroot_env[@]}" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST -d abc=def "$url/fresh-test")
    [ "$code" = 200 ] || { echo "fresh-test: POST answered $code" >&2; cat "$work/run.log" >&2; return 1; }
    local archiver_pid status=0 watchdog
    archiver_pid=$(cat "$pid_file")
    kill -TERM "$archiver_pid"
    (sleep 120 && kill -KILL "$archiver_pid" 2>/dev/null) &
    watchdog=$!
    wait "$run_pid" || status=$?
    kill "$watchdog" 2>/dev/null || true
    run_pid=
    [ "$status" = 0 ] || { echo "fresh-test: make run exited $status" >&2; cat "$work/run.log" >&2; return 1; }
    echo "make run answered $url/_health, took a record with 200 and stopped with exit 0"
}

phase "copy of the root and the checkout" setup_root
phase "make test" make_test
phase "make run smoke test" smoke_run
