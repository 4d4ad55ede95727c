#!/bin/bash
# SPDX-License-Identifier: MIT
# run-soak.sh - a bounded soak: relayguard + Redis + relayguard-loadgen at a steady rate for
# SECONDS; fails if the daemon's memory or open file descriptors grow, or a request fails.
#
# Usage: scripts/run-soak.sh [SECONDS] [--rate R] [--connections N] [--build-dir DIR]
#   SECONDS: load time (default 300). R: requests/s (default 200). N: connections (default 8).
#   DIR: where relayguard and relayguard-loadgen are built (default build/soak; a new one is
#   configured RelWithDebInfo, an existing one keeps its build type).
# Not part of ctest. Loopback and a private temp dir only; every process it starts is stopped by pid.
set -euo pipefail

usage() { sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//'; }

src_dir=$(cd "$(dirname "$0")/.." && pwd)
seconds=300 rate=200 connections=8 build_dir="$src_dir/build/soak"
while [ $# -gt 0 ]; do
    case "$1" in
    --rate) rate=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    [0-9]*) seconds=$1; shift ;;
    *) echo "run-soak.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$seconds" in *[!0-9]*|'') echo "run-soak.sh: SECONDS must be a whole number" >&2; exit 2 ;; esac

# How often the daemon is sampled.
sample_every=10
# Growth allowed after warm-up: memory settles once every login, client and Redis connection
# has been seen and the allocator's arenas have grown to the load; after that it must stay flat.
# Warm-up: a quarter of the run, at least one sample and at most 60 s.
warmup=$(( seconds / 4 )); [ "$warmup" -gt 60 ] && warmup=60; [ "$warmup" -lt "$sample_every" ] && warmup=$sample_every
# VmRSS may rise by this percentage over its value at the end of warm-up (allocator noise).
rss_growth_pct=10
# Open descriptors may not rise at all after warm-up: the load's connections are constant.
fd_growth=0

[ "$seconds" -gt "$warmup" ] || { echo "run-soak.sh: SECONDS must be above the warm-up ($warmup s)" >&2; exit 2; }

cd "$src_dir"
./scripts/install-deps.sh
# A new build dir is RelWithDebInfo; an existing one keeps its build type.
if [ -f "$build_dir/CMakeCache.txt" ]; then cmake -S . -B "$build_dir" >/dev/null
else cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null; fi
cmake --build "$build_dir" --target relayguard relayguard-loadgen -j"${JOBS:-$(nproc)}"
relayguard="$build_dir/relayguard"
loadgen="$build_dir/tests/relayguard-loadgen"

