// SPDX-License-Identifier: MIT
// net.cpp - IPv4/IPv6 address and CIDR parsing and matching (see net.hpp).
//
// Text goes through inet_pton/inet_ntop; the only copy is into a fixed stack buffer, so parsing
// allocates nothing. Pure functions; thread-safe.
// SECURITY: input may be peer data (client_address); over-long text is refused before copying.
// XXX: scoped addresses ("fe80::1%eth0") are not addresses here; Postfix never sends them.
#include <relayguard/net.hpp>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace relayguard {
namespace {

// Longest address text inet_pton can accept, without its NUL: INET6_ADDRSTRLEN counts the NUL
// of the longest IPv6 form (IPv4-mapped, "ffff:...:255.255.255.255").
constexpr std::size_t max_address_chars = INET6_ADDRSTRLEN - 1;
// Most digits in a prefix length ("128"); more is refused rather than overflowing.
constexpr std::size_t max_prefix_digits = 3;
// IPv4-mapped IPv6 addresses (RFC 4291 2.5.5.2) are ::ffff:0:0/96.
constexpr unsigned v4_mapped_prefix = 96;

// is_v4_mapped - whether 16 bytes are ::ffff:a.b.c.d.
bool is_v4_mapped(const std::array<std::uint8_t, 16>& b) noexcept
{
    for (std::size_t i = 0; i < 10; ++i)
        if (b[i] != 0) return false;
    return b[10] == 0xff && b[11] == 0xff;
}

// parse_raw - the address without v4-mapped folding; `mapped` tells whether it was one.
std::optional<IpAddress> parse_raw(std::string_view text, bool& mapped) noexcept
{
    mapped = false;
    // "[2001:db8::1]": the bracketed form of Postfix's mynetworks and of address literals
    // ("[192.0.2.1]" is one too, so brackets are accepted around either family).
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
    if (text.empty() || text.size() > max_address_chars) return std::nullopt;
    // inet_pton stops at a NUL, so an embedded NUL would cut the text short unnoticed.
    if (std::memchr(text.data(), '\0', text.size()) != nullptr) return std::nullopt;

    char buf[max_address_chars + 1];
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';

    IpAddress addr;
    if (text.find(':') == std::string_view::npos) {
        if (inet_pton(AF_INET, buf, addr.bytes.data()) != 1) return std::nullopt;
        addr.family = IpAddress::Family::v4;
        return addr;
    }
    if (inet_pton(AF_INET6, buf, addr.bytes.data()) != 1) return std::nullopt;
    addr.family = IpAddress::Family::v6;
    mapped = is_v4_mapped(addr.bytes);
    return addr;
}

// fold_v4 - the IPv4 address carried by a v4-mapped IPv6 address.
IpAddress fold_v4(const IpAddress& mapped) noexcept
{
    IpAddress v4;
    v4.family = IpAddress::Family::v4;
    std::copy_n(mapped.bytes.begin() + 12, 4, v4.bytes.begin());
    return v4;
}

// parse_prefix - a decimal prefix length, digits only (as Postfix's cidr_match).
std::optional<unsigned> parse_prefix(std::string_view text) noexcept
{
    if (text.empty() || text.size() > max_prefix_digits) return std::nullopt;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    return value;
}

} // namespace

std::string IpAddress::to_string() const
{
    char buf[INET6_ADDRSTRLEN];
    const int af = is_v4() ? AF_INET : AF_INET6;
    if (inet_ntop(af, bytes.data(), buf, sizeof buf) == nullptr) return {};
    return buf;
}

std::optional<IpAddress> parse_ip(std::string_view text) noexcept
{
    bool mapped = false;
    auto addr = parse_raw(text, mapped);
    if (addr && mapped) return fold_v4(*addr);
    return addr;
}

IpAddress mask_prefix(const IpAddress& addr, unsigned prefix) noexcept
{
    IpAddress out = addr;
    prefix = std::min(prefix, addr.bits());
    const std::size_t full = prefix / 8;
    const unsigned rest = prefix % 8;
    std::size_t i = full;
    if (rest != 0) {
        out.bytes[i] = static_cast<std::uint8_t>(out.bytes[i] & (0xffu << (8 - rest)));
        ++i;
    }
    // Also clears bytes 4..15 of an IPv4 address, which must be zero for operator== anyway.
    for (; i < out.bytes.size(); ++i) out.bytes[i] = 0;
    return out;
}

bool Cidr::contains(const IpAddress& addr) const noexcept
{
    if (addr.family != network.family) return false;
    // Compare whole bytes, then the leading bits of one more; no copy of the address.
    const std::size_t full = prefix / 8;
    const unsigned rest = prefix % 8;
    if (!std::equal(network.bytes.begin(), network.bytes.begin() + full, addr.bytes.begin())) return false;
    if (rest == 0) return true;
    const unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    return (addr.bytes[full] & mask) == network.bytes[full];
}

std::string Cidr::to_string() const { return network.to_string() + "/" + std::to_string(prefix); }

std::optional<Cidr> parse_cidr(std::string_view text, bool* host_bits_set) noexcept
{
    if (host_bits_set) *host_bits_set = false;

    std::string_view addr_text = text;
    std::optional<unsigned> prefix;
    if (const auto slash = text.find('/'); slash != std::string_view::npos) {
        addr_text = text.substr(0, slash);
        prefix = parse_prefix(text.substr(slash + 1));
        if (!prefix) return std::nullopt;
    }

    bool mapped = false;
    auto addr = parse_raw(addr_text, mapped);
    if (!addr) return std::nullopt;
    const unsigned bits = addr->bits();
    if (prefix && *prefix > bits) return std::nullopt;
    unsigned len = prefix.value_or(bits);

    // ::ffff:192.0.2.0/120 is 192.0.2.0/24: clients arrive folded to IPv4, so the network must
    // be too. A mapped network shorter than /96 reaches outside the mapped range and stays IPv6.
    if (mapped && len >= v4_mapped_prefix) {
        *addr = fold_v4(*addr);
        len -= v4_mapped_prefix;
    }

    Cidr net{mask_prefix(*addr, len), len};
    if (host_bits_set) *host_bits_set = !(net.network == *addr);
    return net;
}

bool NetworkSet::contains(const IpAddress& addr) const noexcept
{
    return std::any_of(nets_.begin(), nets_.end(), [&](const Cidr& n) { return n.contains(addr); });
}

} // namespace relayguard
