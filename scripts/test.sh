#!/usr/bin/env bash
# Install, build and run every test of Sluice. This is what CI runs.
#
#   unit    Criterion suites per module (build/)
#   asan    the same under AddressSanitizer + UndefinedBehaviorSanitizer, in
#           a -Dfaults=true build (allocations fail on demand: the fault
#           suites run there and skip elsewhere)
#   fuzz    libFuzzer over parser and executor, FUZZ_SECONDS (default 60), and
#           over cluster messages for half that
#   instructions  callgrind instructions per GET/SET through the request path
#           must stay within 10% of perf/instructions.baseline
#   e2e-asan  sluiced built with ASan+UBSan+LSan and -Dfaults=true under the
#           protocol-level end-to-end tests, the fault-injection suite
#           (operations failing at random, the slot table republished every
#           millisecond), the overload suite (stop pulses, admission bound),
#           and it and sluice-bench's reflector under memif peers killed
#           mid-load; any sanitizer report in a log fails the step
#   e2e     sluiced on net_tap in network namespaces, driven by pytest:
#           raw UDP, pymemcache, memccapable, memccp/memccat, php-memcache,
#           memcaslap -U, a differential run against stock memcached, and
#           memcached's own t/ suite (fetched from Debian's source package)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
passed=0 failed=0 failed_names=()

step() {
    local name=$1; shift
    echo
    echo "=== $name: $*"
    if "$@"; then
        passed=$((passed + 1)); echo "=== $name: ok"
    else
        failed=$((failed + 1)); failed_names+=("$name"); echo "=== $name: FAILED"
    fi
}

[[ $EUID -eq 0 ]] || { echo "test: needs root (network namespaces, taps, packages)"; exit 1; }
scripts/setup.sh --test || exit 1

build_main() {
    scripts/build.sh
}
build_asan() {
    [[ -f build-asan/build.ninja ]] || meson setup build-asan -Dbuildtype=debug -Db_sanitize=address,undefined \
        -Db_lundef=false -Ddataplane=disabled -Dwerror=true -Dfaults=true || return 1
    ninja -C build-asan
}
build_asan_dp() {
    [[ -f build-asan-dp/build.ninja ]] || meson setup build-asan-dp -Dbuildtype=debug \
        -Db_sanitize=address,undefined -Db_lundef=false -Dfaults=true || return 1
    ninja -C build-asan-dp sluiced perf/sluice-bench sluice-control sluicectl sluice-example
}
e2e_asan() {
    local logs; logs=$(mktemp -d)
    SLUICE_MEMCACHED_T=$(scripts/fetch-memcached-t.sh) || return 1
    export SLUICE_MEMCACHED_T
    (cd tests/e2e && SLUICE_BUILD="$ROOT/build-asan-dp" SLUICE_LOGDIR="$logs" \
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider test_udp.py test_tcp.py \
        test_differential.py test_clients.py test_ports.py test_peer_churn.py test_options.py \
        test_overload.py test_faults.py test_udpguard.py test_cluster_control.py test_cluster.py \
        test_replication.py test_replication_faults.py) || return 1
    if grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error" "$logs"/*; then
        grep -h -A20 -E "ERROR: (Address|Leak)Sanitizer|runtime error" "$logs"/* | head -80
        return 1
    fi
    rm -rf "$logs"
}
build_fuzz() {
    [[ -f build-fuzz/build.ninja ]] || CC=clang meson setup build-fuzz -Dfuzz=true -Ddataplane=disabled || return 1
    ninja -C build-fuzz tests/fuzz_parse tests/fuzz_cmsg tests/fuzz_cport tests/fuzz_repl
}
unit() { meson test -C build --suite unit --print-errorlogs; }
unit_asan() {
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C build-asan --suite unit --print-errorlogs
}
fuzz() {
    local work; work=$(mktemp -d)
    (cd "$work" && "$ROOT/build-fuzz/tests/fuzz_parse" -dict="$ROOT/tests/fuzz/memcached.dict" \
        -max_total_time="$FUZZ_SECONDS" -max_len=4096 -print_final_stats=1 \
        "$work" "$ROOT/tests/fuzz/corpus" 2>&1 | grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Test unit written")
    local rc=${PIPESTATUS[0]}
    # cluster messages: frames, and (signed by the harness) slot-table pushes
    mkdir -p "$work/cmsg"
    (cd "$work" && "$ROOT/build-fuzz/tests/fuzz_cmsg" -max_total_time=$((FUZZ_SECONDS / 2)) \
        -max_len=70000 -print_final_stats=1 "$work/cmsg" "$ROOT/tests/fuzz/cmsg-corpus" 2>&1 |
        grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Test unit written")
    local rc2=${PIPESTATUS[0]}
    # cluster-port datagrams: forwarded requests and replies, replay windows
    mkdir -p "$work/cport"
    (cd "$work" && "$ROOT/build-fuzz/tests/fuzz_cport" -max_total_time=$((FUZZ_SECONDS / 2)) \
        -max_len=1500 -print_final_stats=1 "$work/cport" 2>&1 |
        grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Test unit written")
    local rc3=${PIPESTATUS[0]}
    # replication batches, record by record
    mkdir -p "$work/repl"
    (cd "$work" && "$ROOT/build-fuzz/tests/fuzz_repl" -max_total_time=$((FUZZ_SECONDS / 4)) \
        -max_len=4096 -print_final_stats=1 "$work/repl" 2>&1 |
        grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Test unit written")
    local rc4=${PIPESTATUS[0]}
    rm -rf "$work"
    [[ $rc -eq 0 && $rc2 -eq 0 && $rc3 -eq 0 && $rc4 -eq 0 ]]
}
e2e() {
    SLUICE_MEMCACHED_T=$(scripts/fetch-memcached-t.sh) || return 1
    export SLUICE_MEMCACHED_T
    (cd tests/e2e && /usr/bin/python3 -m pytest -q -p no:cacheprovider)
}

step build build_main
step build-asan build_asan
step build-fuzz build_fuzz
step build-asan-dp build_asan_dp
step unit unit
step unit-asan unit_asan
step fuzz fuzz
step instructions perf/instructions.sh
step e2e-asan e2e_asan
step e2e e2e

echo
[[ $failed -eq 0 ]] || echo "failed steps: ${failed_names[*]}"
echo "steps: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
