#!/bin/sh
# tahoe-node ROLE: the Tahoe node of this container, created in /var/lib/tahoe/node on first
# start, then run in the foreground as PID 1 (so `docker stop` reaches it).
#   introducer  the grid's introducer; its node dir is mounted read-only into the others,
#               which read its furl from there
#   storage     a storage server
#   gateway     a client node without storage: the web API (port 3456) the archiver and
#               readers use; it uploads with shares.needed/happy/total from the environment
#   health ROLE the compose healthcheck
# The node's address on the compose network is its host name (compose `hostname:`).
set -eu
node=/var/lib/tahoe/node
furl=/var/lib/tahoe/introducer/node/private/introducer.furl
host=$(hostname)
intro_port=3458
tub_port=3457
web_port=3456

health() {
    python3 - "$1" <<'PY'
import json, os, socket, sys, urllib.request
role = sys.argv[1]
if role == "introducer":
    socket.create_connection(("127.0.0.1", 3458), timeout=5).close()
    open("/var/lib/tahoe/node/private/introducer.furl").close()
    sys.exit(0)
welcome = json.load(urllib.request.urlopen("http://127.0.0.1:3456/?t=json", timeout=5))
introduced = any(str(s).lower().startswith("connected") for s in welcome["introducers"]["statuses"])
servers = sum(1 for s in welcome["servers"] if str(s.get("connection_status", "")).lower().startswith("connected"))
# A gateway is healthy once it can read (shares.needed servers); a storage node once introduced.
wanted = int(os.environ.get("TAHOE_SHARES_NEEDED", "1")) if role == "gateway" else 0
sys.exit(0 if introduced and servers >= wanted else 1)
PY
}

join_grid() {
    waited=0
    until [ -s "$furl" ]; do
        [ $waited -lt 120 ] || { echo "no introducer furl in $furl after 120 s" >&2; exit 1; }
        sleep 1; waited=$((waited + 1))
    done
    printf 'introducers:\n  default:\n    furl: %s\n' "$(cat "$furl")" >"$node/private/introducers.yaml"
}

role=${1:-storage}
case $role in
introducer)
    [ -f "$node/tahoe.cfg" ] || tahoe create-introducer --port="tcp:$intro_port" \
        --location="tcp:$host:$intro_port" "$node"
    ;;
storage)
    if [ ! -f "$node/tahoe.cfg" ]; then
        tahoe create-node --port="tcp:$tub_port" --location="tcp:$host:$tub_port" \
            --webport="tcp:$web_port:interface=127.0.0.1" --nickname="$host" "$node"
        sed -i "s/^reserved_space = .*/reserved_space = ${TAHOE_RESERVED_SPACE:-1G}/" "$node/tahoe.cfg"
    fi
    join_grid
    ;;
gateway)
    [ -f "$node/tahoe.cfg" ] || tahoe create-client --webport="tcp:$web_port:interface=0.0.0.0" \
        --nickname="$host" --shares-needed="${TAHOE_SHARES_NEEDED:?}" \
        --shares-happy="${TAHOE_SHARES_HAPPY:?}" --shares-total="${TAHOE_SHARES_TOTAL:?}" "$node"
    join_grid
    ;;
health)
    health "${2:?health ROLE}"
    exit
    ;;
*)
    echo "usage: tahoe-node introducer|storage|gateway|health ROLE" >&2
    exit 2
    ;;
esac
exec tahoe run --allow-stdin-close "$node"
