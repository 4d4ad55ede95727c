#!/bin/sh
# SPDX-License-Identifier: MIT
# run-daemon.sh - install what is missing, build (Release) and run relayguard in the foreground
# with contrib/relayguard.toml (127.0.0.1:10033, embedded store). Extra arguments go to relayguard.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DRELAYGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build build/release --target relayguard -j"$(nproc)"
exec build/release/relayguard --foreground --config contrib/relayguard.toml "$@"
