#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# postfix_e2e.sh - relayguard behind a real Postfix 3.7 with Dovecot SASL, driven with swaks.
#
# Usage: postfix_e2e.sh RELAYGUARD_BIN SOURCE_DIR [unix|inet]. Runs as root; starts a private
# Postfix (own config and queue dirs), Dovecot (auth only), Redis and relayguard under a temp
# dir, all on 127.0.0.1, with contrib/postfix/main.cf and master.cf merged in mechanically (ports,
# chroot, and in inet mode the policy endpoint); stops them by pid on exit. Exit 77 when not root.
set -euo pipefail

bin=${1:?usage: postfix_e2e.sh RELAYGUARD_BIN SOURCE_DIR [unix|inet]}
src=${2:?usage: postfix_e2e.sh RELAYGUARD_BIN SOURCE_DIR [unix|inet]}
mode=${3:-unix}
[[ $mode == unix || $mode == inet ]] || { echo "mode must be unix or inet" >&2; exit 2; }
bin=$(realpath "$bin")
src=$(realpath "$src")

# shellcheck source=lib.sh
source "$src/tests/e2e/lib.sh"
e2e_init "e2e_postfix_$mode"
e2e_need postfix postconf swaks dovecot openssl redis-server redis-cli

# A normal session (EHLO, optional TLS and AUTH, one message) must end within this.
readonly session_max_ms=10000
readonly alice_password=alice-secret

tmp=$e2e_tmp
cfg=$tmp/postfix           # config_directory: absolute, or "postfix reload/stop" fail silently
queue=$tmp/queue
port_smtp=$(e2e_free_port)        # stands in for 25
port_submission=$(e2e_free_port)  # for 587
port_submissions=$(e2e_free_port) # for 465
port_plaintext=$(e2e_free_port)   # submission with TLS made optional (plaintext_auth cases)
port_policy=$(e2e_free_port)      # relayguard's TCP listener
mkdir -p "$cfg" "$queue" "$tmp/data" "$tmp/tls" "$tmp/dovecot"
chown postfix "$tmp/data" # data_directory belongs to mail_owner

# --- TLS key and certificate for STARTTLS and port 465 (self-signed; swaks does not verify).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=mail.example.com -keyout "$tmp/tls/key.pem" -out "$tmp/tls/cert.pem" 2>/dev/null

