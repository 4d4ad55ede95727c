// SPDX-License-Identifier: MIT
// config_values.cpp - parsers for the value syntaxes of the config file (see config_values.hpp).
#include "config/config_values.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <relayguard/action.hpp>
#include <relayguard/net.hpp>
#include <relayguard/strings.hpp>

namespace relayguard::config_detail {
namespace {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_alpha(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool is_control_or_space(char c) noexcept
{
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
}

std::string quoted(std::string_view text) { return "\"" + sanitize(text) + "\""; }

constexpr std::string_view duration_syntax = "expected a whole number followed by ms, s, m, h or d, e.g. \"10s\"";
constexpr std::string_view redis_address_syntax =
    "expected \"unix:/absolute/path\", \"tcp:HOST:PORT\", \"tls:HOST:PORT\" or \"HOST:PORT\" (an IPv6 address in "
    "brackets, e.g. \"tcp:[::1]:6379\")";
constexpr std::string_view placeholder_hint = "(use {limit} or {retry_after})";
constexpr std::string_view endpoint_syntax =
    "expected \"inet:HOST:PORT\" (HOST an IPv4 address, [IPv6 address] or *) or \"unix:/absolute/path\"";

// parse_port - "0".."65535", digits only (no sign, no white space).
std::optional<std::string> parse_port(std::string_view text, std::uint16_t& out)
{
    const std::string reason = "port must be a number from 0 to 65535, got " + quoted(text);
    // Five digits hold 65535; more can only be out of range (or overflow the sum below).
    if (text.empty() || text.size() > 5 || !std::all_of(text.begin(), text.end(), is_digit)) return reason;
    unsigned value = 0;
    for (char c : text) value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > 65535) return reason;
    out = static_cast<std::uint16_t>(value);
    return std::nullopt;
}

// check_host_name - a name to resolve: dot-separated labels of letters, digits, '-' and '_'
// (container and service names use '_'); not checked against DNS here.
std::optional<std::string> check_host_name(std::string_view host)
{
    if (host.size() > max_domain_bytes) return "the host name is longer than " + std::to_string(max_domain_bytes) + " characters";
    for (std::string_view labels = host;;) {
        const auto dot = labels.find('.');
        const std::string_view label = labels.substr(0, dot);
        if (label.empty()) return "the host name " + quoted(host) + " has an empty label";
        for (char c : label)
            if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
                return "the host must be an IP address or a host name, got " + quoted(host);
        if (dot == std::string_view::npos) return std::nullopt;
        labels.remove_prefix(dot + 1);
    }
}

} // namespace

std::optional<std::string> parse_duration(std::string_view text, std::chrono::milliseconds& out)
{
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits])) ++digits;
    const std::string_view unit = text.substr(digits);
    if (digits == 0) return std::string(duration_syntax);

    std::int64_t unit_ms = 0;
    if (unit == "ms") unit_ms = 1;
    else if (unit == "s") unit_ms = 1000;
    else if (unit == "m") unit_ms = 60 * 1000;
    else if (unit == "h") unit_ms = 60 * 60 * 1000;
    else if (unit == "d") unit_ms = 24 * 60 * 60 * 1000;
    else return std::string(duration_syntax);

    const auto max_days = std::chrono::duration_cast<std::chrono::days>(max_duration).count();
    const std::string too_long = "must be at most " + std::to_string(max_days) + "d";
    // Any more digits than this is over max_duration in every unit, and would overflow below.
    constexpr std::size_t max_digits = 12;
    if (digits > max_digits) return too_long;
    std::int64_t count = 0;
    for (char c : text.substr(0, digits)) count = count * 10 + (c - '0');
    if (count == 0) return std::string("must be greater than 0");
    if (count > max_duration.count() / unit_ms) return too_long;
    out = std::chrono::milliseconds{count * unit_ms};
    return std::nullopt;
}

std::optional<std::string> parse_socket_mode(std::string_view text, unsigned& out)
{
    const bool octal = std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
    if ((text.size() != 3 && text.size() != 4) || !octal)
        return std::string("expected 3 or 4 octal digits, e.g. \"0660\"");
    unsigned mode = 0;
    for (char c : text) mode = mode * 8 + static_cast<unsigned>(c - '0');
    // Set-id and sticky bits mean nothing on a socket.
    if (mode > 0777) return std::string("must be at most 0777");
    out = mode;
    return std::nullopt;
}

