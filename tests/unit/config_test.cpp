// SPDX-License-Identifier: MIT
// config_test.cpp - load_config()/parse_config(): every value of a full file, the exact text of
// each error (one file per message in tests/data/config/), the warnings, the example config in
// contrib/, and the value parsers behind them (config_values.hpp).
#include <relayguard/config.hpp>

#include <relayguard/action.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "config/config_values.hpp"
#include "testing/test_support.hpp"

namespace relayguard {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

fs::path config_dir() { return testing::test_data_dir() / "config"; }

constexpr std::string_view listen_only = "[server]\nlisten = [\"inet:127.0.0.1:10033\"]\n";

// error_of - the error text of `text` as file "t.toml", or "(no error)".
std::string error_of(std::string_view text)
{
    auto r = parse_config(text, "t.toml");
    return r ? std::string("(no error)") : r.error().to_string();
}

// warnings_of - the warnings of `text` as file "t.toml"; fails the test on an error.
std::vector<std::string> warnings_of(std::string_view text)
{
    std::vector<std::string> warnings;
    auto r = parse_config(text, "t.toml", &warnings);
    if (!r) ADD_FAILURE() << "unexpected error: " << r.error().to_string();
    return warnings;
}

std::string join_lines(const std::vector<std::string>& lines)
{
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

TEST(ConfigError, ToStringLeavesOutEmptyParts)
{
    struct Case {
        ConfigError error;
        std::string want;
    };
    const Case cases[] = {
        {{"a.toml", 3, "server.threads", "bad"}, "a.toml:3: server.threads: bad"},
        {{"a.toml", 3, "", "bad"}, "a.toml:3: bad"},
        {{"a.toml", 0, "", "cannot open"}, "a.toml: cannot open"},
        {{"a.toml", 0, "server.listen", "missing"}, "a.toml: server.listen: missing"},
        {{"", 7, "log.level", "bad"}, "line 7: log.level: bad"},
    };
    for (const auto& c : cases) EXPECT_EQ(c.error.to_string(), c.want) << "want=" << c.want;
}

TEST(LoadConfig, ReadsEveryKeyOfTheGoodFile)
{
    const std::string path = config_dir() / "good.toml";
    std::vector<std::string> warnings;
    auto r = load_config(path, &warnings);
    ASSERT_TRUE(r) << r.error().to_string();
    const Config& c = *r;
    EXPECT_EQ(c.path, path);
    EXPECT_TRUE(warnings.empty()) << join_lines(warnings);

    using Kind = Endpoint::Kind;
    const std::vector<Endpoint> want_listen = {
        {Kind::inet, "127.0.0.1", 10033, "", "inet:127.0.0.1:10033"},
        {Kind::inet, "::1", 10034, "", "inet:[::1]:10034"},
        {Kind::inet, "*", 10035, "", "inet:*:10035"},
        {Kind::unix_socket, "", 0, "/run/relayguard/policy.sock", "unix:/run/relayguard/policy.sock"},
    };
    ASSERT_EQ(c.server.listen.size(), want_listen.size());
    for (std::size_t i = 0; i < want_listen.size(); ++i)
        EXPECT_EQ(c.server.listen[i], want_listen[i]) << "listener " << i << " got=" << c.server.listen[i].text
                                                      << " want=" << want_listen[i].text;
    EXPECT_EQ(c.server.threads, 1u);
    EXPECT_EQ(c.server.max_connections, 512u);
    EXPECT_EQ(c.server.idle_timeout, 15min);
    EXPECT_EQ(c.server.request_timeout, 2500ms);
    EXPECT_EQ(c.server.shutdown_timeout, 1min);
    EXPECT_EQ(c.server.socket_mode, 0660u);
    EXPECT_EQ(c.server.socket_owner, "relayguard");
    EXPECT_EQ(c.server.socket_group, "postfix");
    EXPECT_EQ(c.server.user, "relayguard");
    EXPECT_EQ(c.server.group, "mail");
    EXPECT_TRUE(c.server.allow_root);

    EXPECT_EQ(c.protocol.max_line_bytes, 2048u);
    EXPECT_EQ(c.protocol.max_request_bytes, 65536u);
    EXPECT_EQ(c.protocol.max_attributes, 64u);

    EXPECT_EQ(c.log.target, LogConfig::Target::syslog);
    EXPECT_EQ(c.log.level, LogConfig::Level::debug);

    EXPECT_TRUE(c.address.local_part_case_sensitive);
    EXPECT_EQ(c.address.recipient_delimiter, "+-");

    EXPECT_EQ(c.domains.local, (std::vector<std::string>{"example.com", ".example.net", "xn--bcher-kva.example"}));
    EXPECT_EQ(c.domains.file, "/etc/relayguard/local_domains");

    EXPECT_TRUE(c.exempt.enabled);
    std::vector<std::string> nets;
    for (const auto& n : c.exempt.networks.networks()) nets.push_back(n.to_string());
    EXPECT_EQ(nets, (std::vector<std::string>{"127.0.0.0/8", "::1/128", "192.0.2.0/24", "2001:db8::/32"}));
    EXPECT_EQ(c.exempt.logins, std::vector<std::string>{"monitor@example.com"});

    EXPECT_TRUE(c.auth_required.enabled);
    EXPECT_TRUE(c.auth_required.shadow);
    EXPECT_EQ(c.auth_required.ports, (std::vector<std::uint16_t>{587, 465, 2525}));
    EXPECT_EQ(c.auth_required.policy_contexts, (std::vector<std::string>{"submission", "smtps"}));
    EXPECT_EQ(c.auth_required.reply, "550 5.7.0 Log in first");

    EXPECT_FALSE(c.plaintext_auth.enabled);
    EXPECT_FALSE(c.plaintext_auth.shadow);
    EXPECT_EQ(c.plaintext_auth.mechanisms, (std::vector<std::string>{"PLAIN", "LOGIN", "XOAUTH2"}));
    EXPECT_EQ(c.plaintext_auth.reply, "DEFER_IF_PERMIT Use TLS");

    EXPECT_TRUE(c.relay.enabled);
    EXPECT_TRUE(c.relay.shadow);
    EXPECT_EQ(c.relay.reply, "REJECT Relaying denied");

    const auto& so = c.sender_ownership;
    EXPECT_TRUE(so.enabled);
    EXPECT_FALSE(so.shadow);
    EXPECT_EQ(so.reply, "553 5.7.1 Not your address");
    EXPECT_EQ(so.unauthenticated_reply, "553 5.7.1 Log in to send as a local address");
    EXPECT_EQ(so.null_sender_reply, "550 5.7.1 No bounces from users");
    EXPECT_FALSE(so.login_owns_itself);
    EXPECT_TRUE(so.allow_null_sender_authenticated);
    EXPECT_EQ(so.map_file, "/etc/relayguard/sender_logins");
    EXPECT_EQ(so.any_sender_logins, (std::vector<std::string>{"postmaster@example.com", "mailer"}));

    EXPECT_TRUE(c.rate_limits.enabled);
    EXPECT_EQ(c.rate_limits.hooked_at,
              (std::vector<ProtocolState>{ProtocolState::mail, ProtocolState::rcpt, ProtocolState::end_of_message}));

    ASSERT_EQ(c.limits.size(), 3u);
    const LimitConfig& l0 = c.limits[0];
    EXPECT_EQ(l0.name, "login_messages");
    EXPECT_EQ(l0.key, LimitKey::sasl_username);
    EXPECT_EQ(l0.unit, LimitUnit::messages);
    EXPECT_EQ(l0.rates, (RateSpec{RateSpec::Kind::rates, {{100, 60s}, {1000, 3600s}}}));
    EXPECT_EQ(l0.scope, LimitScope::any);
    EXPECT_TRUE(l0.enabled);
    EXPECT_FALSE(l0.shadow);
    EXPECT_FALSE(l0.applies_to_exempt);
    EXPECT_EQ(l0.prefix_v4, 32u);
    EXPECT_EQ(l0.prefix_v6, 64u);
    EXPECT_EQ(l0.reply, default_limit_reply);

    const LimitConfig& l1 = c.limits[1];
    EXPECT_EQ(l1.name, "client-net_rcpt2");
    EXPECT_EQ(l1.key, LimitKey::client_address);
    EXPECT_EQ(l1.unit, LimitUnit::recipients);
    // Sorted by period, whatever order the file has them in.
    EXPECT_EQ(l1.rates, (RateSpec{RateSpec::Kind::rates, {{50, 30s}, {500, 3600s}}}));
    EXPECT_EQ(l1.scope, LimitScope::unauthenticated);
    EXPECT_FALSE(l1.enabled);
    EXPECT_FALSE(l1.shadow);
    EXPECT_TRUE(l1.applies_to_exempt);
    EXPECT_EQ(l1.prefix_v4, 24u);
    EXPECT_EQ(l1.prefix_v6, 48u);
    EXPECT_EQ(l1.reply, "DEFER_IF_PERMIT Slow down ({limit}), retry in {retry_after}s");

    const LimitConfig& l2 = c.limits[2];
    EXPECT_EQ(l2.name, "sender_bytes");
    EXPECT_EQ(l2.key, LimitKey::sender);
    EXPECT_EQ(l2.unit, LimitUnit::bytes);
    EXPECT_EQ(format_rate_spec(l2.rates), "0");
    EXPECT_EQ(l2.scope, LimitScope::authenticated);
    EXPECT_TRUE(l2.enabled);
    EXPECT_TRUE(l2.shadow);
    EXPECT_EQ(l2.reply, "452 4.5.3 Too much mail");

    const StoreConfig& st = c.store;
    EXPECT_EQ(st.type, StoreConfig::Type::redis);
    EXPECT_EQ(st.on_error, StoreConfig::OnError::defer);
    EXPECT_EQ(st.defer_reply, "DEFER Try again later");
    EXPECT_EQ(st.key_prefix, "site1:rg:");
    EXPECT_EQ(st.instance_ttl, 90min);
    EXPECT_EQ(st.redis.address, "tls:[2001:db8::6]:6380");
    EXPECT_EQ(st.redis.username, "relayguard");
    EXPECT_EQ(st.redis.password, "s3cret");
    EXPECT_EQ(st.redis.database, 3u);
    EXPECT_EQ(st.redis.command_timeout, 20ms);
    EXPECT_EQ(st.redis.connect_timeout, 2s);
    EXPECT_EQ(st.redis.tls_ca_file, "/etc/ssl/redis-ca.pem");
    EXPECT_EQ(st.redis.tls_cert_file, "/etc/relayguard/redis.crt");
    EXPECT_EQ(st.redis.tls_key_file, "/etc/relayguard/redis.key");
    EXPECT_EQ(st.redis.tls_server_name, "redis.example.net");
    EXPECT_TRUE(st.redis.tls_verify);

    ASSERT_TRUE(c.metrics.listen);
    EXPECT_EQ(*c.metrics.listen, (Endpoint{Kind::inet, "::1", 9733, "", "inet:[::1]:9733"}));

    EXPECT_TRUE(c.suspended.enabled);
    EXPECT_TRUE(c.suspended.shadow);
    EXPECT_EQ(c.suspended.reply, "550 5.7.1 Login suspended");

    const CompromiseConfig& cc = c.compromise;
    EXPECT_TRUE(cc.enabled);
    EXPECT_EQ(cc.window, 2h);
    EXPECT_EQ(cc.ipv4_prefix, 16u);
    EXPECT_EQ(cc.ipv6_prefix, 64u);
    EXPECT_TRUE(cc.track_recipient_domains);
    EXPECT_EQ(cc.hold_reply, "HOLD under review");
    EXPECT_EQ(cc.suspend_duration, 24h);
    EXPECT_TRUE(cc.applies_to_exempt);
    struct WantRung {
        const char* name;
        const LadderRung& got;
        LadderRung want;
    };
    const WantRung rungs[] = {{"warn", cc.warn, {3, 20, 0, false}},
                              {"hold", cc.hold, {6, 0, 5, true}},
                              {"suspend", cc.suspend, {6, 50, 10, false}}};
    for (const auto& r : rungs) {
        EXPECT_EQ(r.got.networks, r.want.networks) << r.name;
        EXPECT_EQ(r.got.recipient_domains, r.want.recipient_domains) << r.name;
        EXPECT_EQ(r.got.rate_refusals, r.want.rate_refusals) << r.name;
        EXPECT_EQ(r.got.shadow, r.want.shadow) << r.name;
    }

    EXPECT_EQ(c.events.channel, "");
    EXPECT_EQ(c.events.command, "/usr/local/bin/page-oncall");
    EXPECT_EQ(c.events.command_timeout, 2500ms);
    EXPECT_EQ(c.events.queue, 50u);
}

TEST(LoadConfig, ContribExampleLoadsWithoutErrorsOrWarnings)
{
    const std::string path = fs::path(RELAYGUARD_SOURCE_DIR) / "contrib" / "relayguard.toml";
    std::vector<std::string> warnings;
    auto r = load_config(path, &warnings);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_TRUE(warnings.empty()) << join_lines(warnings);
    // What the comments there call defaults must be the defaults.
    const Config defaults;
    EXPECT_EQ(r->server.max_connections, defaults.server.max_connections);
    EXPECT_EQ(r->server.idle_timeout, defaults.server.idle_timeout);
    EXPECT_EQ(r->server.request_timeout, defaults.server.request_timeout);
    EXPECT_EQ(r->server.shutdown_timeout, defaults.server.shutdown_timeout);
    EXPECT_EQ(r->server.socket_mode, defaults.server.socket_mode);
    EXPECT_EQ(r->protocol.max_line_bytes, defaults.protocol.max_line_bytes);
    EXPECT_EQ(r->protocol.max_request_bytes, defaults.protocol.max_request_bytes);
    EXPECT_EQ(r->protocol.max_attributes, defaults.protocol.max_attributes);
    EXPECT_EQ(r->auth_required.reply, defaults.auth_required.reply);
    EXPECT_EQ(r->plaintext_auth.reply, defaults.plaintext_auth.reply);
    EXPECT_EQ(r->relay.reply, defaults.relay.reply);
    EXPECT_EQ(r->sender_ownership.reply, defaults.sender_ownership.reply);
    EXPECT_EQ(r->sender_ownership.unauthenticated_reply, defaults.sender_ownership.unauthenticated_reply);
    EXPECT_EQ(r->sender_ownership.null_sender_reply, defaults.sender_ownership.null_sender_reply);
    EXPECT_EQ(r->rate_limits.enabled, defaults.rate_limits.enabled);
    EXPECT_EQ(r->rate_limits.hooked_at, defaults.rate_limits.hooked_at);
    EXPECT_EQ(r->store.type, StoreConfig::Type::embedded); // the quick start needs no Redis
    EXPECT_EQ(r->store.type, defaults.store.type);
    EXPECT_EQ(r->store.on_error, defaults.store.on_error);
    EXPECT_EQ(r->store.defer_reply, defaults.store.defer_reply);
    EXPECT_EQ(r->store.key_prefix, defaults.store.key_prefix);
    EXPECT_EQ(r->store.instance_ttl, defaults.store.instance_ttl);
    EXPECT_EQ(defaults.store.redis.command_timeout, 50ms); // what the commented-out [store.redis] says
    EXPECT_EQ(r->server.user, defaults.server.user);
    EXPECT_EQ(r->server.group, defaults.server.group);
    EXPECT_EQ(r->server.allow_root, defaults.server.allow_root);
    EXPECT_EQ(r->suspended.enabled, defaults.suspended.enabled);
    EXPECT_EQ(r->suspended.reply, defaults.suspended.reply);
    const CompromiseConfig& cc = r->compromise;
    EXPECT_EQ(cc.enabled, defaults.compromise.enabled);
    EXPECT_EQ(cc.window, defaults.compromise.window);
    EXPECT_EQ(cc.ipv4_prefix, defaults.compromise.ipv4_prefix);
    EXPECT_EQ(cc.ipv6_prefix, defaults.compromise.ipv6_prefix);
    EXPECT_EQ(cc.track_recipient_domains, defaults.compromise.track_recipient_domains);
    EXPECT_EQ(cc.hold_reply, defaults.compromise.hold_reply);
    EXPECT_EQ(cc.suspend_duration, defaults.compromise.suspend_duration);
    EXPECT_EQ(cc.applies_to_exempt, defaults.compromise.applies_to_exempt);
    EXPECT_FALSE(cc.warn.any() || cc.hold.any() || cc.suspend.any()); // the rungs are commented-out examples
    EXPECT_EQ(r->events.channel, defaults.events.channel);
    EXPECT_EQ(r->events.command, defaults.events.command);
    EXPECT_EQ(r->events.command_timeout, defaults.events.command_timeout);
    EXPECT_EQ(r->events.queue, defaults.events.queue);

    // The three example limits are active, as the file says.
    struct Want {
        const char* name;
        LimitKey key;
        LimitUnit unit;
        const char* rates;
        LimitScope scope;
        unsigned prefix_v4;
        unsigned prefix_v6;
    };
    const Want want[] = {
        {"login_messages", LimitKey::sasl_username, LimitUnit::messages, "100/60s,1000/3600s", LimitScope::any, 32, 64},
        {"login_recipients", LimitKey::sasl_username, LimitUnit::recipients, "500/3600s,2000/86400s", LimitScope::any, 32, 64},
        {"client_recipients", LimitKey::client_address, LimitUnit::recipients, "100/60s,1000/3600s",
         LimitScope::unauthenticated, 24, 64},
    };
    ASSERT_EQ(r->limits.size(), std::size(want));
    for (std::size_t i = 0; i < std::size(want); ++i) {
        const LimitConfig& got = r->limits[i];
        EXPECT_EQ(got.name, want[i].name);
        EXPECT_EQ(got.key, want[i].key) << want[i].name;
        EXPECT_EQ(got.unit, want[i].unit) << want[i].name;
        EXPECT_EQ(format_rate_spec(got.rates), want[i].rates) << want[i].name;
        EXPECT_EQ(got.scope, want[i].scope) << want[i].name;
        EXPECT_TRUE(got.enabled) << want[i].name;
        EXPECT_FALSE(got.shadow) << want[i].name;
        EXPECT_EQ(got.prefix_v4, want[i].prefix_v4) << want[i].name;
        EXPECT_EQ(got.prefix_v6, want[i].prefix_v6) << want[i].name;
    }
}

TEST(LoadConfig, ContribLadderExampleLoadsWhenUncommented)
{
    // The commented-out [compromise.*] rungs of the example, uncommented: valid and quiet.
    const std::string text = testing::read_file(fs::path(RELAYGUARD_SOURCE_DIR) / "contrib" / "relayguard.toml");
    std::string uncommented;
    bool in_rungs = false;
    for (std::size_t pos = 0; pos < text.size();) {
        const auto nl = std::min(text.find('\n', pos), text.size());
        std::string_view line(text.data() + pos, nl - pos);
        pos = nl + 1;
        if (line.starts_with("# [compromise.")) in_rungs = true;
        if (line.empty()) in_rungs = false;
        if (in_rungs) line.remove_prefix(2);
        uncommented.append(line).push_back('\n');
    }
    std::vector<std::string> warnings;
    auto r = parse_config(uncommented, "contrib", &warnings);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_TRUE(warnings.empty()) << join_lines(warnings);
    EXPECT_EQ(r->compromise.warn.networks, 4u);
    EXPECT_EQ(r->compromise.hold.networks, 8u);
    EXPECT_EQ(r->compromise.suspend.networks, 16u);
    EXPECT_TRUE(r->compromise.suspend.shadow);
}

// One file per error message; `want` is the error text after the file's path.
struct BadFile {
    const char* file;
    const char* want;
};
const BadFile bad_files[] = {
    {"bad_syntax.toml", ":5: invalid TOML: error while parsing value: could not determine value type"},
    {"bad_duplicate_key.toml", ":5: invalid TOML: error while parsing key-value pair: cannot redefine existing integer 'threads'"},
    {"bad_unknown_top_level_key.toml", ":2: verbose: unknown key"},
    {"bad_unknown_table.toml", ":5: protocl: unknown key (did you mean \"protocol\"?)"},
    {"bad_unknown_key_in_table.toml", ":4: server.thraeds: unknown key (did you mean \"threads\"?)"},
    {"bad_unknown_check.toml", ":5: checks.rate_limits: unknown key"},
    {"bad_unknown_nested_key.toml", ":7: checks.relay.relpy: unknown key (did you mean \"reply\"?)"},
    {"bad_wrong_type.toml", ":4: server.threads: expected an integer, got a string"},
    {"bad_wrong_type_bool.toml", ":6: checks.relay.enabled: expected a boolean, got a string"},
    {"bad_wrong_type_table.toml", ":2: server: expected a table, got an array of tables"},
    {"bad_wrong_type_array.toml", ":3: server.listen: expected an array of strings, got a string"},
    {"bad_wrong_type_element.toml", ":6: checks.auth_required.ports[1]: expected an integer, got a string"},
    {"bad_float_integer.toml", ":4: server.max_connections: expected an integer, got a float"},
    {"bad_duration.toml",
     ":4: server.idle_timeout: invalid duration \"10 minutes\": expected a whole number followed by ms, s, m, h or d, "
     "e.g. \"10s\""},
    {"bad_duration_integer.toml",
     ":4: server.request_timeout: expected a string, got an integer (write durations with a unit, e.g. \"10s\")"},
    {"bad_duration_zero.toml", ":4: server.shutdown_timeout: invalid duration \"0s\": must be greater than 0"},
    {"bad_duration_too_long.toml", ":4: server.idle_timeout: invalid duration \"30d\": must be at most 7d"},
    {"bad_listen_scheme.toml",
     ":3: server.listen[0]: invalid listener \"tcp:127.0.0.1:10033\": expected \"inet:HOST:PORT\" (HOST an IPv4 "
     "address, [IPv6 address] or *) or \"unix:/absolute/path\""},
    {"bad_listen_host.toml",
     ":5: server.listen[1]: invalid listener \"inet:localhost:10034\": the host must be an IPv4 address, a bracketed "
     "IPv6 address or *, got \"localhost\""},
    {"bad_listen_port.toml",
     ":3: server.listen[0]: invalid listener \"inet:127.0.0.1:100330\": port must be a number from 0 to 65535, got "
     "\"100330\""},
    {"bad_listen_ipv6.toml",
     ":3: server.listen[0]: invalid listener \"inet:::1:10033\": an IPv6 address must be in brackets, e.g. "
     "\"inet:[::1]:10033\""},
    {"bad_listen_relative_unix.toml",
     ":3: server.listen[0]: invalid listener \"unix:private/relayguard\": the socket path must be absolute, got "
     "\"private/relayguard\""},
    {"bad_listen_duplicate.toml", ":6: server.listen[2]: duplicate listener \"inet:[0:0::1]:10033\" (first at line 4)"},
    {"bad_listen_overlap.toml",
     ":5: server.listen[1]: listener \"inet:127.0.0.1:10033\" overlaps the one at line 4: * already covers every "
     "address on port 10033"},
    {"bad_listen_missing.toml",
     ":2: server.listen: missing: at least one listener is required, e.g. listen = [\"inet:127.0.0.1:10033\"]"},
    {"bad_listen_empty.toml", ":3: server.listen: at least one listener is required"},
    {"bad_cidr.toml",
     ":8: checks.exempt.networks[1]: \"10.0.0.0/33\" is not an IP address or network (expected e.g. \"192.0.2.0/24\" "
     "or \"2001:db8::/32\")"},
    {"bad_reply.toml", ":6: checks.relay.reply: invalid reply \"250 2.0.0 Ok\": code 250 is not 4xx or 5xx"},
    {"bad_reply_status_class.toml",
     ":6: checks.sender_ownership.null_sender_reply: invalid reply \"553 4.7.1 No\": enhanced status code 4.7.1 does "
     "not match reply code 553"},
    {"bad_socket_mode.toml",
     ":4: server.socket_mode: invalid socket mode \"0o660\": expected 3 or 4 octal digits, e.g. \"0660\""},
    {"bad_socket_mode_integer.toml",
     ":4: server.socket_mode: expected a string, got an integer (write the mode in quotes, e.g. \"0660\")"},
    {"bad_socket_mode_setuid.toml", ":4: server.socket_mode: invalid socket mode \"4755\": must be at most 0777"},
    {"bad_socket_owner.toml",
     ":4: server.socket_owner: invalid name \"postfix:postfix\": only letters, digits, '.', '_' and '-' are allowed"},
    {"bad_server_group.toml",
     ":5: server.group: invalid name \"mail:mail\": only letters, digits, '.', '_' and '-' are allowed"},
    {"bad_threads_range.toml", ":4: server.threads: must be between 0 and 256, got 1000"},
    {"bad_max_attributes_range.toml", ":6: protocol.max_attributes: must be between 16 and 100000, got 8"},
    {"bad_port_range.toml", ":6: checks.auth_required.ports[1]: must be between 1 and 65535, got 0"},
    {"bad_request_below_line.toml",
     ":7: protocol.max_request_bytes: must be at least protocol.max_line_bytes (8192), got 4096"},
    {"bad_line_above_default_request.toml",
     ":6: protocol.max_line_bytes: must be at most protocol.max_request_bytes (32768), got 65536"},
    {"bad_log_level.toml",
     ":6: log.level: expected one of \"debug\", \"info\", \"warning\", \"error\", got \"warn\" (did you mean "
     "\"warning\"?)"},
    {"bad_log_target.toml", ":6: log.target: expected \"stderr\" or \"syslog\", got \"journald\""},
    {"bad_domain.toml",
     ":6: domains.local[1]: \"exa mple.org\" is not a domain name: only letters, digits, '-' and '.' are allowed "
     "(write international names in their xn-- form)"},
    {"bad_domain_ip.toml",
     ":6: domains.local[0]: \"192.0.2.1\" is not a domain name: the last label is numeric (an IP address is not a "
     "domain)"},
    {"bad_domains_file.toml", ":6: domains.file: must be an absolute path, got \"local_domains\""},
    {"bad_map_file.toml", ":6: checks.sender_ownership.map_file: must be an absolute path, got \"sender_logins\""},
    {"bad_delimiter.toml",
     ":6: address.recipient_delimiter: invalid recipient delimiter \"+@\": '@' separates the local part from the "
     "domain and cannot be a delimiter"},
    {"bad_mechanism.toml",
     ":6: checks.plaintext_auth.mechanisms[1]: invalid SASL mechanism \"CRAM MD5\": only letters, digits, '-' and "
     "'_' are allowed"},
    {"bad_empty_login.toml", ":6: checks.exempt.logins[0]: an empty login is not allowed"},
    {"bad_control_character.toml", ":4: server.socket_group: control characters are not allowed"},
    // rate_limits, [[limit]], store
    {"bad_limit_not_array.toml", ":5: limit: expected an array of tables ([[limit]]), got a table"},
    {"bad_limit_name.toml",
     ":6: limit[0].name: invalid limit name \"Login Messages\": only lower-case letters a-z, digits, '_' and '-' are "
     "allowed"},
    {"bad_limit_name_duplicate.toml", ":12: limit[1].name: duplicate limit name \"login_messages\" (first at line 6)"},
    {"bad_limit_missing_rates.toml",
     ":5: limit[0].rates: missing: every [[limit]] needs it, e.g. rates = \"100/1m, 1000/1h\""},
    {"bad_limit_key.toml",
     ":7: limit[0].key: expected one of \"sasl_username\", \"sender\", \"sender_domain\", \"client_address\", "
     "\"recipient_domain\", \"global\", got \"login\""},
    {"bad_limit_unit.toml",
     ":8: limit[0].unit: expected one of \"messages\", \"recipients\", \"bytes\", got \"message\" (did you mean "
     "\"messages\"?)"},
    {"bad_limit_rates.toml",
     ":9: limit[0].rates: invalid rates \"100/1m, 1000/1y\": period of '1000/1y' is not N, Ns, Nm, Nh, Nd or Nw"},
    {"bad_limit_rates_unlimited.toml",
     ":9: limit[0].rates: \"unlimited\" is not a limit: remove the limit or set enabled = false (an override can make "
     "one key value unlimited)"},
    {"bad_limit_rates_integer.toml",
     ":9: limit[0].rates: expected a string, got an integer (write rates in quotes, e.g. \"100/1m, 1000/1h\")"},
    {"bad_limit_scope.toml",
     ":10: limit[0].scope: expected one of \"any\", \"authenticated\", \"unauthenticated\", got \"authenticted\" "
     "(did you mean \"authenticated\"?)"},
    {"bad_limit_scope_login.toml",
     ":10: limit[0].scope: \"unauthenticated\" never applies to a limit keyed by sasl_username: unauthenticated "
     "requests have no login"},
    {"bad_limit_prefix_key.toml",
     ":10: limit[0].prefix_v4: only a limit with key = \"client_address\" has a prefix length, this one has key = "
     "\"sasl_username\""},
    {"bad_limit_prefix_range.toml", ":10: limit[0].prefix_v6: must be between 0 and 128, got 129"},
    {"bad_limit_reply.toml", ":10: limit[0].reply: invalid reply \"250 {limit} full\": code 250 is not 4xx or 5xx"},
    {"bad_limit_reply_placeholder.toml",
     ":10: limit[0].reply: invalid reply \"450 4.7.1 Retry in {retry} seconds\": unknown placeholder {retry} (use "
     "{limit} or {retry_after})"},
    {"bad_limit_unknown_key.toml", ":7: limit[0].rate: unknown key (did you mean \"rates\"?)"},
    {"bad_hooked_at.toml",
     ":6: rate_limits.hooked_at[1]: expected one of \"MAIL\", \"RCPT\", \"DATA\", \"END-OF-MESSAGE\", got \"rcpt\" "
     "(did you mean \"RCPT\"?)"},
    {"bad_hooked_at_empty.toml",
     ":6: rate_limits.hooked_at: must list where the MTA calls relayguard: one or more of \"MAIL\", \"RCPT\", "
     "\"DATA\", \"END-OF-MESSAGE\""},
    {"bad_store_type.toml", ":6: store.type: expected \"embedded\" or \"redis\", got \"memcached\""},
    {"bad_store_on_error.toml", ":6: store.on_error: expected one of \"dunno\", \"defer\", \"local\", got \"reject\""},
    {"bad_store_defer_reply.toml",
     ":7: store.defer_reply: invalid reply \"554 5.3.0 No\": must be a temporary failure (a 4xx code, DEFER, "
     "DEFER_IF_PERMIT or DEFER_IF_REJECT): a store outage must not bounce mail"},
    {"bad_store_key_prefix.toml",
     ":6: store.key_prefix: invalid key prefix \"{rg}:\": '{' and '}' are not allowed (relayguard sets each key's "
     "Redis Cluster hash tag itself)"},
    {"bad_store_key_prefix_empty.toml", ":6: store.key_prefix: must be 1 to 64 characters long, got 0"},
    {"bad_store_instance_ttl.toml", ":6: store.instance_ttl: must be between 1m and 1d, got 30s"},
    {"bad_redis_address.toml",
     ":9: store.redis.address: invalid address \"redis://127.0.0.1:6379\": expected \"unix:/absolute/path\", "
     "\"tcp:HOST:PORT\", \"tls:HOST:PORT\" or \"HOST:PORT\" (an IPv6 address in brackets, e.g. \"tcp:[::1]:6379\")"},
    {"bad_redis_address_ipv6.toml",
     ":9: store.redis.address: invalid address \"tcp:::1:6379\": an IPv6 address must be in brackets, e.g. "
     "\"tcp:[::1]:6379\""},
    {"bad_redis_database.toml", ":9: store.redis.database: must be between 0 and 15, got 16"},
    {"bad_redis_timeout.toml", ":9: store.redis.timeout: must be between 1ms and 10s, got 30s"},
    {"bad_redis_password_both.toml",
     ":10: store.redis.password_file: cannot be used together with store.redis.password: set one of them"},
    {"bad_redis_password_file.toml",
     ":9: store.redis.password_file: cannot open \"/nonexistent/relayguard/redis.pass\": No such file or directory"},
    {"bad_redis_password_file_relative.toml",
     ":9: store.redis.password_file: must be an absolute path, got \"redis.pass\""},
    {"bad_redis_username_without_password.toml",
     ":9: store.redis.username: needs a password (store.redis.password or password_file): Redis AUTH takes a user "
     "name only with one"},
    {"bad_redis_tls_cert_without_key.toml",
     ":10: store.redis.tls_cert_file: needs store.redis.tls_key_file: a client certificate is used with its private "
     "key"},
    {"bad_metrics_listen_unix.toml",
     ":6: metrics.listen: invalid listener \"unix:/run/relayguard/metrics.sock\": the metrics endpoint is HTTP over "
     "TCP, expected \"inet:HOST:PORT\", e.g. \"inet:127.0.0.1:9733\""},
    {"bad_metrics_listen_port.toml",
     ":6: metrics.listen: invalid listener \"inet:127.0.0.1:10033\": port 10033 is already bound by server.listen "
     "\"inet:*:10033\""},
    // checks.suspended, compromise, events
    {"bad_suspended_reply.toml", ":6: checks.suspended.reply: invalid reply \"250 2.0.0 Ok\": code 250 is not 4xx or 5xx"},
    {"bad_compromise_rung_order.toml",
     ":12: compromise.hold.networks: must be 0 or at least compromise.warn.networks (8), got 4: a higher rung cannot "
     "trigger before a lower one"},
    {"bad_compromise_window.toml", ":6: compromise.window: must be between 1m and 7d, got 30s"},
    {"bad_compromise_ipv6_prefix.toml", ":6: compromise.ipv6_prefix: must be between 1 and 128, got 129"},
    {"bad_compromise_threshold.toml", ":6: compromise.suspend.rate_refusals: must be between 0 and 1000000, got -1"},
    {"bad_compromise_hold_reply.toml",
     ":6: compromise.hold_reply: invalid reply \"HODL review\": unknown action \"HODL\" (want \"NNN text\", \"NNN "
     "X.Y.Z text\", DUNNO, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, HOLD, DISCARD or WARN)"},
    {"bad_compromise_suspend_duration.toml",
     ":6: compromise.suspend_duration: must be a whole number of seconds, got 1500ms"},
    {"bad_compromise_unknown_rung.toml", ":5: compromise.block: unknown key"},
    {"bad_events_queue.toml", ":6: events.queue: must be between 1 and 100000, got 0"},
    {"bad_events_command_timeout.toml", ":6: events.command_timeout: invalid duration \"0s\": must be greater than 0"},
};

TEST(LoadConfig, ReportsTheFullErrorTextOfEachBadFile)
{
    for (const auto& bad : bad_files) {
        const std::string path = config_dir() / bad.file;
        const std::string want = path + bad.want;
        std::vector<std::string> warnings{"untouched"};
        auto r = load_config(path, &warnings);
        if (r) {
            ADD_FAILURE() << bad.file << ": got=(loaded) want=" << want;
            continue;
        }
        EXPECT_EQ(r.error().to_string(), want) << bad.file;
        EXPECT_EQ(r.error().file, path) << bad.file;
        // No warnings from a file that failed: they would distract from its error.
        EXPECT_EQ(warnings, std::vector<std::string>{"untouched"}) << bad.file;
    }
}

TEST(LoadConfig, MetricsAreOffUnlessListenIsSet)
{
    struct Case {
        std::string metrics; // the [metrics] part of the file
        std::optional<std::string> want_endpoint;
    };
    const Case cases[] = {
        {"", std::nullopt},
        {"[metrics]\n", std::nullopt},
        {"[metrics]\nlisten = \"\"\n", std::nullopt},
        {"[metrics]\nlisten = \"inet:127.0.0.1:9733\"\n", "inet:127.0.0.1:9733"},
        {"[metrics]\nlisten = \"inet:*:9733\"\n", "inet:*:9733"},
        // Port 0 (a free port, for tests) never collides with a policy listener.
        {"[metrics]\nlisten = \"inet:127.0.0.1:0\"\n", "inet:127.0.0.1:0"},
        // The same port on another address is another socket.
        {"[metrics]\nlisten = \"inet:[::1]:10033\"\n", "inet:[::1]:10033"},
    };
    for (const auto& c : cases) {
        auto r = parse_config(std::string(listen_only) + c.metrics, "t.toml");
        ASSERT_TRUE(r) << c.metrics << ": " << r.error().to_string();
        const auto got = r->metrics.listen ? std::optional(r->metrics.listen->text) : std::nullopt;
        EXPECT_EQ(got, c.want_endpoint) << c.metrics << " got=" << got.value_or("(off)")
                                        << " want=" << c.want_endpoint.value_or("(off)");
    }
    EXPECT_EQ(error_of(std::string(listen_only) + "[metrics]\nlisten = [\"inet:127.0.0.1:9733\"]\n"),
              "t.toml:4: metrics.listen: expected a string, got an array");
    EXPECT_EQ(error_of(std::string(listen_only) + "[metrics]\nport = 9733\n"), "t.toml:4: metrics.port: unknown key");
}

TEST(LoadConfig, EveryBadFileHasAnExpectedError)
{
    std::set<std::string> listed;
    for (const auto& bad : bad_files) listed.insert(bad.file);
    for (const auto& entry : fs::directory_iterator(config_dir())) {
        const std::string name = entry.path().filename().string();
        if (name.starts_with("bad_")) {
            EXPECT_TRUE(listed.contains(name)) << name << " is not in bad_files";
        }
    }
    for (const auto& name : listed) EXPECT_TRUE(fs::exists(config_dir() / name)) << name << " does not exist";
}

TEST(LoadConfig, ReportsFilesThatCannotBeRead)
{
    const testing::TempDir dir;
    const std::string missing = dir / "missing.toml";
    auto r = load_config(missing);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().to_string(), missing + ": cannot open: No such file or directory");

    const std::string directory = dir.path().string();
    r = load_config(directory);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().to_string(), directory + ": cannot read: Is a directory");
}

