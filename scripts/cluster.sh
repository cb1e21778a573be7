#!/usr/bin/env bash
# A Sluice cluster on one machine: K nodes whose NICs (net_tap) sit on one
# bridge in a namespace with the clients, and sluice-control beside them.
#
#   scripts/cluster.sh up [--nodes K] [--workers W] [--memory MiB] [--dir DIR]
#                         [--foreground] [--node-arg ARG]...
#   scripts/cluster.sh add [--dir DIR]          one more node, registered
#   scripts/cluster.sh remove NAME [--dir DIR]  stop a node (it leaves)
#   scripts/cluster.sh exec [--dir DIR] CMD...  run CMD in the client netns
#   scripts/cluster.sh down [--dir DIR]         remove everything it made
#
# DIR (default /tmp/sluice-cluster) holds cluster.json (what was made:
# namespaces, controllers, nodes with their pids, addresses and taps), the
# cluster key and every process's log. The layout is drawn in
# scripts/cluster.py.
set -euo pipefail
exec python3 "$(dirname "$0")/cluster.py" "$@"
