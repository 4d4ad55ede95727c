// SPDX-License-Identifier: MIT
// net.hpp - IPv4/IPv6 addresses and CIDR networks, without a socket library.
//
// Mail-agnostic helper (Postfix util/ style). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
// treated as the IPv4 address they carry, so one rule covers both ways a client can appear.
// Pure value types; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relayguard {

struct IpAddress {
    enum class Family : unsigned char { v4, v6 };
    Family family = Family::v4;
    std::array<std::uint8_t, 16> bytes{}; // v4 uses the first 4

    bool is_v4() const noexcept { return family == Family::v4; }
    unsigned bits() const noexcept { return is_v4() ? 32 : 128; }
    std::string to_string() const;
    friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// parse_ip - "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1" (becomes v4), "[2001:db8::1]".
// Postfix's "IPv6:" prefix is not accepted here. nullopt if it is not an address.
std::optional<IpAddress> parse_ip(std::string_view text) noexcept;

// mask_prefix - the address with every bit after the first `prefix` bits cleared.
IpAddress mask_prefix(const IpAddress& addr, unsigned prefix) noexcept;

struct Cidr {
    IpAddress network; // host bits cleared
    unsigned prefix = 0;

    bool contains(const IpAddress& addr) const noexcept;
    std::string to_string() const;
    friend bool operator==(const Cidr&, const Cidr&) = default;
};

// parse_cidr - "192.0.2.0/24", "2001:db8::/32", or a bare address (a /32 or /128).
// A network with host bits set ("192.0.2.1/24") is accepted and masked, as Postfix does with
// a warning; `host_bits_set`, if given, tells the caller so it can warn.
std::optional<Cidr> parse_cidr(std::string_view text, bool* host_bits_set = nullptr) noexcept;

// A set of networks; contains() is a linear scan, fine for the tens of entries of a
// trusted-networks list. TODO(dev): a prefix trie if anyone configures thousands.
class NetworkSet {
public:
    void add(const Cidr& net) { nets_.push_back(net); }
    bool contains(const IpAddress& addr) const noexcept;
    bool empty() const noexcept { return nets_.empty(); }
    const std::vector<Cidr>& networks() const noexcept { return nets_; }

private:
    std::vector<Cidr> nets_;
};

} // namespace relayguard
