// SPDX-License-Identifier: MIT
// compromise.cpp - the compromise ladder's verdict for one login's signal counts, and the
// one-line JSON of a ladder event (see policy.hpp).
//
// Pure functions; thread-safe. Run per RCPT of a tracked login: judge_compromise() allocates
// only the reason of a rung reached. SECURITY: the login, client address and instance in an
// event are untrusted; event_json() escapes every byte a JSON reader or a terminal could
// misread, and never passes invalid UTF-8 through.
#include <relayguard/policy.hpp>

#include <string>

namespace relayguard {
namespace {

// The rungs from the top down: the first one a signal reaches is the verdict's rung.
struct RungOf {
    Rung rung;
    const LadderRung& (*settings)(const CompromiseConfig&);
};
constexpr RungOf rungs_top_down[] = {
    {Rung::suspend, [](const CompromiseConfig& c) -> const LadderRung& { return c.suspend; }},
    {Rung::hold, [](const CompromiseConfig& c) -> const LadderRung& { return c.hold; }},
    {Rung::warn, [](const CompromiseConfig& c) -> const LadderRung& { return c.warn; }},
};

std::uint64_t threshold_of(const LadderRung& rung, Signal signal) noexcept
{
    switch (signal) {
    case Signal::networks: return rung.networks;
    case Signal::recipient_domains: return rung.recipient_domains;
    case Signal::rate_refusals: return rung.rate_refusals;
    }
    return 0;
}

// reached - the first signal (in Signal order) whose non-zero threshold its count reaches.
std::optional<Signal> reached(const std::array<std::uint64_t, signal_count>& counts, const LadderRung& rung) noexcept
{
    for (std::size_t i = 0; i < signal_count; ++i) {
        const auto signal = static_cast<Signal>(i);
        const std::uint64_t threshold = threshold_of(rung, signal);
        if (threshold != 0 && counts[i] >= threshold) return signal;
    }
    return std::nullopt;
}

// format_window - the largest unit that divides the window exactly: "1h", "30m", "90s", "2d".
std::string format_window(std::chrono::seconds window)
{
    const std::pair<std::int64_t, char> units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}};
    const std::int64_t s = window.count();
    for (const auto& [length, name] : units)
        if (s != 0 && s % length == 0) return std::to_string(s / length) + name;
    return std::to_string(s) + 's';
}

// ladder_reason - "12 distinct client networks (/24, /48) within 1h, threshold 10".
std::string ladder_reason(Signal signal, std::uint64_t count, std::uint64_t threshold, const CompromiseConfig& config)
{
    const bool one = count == 1;
    std::string out = std::to_string(count);
    switch (signal) {
    case Signal::networks:
        out += one ? " distinct client network (/" : " distinct client networks (/";
        out += std::to_string(config.ipv4_prefix) + ", /" + std::to_string(config.ipv6_prefix) + ")";
        break;
    case Signal::recipient_domains: out += one ? " distinct recipient domain" : " distinct recipient domains"; break;
    case Signal::rate_refusals: out += one ? " rate-limit refusal" : " rate-limit refusals"; break;
    }
    out += " within " + format_window(config.window) + ", threshold " + std::to_string(threshold);
    return out;
}

// utf8_length - the length of the valid UTF-8 sequence at the start of `s`, or 0 if it is not
// one (RFC 3629 section 4: no overlong forms, no surrogates, nothing past U+10FFFF).
std::size_t utf8_length(std::string_view s) noexcept
{
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char b0 = byte(0);
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf; // allowed range of the second byte
    if (b0 >= 0xc2 && b0 <= 0xdf) n = 2;
    else if (b0 >= 0xe0 && b0 <= 0xef) {
        n = 3;
        if (b0 == 0xe0) lo = 0xa0;      // overlong
        else if (b0 == 0xed) hi = 0x9f; // surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        n = 4;
        if (b0 == 0xf0) lo = 0x90;      // overlong
        else if (b0 == 0xf4) hi = 0x8f; // past U+10FFFF
    } else
        return 0;
    if (s.size() < n || byte(1) < lo || byte(1) > hi) return 0;
    for (std::size_t i = 2; i < n; ++i)
        if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
    return n;
}

// append_json_string - `text` as a JSON string: '"' and '\' escaped, control bytes and every
// byte of invalid UTF-8 as \u00XX (RFC 8259 section 7), valid UTF-8 as it is.
void append_json_string(std::string& out, std::string_view text)
{
    constexpr char hex[] = "0123456789abcdef";
    auto escape_byte = [&](unsigned char c) {
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xf];
    };
    out += '"';
    for (std::size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
            ++i;
        } else if (c < 0x20 || c == 0x7f) {
            escape_byte(c);
            ++i;
        } else if (c < 0x80) {
            out += static_cast<char>(c);
            ++i;
        } else if (const std::size_t n = utf8_length(text.substr(i)); n != 0) {
            out.append(text.substr(i, n));
            i += n;
        } else {
            escape_byte(c);
            ++i;
        }
    }
    out += '"';
}

} // namespace

std::string_view rung_name(Rung rung) noexcept
{
    switch (rung) {
    case Rung::none: return "none";
    case Rung::warn: return "warn";
    case Rung::hold: return "hold";
    case Rung::suspend: return "suspend";
    }
    return "unknown";
}

// judge_compromise - the highest rung any signal reaches (shadow rungs included) and the
// highest one that is enforced. A rung with no thresholds never triggers; nor does anything
// while the ladder is disabled.
LadderVerdict judge_compromise(const std::array<std::uint64_t, signal_count>& counts, const CompromiseConfig& config)
{
    LadderVerdict v;
    if (!config.enabled) return v;
    for (const auto& r : rungs_top_down) {
        const LadderRung& rung = r.settings(config);
        const auto signal = reached(counts, rung);
        if (!signal) continue;
        if (v.rung == Rung::none) {
            v.rung = r.rung;
            v.shadow = rung.shadow;
            v.signal = *signal;
            v.count = counts[static_cast<std::size_t>(*signal)];
            v.threshold = threshold_of(rung, *signal);
            v.reason = ladder_reason(v.signal, v.count, v.threshold, config);
        }
        if (!rung.shadow) {
            v.enforced = r.rung;
            break;
        }
    }
    return v;
}

std::string event_json(std::string_view event, std::string_view login, const LadderVerdict& verdict,
                       std::chrono::seconds window, const Request& request, std::int64_t unix_time,
                       std::string_view host)
{
    std::string out;
    out.reserve(256 + login.size() + verdict.reason.size());
    auto field = [&](std::string_view name) {
        out += out.empty() ? "{\"" : ",\"";
        out += name;
        out += "\":";
    };
    auto text = [&](std::string_view name, std::string_view value) {
        field(name);
        append_json_string(out, value);
    };
    auto number = [&](std::string_view name, auto value) {
        field(name);
        out += std::to_string(value);
    };
    text("event", event);
    text("login", login);
    text("rung", rung_name(verdict.rung));
    field("shadow");
    out += verdict.shadow ? "true" : "false";
    text("signal", signal_name(verdict.signal));
    number("count", verdict.count);
    number("threshold", verdict.threshold);
    number("window_s", window.count());
    text("reason", verdict.reason);
    text("client_address", request[Attr::client_address]);
    text("instance", request[Attr::instance]);
    number("time", unix_time);
    text("host", host);
    out += '}';
    return out;
}

} // namespace relayguard
