#!/usr/bin/env bash
# Configure (once) and build into build/: optimised, with debug symbols, and
# link-time optimisation (calls between the modules, e.g. exec -> store ->
# size class, are inlined: 490 -> 412 instructions per GET).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f build/build.ninja ]]; then
    meson setup build --buildtype=debugoptimized -Dwerror=true -Db_lto=true >/dev/null
fi
ninja -C build
