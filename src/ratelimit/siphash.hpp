// SPDX-License-Identifier: MIT
// siphash.hpp - SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012).
//
// A keyed hash for the embedded store's tables: their keys are logins, senders and domains an
// SMTP client chooses, and with an unkeyed hash a client could pick keys that all collide
// (hash flooding). Pure functions: thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

namespace relayguard::detail {

struct SipKey {
    std::uint64_t k0 = 0;
    std::uint64_t k1 = 0;
};

// siphash24 - the 64-bit SipHash-2-4 of `data` under `key` (key bytes little-endian, as in the
// paper's test vectors).
std::uint64_t siphash24(const SipKey& key, std::string_view data) noexcept;

// random_sip_key - a key from std::random_device, for one table's lifetime.
SipKey random_sip_key();

} // namespace relayguard::detail
