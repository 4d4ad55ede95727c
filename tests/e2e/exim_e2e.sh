#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# exim_e2e.sh - relayguard behind a real Exim 4.96 running contrib/exim/relayguard.conf.
#
# Usage: exim_e2e.sh RELAYGUARD_BIN SOURCE_DIR [EXIM_CACHE_DIR]. Runs as root. Exim comes from
# scripts/fetch-exim.sh (Debian's package unpacked, not installed: it conflicts with postfix).
# Each case is an `exim -bh` SMTP session (ACLs live, no daemon, no port) driven by swaks --pipe;
# relayguard and a redis-server run on 127.0.0.1 under a temp dir and are stopped by pid on exit.
# First, a recorder in relayguard's place checks the attributes the ACLs send.
set -euo pipefail

bin=${1:?usage: exim_e2e.sh RELAYGUARD_BIN SOURCE_DIR [EXIM_CACHE_DIR]}
src=${2:?usage: exim_e2e.sh RELAYGUARD_BIN SOURCE_DIR [EXIM_CACHE_DIR]}
cache=${3:-/var/cache/relayguard-test/exim}
bin=$(realpath "$bin")
src=$(realpath "$src")

# shellcheck source=lib.sh
source "$src/tests/e2e/lib.sh"
e2e_init e2e_exim
e2e_need swaks redis-server redis-cli

# A session (EHLO, AUTH, one message) must end within this: far below RELAYGUARD_TIMEOUT x the
# number of requests, so a pass proves relayguard answered at once instead of Exim's readsocket
# giving up (readsocket reads until EOF: a server that kept the connection open would cost
# RELAYGUARD_TIMEOUT per request).
readonly session_max_ms=4000
# RELAYGUARD_TIMEOUT for the test (the snippet's default is 5s); short, for the stuck-daemon case.
readonly readsocket_timeout_s=2
readonly alice_password=alice-secret

exim=$("$src/scripts/fetch-exim.sh" "$cache") || e2e_die "scripts/fetch-exim.sh failed"
tmp=$e2e_tmp
port_policy=$(e2e_free_port)
mkdir -p "$tmp/spool" "$tmp/log"
chown Debian-exim: "$tmp/spool" "$tmp/log" # exim drops to its user before it writes there

# --- Exim: a minimal site configuration around the contrib ACLs, wired as relayguard.conf says.
# The snippet is copied next to it: exim reads a -C configuration after dropping to its user, which
# cannot read a checkout under a private directory such as /root.
install -m 0644 "$src/contrib/exim/relayguard.conf" "$tmp/relayguard.conf"
# The authenticators have Debian-style driver names, so sasl_method must come from relayguard_auth.
cat >"$tmp/exim.conf" <<EOF
primary_hostname = mail.example.com
exim_path = $exim
spool_directory = $tmp/spool
log_file_path = $tmp/log/%slog
keep_environment =
domainlist local_domains = example.com
auth_advertise_hosts = *
tls_advertise_hosts =
acl_smtp_auth = relayguard_auth
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data

begin acl

.include $tmp/relayguard.conf

acl_check_rcpt:
  accept  hosts = :
  require acl = relayguard_rcpt
  accept  authenticated = *
  require message = 550 5.7.1 Relay not permitted (exim)
          domains = +local_domains
  accept

acl_check_data:
  require acl = relayguard_data
  accept

begin routers
begin transports

begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = \${if and{{eq{\$auth2}{alice@example.com}}{eq{\$auth3}{$alice_password}}}}
  server_set_id = \$auth2
login_server:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = \${if and{{eq{\$auth1}{alice@example.com}}{eq{\$auth2}{$alice_password}}}}
  server_set_id = \$auth1
cram_md5_server:
  driver = cram_md5
  public_name = CRAM-MD5
  server_secret = \${if eq{\$auth1}{alice@example.com}{$alice_password}fail}
  server_set_id = \$auth1
