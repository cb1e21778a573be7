#!/usr/bin/env bash
# Install what Sluice needs from Debian 12 packages, only what is missing.
#   scripts/setup.sh          build and run dependencies
#   scripts/setup.sh --test   also what the test suite drives
set -euo pipefail

BUILD_PKGS=(build-essential pkg-config meson ninja-build libdpdk-dev dpdk libjemalloc-dev
            libxxhash-dev libcriterion-dev libsodium-dev libcurl4-openssl-dev libjansson-dev
            iproute2 python3)
TEST_PKGS=(memcached python3-pymemcache python3-pytest libmemcached-tools php-cli php-memcache
           clang libclang-rt-14-dev iputils-ping netcat-openbsd perl valgrind dpkg-dev
           libcache-memcached-perl dpdk-dev ethtool gnuplot-nox etcd-server etcd-client nutcracker
           redis-server redis-tools)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then
    want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts memcached as a service when installed; the tests run their own.
if [[ "${1:-}" == "--test" ]] && command -v systemctl >/dev/null && systemctl is-active -q memcached 2>/dev/null; then
    systemctl stop memcached || true
fi
echo "setup: ok"