TEST(LoadConfig, WarnsAboutSuspiciousSettings)
{
    const std::string path = config_dir() / "warnings.toml";
    std::vector<std::string> warnings;
    auto r = load_config(path, &warnings);
    ASSERT_TRUE(r) << r.error().to_string();
    const std::vector<std::string> want = {
        path + ":9: domains.local[1]: \"example.com\" is listed twice (first at line 9)",
        path + ":14: checks.exempt.networks[1]: \"192.0.2.1/24\" has host bits set; it is read as 192.0.2.0/24",
        path + ":16: checks.exempt.networks[3]: \"192.0.2.0/24\" is listed twice (first at line 14)",
        path + ":18: checks.exempt.logins[1]: \"monitor\" is listed twice (first at line 18)",
        path + ":28: checks.relay.reply: DUNNO lets everything through: the check never refuses",
        path + ":4: server.idle_timeout: 1m is shorter than Postfix's smtpd_policy_service_max_idle (300s): relayguard "
               "will close connections that Postfix still means to reuse",
        path + ":5: server.request_timeout: 2m is not shorter than Postfix's smtpd_policy_service_timeout (100s): "
               "Postfix gives up before relayguard does",
        path + ":6: server.socket_mode: has no effect: there is no unix: listener",
        path + ":13: checks.exempt.networks[0]: every IPv4 client is trusted (0.0.0.0/0): relayguard will let anyone relay",
        path + ":15: checks.exempt.networks[2]: every IPv6 client is trusted (::/0): relayguard will let anyone relay",
        path + ":20: checks.auth_required: enabled, but neither ports nor policy_contexts are set: the check never applies",
        path + ":24: checks.plaintext_auth: enabled, but no mechanisms are set: the check never applies",
        path + ":32: checks.sender_ownership.shadow: has no effect while the check is disabled",
    };
    EXPECT_EQ(join_lines(warnings), join_lines(want));
}

