#!/bin/sh
# SPDX-License-Identifier: MIT
# run-sanitizers.sh - build and run the tests under AddressSanitizer+UBSan, and ThreadSanitizer.
#
# Usage: scripts/run-sanitizers.sh [asan|tsan|all] [--build-root DIR] [--build-only] [-- CTEST_ARGS...]
#   asan: DIR/asan, clang, -fsanitize=address,undefined; runs ctest -L unit, then -L integration.
#         The same build has libFuzzer's coverage and the fuzz_* binaries: scripts/run-fuzz.sh
#         reuses it (one ASan build for both, which is what keeps CI within its time).
#   tsan: DIR/tsan, g++ -fsanitize=thread; builds and runs only the integration tests (the daemon
#         runs one worker thread per core; unit tests are single-threaded). Default: all (asan,
#         then tsan). DIR: build. --build-only: build, run nothing (scripts/run-fuzz.sh uses it).
# Any sanitizer report fails the test it happens in (halt_on_error; the daemon's exit status).
set -eu
cd "$(dirname "$0")/.."

modes=""
root=build
build_only=0
while [ $# -gt 0 ]; do
    case "$1" in
    asan|tsan) modes="$modes $1"; shift ;;
    all) modes="asan tsan"; shift ;;
    --build-root) root=$2; shift 2 ;;
    --build-root=*) root=${1#*=}; shift ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '3,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) echo "run-sanitizers: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$modes" ] || modes="asan tsan"

./scripts/install-deps.sh

# Reports end the process at once (the test fails), with a symbolized stack. Use-after-return
# is on for coroutines that keep a reference to a caller's local. Options already in the
# environment come last, so they win.
export ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
mkdir -p "$root"
tsan_suppressions="$(cd "$root" && pwd)/tsan.supp"
# Debian's libspdlog is not built with TSan: its registry, a function-local static that the first
# log call creates (on a worker thread when a test logs nothing first), is published by the
# static's guard, whose fast path inside that library TSan does not see. Not a race.
cat >"$tsan_suppressions" <<'EOF'
race:spdlog::details::registry::registry
EOF
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$tsan_suppressions${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

# build - configure and build DIR/$1 with -fsanitize=$2 and the compiler $3; targets $4...
# Debug keeps assert()s; -O1 keeps the tests' run time (and their timeouts) closer to a release
# build's; line tables only (not full debug info) are enough for symbolized stacks and halve the
# build. CMake arguments from RELAYGUARD_SANITIZER_CMAKE_ARGS come last.
build() {
    dir="$root/$1" sanitize=$2 cxx=$3
    shift 3
    t0=$(date +%s)
    case $cxx in clang++) lines=-gline-tables-only ;; *) lines=-g1 ;; esac
    fuzz=OFF
    [ "$cxx" = clang++ ] && fuzz=ON
    # shellcheck disable=SC2086 # extra arguments are split on purpose
    cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_CXX_FLAGS_DEBUG="$lines -O1" -DRELAYGUARD_SANITIZE="$sanitize" -DRELAYGUARD_FUZZ=$fuzz \
        ${RELAYGUARD_SANITIZER_CMAKE_ARGS:-} >/dev/null
    targets=""
    for t in "$@"; do targets="$targets --target $t"; done
    # shellcheck disable=SC2086 # target names have no spaces
    cmake --build "$dir" -j"${JOBS:-$(nproc)}" $targets
    echo "run-sanitizers: $(basename "$dir"): build took $(( $(date +%s) - t0 )) s"
}

# run_label MODE LABEL [CTEST_ARGS...] - ctest one label in DIR/MODE.
run_label() {
    mode_dir=$1 label=$2
    shift 2
    t0=$(date +%s)
    status=0
    (cd "$root/$mode_dir" && ctest --output-on-failure --timeout 300 -L "$label" "$@") || status=$?
    echo "run-sanitizers: $mode_dir: ctest -L $label took $(( $(date +%s) - t0 )) s"
    return $status
}

failed=""
for mode in $modes; do
    case $mode in
    asan)
        # clang: its libFuzzer needs it, and this build makes the fuzz targets too.
        build asan address,undefined clang++ relayguard_unit_tests relayguard_integration_tests \
            fuzz_request_parser fuzz_config fuzz_resp
        [ $build_only = 1 ] && continue
        run_label asan unit "$@" || failed="$failed asan/unit"
        # Not these. The first uses up every file descriptor, and UBSan's vptr check needs one
        # (a pipe) to probe the object, so it reports a valid object as having an invalid vptr.
        # The second bounds the daemon's RSS growth to 4 MiB, which ASan's quarantine of freed
        # memory (256 MiB by default) exceeds: 366 MiB measured, 5.5 MiB with a 4 MiB quarantine.
        run_label asan integration \
            -E '^(Server\.KeepsAcceptingAfterAcceptFails|BrokenClients\.ClientThatNeverReadsCostsBoundedMemoryAndIsClosed)$' "$@" ||
            failed="$failed asan/integration"
        ;;
    tsan)
        # Only what it runs: the integration tests (and the binaries they start).
        build tsan thread g++ relayguard_integration_tests
        [ $build_only = 1 ] && continue
        run_label tsan integration "$@" || failed="$failed tsan/integration"
        ;;
    esac
done

if [ -n "$failed" ]; then
    echo "run-sanitizers: failed:$failed" >&2
    exit 1
fi
echo "run-sanitizers: passed:$modes"
