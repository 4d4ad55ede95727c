// SPDX-License-Identifier: MIT
// net_test.cpp - parse_ip, parse_cidr, mask_prefix, Cidr/NetworkSet matching.
#include <relayguard/net.hpp>

#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace relayguard {
namespace {

IpAddress ip(std::string_view text)
{
    auto a = parse_ip(text);
    EXPECT_TRUE(a.has_value()) << "parse_ip(" << text << ") failed";
    return a.value_or(IpAddress{});
}

Cidr cidr(std::string_view text)
{
    auto c = parse_cidr(text);
    EXPECT_TRUE(c.has_value()) << "parse_cidr(" << text << ") failed";
    return c.value_or(Cidr{});
}

TEST(ParseIp, AcceptsValidAddresses)
{
    struct Case {
        std::string_view in;
        IpAddress::Family family;
        std::string_view canonical; // to_string() of the result
    };
    using F = IpAddress::Family;
    const Case cases[] = {
        {"192.0.2.1", F::v4, "192.0.2.1"},
        {"0.0.0.0", F::v4, "0.0.0.0"},
        {"255.255.255.255", F::v4, "255.255.255.255"},
        {"127.0.0.1", F::v4, "127.0.0.1"},
        {"2001:db8::1", F::v6, "2001:db8::1"},
        {"::1", F::v6, "::1"},
        {"::", F::v6, "::"},
        {"2001:DB8:0:0:0:0:0:1", F::v6, "2001:db8::1"},           // upper case, no ::
        {"2001:0db8:0000:0000:0000:0000:0000:0001", F::v6, "2001:db8::1"}, // leading zeros
        {"1::", F::v6, "1::"},
        {"fe80::1:2:3:4", F::v6, "fe80::1:2:3:4"},
        {"::192.0.2.1", F::v6, "::192.0.2.1"},                    // deprecated v4-compatible: stays v6
        {"64:ff9b::192.0.2.1", F::v6, "64:ff9b::c000:201"},       // NAT64 with dotted tail
        {"::ffff:192.0.2.1", F::v4, "192.0.2.1"},                 // v4-mapped folds to v4
        {"::FFFF:192.0.2.1", F::v4, "192.0.2.1"},
        {"::ffff:c000:0201", F::v4, "192.0.2.1"},                 // v4-mapped in hex
        {"0:0:0:0:0:ffff:192.0.2.1", F::v4, "192.0.2.1"},
        {"[2001:db8::1]", F::v6, "2001:db8::1"},
        {"[::ffff:192.0.2.1]", F::v4, "192.0.2.1"},
        {"[192.0.2.1]", F::v4, "192.0.2.1"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", F::v6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    };
    for (const auto& c : cases) {
        auto got = parse_ip(c.in);
        ASSERT_TRUE(got.has_value()) << "in=" << c.in << " got=nullopt want=" << c.canonical;
        EXPECT_EQ(got->family, c.family) << "in=" << c.in;
        EXPECT_EQ(got->to_string(), c.canonical) << "in=" << c.in << " got=" << got->to_string()
                                                 << " want=" << c.canonical;
    }
}

TEST(ParseIp, RejectsNonAddresses)
{
    const std::string_view cases[] = {
        "",
        " ",
        "192.0.2.1 ",
        " 192.0.2.1",
        "192.0.2",
        "192.0.2.256",
        "192.0.2.1.5",
        "192.0.02.1",      // leading zero: octal in some parsers, refused by inet_pton
        "0x7f.0.0.1",
        "localhost",
        "unknown",         // Postfix client_address when it has none
        "2001:db8::1::2",
        "2001:db8:0:0:0:0:0:0:1",
        "12345::1",
        ":::",
        "fe80::1%eth0",    // scoped
        "IPv6:2001:db8::1", // Postfix's address-literal prefix is not accepted here
        "[2001:db8::1",
        "2001:db8::1]",
        "[]",
        "[",
        "192.0.2.1/24",
        std::string_view("192.0.2.1\0junk", 14), // embedded NUL
        "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb", // over-long
    };
    for (auto in : cases) {
        auto got = parse_ip(in);
        EXPECT_FALSE(got.has_value()) << "in=\"" << in << "\" got=" << (got ? got->to_string() : "") << " want=nullopt";
    }
}

TEST(ParseIp, RejectsOverlongInputEarly)
{
    // Longer than any address text can be: refused before the copy to the stack buffer.
    std::string long_text(1000, '1');
    EXPECT_FALSE(parse_ip(long_text).has_value());
    EXPECT_FALSE(parse_ip("[" + long_text + "]").has_value());
    EXPECT_FALSE(parse_cidr(long_text + "/24").has_value());
}

TEST(ParseIp, V4MappedEqualsPlainV4)
{
    EXPECT_EQ(ip("::ffff:198.51.100.7"), ip("198.51.100.7"));
    EXPECT_EQ(ip("198.51.100.7").bytes[4], 0) << "v4 bytes past the 4th must be zero";
}

TEST(MaskPrefix, ClearsHostBits)
{
    struct Case {
        std::string_view addr;
        unsigned prefix;
        std::string_view want;
    };
    const Case cases[] = {
        {"192.0.2.255", 24, "192.0.2.0"},
        {"192.0.2.255", 25, "192.0.2.128"},
        {"192.0.2.255", 0, "0.0.0.0"},
        {"192.0.2.255", 32, "192.0.2.255"},
        {"192.0.2.255", 99, "192.0.2.255"}, // clamped to the family's width
        {"2001:db8:ffff::1", 32, "2001:db8::"},
        {"2001:db8:ffff::1", 33, "2001:db8:8000::"},
        {"2001:db8::1", 128, "2001:db8::1"},
        {"2001:db8::1", 0, "::"},
    };
    for (const auto& c : cases) {
        auto got = mask_prefix(ip(c.addr), c.prefix).to_string();
        EXPECT_EQ(got, c.want) << "addr=" << c.addr << "/" << c.prefix << " got=" << got << " want=" << c.want;
    }
}

TEST(ParseCidr, AcceptsNetworks)
{
    struct Case {
        std::string_view in;
        std::string_view want; // Cidr::to_string()
        bool host_bits;
    };
    const Case cases[] = {
        {"192.0.2.0/24", "192.0.2.0/24", false},
        {"192.0.2.1/24", "192.0.2.0/24", true},
        {"192.0.2.1", "192.0.2.1/32", false},       // bare address: full prefix
        {"0.0.0.0/0", "0.0.0.0/0", false},
        {"10.1.2.3/0", "0.0.0.0/0", true},
        {"192.0.2.1/32", "192.0.2.1/32", false},
        {"192.0.2.0/024", "192.0.2.0/24", false},   // Postfix accepts leading zeros too
        {"2001:db8::/32", "2001:db8::/32", false},
        {"2001:db8::1/32", "2001:db8::/32", true},
        {"2001:db8::1", "2001:db8::1/128", false},
        {"::/0", "::/0", false},
        {"::1/128", "::1/128", false},
        {"[2001:db8::]/32", "2001:db8::/32", false}, // Postfix mynetworks form
        {"[::1]", "::1/128", false},
        {"::ffff:192.0.2.0/120", "192.0.2.0/24", false}, // v4-mapped network folds
        {"::ffff:192.0.2.1", "192.0.2.1/32", false},
        {"::ffff:0:0/96", "0.0.0.0/0", false},
        {"::ffff:0:0/95", "::fffe:0:0/95", true},        // reaches outside the mapped range: stays v6
    };
    for (const auto& c : cases) {
        bool host_bits = !c.host_bits; // must be overwritten
        auto got = parse_cidr(c.in, &host_bits);
        ASSERT_TRUE(got.has_value()) << "in=" << c.in << " got=nullopt want=" << c.want;
        EXPECT_EQ(got->to_string(), c.want) << "in=" << c.in << " got=" << got->to_string() << " want=" << c.want;
        EXPECT_EQ(host_bits, c.host_bits) << "in=" << c.in << " host_bits_set got=" << host_bits
                                          << " want=" << c.host_bits;
    }
}

TEST(ParseCidr, RejectsBadNetworks)
{
    const std::string_view cases[] = {
        "",
        "/24",
        "192.0.2.0/",
        "192.0.2.0/33",
        "192.0.2.0/-1",
        "192.0.2.0/+8",
        "192.0.2.0/ 24",
        "192.0.2.0/24 ",
        "192.0.2.0/2a",
        "192.0.2.0/0024",        // more digits than any prefix needs
        "192.0.2.0/99999999999999999999",
        "192.0.2.0/24/8",
        "2001:db8::/129",
        "2001:db8::/1000",
        "[2001:db8::/32]",
        "example.com/24",
        "192.0.2/24",
        "::ffff:192.0.2.0/129",
    };
    for (auto in : cases) {
        auto got = parse_cidr(in);
        EXPECT_FALSE(got.has_value()) << "in=\"" << in << "\" got=" << (got ? got->to_string() : "") << " want=nullopt";
    }
}

TEST(Cidr, ContainsOnPrefixEdges)
{
    struct Case {
        std::string_view net;
        std::string_view addr;
        bool want;
    };
    const Case cases[] = {
        {"192.0.2.0/24", "192.0.2.0", true},
        {"192.0.2.0/24", "192.0.2.255", true},
        {"192.0.2.0/24", "192.0.1.255", false},
        {"192.0.2.0/24", "192.0.3.0", false},
        {"192.0.2.128/25", "192.0.2.127", false},
        {"192.0.2.128/25", "192.0.2.128", true},
        {"192.0.2.128/25", "192.0.2.255", true},
        {"10.0.0.0/9", "10.127.255.255", true},
        {"10.0.0.0/9", "10.128.0.0", false},
        {"192.0.2.7", "192.0.2.7", true},
        {"192.0.2.7", "192.0.2.6", false},
        {"0.0.0.0/0", "203.0.113.9", true},
        {"0.0.0.0/0", "2001:db8::1", false},           // families must match
        {"::/0", "192.0.2.1", false},
        {"::/0", "2001:db8::1", true},
        {"192.0.2.0/24", "::ffff:192.0.2.9", true},    // mapped client, v4 network
        {"::ffff:192.0.2.0/120", "192.0.2.9", true},   // mapped network, v4 client
        {"::ffff:192.0.2.0/120", "::ffff:192.0.3.9", false},
        {"2001:db8::/32", "2001:db8:ffff:ffff::1", true},
        {"2001:db8::/32", "2001:db9::", false},
        {"2001:db8::/33", "2001:db8:7fff::1", true},
        {"2001:db8::/33", "2001:db8:8000::", false},
        {"2001:db8::1/127", "2001:db8::1", true},
        {"2001:db8::/127", "2001:db8::1", true},
        {"2001:db8::/127", "2001:db8::2", false},
        {"::1", "::1", true},
        {"::1", "::2", false},
        {"::1", "127.0.0.1", false},
    };
    for (const auto& c : cases) {
        bool got = cidr(c.net).contains(ip(c.addr));
        EXPECT_EQ(got, c.want) << c.net << " contains " << c.addr << " got=" << got << " want=" << c.want;
    }
}

TEST(NetworkSet, MatchesAnyMember)
{
    NetworkSet set;
    EXPECT_TRUE(set.empty());
    EXPECT_FALSE(set.contains(ip("127.0.0.1"))) << "an empty set contains nothing";
    set.add(cidr("127.0.0.0/8"));
    set.add(cidr("::1"));
    set.add(cidr("2001:db8:42::/48"));
    EXPECT_FALSE(set.empty());
    EXPECT_EQ(set.networks().size(), 3u);

    struct Case {
        std::string_view addr;
        bool want;
    };
    const Case cases[] = {
        {"127.0.0.1", true},   {"127.255.0.1", true},         {"128.0.0.1", false},
        {"::1", true},         {"::ffff:127.0.0.1", true},    {"2001:db8:42:1::5", true},
        {"2001:db8:43::5", false}, {"192.0.2.1", false},
    };
    for (const auto& c : cases) {
        bool got = set.contains(ip(c.addr));
        EXPECT_EQ(got, c.want) << "addr=" << c.addr << " got=" << got << " want=" << c.want;
    }
}

} // namespace
} // namespace relayguard
