// SPDX-License-Identifier: MIT
// strings.cpp - ASCII string helpers (see strings.hpp).
#include <relayguard/strings.hpp>

namespace relayguard {
namespace {

constexpr char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

} // namespace

std::string ascii_lower(std::string_view s)
{
    std::string out(s);
    for (auto& c : out) c = lower(c);
    return out;
}

bool iequals(std::string_view a, std::string_view b) noexcept
{
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

std::string sanitize(std::string_view untrusted, std::size_t max)
{
    static constexpr char hex[] = "0123456789abcdef";
    const bool cut = untrusted.size() > max;
    if (cut) untrusted = untrusted.substr(0, max);
    std::string out;
    out.reserve(untrusted.size() + 8);
    for (unsigned char c : untrusted) {
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
            out.push_back(static_cast<char>(c));
        } else {
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 0xf]);
        }
    }
    if (cut) out += "...";
    return out;
}

std::string_view trim(std::string_view s) noexcept
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

} // namespace relayguard
