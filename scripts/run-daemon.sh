#!/bin/sh
# SPDX-License-Identifier: MIT
# run-daemon.sh - install what is missing, build (Release) and run relayguard in the foreground
# with contrib/relayguard.toml (127.0.0.1:10033, embedded store). Extra arguments go to relayguard.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DRELAYGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build build/release --target relayguard -j"$(nproc)"
# The example config sets no server.user, and relayguard refuses to run on as root without
# one. For a quick try as root (a container, a test box) allow it; as any other user the flag
# is not needed. On a real server set server.user instead (relayguard(8), PRIVILEGES).
allow_root=""
if [ "$(id -u)" -eq 0 ]; then allow_root="--allow-root"; fi
# shellcheck disable=SC2086
exec build/release/relayguard --foreground $allow_root --config contrib/relayguard.toml "$@"
