#!/bin/bash
# SPDX-License-Identifier: MIT
# run-matrix.sh - the relayguard benchmark matrix: store x config x connections, repeated, medians.
#
# Builds Release, then for each store (embedded, redis), config (bench/configs: realistic, reached)
# and connection count (1 8 64 512) runs relayguard-loadgen against a freshly started relayguard
# --reps times; prints medians of req/s, latency, CPU per request and RSS (and Redis's CPU per
# request), plus the DUNNO ceiling (loadgen --serve-dunno) and idle-connection memory. Every
# process it starts is stopped by pid (trap). Loopback and a private temp dir only.
set -euo pipefail

usage() {
    cat <<EOF
usage: tests/bench/run-matrix.sh [options]
  --quick             1 repetition of 3 s each, 0.5 s warmup, 2000 idle connections
  --reps N            repetitions of each cell (default 3)
  --duration S        seconds measured per run (default 10)
  --warmup S          seconds before measuring (default 1)
  --connections "L"   connection counts (default "1 8 64 512")
  --stores "L"        stores (default "embedded redis")
  --configs "L"       configs from tests/bench/configs (default "realistic reached")
  --threads N         daemon threads; default: try 1 and 2 once, keep the faster
  --loadgen-threads N threads of the load generator (default 1)
  --transport T       tcp (127.0.0.1) or unix (default tcp)
  --idle N            idle connections held for the memory figure (default 10000; 0: skip)
  --startups N        starts timed to the first answered request (default 5; 0: skip)
  --no-ceiling        skip the --serve-dunno runs
  --no-build          use the binaries already in the build directory
  --build-dir DIR     (default build/release)
  --out DIR           raw JSON lines and the table (default BUILD_DIR/bench-<date>)
EOF
}

src_dir=$(cd "$(dirname "$0")/../.." && pwd)
reps=3 duration=10 warmup=1 idle=10000 startups=5
connections="1 8 64 512" stores="embedded redis" configs="realistic reached"
threads="" loadgen_threads=1 transport=tcp ceiling=1 build=1
build_dir="$src_dir/build/release" out=""
# Per run beyond warmup + duration: daemon start and stop, loadgen start (seconds, estimate).
run_overhead=1.5

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) reps=1 duration=3 warmup=0.5 idle=2000 ;;
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --connections) connections=$2; shift ;;
    --stores) stores=$2; shift ;;
    --configs) configs=$2; shift ;;
    --threads) threads=$2; shift ;;
    --loadgen-threads) loadgen_threads=$2; shift ;;
    --transport) transport=$2; shift ;;
    --idle) idle=$2; shift ;;
    --startups) startups=$2; shift ;;
    --no-ceiling) ceiling=0 ;;
    --no-build) build=0 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --out) out=$(realpath -m "$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run-matrix.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$transport" in tcp|unix) ;; *) echo "run-matrix.sh: --transport tcp or unix" >&2; exit 2 ;; esac
[ -n "$out" ] || out="$build_dir/bench-$(date +%Y%m%d-%H%M%S)"

relayguard="$build_dir/relayguard"
loadgen="$build_dir/tests/relayguard-loadgen"
configs_dir="$src_dir/tests/bench/configs"

# --- cleanup: only what this script started, by pid -------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/relayguard-bench.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "run-matrix.sh: interrupted" >&2; exit 130' INT TERM

forget_pid() { # forget_pid PID - drop from the cleanup list once stopped
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]+"${keep[@]}"}")
}

stop_pid() { # stop_pid PID - SIGTERM, wait up to 5 s, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# --- plan and estimate --------------------------------------------------------------------------
nconn=$(wc -w <<<"$connections")
nruns=$(( $(wc -w <<<"$stores") * $(wc -w <<<"$configs") * nconn * reps ))
[ "$ceiling" = 1 ] && nruns=$(( nruns + nconn * reps ))
[ -z "$threads" ] && nruns=$(( nruns + 2 ))
idle_s=0
[ "$idle" -gt 0 ] && idle_s=$(awk -v d="$duration" 'BEGIN { print d + 5 }')
estimate=$(awk -v n="$nruns" -v d="$duration" -v w="$warmup" -v o="$run_overhead" -v i="$idle_s" \
    'BEGIN { printf "%d", n * (d + w + o) + i }')
echo "run-matrix.sh: $nruns runs of ${warmup}+${duration} s (stores: $stores; configs: $configs;" \
     "connections: $connections; $reps reps) + idle: about $((estimate / 60)) min $((estimate % 60)) s" \
     "(plus the build). Results: $out"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), " \
     "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r);" \
     "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- build ----------------------------------------------------------------------------------------
