#!/usr/bin/env bash
# Configure (once) and build into build/: -O3 with debug symbols, and
# link-time optimisation (calls between the modules, e.g. exec -> store ->
# size class, are inlined: 490 -> 412 instructions per GET). -O3 rather than
# meson's debugoptimized -O2, as DPDK builds itself: its inlining and
# unrolling took a GET from 419 to 393 instructions (724 -> 584 through the
# general path) and sluiced from 1.00 to 1.03-1.10 in paired A/B rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
OPTS=(-Doptimization=3 -Ddebug=true -Dwerror=true -Db_lto=true)
if [[ ! -f build/build.ninja ]]; then
    meson setup build "${OPTS[@]}" >/dev/null
elif ! meson introspect build --buildoptions | grep -q '"name": "optimization", "value": "3"'; then
    meson configure build "${OPTS[@]}" >/dev/null # a build/ set up before -O3
fi
ninja -C build
