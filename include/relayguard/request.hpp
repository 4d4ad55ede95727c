// SPDX-License-Identifier: MIT
// request.hpp - one Postfix/Exim policy request, as attribute values.
//
// A Request holds the values of the attributes relayguard reads (SMTPD_POLICY_README names,
// verbatim); other attributes are ignored by the parser. Plain value type, not thread-safe.
// Values are untrusted peer input: never NUL or newline (the parser guarantees it), any other byte.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace relayguard {

// The attributes relayguard knows. Order follows what Postfix 3.7 sends.
enum class Attr : unsigned char {
    request,
    protocol_state,
    protocol_name,
    client_address,
    client_name,
    client_port,
    reverse_client_name,
    server_address,
    server_port,
    helo_name,
    sender,
    recipient,
    recipient_count,
    queue_id,
    instance,
    size,
    etrn_domain,
    stress,
    sasl_method,
    sasl_username,
    sasl_sender,
    ccert_subject,
    ccert_issuer,
    ccert_fingerprint,
    ccert_pubkey_fingerprint,
    encryption_protocol,
    encryption_cipher,
    encryption_keysize,
    policy_context,
};
inline constexpr std::size_t attr_count = static_cast<std::size_t>(Attr::policy_context) + 1;

// attr_name - the wire name of an attribute.
std::string_view attr_name(Attr attr) noexcept;

// attr_from_name - the attribute with this wire name (exact, case-sensitive), or nullopt.
std::optional<Attr> attr_from_name(std::string_view name) noexcept;

// The SMTP stage a request was made at (protocol_state). `unknown` for anything else.
enum class ProtocolState : unsigned char {
    connect, ehlo, helo, mail, rcpt, data, end_of_message, vrfy, etrn, unknown
};

// parse_protocol_state - map a protocol_state value ("RCPT", "END-OF-MESSAGE", ...; case-insensitive).
ProtocolState parse_protocol_state(std::string_view value) noexcept;
std::string_view protocol_state_name(ProtocolState state) noexcept;

class Request {
public:
    const std::string& operator[](Attr attr) const noexcept { return values_[index(attr)]; }
    void set(Attr attr, std::string_view value)
    {
        values_[index(attr)].assign(value);
        if (attr == Attr::protocol_state) state_ = parse_protocol_state(value);
    }

    // clear - forget every value, keeping capacity (a parser reuses one Request).
    void clear() noexcept
    {
        for (auto& v : values_) v.clear();
        state_ = ProtocolState::unknown;
    }

    // protocol_state - parsed once, when set (every check and the metrics ask for it).
    ProtocolState protocol_state() const noexcept { return state_; }
    bool authenticated() const noexcept { return !(*this)[Attr::sasl_username].empty(); }

private:
    static constexpr std::size_t index(Attr a) noexcept { return static_cast<std::size_t>(a); }
    std::array<std::string, attr_count> values_;
    ProtocolState state_ = ProtocolState::unknown; // of values_[protocol_state]
};

} // namespace relayguard
