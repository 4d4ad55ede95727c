// SPDX-License-Identifier: MIT
// support.hpp - what the ctl commands share: Redis calls that report their own failures, key
// values as the daemon counts them, and text formatting (private to the ctl module).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include <relayguard/counter_store.hpp>

#include "ctl/ctl.hpp"

namespace relayguard::ctl {

// args_of / strings_of_args - a command's arguments as a vector, built outside the coroutine:
// GCC 12 cannot keep a braced initializer list alive across co_await ("array used as
// initializer"), so coroutines never spell one.
template <class... A>
std::vector<std::string_view> args_of(const A&... a)
{
    std::vector<std::string_view> v;
    v.reserve(sizeof...(A));
    (v.emplace_back(a), ...);
    return v;
}
template <class... A>
std::vector<std::string> strings_of_args(const A&... a)
{
    std::vector<std::string> v;
    v.reserve(sizeof...(A));
    (v.emplace_back(a), ...);
    return v;
}

// call - one Redis command. A transport failure or an error reply is reported through
// s.out.error() and gives nullopt: the caller only returns exit_failure.
boost::asio::awaitable<std::optional<redis::Reply>> call(Session& s, std::vector<std::string_view> args);

// scan_keys - every key matching `pattern` (SCAN MATCH), sorted; nullopt after a reported failure.
boost::asio::awaitable<std::optional<std::vector<std::string>>> scan_keys(Session& s, const std::string& pattern);

// redis_time_us - Redis's clock (TIME), the daemon's clock for everything in Redis.
boost::asio::awaitable<std::optional<std::int64_t>> redis_time_us(Session& s);

// Reply shapes. strings_of: an array of bulk strings (others skipped). pairs_of: a flat
// field/value array (HGETALL) as pairs.
std::vector<std::string> strings_of(const redis::Reply& reply);
std::vector<std::pair<std::string, std::string>> pairs_of(const redis::Reply& reply);
// field - the value of `name` in pairs_of() output, or nullopt.
std::optional<std::string> field(const std::vector<std::pair<std::string, std::string>>& pairs, std::string_view name);

// glob_escape - `text` for a SCAN MATCH pattern, matching itself only.
std::string glob_escape(std::string_view text);
// unescape_key_value - the inverse of escape_key_value(); nullopt if not a valid escaping.
std::optional<std::string> unescape_key_value(std::string_view escaped);
// parse_override_key - (key, value) of an override hash key "PREFIX{TAG:VALUE}:o", or nullopt.
std::optional<std::pair<LimitKey, std::string>> parse_override_key(std::string_view prefix, std::string_view key);
// parse_owners_key - the address or @domain of "PREFIX{own:KEY}", or nullopt.
std::optional<std::string> parse_owners_key(std::string_view prefix, std::string_view key);

// A key value as the daemon counts it (CounterOp::value, ::parent).
struct KeyValue {
    std::string value;
    std::string parent; // "@domain" of a login or sender, else ""
};

// override_value - the value an override of `key` is stored under: the value as typed,
// normalized as the daemon normalizes requests (a client network as given, host bits cleared).
// Precondition: validate_key_arg(key) passed.
KeyValue override_value(const KeyArg& key, const Config& config);

// counted_value - the value `limit` counts `key` under: override_value(), except that a client
// address or network is masked to the limit's prefix. nullopt and *why when the network given is
// wider than the networks the limit counts (it would cover many counters).
std::optional<KeyValue> counted_value(const KeyArg& key, const LimitConfig& limit, const Config& config,
                                      std::string* why);

// override_fits - whether an override stored for `key` can ever apply to `limit`: a client
// network must have the prefix length the limit counts that family with. nullopt if it fits,
// else why (with the network to use instead).
std::optional<std::string> override_fits(const KeyArg& key, const LimitConfig& limit);

// find_limit - the [[limit]] named `name`, or nullptr.
const LimitConfig* find_limit(const Config& config, std::string_view name) noexcept;
// limit_names - "a, b, c" for messages.
std::string limit_names(const Config& config);
// valid_limit_name - [a-z0-9_-], 1 to 64 characters (the config's rule).
bool valid_limit_name(std::string_view name) noexcept;

// key_noun - "login", "sender", "sender domain", "network", "recipient domain", "global".
std::string_view key_noun(LimitKey key) noexcept;
// key_option - the command-line option naming a key: "--login", ...
std::string_view key_option(LimitKey key) noexcept;
// describe_key - "login alice@example.com", "global" (value shown with show()).
std::string describe_key(LimitKey key, std::string_view value);

// show - an untrusted value for a terminal: printable ASCII kept, every other byte as \xNN.
std::string show(std::string_view untrusted);
// format_duration_us - "0s", "1.5s", "42s", "3m20s", "2h", "1d3h".
std::string format_duration_us(std::int64_t us);
// format_unix_time - "2026-11-28 00:39:00 UTC".
std::string format_unix_time(std::int64_t seconds);
// rate_text - "100/60s".
std::string rate_text(const Rate& rate);

// source_name - the JSON name of where an op's rates came from: "config", "override",
// "parent_override"; source_text - the human one: "config default", "login override",
// "domain override (@example.com)".
std::string_view source_name(OpOutcome::Source source) noexcept;
std::string source_text(OpOutcome::Source source, LimitKey key, std::string_view parent);

// windows_json - an op's windows as usage and check print them: rate, count, period_s, used,
// remaining, full_in_ms.
Json windows_json(const OpOutcome& outcome);

} // namespace relayguard::ctl