EOF
exim_cmd="$exim -C $tmp/exim.conf -DRELAYGUARD_SERVER=inet:127.0.0.1:$port_policy -DRELAYGUARD_TIMEOUT=${readsocket_timeout_s}s"
$exim_cmd -bV >"$tmp/exim-bV.log" 2>&1 || { cat "$tmp/exim-bV.log" >&2; e2e_die "exim rejects the configuration"; }

# --- What the snippet sends: a recorder in relayguard's place (perl, which swaks needs anyway)
# answers DUNNO to each request and keeps it. One session of three transactions: two recipients
# and DATA, one recipient and RSET, one recipient and DATA.
port_recorder=$(e2e_free_port)
mkdir "$tmp/recorded"
perl -MIO::Socket::INET -e '
    my ($port, $dir) = @ARGV;
    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 16,
                                  ReuseAddr => 1) or die "listen: $!";
    for (my $n = 1; my $c = $l->accept; $n++) {
        local $/;                       # readsocket half-closes: read to EOF
        my $request = <$c>;
        open(my $f, ">", sprintf("%s/%02d", $dir, $n)) or die; print $f $request; close $f;
        print $c "action=DUNNO\n\n";
        close $c;
    }' "$port_recorder" "$tmp/recorded" &
recorder_pid=$!
e2e_register_pid "$recorder_pid"
e2e_wait_port "$port_recorder" "$recorder_pid" || e2e_die "the request recorder did not start"
auth_plain=$(printf '\0alice@example.com\0%s' "$alice_password" | base64 -w0)
printf '%s\r\n' "EHLO client.test" "AUTH PLAIN $auth_plain" \
    "MAIL FROM:<alice@example.com> SIZE=321" "RCPT TO:<bob@example.net>" "RCPT TO:<carol@example.org>" \
    "DATA" "Subject: one" "" "first" "." \
    "MAIL FROM:<alice@example.com>" "RCPT TO:<dave@example.net>" "RSET" \
    "MAIL FROM:<alice@example.com>" "RCPT TO:<erin@example.net>" "DATA" "Subject: two" "" "second" "." \
    "QUIT" |
    $exim -C "$tmp/exim.conf" -DRELAYGUARD_SERVER="inet:127.0.0.1:$port_recorder" \
        -oMi 127.0.0.1.587 -bh 127.0.0.1.40001 >"$tmp/recorded.session" 2>&1 || true
e2e_stop_pid "$recorder_pid"

# attr N NAME - the value of NAME in recorded request N ("<none>" when the line is missing).
attr() {
    local file
    file=$(printf '%s/%02d' "$tmp/recorded" "$1")
    [[ -f $file ]] || { echo "<no request $1>"; return; }
    awk -v n="$2" 'index($0, n "=") == 1 { print substr($0, length(n) + 2); found = 1; exit }
                   END { if (!found) print "<none>" }' "$file"
}
# expect_attr N NAME WANT - compare one attribute of one recorded request.
recorded_bad=""
expect_attr() {
    local got
    got=$(attr "$1" "$2")
    [[ $got == "$3" ]] || recorded_bad+=$'\n'"  request $1 $2: got=\"$got\" want=\"$3\""
}
recorded_count=$(find "$tmp/recorded" -type f | wc -l)
[[ $recorded_count -eq 6 ]] || recorded_bad+=$'\n'"  requests: got=$recorded_count want=6"
for n in 1 2 3 4 5 6; do
    [[ $(sed -n 1p "$(printf '%s/%02d' "$tmp/recorded" "$n")" 2>/dev/null) == request=smtpd_access_policy ]] ||
        recorded_bad+=$'\n'"  request $n does not start with request=smtpd_access_policy"
    expect_attr $n sasl_method PLAIN # from relayguard_auth: the driver is called plain_server
    expect_attr $n sasl_username alice@example.com
    expect_attr $n sender alice@example.com
    expect_attr $n client_address 127.0.0.1
    expect_attr $n client_port 40001
    expect_attr $n server_address 127.0.0.1
    expect_attr $n server_port 587
    expect_attr $n helo_name client.test
    expect_attr $n protocol_name ESMTPA
    expect_attr $n encryption_protocol ""
    expect_attr $n policy_context exim
