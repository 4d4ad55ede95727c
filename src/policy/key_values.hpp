// SPDX-License-Identifier: MIT
// key_values.hpp - the normalized key value a rate limit counts a request under (private to
// the policy module and relayguardctl, which must name the very same Redis keys).
//
// plan_rate_limits() builds every CounterOp::value and ::parent with these, and relayguardctl
// normalizes what an operator types with them, so that an override or a reset always lands on
// the key the daemon reads. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include <relayguard/config.hpp>
#include <relayguard/net.hpp>

namespace relayguard {

// login_key_value - a sasl_username as counted: ASCII lower case (logins compare without case).
std::string login_key_value(std::string_view login);

// sender_key_value - an envelope sender as counted: without its extension (recipient_delimiter),
// then normalize_address().
std::string sender_key_value(std::string_view sender, const AddressConfig& rules);

// domain_key_value - a sender or recipient domain as counted: normalize_domain().
std::string domain_key_value(std::string_view domain);

// client_key_value - the network a client address is counted as: the address masked to
// `prefix` bits, in CIDR text ("192.0.2.0/24", "2001:db8::/64").
std::string client_key_value(const IpAddress& address, unsigned prefix);

// parent_key_value - the value whose override a login or sender inherits: "@domain" of a
// normalized value, or "" when it has no domain.
std::string parent_key_value(std::string_view normalized);

} // namespace relayguard
