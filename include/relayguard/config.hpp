// SPDX-License-Identifier: MIT
// config.hpp - the validated, immutable configuration, loaded from a TOML file.
//
// load_config() reads the file once and checks every key: unknown keys, wrong types and bad
// values are errors naming the file, the line and the dotted key. The result is never changed
// afterwards; a reload builds a new one (shared_ptr<const Config>). Thread-safe once built.
// Documented key by key in contrib/relayguard.toml and relayguard.toml(5).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

#include <relayguard/limits.hpp>
#include <relayguard/net.hpp>
#include <relayguard/redis_config.hpp>
#include <relayguard/request_parser.hpp>

namespace relayguard {

// A listening endpoint: "inet:HOST:PORT" ("inet:[::1]:10033" for IPv6) or "unix:PATH".
struct Endpoint {
    enum class Kind : unsigned char { inet, unix_socket };
    Kind kind = Kind::inet;
    std::string host; // inet: the address without brackets ("::1"), or "*" for every address
    std::uint16_t port = 0;
    std::string path; // unix
    std::string text; // as written in the config, for log lines

    friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// Defaults, one comment each.
// Postfix closes idle policy connections after smtpd_policy_service_max_idle (300 s); we wait
// longer so that Postfix, not we, ends an idle connection.
inline constexpr std::chrono::seconds default_idle_timeout{600};
// A request that started arriving must be complete within this; Postfix writes one in one go.
inline constexpr std::chrono::seconds default_request_timeout{10};
// Time given to connections to finish on SIGTERM before they are closed.
inline constexpr std::chrono::seconds default_shutdown_timeout{5};
inline constexpr std::size_t default_max_connections = 4096;
inline constexpr unsigned default_socket_mode = 0666;

// Default replies of the checks, used when the config does not set one (access(5) actions).
inline constexpr std::string_view default_auth_required_reply = "530 5.7.0 Authentication required";
inline constexpr std::string_view default_plaintext_auth_reply =
    "538 5.7.11 Encryption required for requested authentication mechanism";
inline constexpr std::string_view default_relay_reply = "554 5.7.1 Relay access denied";
inline constexpr std::string_view default_sender_ownership_reply =
    "553 5.7.1 Sender address rejected: not owned by authenticated user";
inline constexpr std::string_view default_unauthenticated_sender_reply =
    "553 5.7.1 Sender address rejected: authentication required for a local sender";
inline constexpr std::string_view default_null_sender_reply =
    "553 5.7.1 Sender address rejected: null sender not allowed for authenticated users";

struct ServerConfig {
    std::vector<Endpoint> listen;
    unsigned threads = 0; // 0: one per CPU core
    std::size_t max_connections = default_max_connections;
    std::chrono::milliseconds idle_timeout = default_idle_timeout;
    std::chrono::milliseconds request_timeout = default_request_timeout;
    std::chrono::milliseconds shutdown_timeout = default_shutdown_timeout;
    unsigned socket_mode = default_socket_mode; // UNIX listeners
    std::string socket_owner;                   // empty: leave as created
    std::string socket_group;
    // Privileges: started as root, the daemon binds every listener and then drops to `user`
    // (and `group`, else the user's primary group) for good, supplementary groups included.
    // Running on as root is refused unless allow_root is set. Empty user: no change of identity.
    std::string user;
    std::string group;
    bool allow_root = false;
};

struct LogConfig {
    enum class Target : unsigned char { stderr_, syslog };
    enum class Level : unsigned char { debug, info, warning, error };
    Target target = Target::stderr_;
    Level level = Level::info;
};

// What every check shares: on/off, shadow (log what it would have done, answer as if it
// passed), and the access(5) action it answers when it does not pass.
struct CheckConfig {
    bool enabled = true;
    bool shadow = false;
    std::string reply;
};

struct ExemptConfig {
    bool enabled = true;
    NetworkSet networks;              // trusted client networks
    std::vector<std::string> logins;  // exact sasl_username values, compared case-insensitively
};

struct AuthRequiredConfig : CheckConfig {
    std::vector<std::uint16_t> ports{587, 465}; // server_port values that require a login (submission)
    std::vector<std::string> policy_contexts{}; // policy_context values that require a login
};

struct PlaintextAuthConfig : CheckConfig {
    std::vector<std::string> mechanisms{"PLAIN", "LOGIN"}; // upper case; they send the password itself
};

struct RelayConfig : CheckConfig {};

// The suspended check (first after exempt): a login suspended by relayguardctl or by the
// compromise ladder is refused with this reply until the suspension is lifted or ends.
inline constexpr std::string_view default_suspended_reply =
    "554 5.7.1 Account suspended, contact your mail administrator";
struct SuspendedConfig : CheckConfig {};

struct SenderOwnershipConfig : CheckConfig {
    // Reply when an unauthenticated, untrusted client uses a sender in a local domain.
    std::string unauthenticated_reply{default_unauthenticated_sender_reply};
    // Reply when an authenticated client uses the null sender <> and that is not allowed.
    std::string null_sender_reply{default_null_sender_reply};
    bool login_owns_itself = true;                // login "a@b" may send as a@b
    bool allow_null_sender_authenticated = false;
    std::string map_file{};                       // smtpd_sender_login_maps format; empty: none
    std::vector<std::string> any_sender_logins{}; // logins that may use any sender
};

// How addresses compare. Domains always compare case-insensitively.
struct AddressConfig {
    bool local_part_case_sensitive = false; // false: as Postfix's lookup tables (folded)
    std::string recipient_delimiter;        // e.g. "+": user+ext@d also tried as user@d
};

struct DomainsConfig {
    std::vector<std::string> local; // lower case; ".example.com" also matches subdomains
    std::string file;               // one domain per line, '#' comments; empty: none
};

// Where rate-limit state lives, and what happens when that store fails.
inline constexpr std::string_view default_store_defer_reply =
    "451 4.3.0 Rate limit service temporarily unavailable, try again later";
inline constexpr std::chrono::seconds default_instance_ttl_config{3600};
// Per Redis command. A policy answer waits on it, and Redis answers a healthy request in well
// under a millisecond: past this, on_error decides rather than an SMTP client waiting.
inline constexpr std::chrono::milliseconds default_store_timeout{50};

struct StoreConfig {
    enum class Type : unsigned char { embedded, redis };
    // On a store failure (Redis down, slow past its timeout, error reply): dunno answers as if
    // every limit passed (fail open); defer answers defer_reply (fail closed, 4xx); local keeps
    // enforcing with the embedded store of this host until Redis answers again.
    enum class OnError : unsigned char { dunno, defer, local };
    Type type = Type::embedded;
    OnError on_error = OnError::local;
    std::string defer_reply{default_store_defer_reply};
    std::string key_prefix = "rg:";
    std::chrono::seconds instance_ttl = default_instance_ttl_config; // message dedupe markers
    redis::ClientConfig redis{.command_timeout = default_store_timeout};
};

// Rate limiting as a whole: the check's switch, and where the MTA calls relayguard, so that a
// limit whose unit cannot be counted there is a config-time warning.
struct RateLimitsConfig {
    bool enabled = true;
    std::vector<ProtocolState> hooked_at{ProtocolState::rcpt};
};

// Compromise detection per login (DESIGN.md section 4). Signals, counted per login within
// `window`: distinct client networks (IPv4 /ipv4_prefix, IPv6 /ipv6_prefix), distinct recipient
// domains (only if track_recipient_domains), and rate-limit refusals. Each rung of the ladder
// has a threshold per signal (0: that signal does not trigger the rung); a login's rung is the
// highest whose threshold any signal reaches. Warn logs and publishes an event; hold answers
// hold_reply (Postfix keeps the mail in its hold queue); suspend suspends the login (reason
// naming the signal and the numbers) for suspend_duration (0: until lifted).
inline constexpr std::chrono::seconds default_compromise_window{3600};
inline constexpr std::string_view default_hold_reply = "HOLD relayguard: login under review";
struct LadderRung {
    std::uint64_t networks = 0;
    std::uint64_t recipient_domains = 0;
    std::uint64_t rate_refusals = 0;
    bool shadow = false; // log and publish "would hold/suspend", answer as if below this rung

