// SPDX-License-Identifier: MIT
// key_schema.hpp - the Redis key schema, defined once (daemon and relayguardctl share it).
//
//   PREFIX{TAG:VALUE}      hash, rate state of one key value: "t:LIMIT:PERIOD" -> TAT (µs),
//                          "n:LIMIT:PERIOD" -> the count that TAT was computed at (a changed
//                          rate carries the units used over), "r:LIMIT" -> refused attempts;
//                          expires when every TAT has passed
//   PREFIX{TAG:VALUE}:o    hash, overrides of that key value: "LIMIT" -> "100/60s,..." |
//                          "unlimited" | "0"; never expires
//   PREFIX{i:INSTANCE}     set, "LIMIT|TAG:VALUE" members: messages already counted for one
//                          SMTP transaction; expires after the instance TTL
//   PREFIX{l:LOGIN}:s      hash, a suspended login: "reason", "since" (unix s), "until" (unix s,
//                          0 = until lifted), "by" ("operator NAME" | "automatic"); expires
//                          by itself at "until"
//   PREFIX{suspended}      sorted set, LOGIN -> since: the index `relayguardctl suspended` lists
//                          (entries whose :s key is gone are stale and skipped/cleaned)
//   PREFIX{l:LOGIN}:g:SIG:N  compromise signal SIG (networks|recipient_domains|rate_refusals) of
//                          a login in quarter-window bucket N (unix s / bucket length):
//                          HyperLogLog (distinct counts) or string counter (rate_refusals);
//                          expires one window after its bucket ends
//   PREFIX{l:LOGIN}:e:WHAT string, marker that event WHAT (warn, hold, suspend, ...) of a login
//                          was reported; SET NX with the window as TTL (one report per fleet)
//   PREFIX{own:KEY}        set, logins that own KEY, an address or "@domain" (lower case)
//   PREFIX{domains}        set, local domains (lower case)
// TAG: l (sasl_username), s (sender), sd (sender_domain), c (client_address), rd
// (recipient_domain), g (global). VALUE is the normalized key value with every byte outside
// [A-Za-z0-9@._+/:-] written as %XX, so any byte of a login or address is safe and '{' '}'
// never break the hash tag: one key value's keys share one Redis Cluster slot.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <relayguard/limits.hpp>

namespace relayguard {

inline constexpr std::string_view default_key_prefix = "rg:";

std::string_view key_tag(LimitKey key) noexcept;
std::string escape_key_value(std::string_view value);
std::string state_key(std::string_view prefix, LimitKey key, std::string_view value);
std::string override_key(std::string_view prefix, LimitKey key, std::string_view value);
std::string instance_key(std::string_view prefix, std::string_view instance);
// The member of an instance set for one op: "LIMIT|TAG:VALUE" (VALUE escaped).
std::string instance_member(std::string_view limit, LimitKey key, std::string_view value);
std::string suspension_key(std::string_view prefix, std::string_view login);
std::string suspended_index_key(std::string_view prefix);
std::string signal_key(std::string_view prefix, std::string_view login, std::string_view signal, std::int64_t bucket);
std::string event_key(std::string_view prefix, std::string_view login, std::string_view what);
std::string owners_key(std::string_view prefix, std::string_view address_or_at_domain);
std::string domains_key(std::string_view prefix);
// Hash fields.
std::string tat_field(std::string_view limit, std::chrono::seconds period);
std::string rate_count_field(std::string_view limit, std::chrono::seconds period);
std::string refused_field(std::string_view limit);

} // namespace relayguard
