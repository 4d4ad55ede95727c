# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# lib.sh - shared helpers of the end-to-end tests: temp dir, processes, ports, SMTP cases, Redis.
#
# Sourced by postfix_e2e.sh and exim_e2e.sh (bash, set -euo pipefail). Every process a test
# starts is registered by pid and stopped by pid on exit, also on failure or interrupt; the temp
# dir is removed unless E2E_KEEP=1. Everything listens on 127.0.0.1 only.

# Seconds a stopped process gets between SIGTERM and SIGKILL.
readonly e2e_stop_grace=5
# Seconds to wait for a daemon to start listening.
readonly e2e_start_timeout=20

e2e_pids=()          # processes to stop, in start order
e2e_client_pid=""    # the SMTP client of the case that is running
e2e_stop_cmds=()     # commands that stop a daemon politely first (e.g. postfix stop)
e2e_passed=0
e2e_failed=0
e2e_failures=()

# e2e_log - a progress line on stderr, prefixed with the test's name.
e2e_log() { printf '%s: %s\n' "$e2e_name" "$*" >&2; }

# e2e_die - give up: the environment is broken, not a case.
e2e_die() { e2e_log "FATAL: $*"; exit 1; }

# e2e_now_ms - wall clock in milliseconds, for session timings.
e2e_now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# e2e_alive PID - whether PID is a running process (kill -0 also succeeds on a zombie here).
e2e_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# e2e_stop_pid PID - SIGTERM, wait up to e2e_stop_grace s, then SIGKILL.
e2e_stop_pid() {
    local pid=$1 i
    e2e_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < e2e_stop_grace * 20; i++)); do
        e2e_alive "$pid" || return 0
        sleep 0.05
    done
    e2e_log "pid $pid ignored SIGTERM for ${e2e_stop_grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# e2e_cleanup - the EXIT trap: polite stop commands, then every registered pid, newest first.
