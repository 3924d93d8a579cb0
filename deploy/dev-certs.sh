#!/bin/sh
# Create a development deployment directory with `blindsum aggregator init` and
# `blindsum aggregator enroll`:
#
#   OUT/aggregator/         aggregator directory: dev CA, server/admin certificates,
#                           custodian keys, aggregator.toml, SQLite store
#   OUT/bundles/<party>/    one credential bundle per party (and per reader)
#
# Every key is generated now, on this machine, with mode 0600. Nothing here is
# meant to be committed. The dev CA key stays in OUT/aggregator/ca/, so whoever
# runs the aggregator can issue certificates; bring your own CA for production
# (docs/DEPLOYING.md).
#
# Running it again skips whatever already exists, so it is safe as an init step.
#
# Usage: deploy/dev-certs.sh [options] OUT PARTY...
#   -a HOST:PORT  aggregator address written into the bundles (default: the listen address)
#   -l HOST:PORT  address the aggregator listens on (default 127.0.0.1:7443)
#   -r NAME       also enroll a report reader called NAME
#   -u UID:GID    when run as root, hand OUT/aggregator and the bundles to UID:GID
# The command is taken from $BLINDSUM (default: blindsum on PATH). For example, from
# the repository root, into a new directory outside it (OUT holds private keys):
#   OUT=$(mktemp -d); BLINDSUM=.venv/bin/blindsum deploy/dev-certs.sh "$OUT" team-a team-b team-c
set -eu

usage() {
    echo "usage: $0 [-a HOST:PORT] [-l HOST:PORT] [-r READER] [-u UID:GID] OUT PARTY..." >&2
    exit 2
}

BLINDSUM=${BLINDSUM:-blindsum}
address=""
listen="127.0.0.1:7443"
reader=""
owner=""
while getopts "a:l:r:u:h" opt; do
    case "$opt" in
        a) address=$OPTARG ;;
        l) listen=$OPTARG ;;
        r) reader=$OPTARG ;;
        u) owner=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -ge 1 ] || usage
out=$1
shift
[ -n "$address" ] || address=$listen

agg="$out/aggregator"
if [ -f "$agg/aggregator.toml" ]; then
    echo "$agg already initialised; keeping it"
else
    $BLINDSUM aggregator init "$agg" --listen "$listen"
fi

enroll() {
    # $1 = name, $2 = role
    bundle="$out/bundles/$1"
    if [ -f "$bundle/party.toml" ]; then
        echo "bundle $bundle exists; keeping it"
    else
        $BLINDSUM aggregator enroll "$agg" "$1" -o "$bundle" --role "$2" --address "$address"
    fi
}

for party in "$@"; do
    enroll "$party" party
done
if [ -n "$reader" ]; then
    enroll "$reader" reader
fi

if [ -n "$owner" ] && [ "$(id -u)" = "0" ]; then
    chown -R "$owner" "$agg"
    for name in "$@" $reader; do
        chown -R "$owner" "$out/bundles/$name"
    done
fi