    bool any() const noexcept { return networks != 0 || recipient_domains != 0 || rate_refusals != 0; }
};
struct CompromiseConfig {
    bool enabled = false;
    std::chrono::seconds window = default_compromise_window;
    unsigned ipv4_prefix = 24;
    unsigned ipv6_prefix = 48;
    bool track_recipient_domains = false;
    LadderRung warn;
    LadderRung hold;
    LadderRung suspend;
    std::string hold_reply{default_hold_reply};
    std::chrono::seconds suspend_duration{0};
    bool applies_to_exempt = false; // exempt logins/clients are not tracked unless set
};

// Events (ladder steps, automatic suspensions): logged once at warning level; also published as
// one JSON object on a Redis channel (Redis store only; empty channel: not published) and
// written to the stdin of `command` (empty: none), which is killed after command_timeout.
inline constexpr std::string_view default_events_channel = "relayguard:events";
inline constexpr std::chrono::milliseconds default_event_command_timeout{10000};
// Events waiting for the command; past this they are dropped (and counted), never queued
// without bound.
inline constexpr std::size_t default_event_queue = 1000;
struct EventsConfig {
    std::string channel{default_events_channel};
    std::string command; // run with /bin/sh -c
    std::chrono::milliseconds command_timeout = default_event_command_timeout;
    std::size_t queue = default_event_queue;
};

// The Prometheus endpoint (/metrics, /healthz): off unless listen is set.
struct MetricsConfig {
    std::optional<Endpoint> listen; // inet only; read at start (a change needs a restart)
};

struct Config {
    std::string path; // the file it came from