# --- Dovecot: SASL only, users in a passwd-file.
printf 'alice@example.com:{PLAIN}%s\n' "$alice_password" >"$tmp/dovecot/users"
cat >"$tmp/dovecot/dovecot.conf" <<EOF
base_dir = $tmp/dovecot/run
state_dir = $tmp/dovecot/state
log_path = $tmp/dovecot/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5
passdb {
  driver = passwd-file
  args = $tmp/dovecot/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup
}
service auth {
  unix_listener $tmp/dovecot/auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
dovecot -F -c "$tmp/dovecot/dovecot.conf" >>"$tmp/dovecot/stdout.log" 2>&1 &
e2e_register_pid $!
dovecot_pid=$!
for ((i = 0; i < 200; i++)); do
    [[ -S $tmp/dovecot/auth-postfix ]] && break
    e2e_alive "$dovecot_pid" || break
    sleep 0.05
done
[[ -S $tmp/dovecot/auth-postfix ]] || { cat "$tmp/dovecot/"*.log >&2; e2e_die "dovecot did not start"; }

# --- Postfix: a base configuration for a private instance, then the contrib snippets.
# Mail for example.com (the local domain, relayed) and everything else is accepted and then
# discarded: the test is about what smtpd accepts, and nothing leaves the machine.
cat >"$cfg/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $queue
data_directory = $tmp/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $tmp/maillog
maillog_file_prefixes = $tmp
myhostname = mail.example.com
mydomain = example.com
myorigin = \$mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Not 127.0.0.1: the swaks client must be an outsider for the relay cases to mean anything.
mynetworks = 192.0.2.1/32
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
local_transport = discard:
relay_domains = example.com
relay_recipient_maps =
relay_transport = discard:
default_transport = discard:
smtp_dns_support_level = disabled
smtpd_sasl_type = dovecot
smtpd_sasl_path = $tmp/dovecot/auth-postfix
smtpd_tls_chain_files = $tmp/tls/key.pem, $tmp/tls/cert.pem
smtpd_tls_security_level = may
biff = no
EOF
{
    echo
    echo "# ---- contrib/postfix/main.cf ----"
    if [[ $mode == inet ]]; then
        grep -q '^relayguard_service = unix:relayguard/policy$' "$src/contrib/postfix/main.cf" ||
            e2e_die "contrib/postfix/main.cf has no 'relayguard_service = unix:relayguard/policy' line"
        sed "s|^relayguard_service = unix:relayguard/policy\$|relayguard_service = inet:127.0.0.1:$port_policy|" \
            "$src/contrib/postfix/main.cf"
    else
        cat "$src/contrib/postfix/main.cf"
    fi
} >>"$cfg/main.cf"

# adapt_master NAME=ADDRESS... - the contrib master.cf entries named on the command line, renamed
# to ADDRESS (a loopback port) and without chroot (a private instance has no chroot jail set up).
adapt_master() {
    awk -v map="$*" '
        BEGIN { n = split(map, pairs, " "); for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); to[kv[1]] = kv[2] } }
        /^#/ || /^[[:space:]]*$/ { next }
        /^[^[:space:]]/ { keep = ($1 in to); if (keep) { $1 = to[$1]; $5 = "n"; print } ; next }
        keep { print }
    ' "$src/contrib/postfix/master.cf"
}
{
    cat <<EOF
127.0.0.1:$port_smtp inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
# ---- contrib/postfix/master.cf ----
EOF
    adapt_master "submission=127.0.0.1:$port_submission" "submissions=127.0.0.1:$port_submissions"
    echo "# ---- contrib submission entry with TLS optional, for the plaintext_auth cases ----"
    adapt_master "submission=127.0.0.1:$port_plaintext" |
        sed -e 's|smtpd_tls_security_level=encrypt|smtpd_tls_security_level=may|' \
            -e 's|smtpd_tls_auth_only=yes|smtpd_tls_auth_only=no|' \
            -e 's|syslog_name=postfix/submission$|syslog_name=postfix/submission-plaintext|'
} >"$cfg/master.cf"
grep -q "^127.0.0.1:$port_submissions " "$cfg/master.cf" ||
    e2e_die "contrib/postfix/master.cf has no submissions entry"
grep -q 'smtpd_tls_auth_only=no' "$cfg/master.cf" ||
    e2e_die "contrib/postfix/master.cf submission entry has no smtpd_tls_auth_only=yes to relax"

# postfix check writes its complaints to stderr; any warning about our config is a failure.
postfix -c "$cfg" check 2>"$tmp/postfix-check.log" || { cat "$tmp/postfix-check.log" >&2; e2e_die "postfix check failed"; }
if [[ -s $tmp/postfix-check.log ]]; then
    cat "$tmp/postfix-check.log" >&2
    e2e_die "postfix check warns about the configuration"
fi
e2e_stop_cmds+=("postfix -c '$cfg' stop")
postfix -c "$cfg" start >"$tmp/postfix-start.log" 2>&1 || { cat "$tmp/postfix-start.log" "$tmp/maillog" >&2; e2e_die "postfix start failed"; }
postfix_pid=$(sed -n '1s/[^0-9]//gp' "$queue/pid/master.pid")
e2e_register_pid "$postfix_pid"
for port in "$port_smtp" "$port_submission" "$port_submissions" "$port_plaintext"; do
    e2e_wait_port "$port" "$postfix_pid" || { cat "$tmp/maillog" >&2; e2e_die "postfix does not listen on $port"; }
done

# --- Redis, for relayguard's rate-limit counters and overrides.
e2e_start_redis