TEST(LoadConfig, WarnsAboutLimitsThatCannotCountWhereTheMtaCalls)
{
    const std::string path = config_dir() / "warnings_rate_limits.toml";
    std::vector<std::string> warnings;
    auto r = load_config(path, &warnings);
    ASSERT_TRUE(r) << r.error().to_string();
    const std::string rcpt_fix = "add check_policy_service to smtpd_recipient_restrictions (Postfix) or call relayguard "
                                 "from acl_smtp_rcpt (Exim), and add \"RCPT\" to rate_limits.hooked_at";
    const std::string eom_fix = "add check_policy_service to smtpd_end_of_data_restrictions (Postfix) or call relayguard "
                                "from acl_smtp_data (Exim), and add \"END-OF-MESSAGE\" to rate_limits.hooked_at";
    const std::vector<std::string> want = {
        path + ":9: rate_limits.hooked_at[1]: \"MAIL\" is listed twice (first at line 9)",
        path + ":48: limit[5].reply: DUNNO lets everything through: the limit never refuses",
        path + ":14: limit[0].unit: limit \"login_bytes\" counts bytes, which are only known at END-OF-MESSAGE, but "
               "rate_limits.hooked_at does not list it: " + eom_fix,
        path + ":20: limit[1].unit: limit \"login_recipients\" counts recipients, which are only known at RCPT, but "
               "rate_limits.hooked_at does not list it: " + rcpt_fix,
        path + ":25: limit[2].key: limit \"domain_messages\" is keyed by recipient_domain, which is only known at RCPT, "
               "but rate_limits.hooked_at does not list it: " + rcpt_fix,
        path + ":32: limit[3].unit: limit \"domain_bytes\" counts bytes, which are only known at END-OF-MESSAGE, but "
               "rate_limits.hooked_at does not list it: " + eom_fix,
        path + ":31: limit[3].key: limit \"domain_bytes\" is keyed by recipient_domain, which is only known at RCPT, "
               "but rate_limits.hooked_at does not list it: " + rcpt_fix,
        path + ":31: limit[3].key: limit \"domain_bytes\" counts bytes per recipient_domain, but at END-OF-MESSAGE the "
               "MTA names the recipient only of a message that has exactly one: messages to several recipients are "
               "not counted",
        path + ":41: limit[4].shadow: has no effect while the limit is disabled",
        path + ":52: store.defer_reply: has no effect unless store.on_error = \"defer\"",
        path + ":54: store.redis: ignored: store.type is \"embedded\" (set store.type = \"redis\" to keep the counters "
               "in Redis)",
    };
    EXPECT_EQ(join_lines(warnings), join_lines(want));
}

