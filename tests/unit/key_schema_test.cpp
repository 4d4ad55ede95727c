// SPDX-License-Identifier: MIT
// key_schema_test.cpp - exact Redis key, field and member names; escaping of every byte.
#include <relayguard/key_schema.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace {

using namespace std::chrono_literals;
using relayguard::LimitKey;

constexpr std::string_view prefix = relayguard::default_key_prefix;

TEST(KeySchema, BuildsExactKeysForEveryTag)
{
    struct Case {
        LimitKey key;
        std::string value;
        std::string state;
    };
    const std::vector<Case> cases = {
        {LimitKey::sasl_username, "alice@example.com", "rg:{l:alice@example.com}"},
        {LimitKey::sender, "bob+tag@example.org", "rg:{s:bob+tag@example.org}"},
        {LimitKey::sender_domain, "example.org", "rg:{sd:example.org}"},
        {LimitKey::client_address, "192.0.2.0/24", "rg:{c:192.0.2.0/24}"},
        {LimitKey::client_address, "2001:db8::/64", "rg:{c:2001:db8::/64}"},
        {LimitKey::recipient_domain, "example.net", "rg:{rd:example.net}"},
        {LimitKey::global, "", "rg:{g:}"},
        {LimitKey::sasl_username, "first last", "rg:{l:first%20last}"},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(relayguard::state_key(prefix, c.key, c.value), c.state) << "value=" << c.value;
        EXPECT_EQ(relayguard::override_key(prefix, c.key, c.value), c.state + ":o") << "value=" << c.value;
    }
    EXPECT_EQ(relayguard::state_key("", LimitKey::sender, "x@y"), "{s:x@y}");
    EXPECT_EQ(relayguard::state_key("mail:rl:", LimitKey::global, ""), "mail:rl:{g:}");
}

TEST(KeySchema, TagsAreDistinct)
{
    const std::vector<LimitKey> keys = {LimitKey::sasl_username, LimitKey::sender,           LimitKey::sender_domain,
                                        LimitKey::client_address, LimitKey::recipient_domain, LimitKey::global};
    std::set<std::string_view> tags;
    for (const auto key : keys) tags.insert(relayguard::key_tag(key));
    EXPECT_EQ(tags.size(), keys.size());
    EXPECT_EQ(tags.count("i"), 0u) << "instance sets have their own tag";
}

TEST(KeySchema, BuildsInstanceKeysMembersAndFields)
{
    EXPECT_EQ(relayguard::instance_key(prefix, "4F2A81C2E3"), "rg:{i:4F2A81C2E3}");
    EXPECT_EQ(relayguard::instance_key(prefix, "a{b}"), "rg:{i:a%7Bb%7D}");
    EXPECT_EQ(relayguard::instance_member("msgs_per_login", LimitKey::sasl_username, "alice@example.com"),
              "msgs_per_login|l:alice@example.com");
    EXPECT_EQ(relayguard::instance_member("per_ip", LimitKey::client_address, "192.0.2.0/24"),
              "per_ip|c:192.0.2.0/24");
    EXPECT_EQ(relayguard::instance_member("g", LimitKey::global, ""), "g|g:");
    EXPECT_EQ(relayguard::instance_member("x", LimitKey::sender, "a|b"), "x|s:a%7Cb");
    EXPECT_EQ(relayguard::tat_field("per_login", 3600s), "t:per_login:3600");
    EXPECT_EQ(relayguard::tat_field("per_login", 60s), "t:per_login:60");
    EXPECT_EQ(relayguard::refused_field("per_login"), "r:per_login");
}

TEST(KeySchema, BuildsSignalAndEventKeysInTheLoginsHashTag)
{
    struct Case {
        std::string got;
        std::string want;
    };
    const std::vector<Case> cases = {
        {relayguard::signal_key(prefix, "alice@example.com", "networks", 7083333), "rg:{l:alice@example.com}:g:networks:7083333"},
        {relayguard::signal_key(prefix, "alice", "recipient_domains", 0), "rg:{l:alice}:g:recipient_domains:0"},
        {relayguard::signal_key(prefix, "alice", "rate_refusals", -1), "rg:{l:alice}:g:rate_refusals:-1"},
        {relayguard::signal_key("", "a b", "networks", 12), "{l:a%20b}:g:networks:12"},
        {relayguard::signal_key(prefix, "a}{b", "networks", 1), "rg:{l:a%7D%7Bb}:g:networks:1"},
        {relayguard::event_key(prefix, "alice@example.com", "warn"), "rg:{l:alice@example.com}:e:warn"},
        {relayguard::event_key(prefix, "alice", "suspend"), "rg:{l:alice}:e:suspend"},
        {relayguard::event_key("mail:", "x}y", "hold"), "mail:{l:x%7Dy}:e:hold"},
    };
    for (const auto& c : cases) EXPECT_EQ(c.got, c.want) << "got=" << c.got << " want=" << c.want;
    // The same tag as the login's suspension: one Redis Cluster slot per login.
    const std::string s = relayguard::suspension_key(prefix, "a}{b");
    const std::string g = relayguard::signal_key(prefix, "a}{b", "networks", 1);
    EXPECT_EQ(g.substr(0, s.size() - 2), s.substr(0, s.size() - 2)) << "got=" << g << " want prefix of " << s;
}

TEST(KeySchema, EscapesEveryByteOutsideTheSafeSet)
{
    // Written out here, not taken from the code under test.
    const std::string safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@._+/:-";
    for (int b = 0; b < 256; ++b) {
        const std::string in(1, static_cast<char>(b));
        const std::string want =
            safe.find(static_cast<char>(b)) != std::string::npos ? in : fmt::format("%{:02X}", b);
        EXPECT_EQ(relayguard::escape_key_value(in), want) << "byte=" << b;
    }
}

TEST(KeySchema, EscapesTheBytesThatWouldBreakKeys)
{
    struct Case {
        std::string in;
        std::string want;
    };
    const std::vector<Case> cases = {
        {"{", "%7B"},   {"}", "%7D"},     {"%", "%25"},   {" ", "%20"},
        {std::string(1, '\0'), "%00"},    {"\n", "%0A"},  {"\x7f", "%7F"},
        {"\x80", "%80"}, {"\xff", "%FF"}, {"|", "%7C"},   {"\xc3\xa9t\xc3\xa9", "%C3%A9t%C3%A9"},
        {"a}{b", "a%7D%7Bb"},             {"", ""},
    };
    for (const auto& c : cases) EXPECT_EQ(relayguard::escape_key_value(c.in), c.want) << "want=" << c.want;
}

TEST(KeySchema, HostileValuesKeepOneHashTagAndDistinctKeys)
{
    // '}' and '%' in a value cannot end the hash tag early or forge another value's key.
    const std::vector<std::string> values = {"a}b", "a%7Db", "a%257Db", "a b", "a%20b", "}{", "{l:x}"};
    std::set<std::string> keys;
    for (const auto& v : values) {
        const std::string key = relayguard::state_key(prefix, LimitKey::sasl_username, v);
        EXPECT_EQ(std::count(key.begin(), key.end(), '{'), 1) << "key=" << key;
        EXPECT_EQ(std::count(key.begin(), key.end(), '}'), 1) << "key=" << key;
        EXPECT_EQ(key.back(), '}') << "key=" << key;
        keys.insert(key);
    }
    EXPECT_EQ(keys.size(), values.size()) << "two values share one key";
}

} // namespace