work=$(mktemp -d /tmp/relayguard-soak.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Redis and the daemon -------------------------------------------------------------------------
redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do redis-cli -s "$work/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -s "$work/redis.sock" ping >/dev/null || { cat "$work/redis.log" >&2; exit 1; }

# The benchmark's realistic config (every check, three limits never reached) on Redis.
conf="$work/relayguard.toml"
sed -e "s|^listen = .*|listen = [\"unix:$work/relayguard.sock\"]|" \
    -e "s|^threads = .*|threads = 2\nallow_root = true|" \
    -e "s|^type = \"embedded\" # (matrix)|type = \"redis\"|" tests/bench/configs/realistic.toml >"$conf"
printf '\n[store.redis]\naddress = "unix:%s"\n' "$work/redis.sock" >>"$conf"
"$relayguard" --foreground --config "$conf" 2>"$work/relayguard.log" &
daemon_pid=$!
pids+=("$daemon_pid")
for _ in $(seq 200); do
    grep -q ' started: ' "$work/relayguard.log" && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.05
done
grep -q ' started: ' "$work/relayguard.log" || { echo "run-soak.sh: relayguard did not start" >&2; cat "$work/relayguard.log" >&2; exit 1; }

# --- load and samples -----------------------------------------------------------------------------
"$loadgen" --connect "unix:$work/relayguard.sock" --connections "$connections" --rate "$rate" \
    --duration "$seconds" --timeout 5 --pid "$daemon_pid" --redis-pid "$redis_pid" --json >"$work/loadgen.json" &
loadgen_pid=$!
pids+=("$loadgen_pid")

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$daemon_pid/status"; }
fds() { find "/proc/$daemon_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
echo "run-soak.sh: $seconds s at $rate/s over $connections connections; daemon pid $daemon_pid" \
     "($relayguard); warm-up $warmup s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%6s %10s %5s\n' "t (s)" "VmRSS KiB" "fds"
samples=()
start=$(date +%s)
t=0
while :; do
    kill -0 "$daemon_pid" 2>/dev/null || { echo "run-soak.sh: relayguard died" >&2; tail -n 20 "$work/relayguard.log" >&2; exit 1; }
    r=$(rss) f=$(fds)
    # Once the load has ended its connections are closing: shown, but not judged.
    if ! kill -0 "$loadgen_pid" 2>/dev/null; then
        printf '%6d %10d %5d  (load ended)\n' "$t" "$r" "$f"
        break
    fi
    samples+=("$t $r $f")
    printf '%6d %10d %5d\n' "$t" "$r" "$f"
    # Sleep to the next multiple of sample_every (the samples stay on the grid however slow /proc is).
    next=$(( (t / sample_every + 1) * sample_every ))
    while [ $(( $(date +%s) - start )) -lt "$next" ] && kill -0 "$loadgen_pid" 2>/dev/null; do sleep 1; done
    t=$(( $(date +%s) - start ))
done
loadgen_status=0
wait "$loadgen_pid" || loadgen_status=$?

# --- verdict --------------------------------------------------------------------------------------
failed=0
base_rss="" base_fds=""
max_rss=0 max_fds=0
for s in "${samples[@]}"; do
    read -r st sr sf <<<"$s"
    if [ -z "$base_rss" ]; then
        [ "$st" -ge "$warmup" ] && base_rss=$sr base_fds=$sf max_rss=$sr max_fds=$sf
        continue
    fi
    [ "$sr" -gt "$max_rss" ] && max_rss=$sr
    [ "$sf" -gt "$max_fds" ] && max_fds=$sf
done
[ -n "$base_rss" ] || { echo "run-soak.sh: no sample after warm-up" >&2; exit 1; }
rss_bound=$(( base_rss + base_rss * rss_growth_pct / 100 ))
fd_bound=$(( base_fds + fd_growth ))
echo "run-soak.sh: after warm-up: VmRSS $base_rss KiB -> max $max_rss KiB (bound $rss_bound);" \
     "fds $base_fds -> max $max_fds (bound $fd_bound)"
if [ "$max_rss" -gt "$rss_bound" ]; then echo "run-soak.sh: FAIL: VmRSS grew beyond +$rss_growth_pct%" >&2; failed=1; fi
if [ "$max_fds" -gt "$fd_bound" ]; then echo "run-soak.sh: FAIL: open descriptors grew" >&2; failed=1; fi

json=$(tail -n 1 "$work/loadgen.json")
errors=$(sed -n 's/.*"errors":{"total":\([0-9]*\).*/\1/p' <<<"$json")
summary=$(sed -n 's/.*"requests":\([0-9]*\),"requests_per_s":\([0-9.]*\),"latency_us":{"p50":\([0-9.]*\),"p90":[0-9.]*,"p99":\([0-9.]*\),"p99_9":[0-9.]*,"max":\([0-9.]*\).*/\1 requests, \2\/s, latency p50 \3 us p99 \4 us max \5 us/p' <<<"$json")
echo "run-soak.sh: load: ${summary:-?}; errors ${errors:-?}; loadgen exit $loadgen_status"
echo "run-soak.sh: $json"
if [ "$loadgen_status" -ne 0 ] || [ "${errors:-1}" != 0 ]; then echo "run-soak.sh: FAIL: requests failed" >&2; failed=1; fi
if [ "$failed" -ne 0 ]; then
    tail -n 20 "$work/relayguard.log" >&2
    exit 1
fi
echo "run-soak.sh: passed"