    ServerConfig server;
    ParserLimits protocol;
    LogConfig log;
    AddressConfig address;
    DomainsConfig domains;

    ExemptConfig exempt;
    AuthRequiredConfig auth_required{{.reply = std::string(default_auth_required_reply)}};
    PlaintextAuthConfig plaintext_auth{{.reply = std::string(default_plaintext_auth_reply)}};
    SuspendedConfig suspended{{.reply = std::string(default_suspended_reply)}};
    RelayConfig relay{{.reply = std::string(default_relay_reply)}};
    SenderOwnershipConfig sender_ownership{{.reply = std::string(default_sender_ownership_reply)}};

    RateLimitsConfig rate_limits;
    std::vector<LimitConfig> limits; // [[limit]], in file order
    StoreConfig store;
    CompromiseConfig compromise;
    EventsConfig events;
    MetricsConfig metrics;
};

struct ConfigError {
    std::string file;
    unsigned line = 0;  // 0: not about one line (e.g. the file cannot be read)
    std::string key;    // dotted, e.g. "checks.relay.reply"; empty if not about one key
    std::string message;

    // "FILE:LINE: KEY: MESSAGE" (parts that are empty are left out).
    std::string to_string() const;
};

// load_config - read and validate a config file. Warnings (valid but suspicious settings) are
// appended to `warnings`, if given, in the same "file:line: key: message" form.
boost::system::result<Config, ConfigError> load_config(const std::string& path,
                                                      std::vector<std::string>* warnings = nullptr);

// parse_config - the same from text in memory; `path` is only used in messages.
boost::system::result<Config, ConfigError> parse_config(std::string_view text, const std::string& path,
                                                       std::vector<std::string>* warnings = nullptr);

} // namespace relayguard
