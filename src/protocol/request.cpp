// SPDX-License-Identifier: MIT
// request.cpp - attribute and protocol_state names of the policy protocol (see request.hpp).
//
// attr_from_name runs for every line of every request: it looks names up in a compile-time
// table bucketed by name length, so a lookup is one bounds check plus a few memcmp, no allocation.
// Pure functions over constant tables; thread-safe.
#include <relayguard/request.hpp>

#include <algorithm>

#include <relayguard/strings.hpp>

namespace relayguard {
namespace {

// SMTPD_POLICY_README attribute names, indexed by Attr.
constexpr std::array<std::string_view, attr_count> attr_names = {
    "request",
    "protocol_state",
    "protocol_name",
    "client_address",
    "client_name",
    "client_port",
    "reverse_client_name",
    "server_address",
    "server_port",
    "helo_name",
    "sender",
    "recipient",
    "recipient_count",
    "queue_id",
    "instance",
    "size",
    "etrn_domain",
    "stress",
    "sasl_method",
    "sasl_username",
    "sasl_sender",
    "ccert_subject",
    "ccert_issuer",
    "ccert_fingerprint",
    "ccert_pubkey_fingerprint",
    "encryption_protocol",
    "encryption_cipher",
    "encryption_keysize",
    "policy_context",
};

constexpr std::size_t longest_attr_name = [] {
    std::size_t n = 0;
    for (auto name : attr_names) n = std::max(n, name.size());
    return n;
}();

// The attributes sorted by name length, and where each length's bucket starts in that order:
// bucket n is [start[n], start[n + 1]).
struct LengthIndex {
    std::array<Attr, attr_count> by_length{};
    std::array<unsigned char, longest_attr_name + 2> start{};
};

// make_length_index - build the LengthIndex at compile time (a counting sort on name length).
constexpr LengthIndex make_length_index()
{
    LengthIndex index;
    std::array<std::size_t, longest_attr_name + 2> count{};
    for (auto name : attr_names) ++count[name.size() + 1];
    for (std::size_t n = 1; n < count.size(); ++n) count[n] += count[n - 1];
    for (std::size_t n = 0; n < count.size(); ++n) index.start[n] = static_cast<unsigned char>(count[n]);
    for (std::size_t a = 0; a < attr_count; ++a)
        index.by_length[count[attr_names[a].size()]++] = static_cast<Attr>(a);
    return index;
}

constexpr LengthIndex length_index = make_length_index();

// lookup - attr_from_name's body, usable in the static_assert below.
constexpr std::optional<Attr> lookup(std::string_view name) noexcept
{
    if (name.size() > longest_attr_name) return std::nullopt;
    const std::size_t end = length_index.start[name.size() + 1];
    for (std::size_t i = length_index.start[name.size()]; i < end; ++i) {
        const Attr attr = length_index.by_length[i];
        const std::string_view candidate = attr_names[static_cast<std::size_t>(attr)];
        // Names of one length mostly differ in their last byte ("client_name"/"client_port"),
        // else their first: two byte compares settle most candidates without a memcmp call.
        if (candidate.back() == name.back() && candidate.front() == name.front() && candidate == name) return attr;
    }
    return std::nullopt;
}

// round_trips - every name maps back to its own attribute (catches a table/enum mismatch).
constexpr bool round_trips()
{
    for (std::size_t a = 0; a < attr_count; ++a)
        if (lookup(attr_names[a]) != static_cast<Attr>(a)) return false;
    return true;
}
static_assert(round_trips(), "attr_names must list each Attr once, in enum order");

// SMTPD_POLICY_README protocol_state values, indexed by ProtocolState (unknown last).
constexpr std::array<std::string_view, static_cast<std::size_t>(ProtocolState::unknown) + 1>
    state_names = {"CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN",
                   "unknown"};

} // namespace

std::string_view attr_name(Attr attr) noexcept
{
    const auto i = static_cast<std::size_t>(attr);
    return i < attr_names.size() ? attr_names[i] : std::string_view{};
}

std::optional<Attr> attr_from_name(std::string_view name) noexcept { return lookup(name); }

ProtocolState parse_protocol_state(std::string_view value) noexcept
{
    // Postfix sends upper case; Exim ACLs and hand-typed requests may not.
    for (std::size_t s = 0; s < state_names.size() - 1; ++s)
        if (iequals(value, state_names[s])) return static_cast<ProtocolState>(s);
    return ProtocolState::unknown;
}

std::string_view protocol_state_name(ProtocolState state) noexcept
{
    const auto i = static_cast<std::size_t>(state);
    return i < state_names.size() ? state_names[i] : state_names.back();
}

} // namespace relayguard
