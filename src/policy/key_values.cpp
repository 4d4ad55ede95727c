// SPDX-License-Identifier: MIT
// key_values.cpp - key value normalization shared by plan_rate_limits() and relayguardctl.
//
// Pure functions; thread-safe. Values are untrusted (from SMTP or a command line): they are only
// folded and cut here; the key schema escapes them.
#include "policy/key_values.hpp"

#include <relayguard/maps.hpp>
#include <relayguard/strings.hpp>

namespace relayguard {

std::string login_key_value(std::string_view login) { return ascii_lower(login); }

std::string sender_key_value(std::string_view sender, const AddressConfig& rules)
{
    return normalize_address(strip_extension(sender, rules), rules);
}

std::string domain_key_value(std::string_view domain) { return normalize_domain(domain); }

std::string client_key_value(const IpAddress& address, unsigned prefix)
{
    return Cidr{mask_prefix(address, prefix), prefix}.to_string();
}

std::string parent_key_value(std::string_view normalized)
{
    const std::string_view domain = split_address(normalized).domain;
    if (domain.empty()) return {};
    std::string out;
    out.reserve(domain.size() + 1);
    out += '@';
    out += domain;
    return out;
}

} // namespace relayguard