if [ "$build" = 1 ]; then
    cmake -S "$src_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build_dir" --target relayguard relayguard-loadgen -j2
fi
for bin in "$relayguard" "$loadgen"; do
    [ -x "$bin" ] || { echo "run-matrix.sh: $bin missing (build it, or drop --no-build)" >&2; exit 1; }
done
mkdir -p "$out"
results="$out/runs.jsonl"
: >"$results"

# More idle connections than the default soft limit: let every child have the hard limit.
ulimit -n "$(ulimit -Hn)"

# --- redis ---------------------------------------------------------------------------------------
redis_pid=""
start_redis() {
    command -v redis-server >/dev/null || { echo "run-matrix.sh: redis-server not installed" >&2; exit 1; }
    redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 --save "" \
        --appendonly no --dir "$work" --logfile "$work/redis.log" &
    redis_pid=$!
    pids+=("$redis_pid")
    local i
    for i in $(seq 100); do
        redis-cli -s "$work/redis.sock" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "run-matrix.sh: redis-server did not come up:" >&2
    cat "$work/redis.log" >&2
    exit 1
}

# --- the daemon ------------------------------------------------------------------------------------
daemon_pid="" daemon_connect=""
# start_daemon CONFIG STORE THREADS - fresh relayguard (and fresh counters) for one run.
start_daemon() {
    local config=$1 store=$2 nthreads=$3 conf="$work/relayguard.toml" log="$work/relayguard.log"
    local listen='"inet:127.0.0.1:0"'
    [ "$transport" = unix ] && listen="\"unix:$work/relayguard.sock\""
    sed -e "s|^listen = .*|listen = [$listen]|" \
        -e "s|^threads = .*|threads = $nthreads|" \
        -e "s|^type = \"embedded\" # (matrix)|type = \"$store\"|" "$configs_dir/$config.toml" >"$conf"
    if [ "$store" = redis ]; then
        printf '\n[store.redis]\naddress = "unix:%s"\n' "$work/redis.sock" >>"$conf"
        redis-cli -s "$work/redis.sock" flushall >/dev/null
    fi
    # --allow-root: the benchmark configs set no server.user and the matrix may run as root.
    "$relayguard" --foreground --allow-root --config "$conf" 2>"$log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    local i line
    for i in $(seq 100); do
        line=$(grep -m1 ' started: ' "$log" || true)
        [ -n "$line" ] && break
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$line" ]; then
        echo "run-matrix.sh: relayguard did not start ($config, $store):" >&2
        cat "$log" >&2
        exit 1
    fi
    if [ "$transport" = unix ]; then
        daemon_connect="unix:$work/relayguard.sock"
    else
        daemon_connect="tcp:127.0.0.1:$(sed -n 's/.*listening on inet:127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$line")"
    fi
}

stop_daemon() {
    stop_pid "$daemon_pid"
    rm -f "$work/relayguard.log" # refusals are logged one per line: gigabytes over a matrix
}