# --- relayguard: listens where the snippet says (the UNIX socket inside the queue directory, as
# contrib/postfix/main.cf documents it, or TCP), plus TCP for the readiness probe. In unix mode
# it is set up as the snippet says for a hand install: started as root, it binds in a directory
# of its user's that only Postfix may enter, then runs as that user ("nobody" stands in for
# "relayguard", which the package creates); in inet mode it stays root (--allow-root).
listen="\"inet:127.0.0.1:$port_policy\""
rg_user=""
user_line=""
if [[ $mode == unix ]]; then
    rg_user=nobody
    user_line="user = \"$rg_user\""
    install -d -o "$rg_user" -g postfix -m 0750 "$queue/relayguard"
    listen+=", \"unix:$queue/relayguard/policy\""
fi
cat >"$tmp/relayguard.toml" <<EOF
[server]
listen = [$listen]
threads = 1
shutdown_timeout = "2s"
socket_mode = "0666"
$user_line

[log]
level = "info"

[domains]
local = ["example.com"]

[checks.exempt]
networks = ["192.0.2.1/32"]

[checks.auth_required]
policy_contexts = ["submission"]

[checks.plaintext_auth]
mechanisms = ["PLAIN", "LOGIN"]

[checks.sender_ownership]
reply = "553 5.7.1 Sender address rejected: not owned by this login (e2e)"
EOF
# No [[limit]] yet: the cases above the rate-limit ones run without limits (alice uses more
# recipients in them than the limit allows); the limit comes with a SIGHUP right before its cases.
e2e_store_config >>"$tmp/relayguard.toml"
e2e_start_relayguard "$bin" "$tmp/relayguard.toml" "$port_policy"
if [[ $mode == unix ]]; then
    [[ -S $queue/relayguard/policy ]] || e2e_die "no socket $queue/relayguard/policy"
    [[ $(stat -c %a "$queue/relayguard/policy") == 666 ]] ||
        e2e_die "socket mode is $(stat -c %a "$queue/relayguard/policy"), want 666"
    # Dropped for good: real, effective, saved and filesystem uid all the user's.
    got_uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$e2e_relayguard_pid/status")
    want_uid=$(id -u "$rg_user")
    [[ $got_uids == "$want_uid $want_uid $want_uid $want_uid" ]] ||
        e2e_die "relayguard uids got=$got_uids want=$want_uid (x4)"
fi
e2e_log "up: smtp=$port_smtp submission=$port_submission submissions=$port_submissions plaintext=$port_plaintext policy=$mode (tmp $tmp)"

smtp=(--server 127.0.0.1 --port "$port_smtp")
submission=(--server 127.0.0.1 --port "$port_submission" --tls)
submissions=(--server 127.0.0.1 --port "$port_submissions" --tlsc)
plaintext=(--server 127.0.0.1 --port "$port_plaintext")
alice=(--auth-user alice@example.com --auth-password "$alice_password")

# --- Port 25: unauthenticated clients.
e2e_smtp_case smtp_relay_refused 24 '^554 5\.7\.1 .*Relay access denied' "$session_max_ms" -- \
    "${smtp[@]}" --from someone@example.org --to victim@example.net
e2e_smtp_case smtp_inbound_accepted 0 '^250 .*queued as' "$session_max_ms" -- \
    "${smtp[@]}" --from someone@example.org --to alice@example.com
e2e_smtp_case smtp_forged_local_sender_refused 24 \
    '^553 5\.7\.1 <alice@example\.com>: Recipient address rejected: Sender address rejected: authentication required for a local sender$' "$session_max_ms" -- \
    "${smtp[@]}" --from ceo@example.com --to alice@example.com

# --- Submission (587 STARTTLS, 465 implicit TLS), SASL through Dovecot.
e2e_smtp_case submission_owned_sender_accepted 0 '^250 .*queued as' "$session_max_ms" -- \
    "${submission[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com --to bob@example.net
e2e_smtp_case submission_several_recipients_accepted 0 '^250 .*queued as' "$session_max_ms" -- \
    "${submission[@]}" --auth LOGIN "${alice[@]}" --from alice@example.com \
    --to bob@example.net,carol@example.org,dave@example.com
e2e_smtp_case submission_unowned_sender_refused 24 \
    '^553 5\.7\.1 <bob@example\.net>: Recipient address rejected: Sender address rejected: not owned by this login \(e2e\)$' "$session_max_ms" -- \
    "${submission[@]}" --auth PLAIN "${alice[@]}" --from ceo@example.com --to bob@example.net
