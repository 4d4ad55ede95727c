// SPDX-License-Identifier: MIT
// live_facts.hpp - the data of the live store's per-request question and answer (see
// live_store.hpp), kept apart from the store itself so that the policy engine, which reads
// them, does not pull in Asio.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relayguard {

// A suspended login, as stored in PREFIX{l:LOGIN}:s (written by relayguardctl suspend too).
struct Suspension {
    std::string reason;
    std::int64_t since = 0; // unix seconds
    std::int64_t until = 0; // unix seconds; 0: until lifted
    std::string by;         // "operator NAME" | "automatic"
};

enum class Signal : unsigned char { networks, recipient_domains, rate_refusals };
inline constexpr std::size_t signal_count = 3;
std::string_view signal_name(Signal signal) noexcept; // "networks", "recipient_domains", "rate_refusals"

// Quarter-window buckets: a signal's count is over the current bucket and the three before it.
inline constexpr unsigned signal_buckets = 4;
// Embedded store: distinct elements remembered per login, signal and bucket; a count saturates
// here (ladder thresholds above it never trigger with the embedded store: a config warning).
inline constexpr std::size_t embedded_signal_cap = 4096;

// What one request asks. Empty fields are not asked (and cost nothing).
struct LiveQuery {
    std::string login;                    // normalized login; its suspension, and the signals' owner
    bool suspension = false;              // read login's suspension
    // Sender ownership from PREFIX{own:KEY}: is `login` a member of any of these sets? Keys in
    // lookup order (full address, address without extension, "@domain"), normalized.
    std::vector<std::string> owner_keys;
    // Local domains from PREFIX{domains}: is any of these a member? The recipient's domain and its
    // parents written ".parent" (the same convention as the config's domains list).
    std::vector<std::string> domain_candidates;
    // Compromise signals of `login`: add `element` (if non-empty and consume) to the distinct
    // set of the signal's current bucket, and read the distinct count over the window.
    // rate_refusals is a counter: read only (see count_refusal()).
    struct Track {
        Signal signal;
        std::string element;
    };
    std::vector<Track> track;
    std::chrono::seconds window{0};       // the signals' window (CompromiseConfig::window)
    bool consume = true;                  // false: read only (relayguardctl check)

    bool empty() const noexcept
    {
        return !suspension && owner_keys.empty() && domain_candidates.empty() && track.empty();
    }
};

struct LiveFacts {
    std::optional<Suspension> suspension; // in force now (one whose `until` passed is absent)
    bool sender_owned = false;            // login is in one of owner_keys' sets
    bool recipient_domain_local = false;  // one of domain_candidates is in the domains set
    std::array<std::uint64_t, signal_count> counts{}; // by Signal; 0 for signals not tracked
};

} // namespace relayguard
