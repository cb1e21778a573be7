#!/usr/bin/env bash
# Install, build and start a local 3-node Sluice cluster with the embedded
# controller, in the foreground: it prints how to reach it, and Ctrl-C
# removes every process, namespace and interface it made.
#
# Options go to `scripts/cluster.sh up` (--nodes K, --workers W, --memory
# MiB, --etcd --controllers 2, --dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "run-cluster: needs root (namespaces, taps)"; exit 1; }
if [[ " $* " == *" --etcd "* ]]; then scripts/setup.sh --test; else scripts/setup.sh; fi
scripts/build.sh >/dev/null
exec scripts/cluster.sh up --foreground "$@"