TEST(ParseConfig, FillsDefaultsForAMinimalFile)
{
    std::vector<std::string> warnings;
    auto r = parse_config(listen_only, "t.toml", &warnings);
    ASSERT_TRUE(r) << r.error().to_string();
    const Config& c = *r;
    EXPECT_EQ(c.path, "t.toml");
    EXPECT_EQ(c.server.threads, 0u);
    EXPECT_EQ(c.server.max_connections, default_max_connections);
    EXPECT_EQ(c.server.idle_timeout, default_idle_timeout);
    EXPECT_EQ(c.server.request_timeout, default_request_timeout);
    EXPECT_EQ(c.server.shutdown_timeout, default_shutdown_timeout);
    EXPECT_EQ(c.server.socket_mode, default_socket_mode);
    EXPECT_EQ(c.server.user, "");
    EXPECT_EQ(c.server.group, "");
    EXPECT_FALSE(c.server.allow_root);
    EXPECT_EQ(c.protocol.max_line_bytes, default_max_line_bytes);
    EXPECT_EQ(c.protocol.max_request_bytes, default_max_request_bytes);
    EXPECT_EQ(c.protocol.max_attributes, default_max_attributes);
    EXPECT_EQ(c.log.target, LogConfig::Target::stderr_);
    EXPECT_EQ(c.log.level, LogConfig::Level::info);
    EXPECT_TRUE(c.exempt.networks.empty());
    EXPECT_TRUE(c.domains.local.empty());
    EXPECT_EQ(c.auth_required.reply, "530 5.7.0 Authentication required");
    EXPECT_EQ(c.plaintext_auth.reply, "538 5.7.11 Encryption required for requested authentication mechanism");
    EXPECT_EQ(c.relay.reply, "554 5.7.1 Relay access denied");
    EXPECT_EQ(c.sender_ownership.reply, "553 5.7.1 Sender address rejected: not owned by authenticated user");
    EXPECT_EQ(c.sender_ownership.unauthenticated_reply,
              "553 5.7.1 Sender address rejected: authentication required for a local sender");
    EXPECT_EQ(c.sender_ownership.null_sender_reply,
              "553 5.7.1 Sender address rejected: null sender not allowed for authenticated users");
    EXPECT_TRUE(c.sender_ownership.login_owns_itself);
    EXPECT_TRUE(c.rate_limits.enabled);
    EXPECT_EQ(c.rate_limits.hooked_at, std::vector<ProtocolState>{ProtocolState::rcpt});
    EXPECT_TRUE(c.limits.empty());
    EXPECT_EQ(c.store.type, StoreConfig::Type::embedded);
    EXPECT_EQ(c.store.on_error, StoreConfig::OnError::local);
    EXPECT_EQ(c.store.defer_reply, default_store_defer_reply);
    EXPECT_EQ(c.store.key_prefix, "rg:");
    EXPECT_EQ(c.store.instance_ttl, 1h);
    EXPECT_EQ(c.store.redis.address, "tcp:127.0.0.1:6379");
    EXPECT_EQ(c.store.redis.command_timeout, 50ms);
    EXPECT_EQ(c.store.redis.connect_timeout, 1s);
    EXPECT_EQ(c.store.redis.database, 0u);
    EXPECT_TRUE(c.store.redis.tls_verify);
    EXPECT_TRUE(c.suspended.enabled);
    EXPECT_FALSE(c.suspended.shadow);
    EXPECT_EQ(c.suspended.reply, default_suspended_reply);
    EXPECT_FALSE(c.compromise.enabled);
    EXPECT_EQ(c.compromise.window, default_compromise_window);
    EXPECT_EQ(c.compromise.ipv4_prefix, 24u);
    EXPECT_EQ(c.compromise.ipv6_prefix, 48u);
    EXPECT_FALSE(c.compromise.track_recipient_domains);
    EXPECT_FALSE(c.compromise.warn.any() || c.compromise.hold.any() || c.compromise.suspend.any());
    EXPECT_EQ(c.compromise.hold_reply, default_hold_reply);
    EXPECT_EQ(c.compromise.suspend_duration, 0s);
    EXPECT_FALSE(c.compromise.applies_to_exempt);
    EXPECT_EQ(c.events.channel, default_events_channel);
    EXPECT_EQ(c.events.command, "");
    EXPECT_EQ(c.events.command_timeout, default_event_command_timeout);
    EXPECT_EQ(c.events.queue, default_event_queue);
    EXPECT_EQ(c.auth_required.ports, (std::vector<std::uint16_t>{587, 465}));
    EXPECT_TRUE(c.auth_required.policy_contexts.empty());
    EXPECT_EQ(c.plaintext_auth.mechanisms, (std::vector<std::string>{"PLAIN", "LOGIN"}));
    // Nothing says which domains are local, so relay would refuse every outside recipient.
    const std::vector<std::string> want = {
        "t.toml: checks.relay: enabled, but there are no local domains (domains.local, domains.file): every "
        "unauthenticated recipient will be refused",
    };
    EXPECT_EQ(join_lines(warnings), join_lines(want));
}

