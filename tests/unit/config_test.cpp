// SPDX-License-Identifier: MIT
// config_test.cpp - load_config()/parse_config(): every value of a full file, the exact text of
// each error (one file per message in tests/data/config/), the warnings, the example config in
// contrib/, and the value parsers behind them (config_values.hpp).
#include <relayguard/config.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
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
