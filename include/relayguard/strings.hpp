// SPDX-License-Identifier: MIT
// strings.hpp - small mail-agnostic string helpers (ASCII only; no locale).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace relayguard {

// ascii_lower - 'A'-'Z' folded, every other byte kept.
std::string ascii_lower(std::string_view s);

// iequals - ASCII case-insensitive comparison.
bool iequals(std::string_view a, std::string_view b) noexcept;

// sanitize - for log lines: printable ASCII kept, other bytes (and '\\', '"') as \xNN, cut
// after `max` input bytes with "..." appended. Never returns a newline or a control character.
std::string sanitize(std::string_view untrusted, std::size_t max = 256);

// trim - drop leading and trailing spaces and tabs.
std::string_view trim(std::string_view s) noexcept;

} // namespace relayguard
