// SPDX-License-Identifier: MIT
// maps_test.cpp - address rules, DomainSet, domain files and sender login maps.
#include <relayguard/maps.hpp>

#include <string>

#include <gtest/gtest.h>

#include "testing/test_support.hpp"

namespace relayguard {
namespace {

std::string map_path(const std::string& name) { return (testing::test_data_dir() / "maps" / name).string(); }

AddressConfig folded(std::string delimiter = "")
{
    AddressConfig rules;
    rules.recipient_delimiter = std::move(delimiter);
    return rules;
}

AddressConfig case_sensitive(std::string delimiter = "")
{
    AddressConfig rules = folded(std::move(delimiter));
    rules.local_part_case_sensitive = true;
    return rules;
}

TEST(SplitAddress, SplitsAtLastAt)
{
    struct Case {
        std::string_view in, local, domain;
    };
    const Case cases[] = {
        {"user@example.com", "user", "example.com"},
        {"\"a@b\"@example.com", "\"a@b\"", "example.com"},
        {"user", "user", ""},
        {"", "", ""},
        {"@example.com", "", "example.com"},
        {"user@", "user", ""},
        {"a@b@c", "a@b", "c"},
    };
    for (const auto& c : cases) {
        auto got = split_address(c.in);
        EXPECT_EQ(got.local, c.local) << "in=" << c.in << " local got=" << got.local << " want=" << c.local;
        EXPECT_EQ(got.domain, c.domain) << "in=" << c.in << " domain got=" << got.domain << " want=" << c.domain;
    }
}

TEST(NormalizeDomain, LowersAndDropsOneTrailingDot)
{
    struct Case {
        std::string_view in, want;
    };
    const Case cases[] = {
        {"Example.COM", "example.com"}, {"example.com.", "example.com"}, {"example.com..", "example.com."},
        {".Sub.Example", ".sub.example"}, {"", ""}, {".", ""},
    };
    for (const auto& c : cases) {
        auto got = normalize_domain(c.in);
        EXPECT_EQ(got, c.want) << "in=" << c.in << " got=" << got << " want=" << c.want;
    }
}

TEST(NormalizeAddress, FoldsDomainAndLocalPartAsConfigured)
{
    struct Case {
        std::string_view in;
        bool local_case_sensitive;
        std::string_view want;
    };
    const Case cases[] = {
        {"Alice@Test.LOCAL", false, "alice@test.local"},
        {"Alice@Test.LOCAL", true, "Alice@test.local"},
        {"Alice+Ext@Test.Local.", false, "alice+ext@test.local"}, // extension kept
        {"@Example.ORG", false, "@example.org"},
        {"Alice", false, "alice"},
        {"Alice", true, "Alice"},
        {"", false, ""},
    };
    for (const auto& c : cases) {
        AddressConfig rules;
        rules.local_part_case_sensitive = c.local_case_sensitive;
        auto got = normalize_address(c.in, rules);
        EXPECT_EQ(got, c.want) << "in=" << c.in << " case_sensitive=" << c.local_case_sensitive << " got=" << got
                               << " want=" << c.want;
    }
}

TEST(NormalizeAddress, HandlesAddressesLongerThanTheStackBuffer)
{
    const std::string local(400, 'A');
    auto got = normalize_address(local + "@EXAMPLE.COM", AddressConfig{});
    EXPECT_EQ(got, std::string(400, 'a') + "@example.com");
}

TEST(StripExtension, CutsAtFirstDelimiterCharacter)
{
    struct Case {
        std::string_view in;
        std::string delimiter;
        std::string_view want;
    };
    const Case cases[] = {
        {"user+ext@example.com", "+", "user@example.com"},
        {"user+ext+more@example.com", "+", "user@example.com"},
        {"User+Ext@Example.com", "+", "User@Example.com"}, // no normalization
        {"user-ext@example.com", "+", "user-ext@example.com"},
        {"user-ext@example.com", "+-", "user@example.com"},  // every character is a delimiter
        {"user+a-b@example.com", "-+", "user@example.com"},  // first occurrence of any of them
        {"user+ext@example.com", "", "user+ext@example.com"}, // "" = off
        {"+ext@example.com", "+", "+ext@example.com"},      // would leave an empty local part
        {"user+@example.com", "+", "user@example.com"},
        {"user+ext", "+", "user"},                          // unqualified
        {"user@sub+domain.example", "+", "user@sub+domain.example"}, // only the local part
        {"", "+", ""},
    };
    for (const auto& c : cases) {
        auto got = strip_extension(c.in, folded(c.delimiter));
        EXPECT_EQ(got, c.want) << "in=" << c.in << " delimiter=" << c.delimiter << " got=" << got
                               << " want=" << c.want;
        auto parts = strip_extension_parts(c.in, folded(c.delimiter));
        auto want_parts = split_address(c.want);
        EXPECT_EQ(parts.local, want_parts.local) << "strip_extension_parts in=" << c.in;
        EXPECT_EQ(parts.domain, want_parts.domain) << "strip_extension_parts in=" << c.in;
    }
}

TEST(SameAddress, ComparesAsNormalizeAddressDoes)
{
    struct Case {
        std::string_view a, b;
        bool case_sensitive;
        bool want;
    };
    const Case cases[] = {
        {"alice@test.local", "alice@test.local", false, true},
        {"Alice@TEST.local", "alice@test.LOCAL.", false, true},
        {"Alice@TEST.local", "alice@test.local", true, false},
        {"Alice@TEST.local", "Alice@test.local", true, true},
        {"alice@test.local", "alice@test.locals", false, false},
        {"alice@test.local", "alicia@test.local", false, false},
        {"alice+x@test.local", "alice@test.local", false, false}, // extensions are not ignored here
    };
    for (const auto& c : cases) {
        AddressConfig rules;
        rules.local_part_case_sensitive = c.case_sensitive;
        bool got = same_address(split_address(c.a), split_address(c.b), rules);
        EXPECT_EQ(got, c.want) << c.a << " vs " << c.b << " case_sensitive=" << c.case_sensitive << " got=" << got
                               << " want=" << c.want;
        bool via_normalize = normalize_address(c.a, rules) == normalize_address(c.b, rules);
        EXPECT_EQ(got, via_normalize) << c.a << " vs " << c.b << ": same_address disagrees with normalize_address";
    }
}

TEST(DomainSet, MatchesExactAndSubdomainEntries)
{
    DomainSet set;
    EXPECT_FALSE(set.contains("example.com")) << "an empty set contains nothing";
    set.add("Test.Local");
    set.add(".Example.NET.");
    set.add("");  // ignored
    set.add("."); // ignored
    EXPECT_EQ(set.size(), 2u);

    struct Case {
        std::string_view domain;
        bool want;
    };
    const Case cases[] = {
        {"test.local", true},
        {"TEST.LOCAL", true},
        {"test.local.", true},
        {"sub.test.local", false},     // an exact entry does not cover subdomains
        {"example.net", false},        // ".example.net" covers subdomains, not the parent itself
        {"mx.example.net", true},
        {"a.b.EXAMPLE.net", true},
        {"badexample.net", false},     // suffix match is on a label boundary
        {"example.net.evil", false},
        {"", false},
        {".", false},
        {".example.net", false},       // not a domain name: the entry itself, as a query
        {"local", false},
    };
    for (const auto& c : cases) {
        bool got = set.contains(c.domain);
        EXPECT_EQ(got, c.want) << "domain=" << c.domain << " got=" << got << " want=" << c.want;
    }
}

TEST(DomainSet, MatchesLongNames)
{
    // Over the stack buffer used for lookups: must still work, through the heap.
    std::string label(60, 'x');
    std::string longname = label + "." + label + "." + label + "." + label + "." + label + "." + label + ".example";
    DomainSet set;
    set.add(longname);
    set.add(".example");
    EXPECT_TRUE(set.contains(longname));
    EXPECT_TRUE(set.contains("y." + label + ".example"));
}

TEST(LoadDomainFile, ReadsDomainsCommentsAndMapStyleLines)
{
    auto got = load_domain_file(map_path("local_domains"));
    ASSERT_TRUE(got.has_value()) << got.error().message;
    const DomainSet& set = *got;
    EXPECT_EQ(set.size(), 4u);
    struct Case {
        std::string_view domain;
        bool want;
    };
    const Case cases[] = {
        {"test.local", true},   {"example.com", true},       {"EXAMPLE.com", true}, {"x.sub.example.net", true},
        {"sub.example.net", false}, {"relay.example.org", true}, {"OK", false},     {"# indented comment", false},
    };
    for (const auto& c : cases) {
        bool got_contains = set.contains(c.domain);
        EXPECT_EQ(got_contains, c.want) << "domain=" << c.domain << " got=" << got_contains << " want=" << c.want;
    }
}

TEST(LoadDomainFile, AddsToAnExistingSet)
{
    DomainSet base;
    base.add("config.example");
    auto got = load_domain_file(map_path("local_domains"), std::move(base));
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_TRUE(got->contains("config.example"));
    EXPECT_TRUE(got->contains("test.local"));
}

TEST(LoadDomainFile, ReportsErrorsWithFileAndLine)
{
    struct Case {
        std::string file;
        unsigned line;
        std::string message;
    };
    const Case cases[] = {
        {"domains_with_at", 3, "invalid domain \"alice@test.local\": contains '@'"},
        {"domains_empty_label", 2, "invalid domain \"foo..example.com\": empty label"},
        {"domains_bad_char", 2, "invalid domain \"exa/mple.com\": invalid character"},
        {"domains_only_dot", 1, "invalid domain \".\": empty domain"},
    };
    for (const auto& c : cases) {
        auto got = load_domain_file(map_path(c.file));
        ASSERT_FALSE(got.has_value()) << c.file << ": got=a set want=error";
        const ConfigError& e = got.error();
        EXPECT_EQ(e.file, map_path(c.file));
        EXPECT_EQ(e.line, c.line) << c.file << " line got=" << e.line << " want=" << c.line;
        EXPECT_EQ(e.key, "");
        EXPECT_EQ(e.message, c.message) << c.file << " message got=" << e.message << " want=" << c.message;
    }
}

TEST(LoadDomainFile, ReportsUnreadableFile)
{
    auto missing = load_domain_file(map_path("no_such_file"));
    ASSERT_FALSE(missing.has_value());
    EXPECT_EQ(missing.error().file, map_path("no_such_file"));
    EXPECT_EQ(missing.error().line, 0u);
    EXPECT_EQ(missing.error().message, "cannot read: No such file or directory");

    auto dir = load_domain_file((testing::test_data_dir() / "maps").string());
    ASSERT_FALSE(dir.has_value());
    EXPECT_EQ(dir.error().message, "cannot read: Is a directory");
}

TEST(LoadSenderLoginMap, ParsesLoginListsAndContinuations)
{
    const AddressConfig rules = folded();
    auto got = load_sender_login_map(map_path("sender_login_maps"), rules);
    ASSERT_TRUE(got.has_value()) << got.error().message << " at line " << got.error().line;
    const SenderLoginMap& map = *got;
    EXPECT_EQ(map.size(), 6u) << "duplicate key must not add an entry";

    struct Case {
        std::string_view sender, login;
        bool want;
    };
    const Case cases[] = {
        {"alice@test.local", "alice@test.local", true},
        {"alice@test.local", "mallory", false}, // the later duplicate line is ignored (postmap keeps the first)
        {"shared@test.local", "alice@test.local", true},
        {"shared@test.local", "bob", true},
        {"shared@test.local", "carol", true},
        {"shared@test.local", "dave", true}, // separated by a tab
        {"shared@test.local", "bob,carol", false},
        {"shared@test.local", "eve", false},
        {"team@test.local", "erin", true},
        {"team@test.local", "frank", true}, // continuation after a comment and a blank line
        {"team@test.local", "grace", true},
        {"anyone@example.org", "postmaster-login", true},
        {"ceo@example.org", "ceo-login", true},
        {"ceo@example.org", "postmaster-login", false}, // full address found first: it decides
        {"nobody@test.local", "alice@test.local", false},
    };
    for (const auto& c : cases) {
        bool got_match = map.owners_match(c.sender, c.login, rules);
        EXPECT_EQ(got_match, c.want) << "sender=" << c.sender << " login=" << c.login << " got=" << got_match
                                     << " want=" << c.want;
    }
}

TEST(LoadSenderLoginMap, ReportsErrorsWithFileAndLine)
{
    struct Case {
        std::string file;
        unsigned line;
        std::string message;
    };
    const Case cases[] = {
        {"sender_login_bare_key", 2, "key \"alice\" is not user@domain or @domain"},
        {"sender_login_empty_domain", 1, "key \"user@\": invalid domain: empty domain"},
        {"sender_login_bad_domain", 2, "key \"@bad..example\": invalid domain: empty label"},
        {"sender_login_no_login", 3, "key \"nobody@test.local\" has no login"},
        {"sender_login_only_commas", 1, "key \"nobody@test.local\" has no login"},
        {"sender_login_leading_continuation", 1, "continuation line without an entry before it"},
    };
    for (const auto& c : cases) {
        auto got = load_sender_login_map(map_path(c.file), AddressConfig{});
        ASSERT_FALSE(got.has_value()) << c.file << ": got=a map want=error";
        const ConfigError& e = got.error();
        EXPECT_EQ(e.file, map_path(c.file));
        EXPECT_EQ(e.line, c.line) << c.file << " line got=" << e.line << " want=" << c.line;
        EXPECT_EQ(e.message, c.message) << c.file << " message got=" << e.message << " want=" << c.message;
    }
}

TEST(LoadSenderLoginMap, ReportsUnreadableFile)
{
    auto got = load_sender_login_map(map_path("no_such_file"), AddressConfig{});
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().line, 0u);
    EXPECT_EQ(got.error().message, "cannot read: No such file or directory");
}

TEST(LoadSenderLoginMap, ReadsCrlfAndFileWithoutFinalNewline)
{
    testing::TempDir dir;
    testing::write_file(dir / "map", "a@test.local\tbob\r\n  carol\r\n@test.local dave");
    auto got = load_sender_login_map((dir / "map").string(), AddressConfig{});
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_TRUE(got->owners_match("a@test.local", "bob", AddressConfig{}));
    EXPECT_TRUE(got->owners_match("a@test.local", "carol", AddressConfig{}));
    EXPECT_FALSE(got->owners_match("a@test.local", "carol\r", AddressConfig{}));
    EXPECT_TRUE(got->owners_match("z@test.local", "dave", AddressConfig{}));
}

TEST(SenderLoginMap, LookupOrderFullThenUnextendedThenDomain)
{
    const AddressConfig rules = folded("+");
    SenderLoginMap map;
    map.add("list+announce@test.local", "announcer", rules);
    map.add("list@test.local", "list-owner", rules);
    map.add("@test.local", "domain-admin", rules);
    map.add("bob@test.local", "bob", rules);

    struct Case {
        std::string_view sender, login;
        bool want;
    };
    const Case cases[] = {
        {"list+announce@test.local", "announcer", true},  // full address
        {"list+announce@test.local", "list-owner", false}, // full address decides
        {"list+other@test.local", "list-owner", true},     // without extension
        {"list+other@test.local", "announcer", false},
        {"list+other@test.local", "domain-admin", false},  // the unextended key decides
        {"bob+tag@test.local", "bob", true},
        {"bob+tag@test.local", "domain-admin", false},
        {"carol@test.local", "domain-admin", true},        // only @domain matches
        {"carol+x@test.local", "domain-admin", true},
        {"carol@other.example", "domain-admin", false},
        {"carol", "domain-admin", false},                  // unqualified: no domain to look up
    };
    for (const auto& c : cases) {
        bool got = map.owners_match(c.sender, c.login, rules);
        EXPECT_EQ(got, c.want) << "sender=" << c.sender << " login=" << c.login << " got=" << got
                               << " want=" << c.want;
    }
    // Without a delimiter there is no second step: list+other@ falls through to @domain.
    EXPECT_TRUE(map.owners_match("list+other@test.local", "domain-admin", folded()));
}

TEST(SenderLoginMap, CaseRules)
{
    SenderLoginMap folded_map;
    folded_map.add("Alice@Test.Local", "Alice@Test.Local", folded());
    folded_map.add("alice@test.local", "ALIAS", folded()); // same key: logins accumulate
    EXPECT_EQ(folded_map.size(), 1u);

    SenderLoginMap exact_map;
    exact_map.add("Alice@Test.Local", "alice", case_sensitive());

    struct Case {
        const SenderLoginMap* map;
        AddressConfig rules;
        std::string_view sender, login;
        bool want;
    };
    const Case cases[] = {
        {&folded_map, folded(), "ALICE@TEST.LOCAL", "alice@test.local", true}, // logins: case-insensitive
        {&folded_map, folded(), "alice@test.local.", "alias", true},
        {&exact_map, case_sensitive(), "Alice@TEST.local", "ALICE", true},     // domain always folded
        {&exact_map, case_sensitive(), "alice@test.local", "alice", false},    // local part is not
    };
    for (const auto& c : cases) {
        bool got = c.map->owners_match(c.sender, c.login, c.rules);
        EXPECT_EQ(got, c.want) << "sender=" << c.sender << " login=" << c.login
                               << " case_sensitive=" << c.rules.local_part_case_sensitive << " got=" << got
                               << " want=" << c.want;
    }
}

TEST(SenderLoginMap, EmptyMapOwnsNothing)
{
    SenderLoginMap map;
    EXPECT_EQ(map.size(), 0u);
    EXPECT_FALSE(map.owners_match("alice@test.local", "alice@test.local", AddressConfig{}));
}

} // namespace
} // namespace relayguard
