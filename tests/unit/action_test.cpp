// SPDX-License-Identifier: MIT
// action_test.cpp - validate_action (access(5) forms and the reasons given) and append_reply.
#include <relayguard/action.hpp>

#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace relayguard {
namespace {

using namespace std::string_view_literals;

constexpr std::string_view valid_forms =
    "\"NNN text\", \"NNN X.Y.Z text\", DUNNO, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, "
    "HOLD, DISCARD or WARN";

TEST(ValidateAction, AcceptsAccessFiveForms)
{
    const std::string_view valid[] = {
        "DUNNO",
        "REJECT",
        "REJECT relay access denied",
        "DEFER",
        "DEFER try again later",
        "DEFER_IF_PERMIT rate exceeded",
        "DEFER_IF_REJECT",
        "HOLD",
        "HOLD needs a look",
        "DISCARD",
        "DISCARD silently",
        "WARN",
        "WARN suspicious volume",
        "554 5.7.1 account suspended",
        "530 5.7.0 authentication required",
        "538 5.7.11 encryption required",          // Y and Z up to 3 digits (RFC 3463)
        "553 5.7.1 sender not owned by login",
        "450 4.7.1 rate exceeded, retry in 30 s",
        "421 4.999.999 edge of the digit limits",
        "450 rate exceeded",                        // the enhanced status code is optional
        "550 plain text",
        "451 45.7.1 text",                          // "45.7.1" is not D.D.D, so it is text
        "550 5.7.1 text with = and : and \"quotes\"",
        "550 5.7.1 caf\xC3\xA9",                    // 8-bit text is not a control character
        "REJECT  two spaces",
        "450 X.Y.Z is text here",
    };
    for (const auto action : valid) {
        const auto got = validate_action(action);
        EXPECT_FALSE(got.has_value()) << "action=" << action << " got=" << got.value_or("") << " want=valid";
    }
}

TEST(ValidateAction, AcceptsExactlyMaxActionBytes)
{
    const std::string at_limit = "REJECT " + std::string(max_action_bytes - 7, 'x');
    ASSERT_EQ(at_limit.size(), max_action_bytes);
    const auto got = validate_action(at_limit);
    EXPECT_FALSE(got.has_value()) << "got=" << got.value_or("") << " want=valid";
}

TEST(ValidateAction, RejectsInvalidWithReason)
{
    struct Case {
        std::string_view action;
        std::string want;
    };
    const Case cases[] = {
        {"", "empty action"},
        {"OK", "OK is not allowed: it would skip the MTA's later restrictions (use DUNNO)"},
        {"ok", "OK is not allowed: it would skip the MTA's later restrictions (use DUNNO)"},
        {"OK fine", "OK is not allowed: it would skip the MTA's later restrictions (use DUNNO)"},
        {"DUNNO because", "DUNNO takes no text"},
        {"dunno", "\"dunno\" must be upper case: DUNNO"},
        {"reject", "\"reject\" must be upper case: REJECT"},
        {"Defer_If_Permit x", "\"Defer_If_Permit\" must be upper case: DEFER_IF_PERMIT"},
        {"REDIRECT a@b", "unknown action \"REDIRECT\" (want " + std::string(valid_forms) + ")"},
        {"REJECTED", "unknown action \"REJECTED\" (want " + std::string(valid_forms) + ")"},
        {"FILTER smtp:x", "unknown action \"FILTER\" (want " + std::string(valid_forms) + ")"},
        {" REJECT", "action starts with a space"},
        {"REJECT ", "empty text after \"REJECT \""},
        {"250 ok", "code 250 is not 4xx or 5xx"},
        {"354 go ahead", "code 354 is not 4xx or 5xx"},
        {"650 5.7.1 x", "code 650 is not 4xx or 5xx"},
        {"45 text", "malformed reply code \"45\" (want 3 digits)"},
        {"4500 text", "malformed reply code \"4500\" (want 3 digits)"},
        {"45x text", "malformed reply code \"45x\" (want 3 digits)"},
        {"450-multi line", "malformed reply code \"450-multi\" (want 3 digits)"},
        {"450", "reply code 450 needs text after it"},
        {"450 ", "reply code 450 needs text after it"},
        {"450 4.7.1", "enhanced status code 4.7.1 needs text after it"},
        {"450 4.7.1 ", "enhanced status code 4.7.1 needs text after it"},
        {"450 5.7.1 text", "enhanced status code 5.7.1 does not match reply code 450"},
        {"554 4.7.1 text", "enhanced status code 4.7.1 does not match reply code 554"},
        {"550 2.0.0 text", "enhanced status code 2.0.0 does not match reply code 550"},
        {"550 5.7 text", "malformed enhanced status code \"5.7\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5.7. text", "malformed enhanced status code \"5.7.\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5..1 text", "malformed enhanced status code \"5..1\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5.1000.1 text",
         "malformed enhanced status code \"5.1000.1\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5.7.1000 text",
         "malformed enhanced status code \"5.7.1000\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5.7.1: text", "malformed enhanced status code \"5.7.1:\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5.x.1 text", "malformed enhanced status code \"5.x.1\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"550 5.7.1.2 text",
         "malformed enhanced status code \"5.7.1.2\" (want X.Y.Z, Y and Z of 1 to 3 digits)"},
        {"REJECT bad\nline", "control character \\x0a at byte 10"},
        {"REJECT bad\r", "control character \\x0d at byte 10"},
        {"REJECT\ttab", "control character \\x09 at byte 6"},
        {"REJECT nul\0"sv, "control character \\x00 at byte 10"},
        {"550 5.7.1 del\x7f", "control character \\x7f at byte 13"},
    };
    for (const auto& c : cases) {
        const auto got = validate_action(c.action);
        ASSERT_TRUE(got.has_value()) << "action=" << c.action << " got=valid want=" << c.want;
        EXPECT_EQ(*got, c.want) << "action=" << c.action << " got=" << *got << " want=" << c.want;
    }
}

TEST(ValidateAction, RejectsOneByteOverMaxActionBytes)
{
    const std::string over = "REJECT " + std::string(max_action_bytes - 6, 'x');
    ASSERT_EQ(over.size(), max_action_bytes + 1);
    const auto got = validate_action(over);
    const std::string want = "action is " + std::to_string(max_action_bytes + 1) + " bytes, more than " +
                             std::to_string(max_action_bytes);
    ASSERT_TRUE(got.has_value()) << "got=valid want=" << want;
    EXPECT_EQ(*got, want) << "got=" << *got << " want=" << want;
}

TEST(ValidateAction, DunnoConstantIsValid)
{
    const auto got = validate_action(action_dunno);
    EXPECT_FALSE(got.has_value()) << "got=" << got.value_or("");
}

TEST(AppendReply, AppendsActionLineAndEmptyLine)
{
    struct Case {
        std::string before;
        std::string_view action;
        std::string want;
    };
    const Case cases[] = {
        {"", "DUNNO", "action=DUNNO\n\n"},
        {"", "554 5.7.1 relay access denied", "action=554 5.7.1 relay access denied\n\n"},
        {"action=DUNNO\n\n", "DEFER_IF_PERMIT later", "action=DUNNO\n\naction=DEFER_IF_PERMIT later\n\n"},
        {"", "", "action=\n\n"},
    };
    for (const auto& c : cases) {
        std::string got = c.before;
        append_reply(got, c.action);
        EXPECT_EQ(got, c.want) << "action=" << c.action << " got=" << got << " want=" << c.want;
    }
}

} // namespace
} // namespace relayguard