# run_load LABEL CONNECT CONNECTIONS PID [REDIS_PID] - one loadgen run, its JSON tagged with LABEL.
run_load() {
    local label=$1 connect=$2 n=$3 pid=$4 rpid=${5:-0} json
    json=$("$loadgen" --connect "$connect" --connections "$n" --duration "$duration" --warmup "$warmup" \
        --threads "$loadgen_threads" --pid "$pid" --redis-pid "$rpid" --json) || {
        echo "run-matrix.sh: loadgen failed ($label, $n connections)" >&2
        return 1
    }
    printf '{"label":"%s",%s\n' "$label" "${json#\{}" >>"$results"
    awk -v l="$label" -v n="$n" -v j="$json" 'BEGIN {
        match(j, /"requests_per_s":[0-9.]+/); r = substr(j, RSTART + 17, RLENGTH - 17)
        match(j, /"p99":[0-9.]+/); p = substr(j, RSTART + 6, RLENGTH - 6)
        match(j, /"cpu_us_per_request":[0-9.]+/); c = substr(j, RSTART + 21, RLENGTH - 21)
        printf "  %-28s %4d conns: %9.0f req/s  p99 %8.1f us  daemon %6.1f us/req\n", l, n, r, p, c }'
}

# --- threads: 1 or 2 ----------------------------------------------------------------------------
if [ -z "$threads" ]; then
    echo "== daemon threads: 1 vs 2 (realistic, embedded, 64 connections, one run each)"
    best=0
    for t in 1 2; do
        start_daemon realistic embedded "$t"
        run_load "threads-$t" "$daemon_connect" 64 "$daemon_pid"
        stop_daemon
        rps=$(tail -1 "$results" | sed -n 's/.*"requests_per_s":\([0-9.]*\).*/\1/p')
        if awk -v a="$rps" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$rps threads=$t; fi
    done
    echo "   -> $threads thread(s)"
fi

# --- the ceiling ------------------------------------------------------------------------------------
if [ "$ceiling" = 1 ]; then
    echo "== ceiling: relayguard-loadgen --serve-dunno ($threads thread(s))"
    dunno_listen=0
    [ "$transport" = unix ] && dunno_listen="unix:$work/dunno.sock"
    "$loadgen" --serve-dunno "$dunno_listen" --threads "$threads" >"$work/dunno.out" &
    dunno_pid=$!
    pids+=("$dunno_pid")
    for i in $(seq 100); do [ -s "$work/dunno.out" ] && break; sleep 0.05; done
    dunno_connect=$(sed -n 's/^listening on \([^,]*\),.*/\1/p' "$work/dunno.out")
    [ -n "$dunno_connect" ] || { echo "run-matrix.sh: --serve-dunno did not start" >&2; exit 1; }
    for n in $connections; do
        for rep in $(seq "$reps"); do run_load "ceiling/dunno" "$dunno_connect" "$n" "$dunno_pid"; done
    done
    stop_pid "$dunno_pid"
fi

# --- the matrix ---------------------------------------------------------------------------------------
for store in $stores; do
    [ "$store" = redis ] && start_redis
    for config in $configs; do
        echo "== $store / $config ($threads thread(s))"
        for n in $connections; do
            for rep in $(seq "$reps"); do
                start_daemon "$config" "$store" "$threads"
                if [ "$store" = redis ]; then
                    run_load "$store/$config" "$daemon_connect" "$n" "$daemon_pid" "$redis_pid"
                else
                    run_load "$store/$config" "$daemon_connect" "$n" "$daemon_pid"
                fi
                stop_daemon
            done
        done
    done
    if [ "$store" = redis ]; then stop_pid "$redis_pid"; redis_pid=""; fi
done

# --- idle connections ---------------------------------------------------------------------------------
if [ "$idle" -gt 0 ]; then
    echo "== $idle idle connections held $duration s (realistic, embedded, $threads thread(s))"
    start_daemon realistic embedded "$threads"
    "$loadgen" --connect "$daemon_connect" --idle "$idle" --duration "$duration" --pid "$daemon_pid" --json \
        | sed 's/^{/{"label":"idle",/' | tee -a "$results"
    stop_daemon
fi

# --- start-up ------------------------------------------------------------------------------------------
# From starting the process to the first answered request (realistic config, embedded store, a
# UNIX socket known in advance, polled every millisecond): 5 starts, each printed; the table
# shows the median.
if [ "$startups" -gt 0 ]; then
    echo "== start-up to first answered request ($startups starts, realistic, embedded)"
    sed -e "s|^listen = .*|listen = [\"unix:$work/startup.sock\"]|" -e "s|^threads = .*|threads = $threads|" \
        "$configs_dir/realistic.toml" >"$work/startup.toml"
    python3 - "$relayguard" "$work/startup.toml" "$work/startup.sock" "$startups" \
        "$src_dir/tests/data/samples/postfix-3.7/rcpt_unauthenticated.policy" <<'PY' | tee -a "$results"
