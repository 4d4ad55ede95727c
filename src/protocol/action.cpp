// SPDX-License-Identifier: MIT
// action.cpp - validation of configured access(5) actions, and the policy reply (see action.hpp).
//
// validate_action runs at config load, so its reasons favour clarity over speed; append_reply
// runs per request and only appends. Pure functions; thread-safe.
#include <relayguard/action.hpp>

#include <array>
#include <utility>

#include <relayguard/strings.hpp>

namespace relayguard {
namespace {

// access(5) actions that refuse, hold or flag a message, each optionally followed by text.
constexpr std::array<std::string_view, 7> named_actions = {
    "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT", "HOLD", "DISCARD", "WARN",
};

// RFC 3463: the subject and detail parts of an enhanced status code have 1 to 3 digits.
constexpr std::size_t max_status_part_digits = 3;

// What a reason for an unknown action lists as valid.
constexpr std::string_view valid_forms =
    "\"NNN text\", \"NNN X.Y.Z text\", DUNNO, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, "
    "HOLD, DISCARD or WARN";

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// digits - how many decimal digits `s` starts with.
std::size_t digits(std::string_view s) noexcept
{
    std::size_t n = 0;
    while (n < s.size() && is_digit(s[n])) ++n;
    return n;
}

// valid_status_code - `code` is X.Y.Z: one digit, then 1-3 digits, then 1-3 digits.
bool valid_status_code(std::string_view code) noexcept
{
    if (code.size() < 2 || !is_digit(code[0]) || code[1] != '.') return false;
    code.remove_prefix(2);
    const std::size_t subject = digits(code);
    if (subject == 0 || subject > max_status_part_digits || subject == code.size() || code[subject] != '.')
        return false;
    code.remove_prefix(subject + 1);
    const std::size_t detail = digits(code);
    return detail > 0 && detail <= max_status_part_digits && detail == code.size();
}

// looks_like_status_code - the word after a reply code is meant as an enhanced status code
// (Postfix treats "D." as its start), so it must then be a valid one rather than plain text.
bool looks_like_status_code(std::string_view word) noexcept
{
    return word.size() >= 2 && is_digit(word[0]) && word[1] == '.';
}

// split_word - the text up to the first space, and what follows that space (nullopt: no space).
std::pair<std::string_view, std::optional<std::string_view>> split_word(std::string_view s) noexcept
{
    const std::size_t space = s.find(' ');
    if (space == std::string_view::npos) return {s, std::nullopt};
    return {s.substr(0, space), s.substr(space + 1)};
}

// validate_reply_code - "NNN text" or "NNN X.Y.Z text" (access(5) "4NN text", "5NN text").
std::optional<std::string> validate_reply_code(std::string_view action)
{
    const auto [code, rest] = split_word(action);
    if (code.size() != 3 || digits(code) != 3)
        return "malformed reply code " + quoted(code) + " (want 3 digits)";
    if (code[0] != '4' && code[0] != '5') return "code " + std::string(code) + " is not 4xx or 5xx";
    if (!rest || rest->empty()) return "reply code " + std::string(code) + " needs text after it";

    const auto [status, text] = split_word(*rest);
    if (!looks_like_status_code(status)) return std::nullopt;
    if (!valid_status_code(status))
        return "malformed enhanced status code " + quoted(status) +
               " (want X.Y.Z, Y and Z of 1 to 3 digits)";
    // RFC 3463: the class digit repeats the reply code's first digit.
    if (status[0] != code[0])
        return "enhanced status code " + std::string(status) + " does not match reply code " +
               std::string(code);
    if (!text || text->empty())
        return "enhanced status code " + std::string(status) + " needs text after it";
    return std::nullopt;
}

// validate_named - REJECT, DEFER, ... with optional text; DUNNO alone.
std::optional<std::string> validate_named(std::string_view action)
{
    const auto [word, text] = split_word(action);
    if (word.empty()) return std::string("action starts with a space");
    if (word == action_dunno) {
        if (text) return std::string("DUNNO takes no text");
        return std::nullopt;
    }
    for (const auto name : named_actions) {
        if (word == name) {
            if (text && text->empty()) return "empty text after " + quoted(std::string(name) + " ");
            return std::nullopt;
        }
    }
    if (iequals(word, "OK"))
        return std::string("OK is not allowed: it would skip the MTA's later restrictions (use DUNNO)");
    if (iequals(word, action_dunno)) return quoted(word) + " must be upper case: DUNNO";
    for (const auto name : named_actions)
        if (iequals(word, name)) return quoted(word) + " must be upper case: " + std::string(name);
    return "unknown action " + quoted(word) + " (want " + std::string(valid_forms) + ")";
}

} // namespace

std::optional<std::string> validate_action(std::string_view action)
{
    if (action.empty()) return std::string("empty action");
    if (action.size() > max_action_bytes)
        return "action is " + std::to_string(action.size()) + " bytes, more than " +
               std::to_string(max_action_bytes);
    // A newline would end the policy reply early (and let config text inject a second reply).
    for (std::size_t i = 0; i < action.size(); ++i) {
        const auto c = static_cast<unsigned char>(action[i]);
        if (c < 0x20 || c == 0x7f)
            return "control character " + sanitize(action.substr(i, 1)) + " at byte " +
                   std::to_string(i);
    }
    if (is_digit(action[0])) return validate_reply_code(action);
    return validate_named(action);
}

void append_reply(std::string& out, std::string_view action)
{
    // SMTPD_POLICY_README: the reply is one attribute, ended by an empty line.
    constexpr std::string_view prefix = "action=";
    constexpr std::string_view suffix = "\n\n";
    out += prefix;
    out += action;
    out += suffix;
}

} // namespace relayguard
