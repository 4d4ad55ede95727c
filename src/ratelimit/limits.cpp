// SPDX-License-Identifier: MIT
// limits.cpp - rate specs (parse, canonical text), GCRA arithmetic, limit key and unit names.
//
// Pure functions, no state: thread-safe. The Redis script (rate_script.cpp) mirrors gcra() and
// the rate grammar; a change here must be made there too (store_conformance_test checks both).
// SECURITY: rate specs come from the config and from Redis overrides; both are bounded here
// (count, period) so the arithmetic stays exact, and errors quote at most a sanitized sample.
#include <relayguard/limits.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <utility>

#include <relayguard/strings.hpp>

#include "ratelimit/rate_math.hpp"

namespace relayguard {
namespace {

using detail::max_increment_us;
using detail::max_rate_count;
using detail::max_rate_period;

constexpr std::int64_t micros_per_second = 1'000'000;

// Times above 2^53 µs (year 2255) are not a clock reading but a corrupt TAT; clamping keeps
// the double arithmetic below exact, the same as in the Redis script.
constexpr std::int64_t max_time_us = std::int64_t{1} << 53;

// Longest count or period text we look at: more digits than this cannot be in range anyway.
constexpr std::size_t max_number_digits = 19;

// Longest token quoted in an error message.
constexpr std::size_t max_quoted_bytes = 40;

struct PeriodUnit {
    char suffix;
    std::int64_t seconds;
};
constexpr std::array<PeriodUnit, 5> period_units{{
    {'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400},
}};

// The separators between rates, as Lua's %s sees them (the script must split alike).
constexpr bool is_space(char c) noexcept
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::optional<RateSpec> fail(std::string* why, std::string reason)
{
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
}

std::string quote(std::string_view token) { return "'" + sanitize(token, max_quoted_bytes) + "'"; }

// parse_digits - a non-empty run of decimal digits (no sign, no space) into *out.
bool parse_digits(std::string_view s, std::uint64_t* out) noexcept
{
    if (s.empty() || s.size() > max_number_digits) return false;
    std::uint64_t n = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + static_cast<unsigned>(c - '0'); // 19 digits cannot overflow 64 bits
    }
    *out = n;
    return true;
}

// all_digits - s is a non-empty run of decimal digits, however long.
bool all_digits(std::string_view s) noexcept
{
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// parse_rate - one "COUNT/PERIOD" token; PERIOD is digits with an optional unit suffix.
std::optional<Rate> parse_rate(std::string_view token, std::string* why)
{
    const auto slash = token.find('/');
    if (slash == std::string_view::npos) {
        fail(why, "rate " + quote(token) + " is not COUNT/PERIOD");
        return std::nullopt;
    }
    const std::string_view count_text = token.substr(0, slash);
    std::string_view period_text = token.substr(slash + 1);

    std::uint64_t count = 0;
    if (!parse_digits(count_text, &count) || count > max_rate_count) {
        if (all_digits(count_text))
            fail(why, "count of " + quote(token) + " is over " + std::to_string(max_rate_count));
        else
            fail(why, "count of " + quote(token) + " is not a non-negative integer");
        return std::nullopt;
    }

    std::int64_t unit_seconds = 1; // a bare number is seconds
    if (!period_text.empty()) {
        const char last = period_text.back();
        for (const auto& unit : period_units) {
            if (unit.suffix == last) {
                unit_seconds = unit.seconds;
                period_text.remove_suffix(1);
                break;
            }
        }
    }
    std::uint64_t n = 0;
    if (!parse_digits(period_text, &n)) {
        if (all_digits(period_text)) {
            fail(why, "period of " + quote(token) + " is over 366 days");
        } else {
            fail(why, "period of " + quote(token) + " is not N, Ns, Nm, Nh, Nd or Nw");
        }
        return std::nullopt;
    }
    if (n == 0) {
        fail(why, "period of " + quote(token) + " is 0");
        return std::nullopt;
    }
    if (n > static_cast<std::uint64_t>(max_rate_period.count() / unit_seconds)) {
        fail(why, "period of " + quote(token) + " is over 366 days");
        return std::nullopt;
    }
    return Rate{count, std::chrono::seconds{static_cast<std::int64_t>(n) * unit_seconds}};
}

} // namespace

std::optional<RateSpec> parse_rate_spec(std::string_view text, std::string* why)
{
    // Split into tokens. Between two rates: spaces, or one comma with optional spaces around.
    std::vector<std::string_view> tokens;
    bool comma_pending = false;
    std::size_t i = 0;
    while (i < text.size()) {
        const char c = text[i];
        if (is_space(c)) {
            ++i;
        } else if (c == ',') {
            if (tokens.empty()) return fail(why, "rate spec starts with a comma");
            if (comma_pending) return fail(why, "empty rate between two commas");
            comma_pending = true;
            ++i;
        } else {
            std::size_t j = i;
            while (j < text.size() && text[j] != ',' && !is_space(text[j])) ++j;
            tokens.push_back(text.substr(i, j - i));
            comma_pending = false;
            i = j;
        }
    }
    if (comma_pending) return fail(why, "rate spec ends with a comma");
    if (tokens.empty()) return fail(why, "empty rate spec");

    if (tokens.size() == 1 && tokens[0] == "unlimited") return RateSpec{RateSpec::Kind::unlimited, {}};
    // "0": the explicit block. Any period would do; 1s makes the retry-after one second.
    if (tokens.size() == 1 && tokens[0] == "0") return RateSpec{RateSpec::Kind::rates, {{0, std::chrono::seconds{1}}}};

    RateSpec spec;
    for (const auto token : tokens) {
        if (token == "unlimited" || token == "0")
            return fail(why, quote(token) + " cannot be combined with other rates");
        auto rate = parse_rate(token, why);
        if (!rate) return std::nullopt;
        spec.rates.push_back(*rate);
    }
    std::sort(spec.rates.begin(), spec.rates.end(),
              [](const Rate& a, const Rate& b) { return a.period < b.period; });
    for (std::size_t k = 1; k < spec.rates.size(); ++k) {
        if (spec.rates[k].period == spec.rates[k - 1].period)
            return fail(why, "two rates for the period " + std::to_string(spec.rates[k].period.count()) + "s");
    }
    return spec;
}

std::string format_rate_spec(const RateSpec& spec)
{
    if (spec.kind == RateSpec::Kind::unlimited) return "unlimited";
    if (spec.rates.size() == 1 && spec.rates[0] == Rate{0, std::chrono::seconds{1}}) return "0";
    std::string out;
    for (const auto& rate : spec.rates) {
        if (!out.empty()) out += ',';
        out += std::to_string(rate.count);
        out += '/';
        out += std::to_string(rate.period.count());
        out += 's';
    }
    return out;
}

// gcra - the Generic Cell Rate Algorithm for one window of N units per period T.
//
// Each unit "costs" the emission interval T/N of time; the TAT (theoretical arrival time) is
// when the window would be empty again if nothing more came. A request of `cost` units moves it
// to max(TAT, now) + cost*T/N and fits while that is at most T ahead of now: the tolerance is
// T - T/N, so a burst of exactly N fits into an empty window, then one unit every T/N. Why
// these exact operations:
//   inc       = floor((double)cost * (double)period_us / (double)count)
//   allowed  <=> tat_eff + inc - now <= period_us            (cost 0: always, reads only)
//   retry     = tat_eff + inc - period_us - now              (when the request would fit)
//   remaining = floor((double)(now + period_us - x) * (double)count / (double)period_us)
//               clamped to [0, count]; x = new TAT if allowed, else max(TAT, now)
// The Redis script does the same in Lua doubles; every operand is an integer below 2^53, so
// both sides round identically and agree bit for bit. Flooring inc loses < 1 µs per request.
// XXX: with count > period in µs (more than 1e6 per second) a single unit floors to 0 µs.
std::int64_t rescale_tat(std::int64_t tat, std::int64_t now, std::uint64_t was, std::uint64_t count) noexcept
{
    tat = std::clamp<std::int64_t>(tat, 0, max_time_us);
    now = std::clamp<std::int64_t>(now, 0, max_time_us);
    if (was == count || count == 0 || tat <= now) return tat;
    // The same double operations, in the same order, as the script: (tat - now) * was / count.
    const double scaled =
        std::floor(static_cast<double>(tat - now) * static_cast<double>(was) / static_cast<double>(count));
    const double limit = static_cast<double>(max_time_us - now);
    return now + static_cast<std::int64_t>(std::min(scaled, limit));
}

GcraResult gcra(std::int64_t tat, std::int64_t now, const Rate& rate, std::uint64_t cost) noexcept
{
    tat = std::clamp<std::int64_t>(tat, 0, max_time_us);
    now = std::clamp<std::int64_t>(now, 0, max_time_us);
    const std::int64_t period_us = rate.period.count() * micros_per_second;
    const std::int64_t tat_eff = std::max(tat, now);

    GcraResult r;
    r.new_tat = tat_eff;
    if (rate.count == 0 || period_us <= 0) {
        // "0": an explicit block; nothing ever fits, try again in one period.
        r.allowed = false;
        r.retry_after = std::max<std::int64_t>(period_us, 0);
        r.remaining = 0;
        return r;
    }

    std::int64_t inc = 0;
    if (cost > 0) {
        const double d = std::floor(static_cast<double>(cost) * static_cast<double>(period_us) /
                                    static_cast<double>(rate.count));
        inc = d >= static_cast<double>(max_increment_us) ? max_increment_us : static_cast<std::int64_t>(d);
    }
    r.new_tat = tat_eff + inc;
    r.allowed = cost == 0 || r.new_tat - now <= period_us;
    if (!r.allowed) r.retry_after = r.new_tat - period_us - now;

    const std::int64_t x = r.allowed ? r.new_tat : tat_eff;
    const double rem = std::floor(static_cast<double>(now + period_us - x) * static_cast<double>(rate.count) /
                                  static_cast<double>(period_us));
    if (rem <= 0)
        r.remaining = 0;
    else if (rem >= static_cast<double>(rate.count))
        r.remaining = rate.count;
    else
        r.remaining = static_cast<std::uint64_t>(rem);
    return r;
}

namespace {

constexpr std::array<std::pair<LimitKey, std::string_view>, 6> key_names{{
    {LimitKey::sasl_username, "sasl_username"},
    {LimitKey::sender, "sender"},
    {LimitKey::sender_domain, "sender_domain"},
    {LimitKey::client_address, "client_address"},
    {LimitKey::recipient_domain, "recipient_domain"},
    {LimitKey::global, "global"},
}};

constexpr std::array<std::pair<LimitUnit, std::string_view>, 3> unit_names{{
    {LimitUnit::messages, "messages"},
    {LimitUnit::recipients, "recipients"},
    {LimitUnit::bytes, "bytes"},
}};

} // namespace

std::string_view limit_key_name(LimitKey key) noexcept
{
    for (const auto& [k, name] : key_names)
        if (k == key) return name;
    return "unknown";
}

std::optional<LimitKey> parse_limit_key(std::string_view name) noexcept
{
    for (const auto& [k, n] : key_names)
        if (n == name) return k;
    return std::nullopt;
}

std::string_view limit_unit_name(LimitUnit unit) noexcept
{
    for (const auto& [u, name] : unit_names)
        if (u == unit) return name;
    return "unknown";
}

std::optional<LimitUnit> parse_limit_unit(std::string_view name) noexcept
{
    for (const auto& [u, n] : unit_names)
        if (n == name) return u;
    return std::nullopt;
}

} // namespace relayguard