import json, os, socket, subprocess, sys, time
daemon, conf, path, starts, sample = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
request = open(sample, "rb").read().split(b"\n\n")[0] + b"\n\n"
for i in range(starts):
    if os.path.exists(path):
        os.unlink(path)
    t0 = time.monotonic()
    p = subprocess.Popen([daemon, "--foreground", "--allow-root", "--config", conf],
                         stderr=subprocess.DEVNULL)
    reply, ms = b"", None
    while time.monotonic() - t0 < 5:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                s.sendall(request)
                while not reply.endswith(b"\n\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            if reply.startswith(b"action="):
                ms = (time.monotonic() - t0) * 1000
                break
        except OSError:
            time.sleep(0.001)
    p.terminate()
    p.wait()
    print(json.dumps({"label": "startup", "mode": "startup", "ms": ms, "reply": reply.decode(errors="replace").strip()}))
PY
fi

# --- the table of medians --------------------------------------------------------------------------------
python3 - "$results" <<'EOF' | tee "$out/table.txt"
import json, statistics, sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")

cells = {}
for r in runs:
    if r.get("mode") != "load":
        continue
    cells.setdefault((r["label"], r["connections"]), []).append(r)

if cells:
    print()
    print(f"{'run':<24}{'conns':>6}{'n':>3}{'req/s':>10}{'p50 us':>9}{'p99 us':>9}{'cpu us/req':>11}"
          f"{'RSS KiB':>9}{'redis us/req':>13}{'errors':>7}  replies")
for (label, conns), rs in cells.items():
    daemon = [r.get("daemon") or {} for r in rs]
    redis = [r.get("redis") or {} for r in rs]
    total = sum(r["requests"] for r in rs) or 1
    actions = {}
    for r in rs:
        for a, n in r["actions"].items():
            actions[a] = actions.get(a, 0) + n
    replies = " ".join(f"{a} {100 * n / total:.0f}%" for a, n in sorted(actions.items(), key=lambda x: -x[1]))
    redis_cpu = med([d.get("cpu_us_per_request") for d in redis])
    print(f"{label:<24}{conns:>6}{len(rs):>3}{med([r['requests_per_s'] for r in rs]):>10.0f}"
          f"{med([r['latency_us']['p50'] for r in rs]):>9.1f}{med([r['latency_us']['p99'] for r in rs]):>9.1f}"
          f"{med([d.get('cpu_us_per_request') for d in daemon]):>11.1f}{med([d.get('vm_rss_kib') for d in daemon]):>9.0f}"
          f"{'' if redis_cpu != redis_cpu else f'{redis_cpu:.1f}':>13}{sum(r['errors']['total'] for r in rs):>7}  {replies}")
for r in runs:
    if r.get("mode") == "idle" and r.get("daemon"):
        d = r["daemon"]
        print(f"\nidle: {r['open_at_end']} of {r['wanted']} connections open after {r['hold_s']:.1f} s: VmRSS "
              f"{d['vm_rss_before_kib']} -> {d['vm_rss_end_kib']} KiB = {d['bytes_per_connection']:.0f} bytes per "
              f"connection ({(d['vm_rss_end_kib']) / 1024:.1f} MiB in all; VmHWM {d['vm_hwm_kib']} KiB)")
starts = [r["ms"] for r in runs if r.get("mode") == "startup" and r.get("ms") is not None]
if starts:
    print(f"\nstart-up to first answered request: median {statistics.median(starts):.1f} ms, max {max(starts):.1f} ms "
          f"over {len(starts)} starts")
if cells:
    loadgen = med([r["loadgen_cpu_us"] / r["requests"] for r in runs if r.get("mode") == "load" and r["requests"]])
    print(f"\nmedians over repetitions; loadgen's own CPU: median {loadgen:.1f} us/request (it shares the machine)")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); raw runs: $results"
