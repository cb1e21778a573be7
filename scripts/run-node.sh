#!/usr/bin/env bash
# Install, build and start one Sluice node for a person to try.
#
#   root netns: sluiced on a net_tap (its NIC) + TCP listener 127.0.0.1:11211
#   netns sluice-client: the other end of that tap, 198.18.0.2/24; UDP and
#                        TCP clients reach the node at 198.18.0.1:11211
#   netns sluice-exc:   the exception-path tap carrying 198.18.0.1 (TCP)
#
# Options are passed to sluiced (after --), e.g. --workers 1 --memory 128.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "run-node: needs root (namespaces, taps)"; exit 1; }
scripts/setup.sh
scripts/build.sh >/dev/null

CNS=sluice-client XNS=sluice-exc DP=sluice0 EX=sluicex0
cleanup() {
    [[ -n "${PID:-}" ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    ip netns del $CNS 2>/dev/null || true
    ip netns del $XNS 2>/dev/null || true
    ip link del $DP 2>/dev/null || true
}
trap cleanup EXIT INT TERM
cleanup
ip netns add $CNS
ip netns add $XNS

WORKERS=1
[[ "$(nproc)" -ge 2 ]] && LCORES="0@0,1@1" || LCORES="0@0,1@0"
LOG=$(mktemp /tmp/sluiced-demo.XXXX.log)
build/sluiced --no-pci --no-huge -m 512 --file-prefix sluice-demo --lcores "$LCORES" \
    --log-level '*:error' \
    --vdev "net_tap0,iface=$DP" --vdev "net_tap1,iface=$EX" -- \
    --ip 198.18.0.1/24 --tcp 127.0.0.1:11211 --workers $WORKERS --memory 64 \
    --exception-port 1 --exception-netns $XNS "$@" >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "sluiced: ready" "$LOG" && break; sleep 0.1; done
grep -q "sluiced: ready" "$LOG" || { cat "$LOG"; exit 1; }
ip link set $DP netns $CNS
ip -n $CNS link set $DP address 02:00:00:00:00:02
ip -n $CNS addr add 198.18.0.2/24 dev $DP
ip -n $CNS link set $DP up
ip -n $CNS link set lo up
grep sluiced: "$LOG"
cat <<MSG

Sluice is running (pid $PID, log $LOG). Try:

  printf 'set hello 0 0 5\r\nworld\r\nget hello\r\n' | nc -q1 127.0.0.1 11211
  ip netns exec $CNS sh -c "printf 'get hello\r\n' | nc -q1 198.18.0.1 11211"
  ip netns exec $CNS python3 -c 'import socket; s=socket.socket(2,2); s.settimeout(2); s.sendto(b"\0\1\0\0\0\1\0\0get hello\r\n", ("198.18.0.1",11211)); print(s.recv(2000)[8:])'
  printf 'stats\r\n' | nc -q1 127.0.0.1 11211

Ctrl-C stops the node and removes the namespaces.
MSG
wait $PID
