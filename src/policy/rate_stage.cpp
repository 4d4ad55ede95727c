// SPDX-License-Identifier: MIT
// rate_stage.cpp - the rate_limits check around the one store call (see rate_stage.hpp).
//
// Pure functions, no I/O, no state: thread-safe. Only ops that apply are built; text only for a
// refusal or a full shadow limit. A limit blocked by a rate of 0 ("0", "0/1h") has no retry
// time, since no wait makes room: its reply drops the clause holding {retry_after} (see
// block_reply) rather than promise "retry in 1 seconds". SECURITY: key values are untrusted: the
// store gets them as values, reasons get them sanitized and capped.
#include <relayguard/rate_stage.hpp>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <relayguard/net.hpp>
#include <relayguard/strings.hpp>

#include "policy/key_values.hpp"

namespace relayguard {
namespace {

// Untrusted values quoted in a reason are cut after this many bytes: a reason is one log field.
constexpr std::size_t max_reason_value_bytes = 128;
// Most digits of a `size` we read: 18 decimal digits cannot overflow 64 bits, and are far more
// than any message size an MTA accepts (Postfix's message_size_limit defaults to 10240000).
constexpr std::size_t max_size_digits = 18;
constexpr std::int64_t micros_per_second = 1'000'000;

// What a request takes from one limit: `units` of it, and whether only once per transaction.
struct Cost {
    std::uint64_t units = 0;
    bool once_per_instance = false;
};

// parse_size - `size` as a byte count; nullopt when absent, 0, or not a plain decimal number.
std::optional<std::uint64_t> parse_size(std::string_view text) noexcept
{
    if (text.empty() || text.size() > max_size_digits) return std::nullopt;
    std::uint64_t n = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<unsigned>(c - '0');
    }
    if (n == 0) return std::nullopt;
    return n;
}

// cost_of - DESIGN.md section 3: recipients count at RCPT, messages once per transaction at any
// of its stages, bytes at END-OF-MESSAGE (the only stage that knows the real size: at MAIL and
// RCPT `size` is the client's SIZE= estimate, or 0). nullopt: the unit does not count here.
std::optional<Cost> cost_of(LimitUnit unit, ProtocolState state, const Request& request) noexcept
{
    switch (unit) {
    case LimitUnit::recipients:
        if (state == ProtocolState::rcpt) return Cost{1, false};
        return std::nullopt;
    case LimitUnit::messages:
        if (state == ProtocolState::mail || state == ProtocolState::rcpt || state == ProtocolState::data ||
            state == ProtocolState::end_of_message)
            return Cost{1, true};
        return std::nullopt;
    case LimitUnit::bytes:
        if (state != ProtocolState::end_of_message) return std::nullopt;
        if (const auto size = parse_size(request[Attr::size])) return Cost{*size, false};
        return std::nullopt;
    }
    return std::nullopt;
}

// fill_key - the normalized value `op` counts under and the value whose override it inherits
// (key_values.hpp: relayguardctl names the same keys with the same functions).
// False when the request has nothing to key by (no login, the null sender, no recipient, an
// unparseable client address): the limit does not apply to it.
bool fill_key(const LimitConfig& limit, const Request& request, const Config& config, CounterOp& op)
{
    switch (limit.key) {
    case LimitKey::sasl_username: {
        const std::string& login = request[Attr::sasl_username];
        if (login.empty()) return false;
        op.value = login_key_value(login);
        op.parent = parent_key_value(op.value);
        return true;
    }
    case LimitKey::sender: {
        const std::string& sender = request[Attr::sender];
        if (sender.empty()) return false; // <>: bounces are not counted against anyone
        op.value = sender_key_value(sender, config.address);
        op.parent = parent_key_value(op.value);
        return true;
    }
    case LimitKey::sender_domain: {
        const std::string_view domain = split_address(request[Attr::sender]).domain;
        if (domain.empty()) return false;
        op.value = domain_key_value(domain);
        return !op.value.empty();
    }
    case LimitKey::client_address: {
        // Postfix sends "unknown" when it has no address; that counts as no client at all.
        const auto ip = parse_ip(request[Attr::client_address]);
        if (!ip) return false;
        const unsigned prefix = ip->is_v4() ? limit.prefix_v4 : limit.prefix_v6;
        op.value = client_key_value(*ip, prefix);
        return true;
    }
    case LimitKey::recipient_domain: {
        const std::string_view domain = split_address(request[Attr::recipient]).domain;
        if (domain.empty()) return false;
        op.value = domain_key_value(domain);
        return !op.value.empty();
    }
    case LimitKey::global:
        return true;
    }
    return false;
}

bool in_scope(LimitScope scope, bool authenticated) noexcept
{
    switch (scope) {
    case LimitScope::any: return true;
    case LimitScope::authenticated: return authenticated;
    case LimitScope::unauthenticated: return !authenticated;
    }
    return false;
}

// retry_seconds - whole seconds, rounded up: a client that retries after the advertised time
// must fit. At least 1, since "retry in 0 seconds" invites an immediate retry that may not.
std::int64_t retry_seconds(std::int64_t retry_after_us) noexcept
{
    if (retry_after_us <= 0) return 1;
    return std::max<std::int64_t>(1, (retry_after_us + micros_per_second - 1) / micros_per_second);
}

// blocked - whether a window of `spec` has a count of 0: then no wait ever makes room (until
// an operator changes the rate), so a retry time would be a false promise.
bool blocked(const RateSpec& spec) noexcept
{
    return spec.kind == RateSpec::Kind::rates &&
           std::any_of(spec.rates.begin(), spec.rates.end(), [](const Rate& r) { return r.count == 0; });
}

// block_reply - a limit's reply for a block: the template without the clause that holds each
// {retry_after}, {limit} filled in. The clause runs from the nearest ',', ';', ':' or '(' before
// the placeholder (which goes too) to the next ',' or ';' (kept) or ')' (which goes too) or the
// end: "450 4.7.1 Rate limit {limit} exceeded, retry in {retry_after} seconds" gives "450 4.7.1
// Rate limit NAME exceeded". With no such mark before it, only the placeholder's word goes.
std::string block_reply(std::string_view reply, std::string_view limit)
{
    constexpr std::string_view retry_placeholder = "{retry_after}";
    std::string text(reply);
    for (auto at = text.find(retry_placeholder); at != std::string::npos; at = text.find(retry_placeholder)) {
        std::size_t from = text.find_last_of(",;:(", at);
        std::size_t to;
        if (from != std::string::npos) {
            const bool paren = text[from] == '(';
            to = text.find_first_of(paren ? ")" : ",;", at + retry_placeholder.size());
            if (to == std::string::npos) to = text.size();
            else if (paren) ++to;
        } else {
            from = text.find_last_of(' ', at);
            from = from == std::string::npos ? at : from; // drop the space before the word
            to = text.find(' ', at + retry_placeholder.size());
            if (to == std::string::npos) to = text.size();
        }
        text.erase(from, to - from);
        // "full (retry ...) sorry" leaves two spaces where the clause was.
        if (from > 0 && from < text.size() && text[from - 1] == ' ' && text[from] == ' ') text.erase(from, 1);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.pop_back();
    return fill_reply_template(text, limit, 0);
}

// reply_of - what a full limit answers: with a retry time, or, when blocked, without one.
std::string reply_of(const LimitConfig& limit, const RateSpec& effective, std::int64_t retry_after_s)
{
    if (blocked(effective)) return block_reply(limit.reply, limit.name);
    return fill_reply_template(limit.reply, limit.name, retry_after_s);
}

void append_rate(std::string& out, const Rate& rate)
{
    out += std::to_string(rate.count);
    out += '/';
    out += std::to_string(rate.period.count());
    out += 's';
}

// describe - the reason of a refusal (or a full shadow limit), e.g.
// "login_messages: 100/60s used up for sasl_username alice@example.com (messages 100/60s,1000/3600s)".
// The windows named first are those without room for this request; the parentheses give the
// unit, every rate in effect, where they came from when not the config, and a cost above one.
std::string describe(const LimitConfig& limit, const CounterOp& op, const OpOutcome* outcome)
{
    const RateSpec& effective = outcome ? outcome->effective : op.defaults;
    std::string full;
    if (outcome)
        for (const auto& w : outcome->windows)
            if (w.remaining < op.cost) {
                if (!full.empty()) full += ',';
                append_rate(full, w.rate);
            }
    const std::string rates = format_rate_spec(effective);
    if (full.empty()) full = rates;

    std::string out = limit.name;
    out += rates == "0" ? ": blocked (rate 0) for " : ": " + full + " used up for ";
    out += limit_key_name(op.key);
    if (op.key != LimitKey::global) {
        out += ' ';
        out += sanitize(op.value, max_reason_value_bytes);
    }
    out += " (";
    out += limit_unit_name(limit.unit);
    out += ' ';
    out += rates;
    if (outcome && outcome->source == OpOutcome::Source::override_value) {
        out += ", override";
    } else if (outcome && outcome->source == OpOutcome::Source::override_parent) {
        out += ", override of ";
        out += sanitize(op.parent, max_reason_value_bytes);
    }
    if (op.cost > 1) {
        out += ", this request ";
        out += std::to_string(op.cost);
    }
    out += ')';
    return out;
}

} // namespace

std::optional<RatePlan> plan_rate_limits(const Request& request, const Snapshot& snapshot, const Decision& decision,
                                         bool consume)
{
    const Config& config = snapshot.config;
    if (!config.rate_limits.enabled || config.limits.empty()) return std::nullopt;
    if (decision.outcome == Decision::Outcome::refuse) return std::nullopt;
    const bool exempt = decision.outcome == Decision::Outcome::exempt;
    const bool authenticated = request.authenticated();
    const ProtocolState state = request.protocol_state();

    RatePlan plan;
    bool needs_instance = false;
    for (const LimitConfig& limit : config.limits) {
        if (!limit.enabled || (exempt && !limit.applies_to_exempt) || !in_scope(limit.scope, authenticated)) continue;
        const auto cost = cost_of(limit.unit, state, request);
        if (!cost) continue;
        CounterOp op;
        op.key = limit.key;
        if (!fill_key(limit, request, config, op)) continue;
        op.limit = limit.name;
        op.defaults = limit.rates;
        op.cost = cost->units;
        op.once_per_instance = cost->once_per_instance;
        op.shadow = limit.shadow;
        needs_instance = needs_instance || cost->once_per_instance;
        if (plan.limits.empty()) {
            plan.request.ops.reserve(config.limits.size());
            plan.limits.reserve(config.limits.size());
        }
        plan.request.ops.push_back(std::move(op));
        plan.limits.push_back(&limit);
    }
    if (plan.limits.empty()) return std::nullopt;
    if (needs_instance) plan.request.instance = request[Attr::instance];
    plan.request.consume = consume;
    return plan;
}

RateVerdict judge_rate_limits(const RatePlan& plan, const StoreResult& result)
{
    RateVerdict verdict;
    const auto& ops = plan.request.ops;
    const auto outcome_of = [&](std::size_t i) { return i < result.ops.size() ? &result.ops[i] : nullptr; };

    if (!result.allowed && !ops.empty()) {
        std::size_t i = result.refused_op.value_or(ops.size());
        // The store names the refusing op; should it not (a store bug), blame the first enforcing
        // op it refused rather than let the request through.
        assert(i < ops.size());
        if (i >= ops.size()) {
            i = 0;
            for (std::size_t k = 0; k < ops.size(); ++k)
                if (!ops[k].shadow && outcome_of(k) && !outcome_of(k)->allowed) {
                    i = k;
                    break;
                }
        }
        const LimitConfig& limit = *plan.limits[i];
        verdict.refuse = true;
        verdict.limit = &limit;
        const RateSpec& effective = outcome_of(i) ? outcome_of(i)->effective : ops[i].defaults;
        verdict.retry_after_s = blocked(effective) ? 0 : retry_seconds(result.retry_after_us);
        verdict.reply = reply_of(limit, effective, verdict.retry_after_s);
        verdict.reason = describe(limit, ops[i], outcome_of(i));
    }

    for (std::size_t i = 0; i < ops.size(); ++i) {
        const OpOutcome* outcome = outcome_of(i);
        if (!ops[i].shadow || !outcome || outcome->allowed) continue;
        const LimitConfig& limit = *plan.limits[i];
        verdict.shadowed.push_back({&limit, reply_of(limit, outcome->effective, retry_seconds(outcome->retry_after_us)),
                                    describe(limit, ops[i], outcome)});
    }
    return verdict;
}

std::string fill_reply_template(std::string_view reply, std::string_view limit, std::int64_t retry_after_s)
{
    constexpr std::string_view limit_placeholder = "{limit}";
    constexpr std::string_view retry_placeholder = "{retry_after}";
    std::string out;
    out.reserve(reply.size() + limit.size());
    std::size_t done = 0;
    for (auto open = reply.find('{'); open != std::string_view::npos; open = reply.find('{', open + 1)) {
        const std::string_view rest = reply.substr(open);
        if (rest.starts_with(limit_placeholder)) {
            out.append(reply.substr(done, open - done));
            out.append(limit);
            done = open + limit_placeholder.size();
        } else if (rest.starts_with(retry_placeholder)) {
            out.append(reply.substr(done, open - done));
            out.append(std::to_string(retry_after_s));
            done = open + retry_placeholder.size();
        }
    }
    out.append(reply.substr(done));
    return out;
}

} // namespace relayguard
