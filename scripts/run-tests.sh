#!/bin/sh
# SPDX-License-Identifier: MIT
# run-tests.sh - install what is missing, build and run the whole test suite through ctest.
# Extra arguments go to ctest (e.g. -L unit, -R Parser). The build is in build/tests.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build/tests -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/tests -j"$(nproc)"
cd build/tests
exec ctest --output-on-failure --timeout 300 "$@"