std::optional<std::string> parse_endpoint(std::string_view text, Endpoint& out)
{
    Endpoint ep;
    ep.text = std::string(text);

    if (text.starts_with("unix:")) {
        const std::string_view path = text.substr(5);
        if (path.empty()) return std::string("missing the socket path after \"unix:\"");
        if (path.front() != '/') return "the socket path must be absolute, got " + quoted(path);
        if (path.size() > max_unix_path_bytes)
            return "the socket path is " + std::to_string(path.size()) + " bytes long; the limit is " +
                   std::to_string(max_unix_path_bytes);
        ep.kind = Endpoint::Kind::unix_socket;
        ep.path = std::string(path);
        out = std::move(ep);
        return std::nullopt;
    }
    if (!text.starts_with("inet:")) return std::string(endpoint_syntax);

    const std::string_view rest = text.substr(5);
    std::string_view host;
    std::string_view port;
    if (rest.starts_with("[")) {
        const auto close = rest.find(']');
        if (close == std::string_view::npos) return std::string("missing ']' after the IPv6 address");
        host = rest.substr(1, close - 1);
        const std::string_view after = rest.substr(close + 1);
        if (!after.starts_with(":")) return std::string("missing \":PORT\" after the address");
        port = after.substr(1);
        const auto ip = parse_ip(host);
        if (!ip || host.find(':') == std::string_view::npos)
            return quoted(host) + " is not an IPv6 address";
    } else {
        const auto colon = rest.rfind(':');
        if (colon == std::string_view::npos) return std::string("missing \":PORT\" after the host");
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return std::string("an IPv6 address must be in brackets, e.g. \"inet:[::1]:10033\"");
        if (host.empty()) return std::string("missing the host (write * for all addresses)");
        // Names are not resolved: a listener must not depend on DNS at start, and a name can
        // stand for several addresses.
        if (host != "*" && !parse_ip(host))
            return "the host must be an IPv4 address, a bracketed IPv6 address or *, got " + quoted(host);
    }
    if (auto reason = parse_port(port, ep.port)) return reason;
    ep.kind = Endpoint::Kind::inet;
    ep.host = std::string(host);
    out = std::move(ep);
    return std::nullopt;
}

std::string endpoint_identity(const Endpoint& endpoint)
{
    if (endpoint.kind == Endpoint::Kind::unix_socket) return "unix:" + endpoint.path;
    std::string host = endpoint.host;
    if (host != "*")
        if (const auto ip = parse_ip(host)) host = ip->to_string();
    return "inet:" + host + ":" + std::to_string(endpoint.port);
}

std::optional<std::string> normalize_domain_entry(std::string_view text, std::string& out)
{
    std::string name = ascii_lower(text);
    const bool parent = name.starts_with(".");
    std::string_view body(name);
    if (parent) body.remove_prefix(1);
    if (body.ends_with(".")) body.remove_suffix(1); // the root dot of a fully qualified name
    if (body.empty()) return std::string("it has no labels");
    if (body.size() > max_domain_bytes)
        return "it is longer than " + std::to_string(max_domain_bytes) + " characters";

    std::string_view last;
    for (std::string_view labels = body;;) {
        const auto dot = labels.find('.');
        const std::string_view label = labels.substr(0, dot);
        if (label.empty()) return std::string("a label is empty");
        if (label.size() > max_label_bytes)
            return "a label is longer than " + std::to_string(max_label_bytes) + " characters";
        for (char c : label)
            if (!is_alpha(c) && !is_digit(c) && c != '-')
                return std::string("only letters, digits, '-' and '.' are allowed "
                                   "(write international names in their xn-- form)");
        if (label.front() == '-' || label.back() == '-') return std::string("a label starts or ends with '-'");
        last = label;
        if (dot == std::string_view::npos) break;
        labels.remove_prefix(dot + 1);
    }
    // RFC 3696 section 2: a top-level domain is never all digits; this is an IP address.
    if (std::all_of(last.begin(), last.end(), is_digit))
        return std::string("the last label is numeric (an IP address is not a domain)");

    out = (parent ? "." : "") + std::string(body);
    return std::nullopt;
}

std::optional<std::string> check_delimiter(std::string_view text)
{
    for (char c : text) {
        // Postfix treats each byte as a delimiter; a multi-byte character would become several.
        if (static_cast<unsigned char>(c) >= 0x80) return std::string("only ASCII characters are allowed");
        if (is_control_or_space(c)) return std::string("white space and control characters are not allowed");
        if (c == '@') return std::string("'@' separates the local part from the domain and cannot be a delimiter");
    }
    return std::nullopt;
}

std::optional<std::string> normalize_mechanism(std::string_view text, std::string& out)
{
    if (text.empty()) return std::string("it is empty");
    if (text.size() > max_mechanism_bytes)
        return "it is longer than " + std::to_string(max_mechanism_bytes) + " characters";
    std::string upper(text);
    for (auto& c : upper) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        // RFC 4422 section 3.1: sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / "-" / "_"
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
            return std::string("only letters, digits, '-' and '_' are allowed");
    }
    out = std::move(upper);
    return std::nullopt;
}