TEST(ParseConfig, DefaultConfigHasDefaultReplies)
{
    const Config c;
    EXPECT_EQ(c.auth_required.reply, default_auth_required_reply);
    EXPECT_EQ(c.plaintext_auth.reply, default_plaintext_auth_reply);
    EXPECT_EQ(c.relay.reply, default_relay_reply);
    EXPECT_EQ(c.sender_ownership.reply, default_sender_ownership_reply);
    EXPECT_EQ(c.sender_ownership.unauthenticated_reply, default_unauthenticated_sender_reply);
    EXPECT_EQ(c.sender_ownership.null_sender_reply, default_null_sender_reply);
}

TEST(ParseConfig, ReportsErrorsOfInlineText)
{
    struct Case {
        const char* name;
        std::string text;
        std::string want;
    };
    const std::string L(listen_only);
    const Case cases[] = {
        {"inline table key", L + "[checks]\nrelay = { enabled = true, shadw = true }\n",
         "t.toml:4: checks.relay.shadw: unknown key (did you mean \"shadow\"?)"},
        {"dotted key", L + "[checks]\nrelay.repyl = \"REJECT\"\n",
         "t.toml:4: checks.relay.repyl: unknown key (did you mean \"reply\"?)"},
        {"quoted key", L + "\"thread s\" = 1\n", "t.toml:3: server.\"thread s\": unknown key (did you mean \"threads\"?)"},
        {"no suggestion for short key", L + "x = 1\n", "t.toml:3: server.x: unknown key"},
        {"table where a value goes", L + "threads = { n = 1 }\n", "t.toml:3: server.threads: expected an integer, got a table"},
        {"value where a table goes", "checks = 1\n" + L, "t.toml:1: checks: expected a table, got an integer"},
        {"date", L + "idle_timeout = 2024-01-01\n", "t.toml:3: server.idle_timeout: expected a string, got a date"},
        {"negative integer", L + "max_connections = -1\n",
         "t.toml:3: server.max_connections: must be between 1 and 1000000, got -1"},
        {"empty reply", L + "[checks.relay]\nreply = \"\"\n", "t.toml:4: checks.relay.reply: invalid reply \"\": empty action"},
        {"OK reply", L + "[checks.relay]\nreply = \"OK\"\n",
         "t.toml:4: checks.relay.reply: invalid reply \"OK\": OK is not allowed: it would skip the MTA's later "
         "restrictions (use DUNNO)"},
        {"listen in a second server table", "[server]\nthreads = 1\n[server]\nlisten = []\n",
         "t.toml:3: invalid TOML: error while parsing table header: cannot redefine existing table 'server'"},
        {"unix path too long", "[server]\nlisten = [\"unix:/" + std::string(107, 'a') + "\"]\n",
         "t.toml:2: server.listen[0]: invalid listener \"unix:/" + std::string(107, 'a') +
             "\": the socket path is 108 bytes long; the limit is 107"},
        {"first error in file order", L + "thraeds = 1\n[log]\nlevel = \"loud\"\n",
         "t.toml:3: server.thraeds: unknown key (did you mean \"threads\"?)"},
        {"first error in file order, later table first alphabetically", "[server]\nthreads = 999\n[log]\nlevel = \"x\"\n",
         "t.toml:2: server.threads: must be between 0 and 256, got 999"},
        {"array of arrays", L + "[checks.exempt]\nnetworks = [[\"127.0.0.1\"]]\n",
         "t.toml:4: checks.exempt.networks[0]: expected a string, got an array"},
    };
    for (const auto& c : cases) EXPECT_EQ(error_of(c.text), c.want) << c.name;
}

TEST(ParseConfig, AcceptsTablesWrittenInlineOrWithDottedKeys)
{
    const std::string text = "server = { listen = [\"unix:/run/rg.sock\"], threads = 2 }\n"
                             "checks.relay.enabled = false\n"
                             "checks.exempt = { networks = [\"10.0.0.0/8\"] }\n"
                             "domains.local = [\"example.org\"]\n";
    auto r = parse_config(text, "t.toml");
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->server.listen.size(), 1u);
    EXPECT_EQ(r->server.threads, 2u);
    EXPECT_FALSE(r->relay.enabled);
    EXPECT_EQ(r->exempt.networks.networks().size(), 1u);
    EXPECT_EQ(r->domains.local, std::vector<std::string>{"example.org"});
}

TEST(ParseConfig, AllowsSeveralListenersOnPortZero)
{
    // Port 0 means "any free port" (tests): two of them do not collide.
    auto r = parse_config("[server]\nlisten = [\"inet:127.0.0.1:0\", \"inet:127.0.0.1:0\", \"inet:*:0\"]\n", "t.toml");
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->server.listen.size(), 3u);
}

TEST(ParseConfig, WarnsAboutMoreThreadsThanCores)
{
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores == 0 || cores >= 256) GTEST_SKIP() << "core count unknown or at the threads limit";
    const std::string threads = std::to_string(cores + 1);
    const auto warnings = warnings_of(std::string(listen_only) + "threads = " + threads + "\n" +
                                      "[domains]\nlocal = [\"example.com\"]\n"
                                      "[checks.auth_required]\nports = [587]\n"
                                      "[checks.plaintext_auth]\nmechanisms = [\"PLAIN\"]\n");
    const std::string want = "t.toml:3: server.threads: " + threads + " threads on " + std::to_string(cores) +
                             " CPU cores: threads beyond the core count only add context switches\n";
    EXPECT_EQ(join_lines(warnings), want);
    // As many threads as cores is fine.
    EXPECT_EQ(join_lines(warnings_of(std::string(listen_only) + "threads = " + std::to_string(cores) + "\n" +
                                     "[domains]\nlocal = [\"example.com\"]\n"
                                     "[checks.auth_required]\nports = [587]\n"
                                     "[checks.plaintext_auth]\nmechanisms = [\"PLAIN\"]\n")),
              "");
}

TEST(ParseConfig, WarnsAboutOtherSuspiciousSettings)
{
    struct Case {
        const char* name;
        std::string text;
        std::string want; // every warning, one per line
    };
    // Quiet apart from what each case adds.
    const std::string quiet = "[domains]\nlocal = [\"example.com\"]\n"
                              "[checks.auth_required]\nports = [587]\n"
                              "[checks.plaintext_auth]\nmechanisms = [\"PLAIN\"]\n";
    const Case cases[] = {
        {"socket nobody can write", "[server]\nlisten = [\"unix:/run/rg.sock\"]\nsocket_mode = \"0444\"\n" + quiet,
         "t.toml:3: server.socket_mode: 0444 lets no one write to the socket, which connecting to it requires\n"},
        {"socket owner without a unix listener", std::string(listen_only) + "socket_owner = \"postfix\"\n" + quiet,
         "t.toml:3: server.socket_owner: has no effect: there is no unix: listener\n"},
        {"group without a user", std::string(listen_only) + "group = \"mail\"\n" + quiet,
         "t.toml:3: server.group: has no effect without server.user: relayguard changes its identity only when a user "
         "is set\n"},
        {"root allowed", std::string(listen_only) + "user = \"root\"\nallow_root = true\n" + quiet, ""},
        {"root without allow_root", std::string(listen_only) + "user = \"root\"\n" + quiet,
         "t.toml:3: server.user: \"root\" keeps every privilege after the listeners are bound: name an unprivileged "
         "user, or set server.allow_root = true if running as root is meant\n"},
        {"user and group", std::string(listen_only) + "user = \"relayguard\"\ngroup = \"relayguard\"\n" + quiet, ""},
        {"exempt lists while exempt is disabled",
         std::string(listen_only) + quiet + "[checks.exempt]\nenabled = false\nnetworks = [\"0.0.0.0/0\"]\nlogins = [\"x\"]\n",
         "t.toml:11: checks.exempt.networks: ignored: checks.exempt is disabled\n"
         "t.toml:12: checks.exempt.logins: ignored: checks.exempt is disabled\n"},
        {"nobody owns any sender",
         std::string(listen_only) + quiet + "[checks.sender_ownership]\nlogin_owns_itself = false\n",
         "t.toml:9: checks.sender_ownership: enabled, but no login owns any sender (login_owns_itself is false, no "
         "map_file, no any_sender_logins): every authenticated sender will be refused\n"},
        {"relay without domains but with a domains file",
         std::string(listen_only) + "[domains]\nfile = \"/etc/relayguard/domains\"\n"
                                    "[checks.auth_required]\nports = [587]\n"
                                    "[checks.plaintext_auth]\nmechanisms = [\"PLAIN\"]\n",
         ""},
        {"disabled checks need nothing",
         std::string(listen_only) + "[checks]\nrelay.enabled = false\nauth_required.enabled = false\n"
                                    "plaintext_auth.enabled = false\n",
         ""},
        {"duplicate port and mechanism",
         std::string(listen_only) + "[domains]\nlocal = [\"example.com\"]\n"
                                    "[checks.auth_required]\nports = [587, 587]\n"
                                    "[checks.plaintext_auth]\nmechanisms = [\"PLAIN\", \"plain\"]\n",
         "t.toml:6: checks.auth_required.ports[1]: \"587\" is listed twice (first at line 6)\n"
         "t.toml:8: checks.plaintext_auth.mechanisms[1]: \"PLAIN\" is listed twice (first at line 8)\n"},
    };
    for (const auto& c : cases) EXPECT_EQ(join_lines(warnings_of(c.text)), c.want) << c.name;
}

// A limit that is valid and quiet, for the cases below to add to.
constexpr std::string_view quiet_rate = "[domains]\nlocal = [\"example.com\"]\n";

