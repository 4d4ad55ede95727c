// SPDX-License-Identifier: MIT
// key_schema.cpp - Redis key, hash field and set member names (the schema in key_schema.hpp).
//
// Pure functions: thread-safe. SECURITY: key values are untrusted (logins, addresses, domains
// from SMTP); every byte outside a small safe set is %-escaped, so no value can forge another
// value's key, another tag, or a Redis Cluster hash tag ('{' '}').
#include <relayguard/key_schema.hpp>

#include <array>

namespace relayguard {
namespace {

// safe_byte - bytes written as they are; everything else (including '%', '{', '}', '|', space,
// controls and 0x80-0xff) is written as %XX, which makes the escaping reversible and unambiguous.
constexpr bool safe_byte(unsigned char c) noexcept
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '@' ||
           c == '.' || c == '_' || c == '+' || c == '/' || c == ':' || c == '-';
}

// safe_bytes[c] - safe_byte(c), one load per byte.
constexpr auto safe_bytes = [] {
    std::array<bool, 256> table{};
    for (std::size_t c = 0; c < table.size(); ++c) table[c] = safe_byte(static_cast<unsigned char>(c));
    return table;
}();

// append_escaped - VALUE escaped, appended to out (no temporary: this runs for every key of
// every request). Runs of safe bytes, usually the whole value, are appended in one go.
void append_escaped(std::string& out, std::string_view value)
{
    static constexpr char hex[] = "0123456789ABCDEF";
    const auto* p = reinterpret_cast<const unsigned char*>(value.data());
    const std::size_t n = value.size();
    std::size_t i = 0;
    while (i < n) {
        std::size_t j = i;
        while (j < n && safe_bytes[p[j]]) ++j;
        out.append(value.data() + i, j - i);
        if (j == n) break;
        const char escaped[3] = {'%', hex[p[j] >> 4], hex[p[j] & 0xf]};
        out.append(escaped, sizeof escaped);
        i = j + 1;
    }
}

// append_tagged - "TAG:VALUE" with VALUE escaped, appended to out: the part inside the braces
// and the set member.
void append_tagged(std::string& out, std::string_view tag, std::string_view value)
{
    out += tag;
    out += ':';
    append_escaped(out, value);
}

// Room for a value's escapes in the common case (a few), so one allocation builds a key.
constexpr std::size_t escape_slack = 8;

// hash_tagged_key - "PREFIX{TAG:VALUE}SUFFIX", VALUE escaped, in one allocation: the braces are
// the Redis Cluster hash tag, so a key and its companions (":o") share a slot.
std::string hash_tagged_key(std::string_view prefix, std::string_view tag, std::string_view value,
                            std::string_view suffix)
{
    std::string out;
    out.reserve(prefix.size() + tag.size() + value.size() + suffix.size() + 3 + escape_slack);
    out += prefix;
    out += '{';
    append_tagged(out, tag, value);
    out += '}';
    out += suffix;
    return out;
}

} // namespace

std::string_view key_tag(LimitKey key) noexcept
{
    switch (key) {
    case LimitKey::sasl_username: return "l";
    case LimitKey::sender: return "s";
    case LimitKey::sender_domain: return "sd";
    case LimitKey::client_address: return "c";
    case LimitKey::recipient_domain: return "rd";
    case LimitKey::global: return "g";
    }
    return "x";
}

std::string escape_key_value(std::string_view value)
{
    std::string out;
    out.reserve(value.size());
    append_escaped(out, value);
    return out;
}

std::string state_key(std::string_view prefix, LimitKey key, std::string_view value)
{
    return hash_tagged_key(prefix, key_tag(key), value, "");
}

std::string override_key(std::string_view prefix, LimitKey key, std::string_view value)
{
    return hash_tagged_key(prefix, key_tag(key), value, ":o");
}

std::string instance_key(std::string_view prefix, std::string_view instance)
{
    return hash_tagged_key(prefix, "i", instance, "");
}

std::string instance_member(std::string_view limit, LimitKey key, std::string_view value)
{
    const std::string_view tag = key_tag(key);
    std::string out;
    out.reserve(limit.size() + tag.size() + value.size() + 2 + escape_slack);
    out += limit;
    out += '|';
    append_tagged(out, tag, value);
    return out;
}

// The period in plain seconds ("t:per_login:3600"), as in the canonical rate text.
std::string tat_field(std::string_view limit, std::chrono::seconds period)
{
    std::string out = "t:";
    out += limit;
    out += ':';
    out += std::to_string(period.count());
    return out;
}

std::string refused_field(std::string_view limit)
{
    std::string out = "r:";
    out += limit;
    return out;
}

} // namespace relayguard

namespace relayguard {

std::string rate_count_field(std::string_view limit, std::chrono::seconds period)
{
    std::string out = tat_field(limit, period);
    out[0] = 'n';
    return out;
}

std::string suspension_key(std::string_view prefix, std::string_view login)
{
    return state_key(prefix, LimitKey::sasl_username, login) + ":s";
}

std::string suspended_index_key(std::string_view prefix)
{
    std::string out(prefix);
    out += "{suspended}";
    return out;
}

// signal_key - beside the login's suspension, in its hash tag: one Cluster slot per login, so
// PFCOUNT and MGET over a login's buckets are single-slot commands.
std::string signal_key(std::string_view prefix, std::string_view login, std::string_view signal, std::int64_t bucket)
{
    std::string out = state_key(prefix, LimitKey::sasl_username, login);
    out += ":g:";
    out += escape_key_value(signal);
    out += ':';
    out += std::to_string(bucket);
    return out;
}

std::string event_key(std::string_view prefix, std::string_view login, std::string_view what)
{
    std::string out = state_key(prefix, LimitKey::sasl_username, login);
    out += ":e:";
    out += escape_key_value(what);
    return out;
}

std::string owners_key(std::string_view prefix, std::string_view address_or_at_domain)
{
    std::string out(prefix);
    out += "{own:";
    out += escape_key_value(address_or_at_domain);
    out += '}';
    return out;
}

std::string domains_key(std::string_view prefix)
{
    std::string out(prefix);
    out += "{domains}";
    return out;
}

} // namespace relayguard
