#!/usr/bin/env bash
# Instructions per GET and per SET through the request path (parse, owner
# check, store, reply; no NIC), counted by callgrind: repeatable on a noisy
# machine. get1 is a datagram of exactly "get <key>\r\n" (sluiced's fast path),
# get the same request through the general path. Fails when a count is more than 10% above perf/instructions.baseline.
#   perf/instructions.sh            check against the baseline
#   perf/instructions.sh --record   write the current counts as the baseline
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/perf/reqpath
[[ -x $BIN ]] || { echo "build first (ninja -C build)"; exit 1; }
N1=20000 N2=120000
count() { # op n -> total instructions
    local f; f=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$f" "$BIN" "$1" "$2" >/dev/null 2>&1
    local ir; ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    rm -f "$f"
    echo "$ir"
}
declare -A per
for op in get1 get set; do
    a=$(count $op $N1); b=$(count $op $N2)
    per[$op]=$(( (b - a) / (N2 - N1) ))
    echo "instructions per $op: ${per[$op]}"
done
base=perf/instructions.baseline
if [[ "${1:-}" == "--record" ]]; then
    printf 'get1 %s\nget %s\nset %s\n' "${per[get1]}" "${per[get]}" "${per[set]}" > $base
    echo "recorded $base"
    exit 0
fi
rc=0
while read -r op n; do
    limit=$(( n * 110 / 100 ))
    if (( per[$op] > limit )); then
        echo "REGRESSION: $op takes ${per[$op]} instructions, baseline $n (limit $limit)"; rc=1
    else
        echo "ok: $op ${per[$op]} <= $limit (baseline $n)"
    fi
done < $base
exit $rc
