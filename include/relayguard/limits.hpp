// SPDX-License-Identifier: MIT
// limits.hpp - the rate-limit model (limits, rates, override specs) and GCRA.
//
// A limit counts one unit (messages, recipients, bytes) per key value (a login, a sender, a
// client network, ...) against one or more rates N/period. Each (key value, limit, rate) keeps
// one GCRA timestamp, the "theoretical arrival time" (TAT): O(1) state, smooth refill, burst N,
// exact retry-after. A request's ops are checked and consumed all together or not at all.
// The stores that keep the TATs are in counter_store.hpp. Pure data types and functions: thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>


namespace relayguard {

using Micros = std::chrono::microseconds;

// One rate: at most `count` units per `period`. count 0 refuses everything.
struct Rate {
    std::uint64_t count = 0;
    std::chrono::seconds period{0};
    friend bool operator==(const Rate&, const Rate&) = default;
};

// What a config default or an override says: rates, "unlimited", or nothing (inherit).
struct RateSpec {
    enum class Kind : unsigned char { rates, unlimited };
    Kind kind = Kind::rates;
    std::vector<Rate> rates; // Kind::rates; {0/period} is the explicit "0" (block)
    friend bool operator==(const RateSpec&, const RateSpec&) = default;
};

// parse_rate_spec - "100/1m, 1000/1h, 5000/1d" (periods: s, m, h, d, w; a bare number is
// seconds), "unlimited", or "0". nullopt and a reason in *why on error.
std::optional<RateSpec> parse_rate_spec(std::string_view text, std::string* why = nullptr);

// format_rate_spec - the canonical text: "100/60s,1000/3600s", "unlimited" or "0".
std::string format_rate_spec(const RateSpec& spec);

// gcra - one window's arithmetic, shared by every store (and mirrored by the Redis script, which
// must compute bit-for-bit the same: doubles, floor). `tat` is the stored TAT (0: none),
// `now` the store's clock, both in microseconds since the epoch.
struct GcraResult {
    bool allowed = false;
    std::int64_t new_tat = 0;    // TAT to store if the whole request is allowed
    std::int64_t retry_after = 0; // microseconds until this window has room (refused only)
    std::uint64_t remaining = 0;  // units left after this request (or now, if cost is 0)
};
GcraResult gcra(std::int64_t tat, std::int64_t now, const Rate& rate, std::uint64_t cost) noexcept;

// rescale_tat - a window's TAT written at `was` units per period, as it reads at `count` units
// per period: the units already used carry over when a window's rate changes (an override set,
// raised, lowered or lifted), instead of the old TAT being read as that much time at the new rate.
// Unchanged when was == count, count == 0 or the TAT has passed. Mirrored by the Redis script.
std::int64_t rescale_tat(std::int64_t tat, std::int64_t now, std::uint64_t was, std::uint64_t count) noexcept;

// What a limit is keyed by (Postfix attribute names, verbatim, where there is one).
enum class LimitKey : unsigned char {
    sasl_username,    // the login
    sender,           // the envelope sender address (normalized; <> is not counted)
    sender_domain,    // its domain
    client_address,   // the client network: the address masked to prefix_v4 / prefix_v6
    recipient_domain, // each recipient's domain
    global,           // one counter for everything
};
std::string_view limit_key_name(LimitKey key) noexcept;
std::optional<LimitKey> parse_limit_key(std::string_view name) noexcept;

// What a limit counts. recipients: one per RCPT request; messages: one per SMTP transaction
// (`instance`), at the first request of it that gets through; bytes: `size` at END-OF-MESSAGE.
enum class LimitUnit : unsigned char { messages, recipients, bytes };
std::string_view limit_unit_name(LimitUnit unit) noexcept;
std::optional<LimitUnit> parse_limit_unit(std::string_view name) noexcept;

// Which traffic a limit applies to.
enum class LimitScope : unsigned char { any, authenticated, unauthenticated };

// Default reply of a limit. {limit} is replaced by the limit's name, {retry_after} by the
// seconds until the request would fit.
inline constexpr std::string_view default_limit_reply =
    "450 4.7.1 Rate limit {limit} exceeded, retry in {retry_after} seconds";

struct LimitConfig {
    std::string name; // [a-z0-9_-], unique
    LimitKey key = LimitKey::sasl_username;
    LimitUnit unit = LimitUnit::messages;
    RateSpec rates;   // the default for every key value; Kind::rates, non-empty
    LimitScope scope = LimitScope::any;
    bool enabled = true;
    bool shadow = false;           // counts, but when full only logs and lets the request pass
    bool applies_to_exempt = false; // count exempt clients/logins too
    unsigned prefix_v4 = 32;       // client_address only
    unsigned prefix_v6 = 64;
    std::string reply{default_limit_reply};
};

} // namespace relayguard