TEST(ParseConfig, ReportsRateLimitErrorsOfInlineText)
{
    struct Case {
        const char* name;
        std::string text;
        std::string want;
    };
    const std::string L(listen_only);
    const std::string limit = "[[limit]]\nname = \"x\"\nkey = \"sender\"\nunit = \"messages\"\nrates = \"1/1s\"\n";
    const Case cases[] = {
        {"missing name", L + "[[limit]]\nkey = \"sender\"\nunit = \"messages\"\nrates = \"1/1s\"\n",
         "t.toml:3: limit[0].name: missing: every [[limit]] needs it, e.g. name = \"login_messages\""},
        {"missing key", L + "[[limit]]\nname = \"x\"\nunit = \"messages\"\nrates = \"1/1s\"\n",
         "t.toml:3: limit[0].key: missing: every [[limit]] needs it, e.g. key = \"sasl_username\""},
        {"missing unit", L + "[[limit]]\nname = \"x\"\nkey = \"sender\"\nrates = \"1/1s\"\n",
         "t.toml:3: limit[0].unit: missing: every [[limit]] needs it, e.g. unit = \"messages\""},
        {"second limit reports its own index", L + limit + "[[limit]]\nname = \"y\"\n",
         "t.toml:8: limit[1].key: missing: every [[limit]] needs it, e.g. key = \"sasl_username\""},
        {"name too long", L + "[[limit]]\nname = \"" + std::string(65, 'a') + "\"\n",
         "t.toml:4: limit[0].name: invalid limit name \"" + std::string(65, 'a') + "\": must be 1 to 64 characters long"},
        {"empty name", L + "[[limit]]\nname = \"\"\n",
         "t.toml:4: limit[0].name: invalid limit name \"\": must be 1 to 64 characters long"},
        {"rates combined with 0", L + "[[limit]]\nname = \"x\"\nrates = \"0, 10/1m\"\n",
         "t.toml:5: limit[0].rates: invalid rates \"0, 10/1m\": '0' cannot be combined with other rates"},
        {"empty rates", L + "[[limit]]\nname = \"x\"\nrates = \"\"\n", "t.toml:5: limit[0].rates: invalid rates \"\": empty rate spec"},
        {"prefix_v6 on sender", L + limit + "prefix_v6 = 48\n",
         "t.toml:8: limit[0].prefix_v6: only a limit with key = \"client_address\" has a prefix length, this one has "
         "key = \"sender\""},
        {"prefix_v4 over 32", L + limit + "prefix_v4 = 33\n", "t.toml:8: limit[0].prefix_v4: must be between 0 and 32, got 33"},
        {"reply with an unclosed brace", L + limit + "reply = \"450 4.7.1 {limit\"\n",
         "t.toml:8: limit[0].reply: invalid reply \"450 4.7.1 {limit\": '{' without a closing '}' (use {limit} or "
         "{retry_after})"},
        {"reply whose filled-in name breaks the status class", L + limit + "reply = \"450 5.7.1 {limit}\"\n",
         "t.toml:8: limit[0].reply: invalid reply \"450 5.7.1 {limit}\": enhanced status code 5.7.1 does not match reply "
         "code 450"},
        {"limit as a plain array", "limit = [1, 2]\n" + L, "t.toml:1: limit: expected an array of tables ([[limit]]), got an array"},
        {"limit in an inline array of tables with a bad key",
         "limit = [{ name = \"x\", key = \"sender\", unit = \"messages\", rates = \"1/1s\", shadw = true }]\n" + L,
         "t.toml:1: limit[0].shadw: unknown key (did you mean \"shadow\"?)"},
        {"hooked_at not a protocol state", L + "[rate_limits]\nhooked_at = [\"CONNECT\"]\n",
         "t.toml:4: rate_limits.hooked_at[0]: expected one of \"MAIL\", \"RCPT\", \"DATA\", \"END-OF-MESSAGE\", got "
         "\"CONNECT\""},
        {"defer_reply DUNNO", L + "[store]\ndefer_reply = \"DUNNO\"\n",
         "t.toml:4: store.defer_reply: invalid reply \"DUNNO\": must be a temporary failure (a 4xx code, DEFER, "
         "DEFER_IF_PERMIT or DEFER_IF_REJECT): a store outage must not bounce mail"},
        {"key prefix too long", L + "[store]\nkey_prefix = \"" + std::string(65, 'k') + "\"\n",
         "t.toml:4: store.key_prefix: must be 1 to 64 characters long, got 65"},
        {"instance_ttl over a day", L + "[store]\ninstance_ttl = \"2d\"\n",
         "t.toml:4: store.instance_ttl: must be between 1m and 1d, got 2d"},
        {"instance_ttl not whole seconds", L + "[store]\ninstance_ttl = \"61500ms\"\n",
         "t.toml:4: store.instance_ttl: must be a whole number of seconds, got 61500ms"},
        {"connect_timeout over a minute", L + "[store.redis]\nconnect_timeout = \"2m\"\n",
         "t.toml:4: store.redis.connect_timeout: must be between 1ms and 1m, got 2m"},
        {"timeout as an integer", L + "[store.redis]\ntimeout = 50\n",
         "t.toml:4: store.redis.timeout: expected a string, got an integer (write durations with a unit, e.g. \"10s\")"},
        {"relative CA file", L + "[store.redis]\ntls_ca_file = \"ca.pem\"\n",
         "t.toml:4: store.redis.tls_ca_file: must be an absolute path, got \"ca.pem\""},
        {"key without certificate", L + "[store.redis]\naddress = \"tls:r.example:6380\"\ntls_key_file = \"/k.pem\"\n",
         "t.toml:5: store.redis.tls_key_file: needs store.redis.tls_cert_file: a private key is used with its client "
         "certificate"},
        {"address port 0", L + "[store.redis]\naddress = \"127.0.0.1:0\"\n",
         "t.toml:4: store.redis.address: invalid address \"127.0.0.1:0\": port 0 is not a port a server listens on"},
    };
    for (const auto& c : cases) EXPECT_EQ(error_of(c.text), c.want) << c.name;
}

TEST(ParseConfig, ReadsEveryLimitKeyAndAcceptsAnEmptyLimitList)
{
    const std::string text = std::string(listen_only) + "[rate_limits]\nhooked_at = [\"DATA\", \"RCPT\"]\n";
    std::string limits;
    const char* keys[] = {"sasl_username", "sender", "sender_domain", "client_address", "recipient_domain", "global"};
    for (const char* key : keys)
        limits += std::string("[[limit]]\nname = \"") + key + "\"\nkey = \"" + key + "\"\nunit = \"messages\"\nrates = \"1/1s\"\n";
    auto r = parse_config(text + limits, "t.toml");
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_EQ(r->limits.size(), std::size(keys));
    for (std::size_t i = 0; i < std::size(keys); ++i)
        EXPECT_EQ(limit_key_name(r->limits[i].key), keys[i]) << "got=" << limit_key_name(r->limits[i].key) << " want=" << keys[i];
    EXPECT_EQ(r->rate_limits.hooked_at, (std::vector<ProtocolState>{ProtocolState::data, ProtocolState::rcpt}));

    auto empty = parse_config("limit = []\n" + text, "t.toml");
    ASSERT_TRUE(empty) << empty.error().to_string();
    EXPECT_TRUE(empty->limits.empty());
}

TEST(ParseConfig, ReadsTheRedisPasswordFromTheFirstLineOfItsFile)
{
    const testing::TempDir dir;
    struct Case {
        const char* name;
        std::string content;
        std::string want_password; // empty: an error is expected
        std::string want_error;    // after "t.toml:6: store.redis.password_file: "
    };
    const Case cases[] = {
        {"newline at the end", "s3cret\n", "s3cret", ""},
        {"no newline", "s3cret", "s3cret", ""},
        {"CRLF and more lines", "s3cret\r\nsecond line\n", "s3cret", ""},
        {"spaces are part of it", " pass word \n", " pass word ", ""},
        {"empty file", "", "", "the first line of \"FILE\" is empty"},
        {"empty first line", "\nsecret\n", "", "the first line of \"FILE\" is empty"},
        {"control character", "pa\x01ss\n", "", "the first line of \"FILE\" has control characters"},
        {"longest line read", std::string(4096, 'p') + "\n", std::string(4096, 'p'), ""},
        {"not a password file", std::string(4097, 'p'), "", "the first line of \"FILE\" is longer than 4096 bytes: is it a password file?"},
    };
    int n = 0;
    for (const auto& c : cases) {
        const std::string file = dir / ("pass" + std::to_string(n++));
        testing::write_file(file, c.content);
        const std::string text = std::string(listen_only) + "[store]\ntype = \"redis\"\n[store.redis]\npassword_file = \"" +
                                 file + "\"\n";
        auto r = parse_config(text, "t.toml");
        if (c.want_password.empty()) {
            std::string want = c.want_error;
            want.replace(want.find("FILE"), 4, file);
            EXPECT_EQ(r ? std::string("(loaded)") : r.error().to_string(), "t.toml:6: store.redis.password_file: " + want) << c.name;
            continue;
        }
        ASSERT_TRUE(r) << c.name << ": " << r.error().to_string();
        EXPECT_EQ(r->store.redis.password, c.want_password) << c.name;
    }
    // With a password from the file, a user name is fine.
    const std::string file = dir / "pass0";
    auto r = parse_config(std::string(listen_only) + "[store]\ntype = \"redis\"\n[store.redis]\nusername = \"rg\"\npassword_file = \"" +
                              file + "\"\n",
                          "t.toml");
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->store.redis.username, "rg");
    EXPECT_EQ(r->store.redis.password, "s3cret");
}

TEST(ParseConfig, WarnsAboutRateLimitAndStoreSettingsThatDoNothing)
{
    struct Case {
        const char* name;
        std::string text;
        std::string want; // every warning, one per line
    };
    const std::string L = std::string(listen_only) + std::string(quiet_rate);
    const std::string bytes = "[[limit]]\nname = \"b\"\nkey = \"sender\"\nunit = \"bytes\"\nrates = \"1000/1h\"\n";
    const std::string rcpts = "[[limit]]\nname = \"r\"\nkey = \"recipient_domain\"\nunit = \"recipients\"\nrates = \"10/1h\"\n";
    const Case cases[] = {
        {"limits while rate limiting is off", L + "[rate_limits]\nenabled = false\n" + bytes + rcpts,
         "t.toml:6: rate_limits.enabled: false, so none of the 2 [[limit]] entries is enforced (remove them, or set "
         "enabled = true)\n"},
        {"rate limiting off without limits", L + "[rate_limits]\nenabled = false\n", ""},
        {"hooked where they count", L + "[rate_limits]\nhooked_at = [\"RCPT\", \"END-OF-MESSAGE\"]\n" + bytes + rcpts, ""},
        {"recipients per recipient_domain without RCPT: one warning",
         L + "[rate_limits]\nhooked_at = [\"MAIL\"]\n" + rcpts,
         "t.toml:10: limit[0].unit: limit \"r\" counts recipients, which are only known at RCPT, but "
         "rate_limits.hooked_at does not list it: add check_policy_service to smtpd_recipient_restrictions (Postfix) or "
         "call relayguard from acl_smtp_rcpt (Exim), and add \"RCPT\" to rate_limits.hooked_at\n"},
        {"disabled limits do not count anywhere", L + bytes + "enabled = false\n", ""},
        {"messages count at any hook", L + "[rate_limits]\nhooked_at = [\"DATA\"]\n"
                                           "[[limit]]\nname = \"m\"\nkey = \"sender\"\nunit = \"messages\"\nrates = \"1/1s\"\n",
         ""},
        {"TLS settings without a tls: address",
         L + "[store]\ntype = \"redis\"\n[store.redis]\naddress = \"unix:/run/redis.sock\"\ntls_ca_file = \"/ca.pem\"\n"
             "tls_verify = true\n",
         "t.toml:9: store.redis.tls_ca_file: has no effect: store.redis.address is not a tls: address\n"
         "t.toml:10: store.redis.tls_verify: has no effect: store.redis.address is not a tls: address\n"},
        {"TLS without verification",
         L + "[store]\ntype = \"redis\"\n[store.redis]\naddress = \"tls:redis.example:6380\"\ntls_verify = false\n",
         "t.toml:9: store.redis.tls_verify: false: the Redis server's certificate is not checked, so anyone on the "
         "network path can pose as it (only for tests)\n"},
        {"redis settings with the redis store", L + "[store]\ntype = \"redis\"\n[store.redis]\naddress = \"[::1]:6379\"\n", ""},
        {"defer_reply with on_error defer", L + "[store]\non_error = \"defer\"\ndefer_reply = \"DEFER Later\"\n", ""},
        {"defer_reply spelled as its default", L + "[store]\ndefer_reply = \"" + std::string(default_store_defer_reply) + "\"\n", ""},
    };
    for (const auto& c : cases) EXPECT_EQ(join_lines(warnings_of(c.text)), c.want) << c.name;
}