done
for n in 1 2 4 5; do expect_attr $n protocol_state RCPT; done
for n in 3 6; do expect_attr $n protocol_state END-OF-MESSAGE; done
expect_attr 1 recipient bob@example.net
expect_attr 1 recipient_count 0
expect_attr 1 size 321
expect_attr 2 recipient carol@example.org
expect_attr 2 recipient_count 1
expect_attr 3 recipient "" # several recipients: empty, as Postfix sends it
expect_attr 3 recipient_count 2
expect_attr 4 recipient dave@example.net
expect_attr 4 size 0
expect_attr 6 recipient erin@example.net
expect_attr 6 recipient_count 1
for n in 3 6; do
    [[ $(attr $n size) =~ ^[1-9][0-9]*$ ]] || recorded_bad+=$'\n'"  request $n size: got=\"$(attr $n size)\" want a size > 0"
    [[ $(attr $n queue_id) =~ ^[0-9A-Za-z-]{16,}$ ]] ||
        recorded_bad+=$'\n'"  request $n queue_id: got=\"$(attr $n queue_id)\" want Exim's message id"
done
# instance: one per transaction, shared by its RCPTs and its END-OF-MESSAGE.
[[ $(attr 1 instance) =~ ^[0-9a-fA-F]{40}$ ]] || recorded_bad+=$'\n'"  request 1 instance: got=\"$(attr 1 instance)\" want 40 hex digits"
expect_attr 2 instance "$(attr 1 instance)"
expect_attr 3 instance "$(attr 1 instance)"
expect_attr 6 instance "$(attr 5 instance)"
[[ $(attr 4 instance) != "$(attr 1 instance)" && $(attr 5 instance) != "$(attr 4 instance)" ]] ||
    recorded_bad+=$'\n'"  instances of the three transactions not distinct: $(attr 1 instance) $(attr 4 instance) $(attr 5 instance)"
if [[ -z $recorded_bad ]]; then
    e2e_pass attributes_sent "6 requests as expected"
else
    e2e_fail attributes_sent "$recorded_bad"$'\n'"  (session: $tmp/recorded.session)"
fi

# --- relayguard, with Redis for its rate-limit counters and overrides.
e2e_start_redis
cat >"$tmp/relayguard.toml" <<EOF
[server]
listen = ["inet:127.0.0.1:$port_policy", "unix:$tmp/relayguard.sock"]
threads = 1
shutdown_timeout = "2s"

[log]
level = "info"

[domains]
local = ["example.com"]

[checks.exempt]
networks = ["192.0.2.1/32"]

[checks.auth_required]
ports = [587]

[checks.plaintext_auth]
mechanisms = ["PLAIN", "LOGIN"]

[checks.sender_ownership]
reply = "553 5.7.1 Sender address rejected: not owned by this login (e2e)"
EOF
# No [[limit]] yet: it comes with a SIGHUP right before the rate-limit cases.
e2e_store_config >>"$tmp/relayguard.toml"
e2e_start_relayguard "$bin" "$tmp/relayguard.toml" "$port_policy"
e2e_log "up: exim $exim, relayguard on 127.0.0.1:$port_policy (tmp $tmp)"

# A session from 127.0.0.1 port 40001 to port 25, or to 587 (-oMi sets the server address).
on25=(--pipe "$exim_cmd -oMi 127.0.0.1.25 -bh 127.0.0.1.40001")
on587=(--pipe "$exim_cmd -oMi 127.0.0.1.587 -bh 127.0.0.1.40001")
alice=(--auth-user alice@example.com --auth-password "$alice_password")

# --- Unauthenticated clients on port 25: relayguard's refusals reach the client with its text
# (Exim's own relay check, "Relay not permitted (exim)", comes after relayguard's).
e2e_smtp_case relay_refused 24 '^554 5\.7\.1 Relay access denied$' "$session_max_ms" -- \
    "${on25[@]}" --from someone@example.org --to victim@example.net
e2e_smtp_case inbound_accepted 0 '^250 OK id=' "$session_max_ms" -- \
    "${on25[@]}" --from someone@example.org --to alice@example.com
