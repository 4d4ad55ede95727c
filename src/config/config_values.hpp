// SPDX-License-Identifier: MIT
// config_values.hpp - parsers for the value syntaxes of the config file (module-private).
//
// Durations, socket modes, listen endpoints, domain names, delimiters, SASL mechanism names,
// limit names, Redis addresses, reply templates, and the "did you mean" lookup for unknown keys. No TOML here: each function takes the text of
// one value. Each parser returns nullopt when the text is valid, else a short English reason
// that the loader puts after the value in its error message. Pure functions; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <relayguard/config.hpp>

namespace relayguard::config_detail {

// Longest accepted duration. Timers add it to the clock, which must not overflow, and no
// timeout of a policy server has a use for more than a week.
inline constexpr std::chrono::milliseconds max_duration = std::chrono::hours{24 * 7};

// Linux sun_path is 108 bytes, the terminating NUL included.
inline constexpr std::size_t max_unix_path_bytes = 107;

// RFC 1035 section 2.3.4: 63 bytes per label, 255 per name on the wire (253 as text).
inline constexpr std::size_t max_label_bytes = 63;
inline constexpr std::size_t max_domain_bytes = 253;

// RFC 4422 section 3.1: a SASL mechanism name is 1 to 20 characters.
inline constexpr std::size_t max_mechanism_bytes = 20;

// A limit's name is part of every Redis key and log line of the limit; keep both short.
inline constexpr std::size_t max_limit_name_bytes = 64;

// Unknown keys get a suggestion when a known key is at most this many edits away.
inline constexpr std::size_t max_suggestion_distance = 2;
// ... or when the unknown word is the start of a known one and at least this long.
inline constexpr std::size_t min_abbreviation_bytes = 3;

// parse_duration - "<n>ms", "<n>s", "<n>m", "<n>h" or "<n>d", n a whole number; > 0 and at
// most max_duration.
std::optional<std::string> parse_duration(std::string_view text, std::chrono::milliseconds& out);

// parse_socket_mode - 3 or 4 octal digits ("660", "0660"), at most 0777.
std::optional<std::string> parse_socket_mode(std::string_view text, unsigned& out);

// parse_endpoint - "inet:HOST:PORT" (HOST an IPv4 address, "[IPv6 address]" or "*"; PORT
// 0..65535) or "unix:/absolute/path". out.host is the address without brackets, or "*".
std::optional<std::string> parse_endpoint(std::string_view text, Endpoint& out);

// endpoint_identity - a form in which two endpoints that bind the same thing compare equal
// ("inet:[::1]:25" and "inet:[0::1]:25").
std::string endpoint_identity(const Endpoint& endpoint);

// normalize_domain_entry - a local domain entry: "example.com", or ".example.com" for its
// subdomains. out is lower case without a trailing dot.
std::optional<std::string> normalize_domain_entry(std::string_view text, std::string& out);

// check_delimiter - recipient_delimiter: ASCII characters, none of them '@' or white space.
std::optional<std::string> check_delimiter(std::string_view text);

// normalize_mechanism - a SASL mechanism name (RFC 4422 syntax); out is upper case.
std::optional<std::string> normalize_mechanism(std::string_view text, std::string& out);

// check_account_name - socket_owner/socket_group: a user or group name, not looked up here.
std::optional<std::string> check_account_name(std::string_view text);

// check_limit_name - [a-z0-9_-], 1 to max_limit_name_bytes characters.
std::optional<std::string> check_limit_name(std::string_view text);

// check_redis_address - "unix:/absolute/path", "tcp:HOST:PORT", "tls:HOST:PORT" or "HOST:PORT";
// HOST an IPv4 address, a bracketed IPv6 address or a host name; PORT 1..65535. The form the
// Redis client accepts (redis_config.hpp), checked strictly so that a typo fails at load, not
// at the first connect.
std::optional<std::string> check_redis_address(std::string_view text);

// A limit's reply is validated with {retry_after} filled in as this many seconds: the longest
// period a rate may have (366 days, limits.hpp), the longest wait a request that fits can get.
inline constexpr std::int64_t sample_retry_after_s = 366LL * 86400;

// check_limit_reply - a limit's reply template: every "{...}" is {limit} or {retry_after}, and
// with them filled in (`name`, sample_retry_after_s) it is a valid access(5) action.
std::optional<std::string> check_limit_reply(std::string_view reply, std::string_view name);

// edit_distance - optimal string alignment distance (insert, delete, replace, swap two
// adjacent characters: each costs 1).
std::size_t edit_distance(std::string_view a, std::string_view b);

// closest_name - the candidate nearest to `word` within max_suggestion_distance, an
// abbreviated candidate counting as one edit away (the first one on a tie), or nullopt.
std::optional<std::string_view> closest_name(std::string_view word, std::span<const std::string_view> candidates);

} // namespace relayguard::config_detail
