// SPDX-License-Identifier: MIT
// action.hpp - access(5) actions: validation of configured replies, and the wire reply.
//
// A policy reply is `action=<access(5) action>\n\n`. relayguard sends DUNNO on a pass (never OK,
// which would skip the MTA's later restrictions) and, on a refusal, the reply a check is
// configured with: "NNN X.Y.Z text" (a 4xx/5xx code, an optional RFC 3463 enhanced status code of
// the same class, text) or a named action: REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, HOLD,
// DISCARD, WARN, each with optional text. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace relayguard {

inline constexpr std::string_view action_dunno = "DUNNO";

// Longest configured action text. Postfix truncates SMTP reply lines near 512 bytes anyway.
inline constexpr std::size_t max_action_bytes = 400;

// validate_action - check a configured action. Returns nullopt if it is valid, else a short
// English reason for a config error message ("code 250 is not 4xx or 5xx", ...).
std::optional<std::string> validate_action(std::string_view action);

// append_reply - append the wire reply for `action` to `out`: "action=" action "\n\n".
// Precondition: action is valid (no newline or NUL).
void append_reply(std::string& out, std::string_view action);

} // namespace relayguard
