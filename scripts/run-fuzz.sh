#!/bin/sh
# SPDX-License-Identifier: MIT
# run-fuzz.sh - build the libFuzzer targets (clang, ASan+UBSan) and fuzz each for a bounded time.
#
# Usage: scripts/run-fuzz.sh [--seconds N] [--build-root DIR] [TARGET...]
#   TARGET: request_parser, config, resp (default: all). --seconds: per target (default 60).
# The fuzz binaries come from the ASan+UBSan build of scripts/run-sanitizers.sh (DIR/asan, clang,
# libFuzzer coverage), which this builds first if needed (a no-op after run-sanitizers.sh asan).
# Per target: every input kept in tests/fuzz/regressions/<target>/ runs once as a plain test, then
# libFuzzer runs for N seconds from tests/fuzz/corpus/<target>/ (read-only) and a work corpus in
# DIR/asan/corpus/<target>/ (kept between runs). A crash leaves its input in
# DIR/asan/crashes/<target>/: fix the bug, then keep the input in tests/fuzz/regressions/<target>/
# (tests/fuzz/README.md). Exits non-zero if the build, a regression input or a fuzz run fails.
# DIR: build.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=60
build_root=build
targets=""
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --build-root) build_root=$2; shift 2 ;;
    --build-root=*) build_root=${1#*=}; shift ;;
    -h|--help) sed -n '3,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    request_parser|config|resp) targets="$targets $1"; shift ;;
    *) echo "run-fuzz: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$targets" ] || targets="request_parser config resp"
case "$seconds" in ''|*[!0-9]*) echo "run-fuzz: --seconds wants a whole number, got: $seconds" >&2; exit 2 ;; esac
case "$build_root" in /*) ;; *) build_root="$root/$build_root" ;; esac
build="$build_root/asan"

# The ASan+UBSan build with libFuzzer coverage (clang; install-deps.sh installs it, CI fuzzes).
start=$(date +%s)
./scripts/run-sanitizers.sh asan --build-root "$build_root" --build-only

export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

failed=""
for t in $targets; do
    bin="$build/tests/fuzz/fuzz_$t"
    fuzz_dir="$root/tests/fuzz"
    mkdir -p "$build/corpus/$t" "$build/crashes/$t"

    # Kept crash inputs first: a fixed bug must stay fixed before new ones are looked for.
    # Given files (not directories), libFuzzer runs each once and stops.
    regressions=$(find "$fuzz_dir/regressions/$t" -type f ! -name '.*' | sort)
    if [ -n "$regressions" ]; then
        # shellcheck disable=SC2086 # file names in tests/fuzz have no spaces
        if ! "$bin" $regressions </dev/null >"$build/regressions-$t.log" 2>&1; then
            echo "run-fuzz: $t: a regression input fails again, see $build/regressions-$t.log" >&2
            tail -n 30 "$build/regressions-$t.log" >&2
            failed="$failed $t"
            continue
        fi
        echo "run-fuzz: $t: $(echo "$regressions" | wc -l) regression inputs pass"
    fi

    # Per-target options: inputs long enough to pass the parser's default 4 KiB line limit.
    max_len=""
    [ "$t" = request_parser ] && max_len="-max_len=8192"
    t0=$(date +%s)
    # stdin closed: the config target could be pointed at /dev/stdin as a password file.
    # shellcheck disable=SC2086
    if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$fuzz_dir/$t.dict" -artifact_prefix="$build/crashes/$t/" $max_len \
        "$build/corpus/$t" "$fuzz_dir/corpus/$t" </dev/null >"$build/fuzz-$t.log" 2>&1; then
        echo "run-fuzz: $t: $(grep -E '^stat::number_of_executed_units' "$build/fuzz-$t.log" | awk '{print $2}') runs" \
             "in $(( $(date +%s) - t0 )) s, no crash; $(grep -Eo 'cov: [0-9]+' "$build/fuzz-$t.log" | tail -n 1)"
    else
        echo "run-fuzz: $t: FAILED, input in $build/crashes/$t/, log $build/fuzz-$t.log" >&2
        grep -E 'ERROR|check failed|SUMMARY|Test unit written' "$build/fuzz-$t.log" | head -n 10 >&2 || true
        failed="$failed $t"
    fi
done

if [ -n "$failed" ]; then
    echo "run-fuzz: failed:$failed" >&2
    exit 1
fi
echo "run-fuzz: all passed in $(( $(date +%s) - start )) s"
