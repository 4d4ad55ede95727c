// SPDX-License-Identifier: MIT
// rate_stage.hpp - the rate_limits check, as two pure steps around the one async store call.
//
// plan_rate_limits() turns a request that passed the static checks into the StoreRequest of every
// limit that applies (keys normalized, costs by unit and protocol_state); the caller runs it
// through a CounterStore; judge_rate_limits() turns the StoreResult into the reply. No I/O, no
// state: any thread. Counting rules (DESIGN.md section 3): recipients at RCPT (one per request);
// messages once per SMTP transaction (`instance`) at MAIL, RCPT, DATA or END-OF-MESSAGE; bytes at
// END-OF-MESSAGE from `size`. A limit keyed by something the request lacks (no login, the null
// sender, no recipient) does not apply to it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <relayguard/counter_store.hpp>
#include <relayguard/policy.hpp>

namespace relayguard {

struct RatePlan {
    StoreRequest request;
    std::vector<const LimitConfig*> limits; // one per request.ops, pointing into the snapshot
};

// plan_rate_limits - nullopt when no limit applies (no store call needed). `decision` is the
// static pipeline's: exempt requests only get the limits with applies_to_exempt.
std::optional<RatePlan> plan_rate_limits(const Request& request, const Snapshot& snapshot, const Decision& decision,
                                         bool consume = true);

struct RateVerdict {
    bool refuse = false;
    // refuse: the limit's reply, {limit} and {retry_after} filled in; for a limit blocked by a
    // rate of 0 (no wait makes room) without the clause that holds {retry_after}.
    std::string reply;
    const LimitConfig* limit = nullptr; // refuse: the limit that decided
    std::int64_t retry_after_s = 0;     // refuse: whole seconds, at least 1; 0 when blocked
    std::string reason;           // "login_msgs: 100/60s used up for sasl_username alice@example.com"
    // Shadow limits that were full: what they would have answered, for their log lines.
    struct Shadowed {
        const LimitConfig* limit;
        std::string reply;
        std::string reason;
    };
    std::vector<Shadowed> shadowed;
};

RateVerdict judge_rate_limits(const RatePlan& plan, const StoreResult& result);

// fill_reply_template - `{limit}` and `{retry_after}` replaced (other text untouched).
std::string fill_reply_template(std::string_view reply, std::string_view limit, std::int64_t retry_after_s);

} // namespace relayguard
