// SPDX-License-Identifier: MIT
// strings_test.cpp - ascii_lower, iequals, sanitize and trim (src/util/strings.cpp).
#include <relayguard/strings.hpp>

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace relayguard {
namespace {

using namespace std::string_view_literals;

TEST(AsciiLower, FoldsOnlyAsciiUpperCase)
{
    struct Case {
        std::string_view in;
        std::string_view want;
    };
    const Case cases[] = {
        {"", ""},
        {"RCPT", "rcpt"},
        {"End-Of-Message", "end-of-message"},
        {"already lower 123", "already lower 123"},
        {"@[\\]^_`{", "@[\\]^_`{"},                    // the bytes around 'A'-'Z' and 'a'-'z'
        {"M\xC3\x9CLLER", "m\xC3\x9Cller"},            // UTF-8 bytes untouched (no locale)
        {"\xC0\xDE", "\xC0\xDE"},                      // Latin-1 upper case untouched
        {"A\0B"sv, "a\0b"sv},                          // NUL kept, length kept
    };
    for (const auto& c : cases) {
        const std::string got = ascii_lower(c.in);
        EXPECT_EQ(got, c.want) << "in=" << c.in << " got=" << got << " want=" << c.want;
    }
}

TEST(Iequals, ComparesAsciiCaseInsensitively)
{
    struct Case {
        std::string_view a;
        std::string_view b;
        bool want;
    };
    const Case cases[] = {
        {"", "", true},
        {"rcpt", "RCPT", true},
        {"End-Of-Message", "END-OF-MESSAGE", true},
        {"rcpt", "rcpt ", false},  // length differs
        {"rcpt", "rcp", false},
        {"", "a", false},
        {"mail", "maim", false},
        {"@", "`", false},         // 0x40 and 0x60 differ by the case bit but are not letters
        {"[", "{", false},
        {"\xC3\x9C", "\xC3\xBC", false}, // non-ASCII is compared exactly
        {"a\0b"sv, "A\0B"sv, true},
        {"a\0b"sv, "a\0c"sv, false},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(iequals(c.a, c.b), c.want) << "a=" << c.a << " b=" << c.b << " want=" << c.want;
        EXPECT_EQ(iequals(c.b, c.a), c.want) << "(swapped) a=" << c.b << " b=" << c.a;
    }
}

TEST(Sanitize, EscapesEverythingButPrintableAscii)
{
    struct Case {
        std::string_view in;
        std::size_t max;
        std::string_view want;
    };
    const Case cases[] = {
        {"", 256, ""},
        {"client_address=192.0.2.1", 256, "client_address=192.0.2.1"},
        {"a\nb\rc\td", 256, "a\\x0ab\\x0dc\\x09d"},
        {"\0"sv, 256, "\\x00"},
        {"\x1f\x7f", 256, "\\x1f\\x7f"},
        {" ~", 256, " ~"},                              // 0x20 and 0x7e are the printable edges
        {"M\xC3\xBCller", 256, "M\\xc3\\xbcller"},      // bytes 0x80+ escaped, lower-case hex
        {"\xff", 256, "\\xff"},
        {"say \"hi\"", 256, "say \\x22hi\\x22"},        // quotes escaped: log values are quoted
        {"a\\b", 256, "a\\x5cb"},                       // so is the escape character itself
        {"abcdef", 3, "abc..."},                        // cut after max input bytes
        {"abc", 3, "abc"},                              // exactly max: not cut
        {"abcd", 0, "..."},
        {"\n\n\n\n", 2, "\\x0a\\x0a..."},               // max counts input bytes, not output
    };
    for (const auto& c : cases) {
        const std::string got = sanitize(c.in, c.max);
        EXPECT_EQ(got, c.want) << "max=" << c.max << " got=" << got << " want=" << c.want;
    }
}

TEST(Sanitize, NeverOutputsControlOrNonAsciiBytes)
{
    std::string every_byte;
    for (int b = 0; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
    const std::string got = sanitize(every_byte, every_byte.size());
    for (const char ch : got) {
        const auto c = static_cast<unsigned char>(ch);
        EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "got byte " << int(c) << " in output";
    }
    // 95 printable bytes minus '\\' and '"' kept, the other 163 bytes as four-byte escapes.
    EXPECT_EQ(got.size(), 93u + 163u * 4u) << "got=" << got.size() << " want=" << 93 + 163 * 4;
}

TEST(Sanitize, DefaultLimitIs256InputBytes)
{
    const std::string in(300, 'x');
    const std::string got = sanitize(in);
    EXPECT_EQ(got, std::string(256, 'x') + "...") << "got size=" << got.size();
}

TEST(Trim, DropsOuterSpacesAndTabsOnly)
{
    struct Case {
        std::string_view in;
        std::string_view want;
    };
    const Case cases[] = {
        {"", ""},
        {"   ", ""},
        {"\t \t", ""},
        {"a", "a"},
        {"  a b  ", "a b"},
        {"\ta\tb\t", "a\tb"},
        {"\na\n", "\na\n"},    // only space and tab count
        {"\r a \r", "\r a \r"},
        {" x", "x"},
        {"x ", "x"},
    };
    for (const auto& c : cases) {
        const std::string_view got = trim(c.in);
        EXPECT_EQ(got, c.want) << "in=[" << c.in << "] got=[" << got << "] want=[" << c.want << "]";
    }
}

TEST(Trim, ReturnsViewIntoInput)
{
    const std::string_view in = "  value ";
    const std::string_view got = trim(in);
    EXPECT_EQ(got.data(), in.data() + 2) << "trim must not copy";
    EXPECT_EQ(got.size(), 5u);
}

} // namespace
} // namespace relayguard