e2e_smtp_case submission_unauthenticated_refused 24 '^554 5\.7\.1 ' "$session_max_ms" -- \
    "${submission[@]}" --from alice@example.com --to bob@example.net
e2e_smtp_case submissions_owned_sender_accepted 0 '^250 .*queued as' "$session_max_ms" -- \
    "${submissions[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com --to bob@example.net

# --- Submission with TLS optional: relayguard's plaintext_auth check refuses PLAIN and LOGIN
# logins made without TLS; CRAM-MD5 does not send the password and is fine.
e2e_smtp_case plaintext_auth_plain_refused 24 \
    '^538 5\.7\.11 <bob@example\.net>: Recipient address rejected: Encryption required for requested authentication mechanism$' "$session_max_ms" -- \
    "${plaintext[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com --to bob@example.net
e2e_smtp_case plaintext_auth_login_refused 24 '^538 5\.7\.11 ' "$session_max_ms" -- \
    "${plaintext[@]}" --auth LOGIN "${alice[@]}" --from alice@example.com --to bob@example.net
e2e_smtp_case plaintext_auth_cram_md5_accepted 0 '^250 .*queued as' "$session_max_ms" -- \
    "${plaintext[@]}" --auth CRAM-MD5 "${alice[@]}" --from alice@example.com --to bob@example.net

# --- Rate limits, counted in Redis: the limit's reply reaches the client at the RCPT past the
# limit (Postfix passes "450 4.7.1 text" on with its prefix), the limit holds for the next
# message, and an override written into Redis lets alice's next message through at once.
e2e_add_login_limit "$tmp/relayguard.toml" "$port_policy"
limit_text_re="Recipient address rejected: Rate limit $e2e_limit_name exceeded, retry in [0-9]+ seconds\$"
e2e_smtp_case rate_limit_defers_recipient_past_limit 0 "^450 4\.7\.1 <rcpt4@example\.net>: $limit_text_re" \
    "$session_max_ms" -- \
    "${submission[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com \
    --to rcpt1@example.net,rcpt2@example.net,rcpt3@example.net,rcpt4@example.net
e2e_reply_count rate_limit_accepts_recipients_up_to_limit '^250 2\.1\.5 ' "$e2e_limit_count"
e2e_reply_count rate_limit_defers_one_recipient '^450 4\.7\.1 ' 1
e2e_reply_count rate_limit_message_queued '^250 .*queued as' 1
e2e_check_retry_after rate_limit_retry_after
e2e_smtp_case rate_limit_holds_for_next_message 24 "^450 4\.7\.1 <rcpt5@example\.net>: $limit_text_re" \
    "$session_max_ms" -- \
    "${submission[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com --to rcpt5@example.net
e2e_check_limit_state rate_limit_counted_in_redis alice@example.com
# alice has used 3 recipients: raised to 100 an hour she has 97 left, so both go through.
e2e_set_override alice@example.com 100/1h
e2e_smtp_case rate_limit_override_raises_limit 0 '^250 .*queued as' "$session_max_ms" -- \
    "${submission[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com \
    --to rcpt6@example.net,rcpt7@example.net
e2e_reply_count rate_limit_override_accepts_all_recipients '^250 2\.1\.5 ' 2

# --- relayguard stopped: Postfix applies the default_action chosen in contrib/postfix/main.cf.
e2e_stop_relayguard
e2e_smtp_case down_smtp_fails_open 0 '^250 .*queued as' "$session_max_ms" -- \
    "${smtp[@]}" --from ceo@example.com --to alice@example.com
e2e_smtp_case down_smtp_relay_still_refused 24 '^554 5\.7\.1 .*Relay access denied' "$session_max_ms" -- \
    "${smtp[@]}" --from someone@example.org --to victim@example.net
e2e_smtp_case down_submission_fails_closed 24 \
    '^451 4\.3\.5 .*Policy service unavailable; try again later$' "$session_max_ms" -- \
    "${submission[@]}" --auth PLAIN "${alice[@]}" --from alice@example.com --to bob@example.net

e2e_finish