TEST(ParseConfig, ReportsCompromiseAndEventErrorsOfInlineText)
{
    struct Case {
        const char* name;
        std::string text;
        std::string want;
    };
    const std::string L(listen_only);
    const Case cases[] = {
        {"suspend below hold", L + "[compromise]\nhold.rate_refusals = 10\nsuspend.rate_refusals = 9\n",
         "t.toml:5: compromise.suspend.rate_refusals: must be 0 or at least compromise.hold.rate_refusals (10), got 9: a "
         "higher rung cannot trigger before a lower one"},
        {"suspend below warn with hold unset",
         L + "[compromise.warn]\nrecipient_domains = 30\n[compromise.suspend]\nrecipient_domains = 29\n",
         "t.toml:6: compromise.suspend.recipient_domains: must be 0 or at least compromise.warn.recipient_domains (30), "
         "got 29: a higher rung cannot trigger before a lower one"},
        {"window not whole seconds", L + "[compromise]\nwindow = \"90500ms\"\n",
         "t.toml:4: compromise.window: must be a whole number of seconds, got 90500ms"},
        {"window zero", L + "[compromise]\nwindow = \"0s\"\n",
         "t.toml:4: compromise.window: invalid duration \"0s\": must be greater than 0"},
        {"window as an integer", L + "[compromise]\nwindow = 3600\n",
         "t.toml:4: compromise.window: expected a string, got an integer (write durations with a unit, e.g. \"10s\")"},
        {"suspend_duration over a week", L + "[compromise]\nsuspend_duration = \"8d\"\n",
         "t.toml:4: compromise.suspend_duration: invalid duration \"8d\": must be at most 7d"},
        {"suspend_duration without a unit", L + "[compromise]\nsuspend_duration = \"30\"\n",
         "t.toml:4: compromise.suspend_duration: invalid duration \"30\": expected a whole number followed by ms, s, m, h "
         "or d, e.g. \"10s\""},
        {"ipv4 prefix 0", L + "[compromise]\nipv4_prefix = 0\n", "t.toml:4: compromise.ipv4_prefix: must be between 1 and 32, got 0"},
        {"threshold over a million", L + "[compromise.warn]\nnetworks = 1000001\n",
         "t.toml:4: compromise.warn.networks: must be between 0 and 1000000, got 1000001"},
        {"unknown signal", L + "[compromise.warn]\nnetwork = 3\n",
         "t.toml:4: compromise.warn.network: unknown key (did you mean \"networks\"?)"},
        {"hold reply in lower case", L + "[compromise]\nhold_reply = \"hold review\"\n",
         "t.toml:4: compromise.hold_reply: invalid reply \"hold review\": \"hold\" must be upper case: HOLD"},
        {"event channel not a string", L + "[events]\nchannel = false\n", "t.toml:4: events.channel: expected a string, got a boolean"},
        {"event command with a newline", L + "[events]\ncommand = \"a\\nb\"\n",
         "t.toml:4: events.command: control characters are not allowed"},
        {"event queue too long", L + "[events]\nqueue = 100001\n", "t.toml:4: events.queue: must be between 1 and 100000, got 100001"},
        {"unknown events key", L + "[events]\ncomand = \"x\"\n", "t.toml:4: events.comand: unknown key (did you mean \"command\"?)"},
        {"suspended check misspelt", L + "[checks.suspend]\nenabled = true\n",
         "t.toml:3: checks.suspend: unknown key (did you mean \"suspended\"?)"},
    };
    for (const auto& c : cases) EXPECT_EQ(error_of(c.text), c.want) << c.name;
}

TEST(ParseConfig, ReadsCompromiseDurationsAndEqualThresholds)
{
    struct Case {
        const char* value;
        std::chrono::seconds want;
    };
    const Case cases[] = {{"\"0\"", 0s}, {"\"0s\"", 0s}, {"\"00m\"", 0s}, {"\"90s\"", 90s}, {"\"12h\"", 12h}, {"\"7d\"", 168h}};
    for (const auto& c : cases) {
        auto r = parse_config(std::string(listen_only) + "[compromise]\nsuspend_duration = " + c.value + "\n", "t.toml");
        ASSERT_TRUE(r) << c.value << ": " << r.error().to_string();
        EXPECT_EQ(r->compromise.suspend_duration, c.want) << c.value << " got=" << r->compromise.suspend_duration.count()
                                                          << "s want=" << c.want.count() << "s";
    }
    // A rung may trigger together with the one below it, and 0 leaves a signal out of a rung.
    auto r = parse_config(std::string(listen_only) + "[compromise]\nwarn.networks = 5\nhold.networks = 5\n"
                                                     "hold.rate_refusals = 3\nsuspend.networks = 0\nsuspend.rate_refusals = 3\n",
                          "t.toml");
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->compromise.hold.networks, 5u);
    EXPECT_EQ(r->compromise.suspend.networks, 0u);
    EXPECT_EQ(r->compromise.suspend.rate_refusals, 3u);
}

TEST(ParseConfig, WarnsAboutLadderSettingsThatNeverTrigger)
{
    struct Case {
        const char* name;
        std::string text;
        std::string want; // every warning, one per line
    };
    const std::string L = std::string(listen_only) + std::string(quiet_rate) + "[checks.auth_required]\nports = [587]\n";
    const Case cases[] = {
        {"enabled without thresholds", L + "[compromise]\nenabled = true\n",
         "t.toml:7: compromise: enabled, but no rung has a threshold (compromise.warn, compromise.hold, compromise.suspend): "
         "nothing is ever reported\n"},
        {"disabled without thresholds", L + "[compromise]\nenabled = false\n", ""},
        {"recipient domains not tracked",
         L + "[compromise]\nenabled = true\n[compromise.warn]\nnetworks = 4\nrecipient_domains = 10\n"
             "[compromise.hold]\nrecipient_domains = 20\n",
         "t.toml:11: compromise.warn.recipient_domains: has no effect: compromise.track_recipient_domains is false, so "
         "recipient domains are not counted\n"
         "t.toml:13: compromise.hold.recipient_domains: has no effect: compromise.track_recipient_domains is false, so "
         "recipient domains are not counted\n"},
        {"recipient domains tracked",
         L + "[compromise]\nenabled = true\ntrack_recipient_domains = true\n[compromise.warn]\nrecipient_domains = 10\n", ""},
        {"over the embedded cap", L + "[compromise]\nenabled = true\n[compromise.suspend]\nnetworks = 4097\n",
         "t.toml:10: compromise.suspend.networks: 4097 is never reached with store.type = \"embedded\": its counts stop "
         "at 4096 (lower the threshold, or use the Redis store)\n"},
        {"at the embedded cap", L + "[compromise]\nenabled = true\n[compromise.suspend]\nnetworks = 4096\n", ""},
        {"over the cap with Redis",
         L + "[store]\ntype = \"redis\"\n[compromise]\nenabled = true\n[compromise.suspend]\nnetworks = 5000\n", ""},
        {"refusals while rate limiting is off",
         L + "[rate_limits]\nenabled = false\n[compromise]\nenabled = true\n[compromise.hold]\nrate_refusals = 3\n",
         "t.toml:12: compromise.hold.rate_refusals: has no effect: rate_limits.enabled is false, so there are no refusals "
         "to count\n"},
        {"suspend rung while the suspended check is off",
         L + "[checks.suspended]\nenabled = false\n[compromise]\nenabled = true\n[compromise.suspend]\nnetworks = 9\n",
         "t.toml:11: compromise.suspend: suspensions are written but never enforced: checks.suspended is disabled\n"},
        {"suspended shadow while disabled", L + "[checks.suspended]\nenabled = false\nshadow = true\n",
         "t.toml:9: checks.suspended.shadow: has no effect while the check is disabled\n"},
        {"hold reply that is not HOLD", L + "[compromise]\nhold_reply = \"450 4.7.1 Login under review\"\n",
         "t.toml:8: compromise.hold_reply: \"450 4.7.1 Login under review\" is not a HOLD action: mail of a login on the "
         "hold rung will not wait in the hold queue for review\n"},
        {"bare HOLD", L + "[compromise]\nhold_reply = \"HOLD\"\n", ""},
        {"empty channel with the embedded store", L + "[events]\nchannel = \"\"\ncommand = \"logger -t rg\"\n", ""},
        {"channel with the embedded store", L + "[events]\nchannel = \"ops:rg\"\n", ""},
    };
    for (const auto& c : cases) EXPECT_EQ(join_lines(warnings_of(c.text)), c.want) << c.name;
}

TEST(ParseConfig, LaterValueOfAListReplacesTheDefaultNotAppends)
{
    auto r = parse_config(std::string(listen_only) + "[checks.plaintext_auth]\nmechanisms = [\"CRAM-MD5\"]\n", "t.toml");
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->plaintext_auth.mechanisms, std::vector<std::string>{"CRAM-MD5"});
}

// --- value parsers (config_values.hpp) ---

TEST(ConfigValues, ParsesDurations)
{
    using config_detail::parse_duration;
    struct Case {
        const char* text;
        std::chrono::milliseconds want; // 0: an error is expected
    };
    const Case cases[] = {
        {"250ms", 250ms}, {"10s", 10s}, {"5m", 5min}, {"2h", 2h}, {"7d", 168h}, {"604800000ms", 168h},
        {"0010s", 10s},   {"0s", 0ms},  {"", 0ms},    {"s", 0ms}, {"10", 0ms},  {"10 s", 0ms},
        {"1.5s", 0ms},    {"-1s", 0ms}, {"10S", 0ms}, {"8d", 0ms}, {"604800001ms", 0ms},
        {"99999999999999999999d", 0ms}, {"10us", 0ms},
    };
    for (const auto& c : cases) {
        std::chrono::milliseconds got{-1};
        const auto reason = parse_duration(c.text, got);
        if (c.want == 0ms)
            EXPECT_TRUE(reason.has_value()) << c.text << ": got=" << got.count() << "ms want=error";
        else
            EXPECT_EQ(got, c.want) << c.text << ": got=" << got.count() << "ms want=" << c.want.count()
                                   << "ms; reason=" << reason.value_or("");
    }
}

TEST(ConfigValues, ParsesSocketModes)
{
    using config_detail::parse_socket_mode;
    struct Case {
        const char* text;
        int want; // -1: error
    };
    const Case cases[] = {{"666", 0666}, {"0666", 0666}, {"0777", 0777}, {"000", 0},   {"0660", 0660},
                          {"66", -1},    {"06660", -1},  {"0888", -1},   {"1777", -1}, {"0o66", -1}, {"", -1}};
    for (const auto& c : cases) {
        unsigned got = 12345;
        const auto reason = parse_socket_mode(c.text, got);
        if (c.want < 0)
            EXPECT_TRUE(reason.has_value()) << c.text << ": got=" << got << " want=error";
        else
            EXPECT_EQ(got, static_cast<unsigned>(c.want)) << c.text << ": reason=" << reason.value_or("");
    }
}

