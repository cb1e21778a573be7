#!/usr/bin/env bash
# Fetch memcached's own test suite (t/) from Debian's source package into
# tests/ext/ (not committed). Prints the path of the t/ directory.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=tests/ext
existing=$(ls -d $dest/memcached-*/t 2>/dev/null | head -1 || true)
if [[ -n "$existing" ]]; then
    echo "$PWD/$existing"
    exit 0
fi
if ! grep -rqs "^Types: deb-src\|^deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # a deb-src twin of the configured Debian sources
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        grep -q "^Types: deb$" "$f" || continue
        sed 's/^Types: deb$/Types: deb-src/' "$f" > "/etc/apt/sources.list.d/sluice-src-$(basename "$f")"
    done
    if [[ -f /etc/apt/sources.list ]] && grep -q "^deb " /etc/apt/sources.list; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/sluice-src.list
    fi
    apt-get update -qq >&2
fi
mkdir -p $dest
(cd $dest && apt-get source -qq memcached >&2 2>/dev/null)
ls -d "$PWD"/$dest/memcached-*/t | head -1
