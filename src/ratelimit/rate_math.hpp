// SPDX-License-Identifier: MIT
// rate_math.hpp - bounds shared by gcra() (limits.cpp) and the Redis script (rate_script.cpp).
//
// The Redis script computes in Lua 5.1 numbers (doubles); it must reach the same integers as
// the C++ code, so every value either side handles stays below 2^53, where a double holds every
// integer exactly. The script's text is built with these numbers: they are defined only here.
#pragma once

#include <chrono>
#include <cstdint>

namespace relayguard::detail {

// Largest count of one rate: a round number below 2^53 (see above).
inline constexpr std::uint64_t max_rate_count = 1'000'000'000'000'000;

// Longest period of one rate: a leap year. Longer windows are not what rate limits are for,
// and the bound keeps TATs (now + period, in µs) far below 2^53.
inline constexpr std::chrono::seconds max_rate_period{366LL * 86400};

// Cap on one request's TAT increment (about 31.7 years). Only a request that can never fit
// (cost > count) gets near it; the cap keeps its retry_after an exact integer in a double
// instead of overflowing int64. Allowed requests have increments <= max_rate_period.
inline constexpr std::int64_t max_increment_us = 1'000'000'000'000'000;

static_assert(max_rate_count < (std::uint64_t{1} << 53));
static_assert(max_increment_us < (std::int64_t{1} << 53) / 4);

} // namespace relayguard::detail