TEST(ConfigValues, ParsesEndpoints)
{
    using config_detail::parse_endpoint;
    using Kind = Endpoint::Kind;
    struct Case {
        const char* text;
        bool ok;
        Kind kind;
        const char* host;
        std::uint16_t port;
        const char* path;
    };
    const Case cases[] = {
        {"inet:127.0.0.1:10033", true, Kind::inet, "127.0.0.1", 10033, ""},
        {"inet:[2001:db8::1]:25", true, Kind::inet, "2001:db8::1", 25, ""},
        {"inet:*:65535", true, Kind::inet, "*", 65535, ""},
        {"inet:0.0.0.0:0", true, Kind::inet, "0.0.0.0", 0, ""},
        {"unix:/var/spool/postfix/private/relayguard", true, Kind::unix_socket, "", 0,
         "/var/spool/postfix/private/relayguard"},
        {"inet:127.0.0.1", false},       {"inet:127.0.0.1:", false},    {"inet:127.0.0.1:65536", false},
        {"inet:127.0.0.1:+25", false},   {"inet::25", false},           {"inet:[::1]25", false},
        {"inet:[::1:25", false},         {"inet:[127.0.0.1]:25", false}, {"inet:example.com:25", false},
        {"inet:2001:db8::1:25", false},  {"unix:", false},              {"unix:relative", false},
        {"INET:127.0.0.1:25", false},    {"127.0.0.1:25", false},       {"", false},
    };
    for (const auto& c : cases) {
        Endpoint got;
        const auto reason = parse_endpoint(c.text, got);
        if (!c.ok) {
            EXPECT_TRUE(reason.has_value()) << c.text << ": got=ok want=error";
            continue;
        }
        ASSERT_FALSE(reason.has_value()) << c.text << ": " << *reason;
        EXPECT_EQ(got.kind, c.kind) << c.text;
        EXPECT_EQ(got.host, c.host) << c.text;
        EXPECT_EQ(got.port, c.port) << c.text;
        EXPECT_EQ(got.path, c.path) << c.text;
        EXPECT_EQ(got.text, c.text);
    }
}

TEST(ConfigValues, EndpointIdentityIgnoresHowAnAddressIsWritten)
{
    using config_detail::endpoint_identity;
    using config_detail::parse_endpoint;
    auto identity = [](const char* text) {
        Endpoint ep;
        EXPECT_FALSE(parse_endpoint(text, ep).has_value()) << text;
        return endpoint_identity(ep);
    };
    EXPECT_EQ(identity("inet:[::1]:25"), identity("inet:[0:0:0::1]:25"));
    EXPECT_EQ(identity("inet:[2001:DB8::1]:25"), identity("inet:[2001:db8::1]:25"));
    EXPECT_NE(identity("inet:[::1]:25"), identity("inet:[::1]:26"));
    EXPECT_NE(identity("inet:127.0.0.1:25"), identity("inet:127.0.0.2:25"));
    EXPECT_NE(identity("unix:/a"), identity("unix:/b"));
}

TEST(ConfigValues, NormalizesLocalDomains)
{
    using config_detail::normalize_domain_entry;
    struct Case {
        const char* text;
        const char* want; // nullptr: error
    };
    const Case cases[] = {
        {"example.com", "example.com"},
        {"Example.COM.", "example.com"},
        {".Example.net", ".example.net"},
        {"localhost", "localhost"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example"},
        {"a-b.c0", "a-b.c0"},
        {"", nullptr},
        {".", nullptr},
        {"..example.com", nullptr},
        {"example..com", nullptr},
        {"-example.com", nullptr},
        {"example-.com", nullptr},
        {"ex ample.com", nullptr},
        {"ex_ample.com", nullptr},
        {"bücher.example", nullptr},
        {"user@example.com", nullptr},
        {"192.0.2.1", nullptr},
        {"[192.0.2.1]", nullptr},
    };
    for (const auto& c : cases) {
        std::string got = "(unset)";
        const auto reason = normalize_domain_entry(c.text, got);
        if (!c.want)
            EXPECT_TRUE(reason.has_value()) << c.text << ": got=" << got << " want=error";
        else
            EXPECT_EQ(got, c.want) << c.text << ": reason=" << reason.value_or("");
    }
    std::string got;
    EXPECT_FALSE(normalize_domain_entry(std::string(63, 'a') + ".com", got).has_value());
    EXPECT_TRUE(normalize_domain_entry(std::string(64, 'a') + ".com", got).has_value());
    std::string long_name; // 4 * 63 + 3 dots = 255 characters
    for (int i = 0; i < 4; ++i) long_name += (i ? "." : "") + std::string(63, 'a');
    EXPECT_TRUE(normalize_domain_entry(long_name, got).has_value());
}

TEST(ConfigValues, ChecksDelimitersMechanismsAndAccountNames)
{
    using namespace config_detail;
    EXPECT_FALSE(check_delimiter("").has_value());
    EXPECT_FALSE(check_delimiter("+-=").has_value());
    EXPECT_TRUE(check_delimiter("@").has_value());
    EXPECT_TRUE(check_delimiter("+ ").has_value());
    EXPECT_TRUE(check_delimiter("\xc3\xa9").has_value());

    std::string m;
    EXPECT_FALSE(normalize_mechanism("cram-md5", m).has_value());
    EXPECT_EQ(m, "CRAM-MD5");
    EXPECT_FALSE(normalize_mechanism("SCRAM-SHA-256-PLUS", m).has_value());
    EXPECT_TRUE(normalize_mechanism("", m).has_value());
    EXPECT_TRUE(normalize_mechanism("A23456789012345678901", m).has_value()); // 21 characters
    EXPECT_TRUE(normalize_mechanism("PLAIN!", m).has_value());

    EXPECT_FALSE(check_account_name("").has_value());
    EXPECT_FALSE(check_account_name("postfix").has_value());
    EXPECT_FALSE(check_account_name("_relayguard").has_value());
    EXPECT_FALSE(check_account_name("1001").has_value());
    EXPECT_FALSE(check_account_name("host$").has_value());
    EXPECT_TRUE(check_account_name("-x").has_value());
    EXPECT_TRUE(check_account_name("a$b").has_value());
    EXPECT_TRUE(check_account_name("post fix").has_value());
}

TEST(ConfigValues, ChecksLimitNames)
{
    using config_detail::check_limit_name;
    const char* good[] = {"login_messages", "a", "client-net_24", "0"};
    const char* bad[] = {"", "Login", "login messages", "login.messages", "login:messages", "login|x", "caf\xc3\xa9"};
    for (const char* name : good) EXPECT_FALSE(check_limit_name(name).has_value()) << name << ": got=error want=ok";
    for (const char* name : bad) EXPECT_TRUE(check_limit_name(name).has_value()) << name << ": got=ok want=error";
    EXPECT_FALSE(check_limit_name(std::string(64, 'a')).has_value());
    EXPECT_TRUE(check_limit_name(std::string(65, 'a')).has_value());
}

TEST(ConfigValues, ChecksRedisAddresses)
{
    using config_detail::check_redis_address;
    const char* good[] = {
        "unix:/run/redis/redis.sock", "tcp:127.0.0.1:6379", "tls:redis.example.net:6380", "127.0.0.1:6379",
        "tcp:[::1]:6379",             "[2001:db8::1]:1",    "redis:6379",                 "redis_1.internal:65535",
        "tls:[::ffff:192.0.2.1]:6380",
    };
    const char* bad[] = {
        "",
        "unix:",
        "unix:run/redis.sock",
        "redis://127.0.0.1:6379",
        "rediss://redis.example.net:6380",
        "tcp:127.0.0.1",
        "tcp:127.0.0.1:",
        "tcp:127.0.0.1:0",
        "tcp:127.0.0.1:65536",
        "tcp::6379",
        "tcp:::1:6379",
        "tcp:[::1:6379",
        "tcp:[::1]6379",
        "tcp:[127.0.0.1]:6379",
        "tcp:redis..example:6379",
        "tcp:red is:6379",
        "udp:127.0.0.1:6379",
        "localhost",
    };
    for (const char* a : good) EXPECT_FALSE(check_redis_address(a).has_value()) << a << ": got=" << check_redis_address(a).value_or("") << " want=ok";
    for (const char* a : bad) EXPECT_TRUE(check_redis_address(a).has_value()) << a << ": got=ok want=error";
    EXPECT_FALSE(check_redis_address("unix:/" + std::string(106, 's')).has_value());
    EXPECT_TRUE(check_redis_address("unix:/" + std::string(107, 's')).has_value());
}

TEST(ConfigValues, ChecksLimitRepliesWithThePlaceholdersFilledIn)
{
    using config_detail::check_limit_reply;
    struct Case {
        const char* reply;
        const char* name;
        const char* want; // "" : valid
    };
    const Case cases[] = {
        {"450 4.7.1 Rate limit {limit} exceeded, retry in {retry_after} seconds", "login_messages", ""},
        {"DEFER_IF_PERMIT {limit}", "x", ""},
        {"450 4.7.1 no placeholders", "x", ""},
        {"450 4.7.1 {retry_after}{retry_after}", "x", ""},
        {"450 4.7.1 a } alone is text", "x", ""},
        {"450 4.7.1 {Limit}", "x", "unknown placeholder {Limit} (use {limit} or {retry_after})"},
        {"450 4.7.1 {}", "x", "unknown placeholder {} (use {limit} or {retry_after})"},
        {"450 4.7.1 {limit", "x", "'{' without a closing '}' (use {limit} or {retry_after})"},
        {"{limit} 4.7.1 x", "defer", "\"defer\" must be upper case: DEFER"},
    };
    for (const auto& c : cases)
        EXPECT_EQ(check_limit_reply(c.reply, c.name).value_or(""), c.want) << c.reply;
    // {limit} is filled with the name: a reply that fits without it can be too long with it.
    const std::string near_max = "450 4.7.1 " + std::string(max_action_bytes - 10 - 7, 'x') + "{limit}";
    EXPECT_FALSE(check_limit_reply(near_max, "abcdefg").has_value());
    EXPECT_TRUE(check_limit_reply(near_max, "abcdefgh").has_value());
}

TEST(ConfigValues, EditDistanceCountsSwapsAsOneEdit)
{
    using config_detail::edit_distance;
    struct Case {
        const char* a;
        const char* b;
        std::size_t want;
    };
    const Case cases[] = {{"", "", 0},          {"abc", "abc", 0},          {"", "abc", 3},
                          {"thraeds", "threads", 1}, {"reply", "relpy", 1}, {"shadw", "shadow", 1},
                          {"kitten", "sitting", 3},  {"log", "loggin", 3},  {"ab", "ba", 1}};
    for (const auto& c : cases) {
        EXPECT_EQ(edit_distance(c.a, c.b), c.want) << c.a << " / " << c.b;
        EXPECT_EQ(edit_distance(c.b, c.a), c.want) << c.b << " / " << c.a;
    }
}

TEST(ConfigValues, SuggestsOnlyCloseNames)
{
    using config_detail::closest_name;
    const std::string_view names[] = {"threads", "listen", "socket_mode", "socket_owner"};
    EXPECT_EQ(closest_name("thread", names).value_or("-"), "threads");
    EXPECT_EQ(closest_name("lisen", names).value_or("-"), "listen");
    EXPECT_EQ(closest_name("socket_ownr", names).value_or("-"), "socket_owner");
    EXPECT_EQ(closest_name("socket_mod", names).value_or("-"), "socket_mode");
    EXPECT_EQ(closest_name("workers", names).value_or("-"), "-");
    EXPECT_EQ(closest_name("li", names).value_or("-"), "-");
    // An abbreviation of three letters or more counts as one edit.
    EXPECT_EQ(closest_name("sock", names).value_or("-"), "socket_mode");
    EXPECT_EQ(closest_name("lis", names).value_or("-"), "listen");
    EXPECT_EQ(closest_name("so", names).value_or("-"), "-");
}

} // namespace
} // namespace relayguard