e2e_smtp_case forged_local_sender_refused 24 \
    '^553 5\.7\.1 Sender address rejected: authentication required for a local sender$' "$session_max_ms" -- \
    "${on25[@]}" --from ceo@example.com --to alice@example.com

# --- The same over relayguard's UNIX socket (the other form RELAYGUARD_SERVER takes).
e2e_smtp_case unix_socket_relay_refused 24 '^554 5\.7\.1 Relay access denied$' "$session_max_ms" -- \
    --pipe "${exim_cmd/inet:127.0.0.1:$port_policy/$tmp/relayguard.sock} -oMi 127.0.0.1.25 -bh 127.0.0.1.40001" \
    --from someone@example.org --to victim@example.net

# --- Port 587: a login is required (server_port reaches relayguard).
e2e_smtp_case submission_unauthenticated_refused 24 '^530 5\.7\.0 Authentication required$' "$session_max_ms" -- \
    "${on587[@]}" --from someone@example.org --to alice@example.com

# --- Logged-in clients. No TLS in -bh sessions: CRAM-MD5 (no password on the wire) passes the
# plaintext_auth check, PLAIN and LOGIN do not.
e2e_smtp_case owned_sender_accepted 0 '^250 OK id=' "$session_max_ms" -- \
    "${on587[@]}" --auth CRAM-MD5 "${alice[@]}" --from alice@example.com \
    --to bob@example.net,carol@example.org
e2e_smtp_case unowned_sender_refused 24 \
    '^553 5\.7\.1 Sender address rejected: not owned by this login \(e2e\)$' "$session_max_ms" -- \
    "${on587[@]}" --auth CRAM-MD5 "${alice[@]}" --from ceo@example.com --to bob@example.net
e2e_smtp_case plaintext_auth_plain_refused 24 \
    '^538 5\.7\.11 Encryption required for requested authentication mechanism$' "$session_max_ms" -- \
    "${on587[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com --to bob@example.net
e2e_smtp_case plaintext_auth_login_refused 24 '^538 5\.7\.11 ' "$session_max_ms" -- \
    "${on587[@]}" --auth LOGIN "${alice[@]}" --from alice@example.com --to bob@example.net

# --- The other verbs relayguard may answer: access(5) keywords and 4xx codes, after a SIGHUP
# reload to replies that use them.
sed -e 's|^local = \["example.com"\]$|&\n\n[checks.relay]\nreply = "DEFER Relaying is paused (e2e)"|' \
    -e 's|^ports = \[587\]$|&\nreply = "451 4.7.0 Log in first (e2e)"|' \
    -e 's|^reply = "553 5.7.1 Sender address rejected: not owned by this login (e2e)"$|&\nunauthenticated_reply = "REJECT Forged local sender (e2e)"|' \
    "$tmp/relayguard.toml" >"$tmp/relayguard.toml.new"
mv "$tmp/relayguard.toml.new" "$tmp/relayguard.toml"
kill -HUP "$e2e_relayguard_pid"
for ((i = 0; i < 100; i++)); do
    reply=$(e2e_policy_query "$port_policy" $'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\nsender=a@example.org\nrecipient=b@example.net') || reply=""
    [[ $reply == "action=DEFER Relaying is paused (e2e)" ]] && break
    sleep 0.05
done
[[ $reply == "action=DEFER Relaying is paused (e2e)" ]] || e2e_die "SIGHUP: new config not in effect (got '$reply')"
e2e_smtp_case keyword_defer_is_450 0 '^450 4\.7\.1 Relaying is paused \(e2e\)$' "$session_max_ms" -- \
    "${on25[@]}" --from someone@example.org --to victim@example.net,alice@example.com
e2e_smtp_case keyword_reject_is_554 24 '^554 5\.7\.1 Forged local sender \(e2e\)$' "$session_max_ms" -- \
    "${on25[@]}" --from ceo@example.com --to alice@example.com
e2e_smtp_case code_4xx_is_defer 24 '^451 4\.7\.0 Log in first \(e2e\)$' "$session_max_ms" -- \
    "${on587[@]}" --from someone@example.org --to alice@example.com

