// SPDX-License-Identifier: MIT
// siphash.cpp - SipHash-2-4, written from the paper's description (see siphash.hpp).
#include "ratelimit/siphash.hpp"

#include <random>

namespace relayguard::detail {
namespace {

constexpr std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

// The paper's initialisation constants: "somepseudorandomlygeneratedbytes" in ASCII.
constexpr std::uint64_t init0 = 0x736f6d6570736575ULL;
constexpr std::uint64_t init1 = 0x646f72616e646f6dULL;
constexpr std::uint64_t init2 = 0x6c7967656e657261ULL;
constexpr std::uint64_t init3 = 0x7465646279746573ULL;

struct State {
    std::uint64_t v0, v1, v2, v3;

    void round() noexcept
    {
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
    }

    // compress - one message word, c = 2 rounds.
    void compress(std::uint64_t m) noexcept
    {
        v3 ^= m;
        round();
        round();
        v0 ^= m;
    }
};

// load_le - up to 8 bytes as a little-endian integer (independent of the host's byte order).
std::uint64_t load_le(const unsigned char* p, std::size_t n) noexcept
{
    std::uint64_t m = 0;
    for (std::size_t i = 0; i < n; ++i) m |= std::uint64_t{p[i]} << (8 * i);
    return m;
}

} // namespace

std::uint64_t siphash24(const SipKey& key, std::string_view data) noexcept
{
    State s{key.k0 ^ init0, key.k1 ^ init1, key.k0 ^ init2, key.k1 ^ init3};
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const std::size_t n = data.size();
    const std::size_t full = n - n % 8;
    for (std::size_t i = 0; i < full; i += 8) s.compress(load_le(p + i, 8));
    // Last word: the remaining bytes, and the length (mod 256) in the top byte.
    s.compress(load_le(p + full, n - full) | (std::uint64_t{n & 0xff} << 56));
    // Finalization: d = 4 rounds.
    s.v2 ^= 0xff;
    for (int i = 0; i < 4; ++i) s.round();
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

SipKey random_sip_key()
{
    std::random_device rd;
    const auto word = [&rd] { return (std::uint64_t{rd()} << 32) | rd(); };
    SipKey key;
    key.k0 = word();
    key.k1 = word();
    return key;
}

} // namespace relayguard::detail
