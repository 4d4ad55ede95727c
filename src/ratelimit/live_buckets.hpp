// SPDX-License-Identifier: MIT
// live_buckets.hpp - the quarter-window bucket arithmetic both live stores share (live_facts.hpp),
// so that EmbeddedLiveStore and RedisLiveStore number buckets alike. Pure functions.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include <relayguard/live_facts.hpp>

namespace relayguard::detail {

// The shortest bucket: Redis expiries and bucket numbers are whole seconds.
inline constexpr std::int64_t min_bucket_seconds = 1;

inline constexpr std::int64_t micros_per_second = 1'000'000;

// floor_div - a / b rounded down (b > 0): bucket numbers stay monotonic before 1970 too.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept
{
    return a / b - ((a % b != 0 && a < 0) ? 1 : 0);
}

// bucket_length - a quarter of the window in whole seconds, at least one.
constexpr std::int64_t bucket_length(std::chrono::seconds window) noexcept
{
    return std::max<std::int64_t>(min_bucket_seconds, window.count() / static_cast<std::int64_t>(signal_buckets));
}

// bucket_index - the bucket `now_us` falls in (key_schema.hpp: unix s / bucket length).
constexpr std::int64_t bucket_index(std::int64_t now_us, std::int64_t length_s) noexcept
{
    return floor_div(floor_div(now_us, micros_per_second), length_s);
}

} // namespace relayguard::detail