e2e_cleanup() {
    local rc=$? i
    set +e
    [[ -n ${e2e_client_pid:-} ]] && e2e_stop_pid "$e2e_client_pid"
    for ((i = ${#e2e_stop_cmds[@]} - 1; i >= 0; i--)); do
        eval "${e2e_stop_cmds[i]}" >/dev/null 2>&1
    done
    for ((i = ${#e2e_pids[@]} - 1; i >= 0; i--)); do
        e2e_stop_pid "${e2e_pids[i]}"
    done
    if [[ ${E2E_KEEP:-0} == 1 ]]; then
        e2e_log "kept $e2e_tmp"
    elif [[ -n ${e2e_tmp:-} && -d $e2e_tmp ]]; then
        rm -rf "$e2e_tmp"
    fi
    exit "$rc"
}

# e2e_init NAME - check we are root, make the temp dir, install the trap.
e2e_init() {
    e2e_name=$1
    if [[ $(id -u) -ne 0 ]]; then
        e2e_log "SKIP: needs root (private MTA instances, sockets owned by postfix)"
        exit 77 # ctest SKIP_RETURN_CODE
    fi
    e2e_tmp=$(mktemp -d "/tmp/relayguard-$e2e_name.XXXXXX")
    # Postfix and Dovecot processes run as their own users and must reach files in here.
    chmod 0755 "$e2e_tmp"
    trap e2e_cleanup EXIT
    trap 'exit 130' INT TERM
}

# e2e_need CMD... - fail loudly when a tool is missing (scripts/install-deps.sh installs them).
e2e_need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || e2e_die "$c not found: run scripts/install-deps.sh"
    done
}

# e2e_register_pid PID - stop PID on exit.
e2e_register_pid() { e2e_pids+=("$1"); }

# e2e_listening PORT - whether something listens on 127.0.0.1:PORT or *:PORT (TCP).
e2e_listening() {
    local hex
    hex=$(printf '%04X' "$1")
    # /proc/net/tcp{,6}: local_address is HEXIP:HEXPORT, state 0A is LISTEN.
    awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# e2e_free_port - a TCP port nobody listens on (random, so parallel runs rarely collide), below
# the kernel's ephemeral range: an outgoing connection made between choosing the port and
# binding it (Postfix, Redis, a probe) cannot take it then ("bind: Address already in use").
e2e_free_port() {
    local p i low=32768 high=60999 base=10000 span
    read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    span=$((low - base))
    if ((span < 1000)); then # an unusual range: above it, or anywhere as a last resort
        base=$((high + 1)) span=$((65535 - high))
        ((span >= 1000)) || base=20000 span=30000
    fi
    for ((i = 0; i < 200; i++)); do
        p=$((base + RANDOM % span))
        if ! e2e_listening "$p" && [[ " ${e2e_taken_ports:-} " != *" $p "* ]]; then
            e2e_taken_ports="${e2e_taken_ports:-} $p"
            echo "$p"
            return 0
        fi
    done
    e2e_die "no free port found"
}

# e2e_wait_port PORT [PID] - wait until PORT listens; fail early when PID died.
e2e_wait_port() {
    local port=$1 pid=${2:-} i
    for ((i = 0; i < e2e_start_timeout * 20; i++)); do
        e2e_listening "$port" && return 0
        if [[ -n $pid ]] && ! e2e_alive "$pid"; then
            return 1
        fi
        sleep 0.05
    done
    return 1
}

# e2e_policy_query PORT REQUEST - send one policy request over TCP, print the reply's first line.
e2e_policy_query() {
    local port=$1 request=$2 reply
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s\n\n' "$request" >&"$fd"
    IFS= read -r -t 5 reply <&"$fd" || reply=""
    # Also the empty line that ends the reply: closing with it unread would reset the connection
    # (and relayguard log a read error).
    [[ -n $reply ]] && { IFS= read -r -t 5 _ <&"$fd" || true; }
    exec {fd}>&-
    printf '%s\n' "$reply"
}

# e2e_start_relayguard BIN CONFIG INET_PORT - start the daemon in the foreground (in the
# background of this shell), wait until it answers a request on 127.0.0.1:INET_PORT.
e2e_start_relayguard() {
    local bin=$1 config=$2 port=$3 reply i
    # As root (e2e_init): --allow-root for configs without server.user; one with it drops.
    "$bin" --foreground --allow-root --config "$config" >>"$e2e_tmp/relayguard.log" 2>&1 &
    e2e_relayguard_pid=$!
    e2e_register_pid "$e2e_relayguard_pid"
    if ! e2e_wait_port "$port" "$e2e_relayguard_pid"; then
        cat "$e2e_tmp/relayguard.log" >&2
        e2e_die "relayguard did not start listening on 127.0.0.1:$port"
    fi
    for ((i = 0; i < 50; i++)); do
        reply=$(e2e_policy_query "$port" $'request=smtpd_access_policy\nprotocol_state=CONNECT') || reply=""
        [[ $reply == action=* ]] && return 0
        sleep 0.05
    done
    e2e_die "relayguard does not answer on 127.0.0.1:$port (last reply: '$reply')"
}

# e2e_stop_relayguard - SIGTERM the daemon and wait until it is gone.
e2e_stop_relayguard() {
    e2e_stop_pid "$e2e_relayguard_pid"
    e2e_alive "$e2e_relayguard_pid" && e2e_die "relayguard $e2e_relayguard_pid still runs"
    return 0
}

# e2e_pass / e2e_fail NAME MESSAGE - record a case's outcome.
e2e_pass() { e2e_passed=$((e2e_passed + 1)); e2e_log "ok   $1 ($2)"; }
e2e_fail() {
    e2e_failed=$((e2e_failed + 1))
    e2e_failures+=("$1")
    e2e_log "FAIL $1: $2"
}

# e2e_join_replies - stdin: SMTP reply lines; stdout: one line per reply ("NNN text").
e2e_join_replies() {
    awk '
        function flush() { if (open) print joined; open = 0 }
        !/^[0-9][0-9][0-9]([ -]|$)/ { flush(); print; next }
        {
            code = substr($0, 1, 3); last = (substr($0, 4, 1) != "-"); text = substr($0, 5)
            if (open && code == open_code) {
                sub(/^[245]\.[0-9]+\.[0-9]+ /, "", text)
                joined = joined " " text
            } else {
                flush(); joined = code " " text; open_code = code; open = 1
            }
            if (last) flush()
        }
        END { flush() }'
}

# e2e_smtp_case NAME WANT_EXIT WANT_REPLY MAX_MS -- SWAKS_ARGS...
# Run one SMTP session with swaks. Passes when swaks exits WANT_EXIT (0 delivered, 24 RCPT
# refused, 26 refused after DATA, 28 AUTH failed), some server reply line matches the extended
# regex WANT_REPLY (empty: any), and the session took at most MAX_MS milliseconds. Sets
# e2e_last_ms, e2e_last_transcript and e2e_last_replies (the server's replies, one per line).
e2e_smtp_case() {
    local name=$1 want_exit=$2 want_reply=$3 max_ms=$4 got_exit start replies
    shift 5 # the "--"
    e2e_last_transcript="$e2e_tmp/swaks.$name.log"
    start=$(e2e_now_ms)
    got_exit=0
    # In the background, so that a signal reaches the trap at once rather than after swaks.
    swaks --timeout 30 --helo client.test "$@" >"$e2e_last_transcript" 2>&1 &
    e2e_client_pid=$!
    wait "$e2e_client_pid" || got_exit=$?
    e2e_client_pid=""
    e2e_last_ms=$(( $(e2e_now_ms) - start ))
    # Server lines: "<-" plain, "<~" over TLS, "<**" / "<~*" unexpected (a refusal). A reply
    # over several lines (Exim wraps long texts: "553-5.7.1 Sender ...", "553 5.7.1 sender") is
    # joined into one line, the repeated code and enhanced status code dropped.
    replies=$(grep -E '^<[-~*]' "$e2e_last_transcript" | sed -E 's/^<[-~*]+ +//' | e2e_join_replies || true)
    e2e_last_replies=$replies
    if [[ $got_exit -ne $want_exit ]]; then
        e2e_fail "$name" "swaks exit got=$got_exit want=$want_exit; replies:"$'\n'"$replies"
    elif [[ -n $want_reply ]] && ! grep -qE -- "$want_reply" <<<"$replies"; then
        e2e_fail "$name" "reply got=<<$replies>> want a line matching /$want_reply/"
    elif [[ $e2e_last_ms -gt $max_ms ]]; then
        e2e_fail "$name" "session took got=${e2e_last_ms}ms want<=${max_ms}ms"
    else
        e2e_pass "$name" "${e2e_last_ms} ms"
    fi
}

# e2e_reply_count NAME REGEX WANT - a check on the last session: WANT of its replies match the
# extended regex REGEX (e.g. how many RCPTs were accepted).
e2e_reply_count() {
    local name=$1 regex=$2 want=$3 got
    got=$(grep -cE -- "$regex" <<<"$e2e_last_replies" || true)
    if [[ $got -eq $want ]]; then
        e2e_pass "$name" "$got replies match /$regex/"
    else
        e2e_fail "$name" "replies matching /$regex/: got=$got want=$want; replies:"$'\n'"$e2e_last_replies"
    fi
}

# --- Redis and rate limits.

# e2e_start_redis - a private redis-server on a UNIX socket in the temp dir: no TCP port, no
# persistence, no config file. Sets e2e_redis_sock; stopped by pid on exit like the rest. The
# socket is open to every user: relayguard may run as one of its own (postfix_e2e.sh, unix).
e2e_start_redis() {
    local reply="" i
    mkdir -p "$e2e_tmp/redis"
    e2e_redis_sock=$e2e_tmp/redis/redis.sock
    redis-server --port 0 --save '' --appendonly no --dir "$e2e_tmp/redis" \
        --unixsocket "$e2e_redis_sock" --unixsocketperm 777 \
        --logfile "$e2e_tmp/redis/redis.log" >/dev/null 2>&1 &
    e2e_redis_pid=$!
    e2e_register_pid "$e2e_redis_pid"
    for ((i = 0; i < e2e_start_timeout * 20; i++)); do
        if [[ -S $e2e_redis_sock ]]; then
            reply=$(redis-cli -s "$e2e_redis_sock" PING 2>/dev/null) || reply=""
            [[ $reply == PONG ]] && return 0
        fi
        e2e_alive "$e2e_redis_pid" || break
        sleep 0.05
    done
    cat "$e2e_tmp/redis/redis.log" >&2 || true
    e2e_die "redis-server did not answer PING on $e2e_redis_sock (last reply: '$reply')"
}

# e2e_redis ARGS... - redis-cli on the private redis-server, as an operator would run it.
e2e_redis() { redis-cli -s "$e2e_redis_sock" "$@"; }

# e2e_store_config - relayguard's [store] for the private redis-server. Failing closed with a
# reply of its own makes a Redis problem show as itself in a case, not as a limit that held or
# did not; the timeout is generous because the test box is shared (this is no latency test).
e2e_store_config() {
    cat <<EOF

[store]
type = "redis"
on_error = "defer"
defer_reply = "451 4.3.0 Rate limit store failed (e2e)"

[store.redis]
address = "unix:$e2e_redis_sock"
timeout = "1s"
EOF
}

# The limit of the rate-limit cases: recipients per login, few enough to run out of in one
# message. Its name is in the default reply, in the Redis keys and in overrides.
readonly e2e_limit_name=login_recipients
readonly e2e_limit_count=3
# Seconds the limit's budget takes to refill whole: the limit is 3/1h.
readonly e2e_limit_period_s=3600
# What relayguard answers when the limit is full (README "Rate limits": the default reply).
readonly e2e_limit_action_re="^action=450 4\\.7\\.1 Rate limit $e2e_limit_name exceeded, retry in [0-9]+ seconds\$"

# Probes a reload may take before the limit must be in effect (about 5 s at 20 ms apart).
readonly e2e_reload_probes=200

# e2e_add_login_limit CONFIG PORT - append the limit to relayguard's CONFIG (the store must be
# set up already: a store change needs a restart), SIGHUP, and wait until the limit is in
# effect: a probe login that no case uses sends recipients over TCP until one gets the limit's
# reply. Before the reload every probe gets DUNNO; after it, the (COUNT+1)-th does not.
e2e_add_login_limit() {
    local config=$1 port=$2 reply="" i
    cat >>"$config" <<EOF

[rate_limits]
hooked_at = ["RCPT", "END-OF-MESSAGE"]

[[limit]]
name = "$e2e_limit_name"
key = "sasl_username"
unit = "recipients"
rates = "$e2e_limit_count/${e2e_limit_period_s}s"
scope = "authenticated"
EOF
    kill -HUP "$e2e_relayguard_pid"
    for ((i = 1; i <= e2e_reload_probes; i++)); do
        reply=$(e2e_policy_query "$port" "request=smtpd_access_policy
protocol_state=RCPT
client_address=127.0.0.1
sasl_method=CRAM-MD5
sasl_username=probe@example.com
sender=probe@example.com
recipient=rcpt$i@example.net
instance=probe$i") || reply=""
        if [[ $reply =~ $e2e_limit_action_re ]]; then
            e2e_log "limit $e2e_limit_name in effect after $i probes: $reply"
            return 0
        fi
        [[ $reply == action=DUNNO ]] || e2e_die "limit probe $i: got '$reply', want action=DUNNO or /$e2e_limit_action_re/"
        sleep 0.02
    done
    e2e_die "SIGHUP: limit $e2e_limit_name not in effect after $e2e_reload_probes probes (last reply '$reply')"
}

# e2e_check_limit_state NAME LOGIN - the limit's counter of LOGIN is in Redis (not in the
# embedded store: a Redis failure would have answered the store's defer_reply instead).
e2e_check_limit_state() {
    local name=$1 login=$2 field got
    field="t:$e2e_limit_name:$e2e_limit_period_s"
    got=$(e2e_redis HEXISTS "rg:{l:$login}" "$field" 2>&1) || true
    if [[ $got == 1 ]]; then
        e2e_pass "$name" "rg:{l:$login} has $field"
    else
        e2e_fail "$name" "redis-cli HEXISTS 'rg:{l:$login}' $field: got=$got want=1"
    fi
}

# e2e_set_override LOGIN RATES - what an operator does to change one login's limit (README
# "Overrides, live"): write it into Redis, nothing else (no reload, no restart).
e2e_set_override() {
    local got
    got=$(e2e_redis HSET "rg:{l:$1}:o" "$e2e_limit_name" "$2" 2>&1) || true
    [[ $got == 1 ]] || e2e_die "redis-cli HSET 'rg:{l:$1}:o' $e2e_limit_name '$2': got '$got', want 1"
}

# Seconds the "retry in N seconds" of a case may be below its value at the first RCPT: the time
# the session took, generously (the box is shared).
readonly e2e_retry_slack_s=60

# e2e_check_retry_after NAME - the last session ran out of the limit's COUNT in one go: its
# "retry in N seconds" is when the first of them has refilled, PERIOD/COUNT after it, less the
# seconds since (within e2e_retry_slack_s).
e2e_check_retry_after() {
    local name=$1 want_max=$((e2e_limit_period_s / e2e_limit_count)) want_min got
    want_min=$((want_max - e2e_retry_slack_s))
    got=$(grep -oE 'retry in [0-9]+ seconds' <<<"$e2e_last_replies" | grep -oE '[0-9]+' | head -n 1 || true)
    if [[ -z $got ]]; then
        e2e_fail "$name" "no 'retry in N seconds' in the replies:"$'\n'"$e2e_last_replies"
    elif [[ $got -lt $want_min || $got -gt $want_max ]]; then
        e2e_fail "$name" "retry after got=${got}s want ${want_min}..${want_max}s"
    else
        e2e_pass "$name" "retry in ${got}s"
    fi
}

# e2e_finish - the summary line (ctest shows it) and the exit status.
e2e_finish() {
    if [[ $e2e_failed -gt 0 ]]; then
        e2e_log "failed: ${e2e_failures[*]}"
        e2e_log "relayguard log (last 40 lines):"
        tail -n 40 "$e2e_tmp/relayguard.log" >&2 || true
    fi
    printf '%s: %d passed, %d failed\n' "$e2e_name" "$e2e_passed" "$e2e_failed"
    [[ $e2e_failed -eq 0 ]]
}