# --- Rate limits, counted in Redis: relayguard's "450 4.7.1 ..." becomes a defer of the RCPT
# past the limit with relayguard's text, the limit holds for the next message, and an override
# written into Redis lets alice's next message through at once (no reload, no restart).
e2e_add_login_limit "$tmp/relayguard.toml" "$port_policy"
limit_reply_re="^450 4\.7\.1 Rate limit $e2e_limit_name exceeded, retry in [0-9]+ seconds\$"
e2e_smtp_case rate_limit_defers_recipient_past_limit 0 "$limit_reply_re" "$session_max_ms" -- \
    "${on587[@]}" --auth CRAM-MD5 "${alice[@]}" --from alice@example.com \
    --to rcpt1@example.net,rcpt2@example.net,rcpt3@example.net,rcpt4@example.net
e2e_reply_count rate_limit_accepts_recipients_up_to_limit '^250 Accepted$' "$e2e_limit_count"
e2e_reply_count rate_limit_defers_one_recipient '^450 ' 1
e2e_reply_count rate_limit_message_accepted '^250 OK id=' 1
e2e_check_retry_after rate_limit_retry_after
e2e_smtp_case rate_limit_holds_for_next_message 24 "$limit_reply_re" "$session_max_ms" -- \
    "${on587[@]}" --auth CRAM-MD5 "${alice[@]}" --from alice@example.com --to rcpt5@example.net
e2e_check_limit_state rate_limit_counted_in_redis alice@example.com
# alice has used 3 recipients: raised to 100 an hour she has 97 left, so both go through.
e2e_set_override alice@example.com 100/1h
e2e_smtp_case rate_limit_override_raises_limit 0 '^250 OK id=' "$session_max_ms" -- \
    "${on587[@]}" --auth CRAM-MD5 "${alice[@]}" --from alice@example.com \
    --to rcpt6@example.net,rcpt7@example.net
e2e_reply_count rate_limit_override_accepts_all_recipients '^250 Accepted$' 2

# --- relayguard stuck (SIGSTOP: the kernel still accepts connections, nobody answers): each
# request costs RELAYGUARD_TIMEOUT, then the failure choice of relayguard.conf applies.
kill -STOP "$e2e_relayguard_pid"
e2e_smtp_case stuck_unauthenticated_fails_open 0 '^250 OK id=' \
    $(( (2 * readsocket_timeout_s + 2) * 1000 )) -- \
    "${on25[@]}" --from someone@example.org --to alice@example.com
if [[ $e2e_last_ms -lt $(( 2 * readsocket_timeout_s * 1000 )) ]]; then
    e2e_fail stuck_waits_for_timeout "session took got=${e2e_last_ms}ms want>=$(( 2 * readsocket_timeout_s * 1000 ))ms (RCPT and DATA each wait)"
fi
kill -CONT "$e2e_relayguard_pid"

# --- relayguard stopped: refused connections, no wait.
e2e_stop_relayguard
e2e_smtp_case down_unauthenticated_fails_open 0 '^250 OK id=' "$session_max_ms" -- \
    "${on25[@]}" --from someone@example.org --to alice@example.com
e2e_smtp_case down_relay_still_refused 24 '^550 5\.7\.1 Relay not permitted \(exim\)$' "$session_max_ms" -- \
    "${on25[@]}" --from someone@example.org --to victim@example.net
e2e_smtp_case down_authenticated_fails_closed 24 '^451 4\.3\.5 Policy service unavailable; try again later$' \
    "$session_max_ms" -- \
    "${on587[@]}" --auth CRAM-MD5 "${alice[@]}" --from alice@example.com --to bob@example.net
# exim -bh writes its log lines to stderr ("LOG: ..."), which swaks passes on into the transcript.
grep -q '^LOG: .*Warning: relayguard at inet:127.0.0.1:[0-9]* did not answer within 2s$' "$e2e_last_transcript" ||
    e2e_fail down_is_logged "no 'relayguard ... did not answer within' log line in $e2e_last_transcript"

e2e_finish