std::optional<std::string> check_account_name(std::string_view text)
{
    if (text.empty()) return std::nullopt; // the default: leave the socket's owner as created
    if (text.front() == '-') return std::string("it starts with '-'");
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        // A trailing '$' is how Samba names machine accounts; useradd accepts it there.
        if (c == '$' && i + 1 == text.size()) continue;
        if (!is_alpha(c) && !is_digit(c) && c != '.' && c != '_' && c != '-')
            return std::string("only letters, digits, '.', '_' and '-' are allowed");
    }
    return std::nullopt;
}

std::optional<std::string> check_limit_name(std::string_view text)
{
    if (text.empty() || text.size() > max_limit_name_bytes)
        return "must be 1 to " + std::to_string(max_limit_name_bytes) + " characters long";
    for (char c : text)
        if (!(c >= 'a' && c <= 'z') && !is_digit(c) && c != '_' && c != '-')
            return std::string("only lower-case letters a-z, digits, '_' and '-' are allowed");
    return std::nullopt;
}

std::optional<std::string> check_redis_address(std::string_view text)
{
    if (text.starts_with("unix:")) {
        const std::string_view path = text.substr(5);
        if (path.empty()) return std::string("missing the socket path after \"unix:\"");
        if (path.front() != '/') return "the socket path must be absolute, got " + quoted(path);
        if (path.size() > max_unix_path_bytes)
            return "the socket path is " + std::to_string(path.size()) + " bytes long; the limit is " +
                   std::to_string(max_unix_path_bytes);
        return std::nullopt;
    }
    // "redis://..." and "rediss://..." URLs (other clients' syntax) would otherwise be taken for
    // an IPv6 address without brackets.
    if (text.find("://") != std::string_view::npos) return std::string(redis_address_syntax);
    std::string_view rest = text;
    if (rest.starts_with("tcp:") || rest.starts_with("tls:")) rest.remove_prefix(4);

    std::string_view host;
    std::string_view port;
    if (rest.starts_with("[")) {
        const auto close = rest.find(']');
        if (close == std::string_view::npos) return std::string("missing ']' after the IPv6 address");
        host = rest.substr(1, close - 1);
        const std::string_view after = rest.substr(close + 1);
        if (!after.starts_with(":")) return std::string("missing \":PORT\" after the address");
        port = after.substr(1);
        const auto ip = parse_ip(host);
        if (!ip || host.find(':') == std::string_view::npos) return quoted(host) + " is not an IPv6 address";
    } else {
        const auto colon = rest.rfind(':');
        if (colon == std::string_view::npos) return std::string(redis_address_syntax);
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            return std::string("an IPv6 address must be in brackets, e.g. \"tcp:[::1]:6379\"");
        if (host.empty()) return std::string("missing the host");
        if (!parse_ip(host))
            if (auto reason = check_host_name(host)) return reason;
    }
    std::uint16_t number = 0;
    if (auto reason = parse_port(port, number)) return reason;
    // Port 0 is "any free port" when binding; there is no server to connect to there.
    if (number == 0) return std::string("port 0 is not a port a server listens on");
    return std::nullopt;
}

std::optional<std::string> check_limit_reply(std::string_view reply, std::string_view name)
{
    std::string sample;
    std::size_t done = 0;
    for (auto open = reply.find('{'); open != std::string_view::npos; open = reply.find('{', done)) {
        const auto close = reply.find('}', open);
        if (close == std::string_view::npos) return "'{' without a closing '}' " + std::string(placeholder_hint);
        const std::string_view placeholder = reply.substr(open, close - open + 1);
        sample.append(reply.substr(done, open - done));
        if (placeholder == "{limit}")
            sample.append(name);
        else if (placeholder == "{retry_after}")
            sample.append(std::to_string(sample_retry_after_s));
        else
            return "unknown placeholder " + sanitize(placeholder, max_limit_name_bytes) + " " + std::string(placeholder_hint);
        done = close + 1;
    }
    sample.append(reply.substr(done));
    return validate_action(sample);
}

std::size_t edit_distance(std::string_view a, std::string_view b)
{
    // Three rows of the dynamic-programming table suffice for the adjacent-swap case.
    std::vector<std::size_t> before(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                cur[j] = std::min(cur[j], before[j - 2] + 1);
        }
        std::swap(before, prev);
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::optional<std::string_view> closest_name(std::string_view word, std::span<const std::string_view> candidates)
{
    std::optional<std::string_view> best;
    std::size_t best_distance = max_suggestion_distance + 1;
    for (const auto candidate : candidates) {
        std::size_t d = edit_distance(word, candidate);
        // An abbreviation ("warn" for "warning") is as good a guess as a one-letter typo.
        if (word.size() >= min_abbreviation_bytes && candidate.starts_with(word)) d = std::min<std::size_t>(d, 1);
        // A word of two letters is two edits from every other two-letter word: no suggestion
        // unless something of it survives.
        if (d < best_distance && d < word.size()) {
            best = candidate;
            best_distance = d;
        }
    }
    return best;
}

} // namespace relayguard::config_detail
