// SPDX-License-Identifier: MIT
// redis_store.cpp - RedisStore: one EVALSHA of rate_script() per policy request.
//
// Groups ops by state hash, builds the KEYS, one msgpack argument and the call's deadline, and
// decodes the flat reply (rate_script.cpp). Not thread-safe (one per worker, like its Client).
// SECURITY: the reply is checked field by field; any other shape is errc::protocol_error.
// BUGS: the deadline is our wall clock against Redis TIME, with deadline_clock_tolerance added: a
// host lagging Redis by more than timeout + tolerance has every call voided (errc::timeout), so
// keep the fleet on NTP; a call Redis runs within the tolerance after we gave up still counts.
#include <relayguard/redis_store.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/strings.hpp>

#include "ratelimit/rate_math.hpp"

namespace relayguard {
namespace {

using Result = boost::system::result<StoreResult, std::error_code>;
using redis::Reply;

// Script error replies (OOM, a broken script, ...) repeat on every request while they last;
// log them at most this often. The policy engine counts every failure.
constexpr std::int64_t error_log_interval_ms = 10'000;

// Most windows one op may report: one per distinct period of at most 366 days is far fewer
// in any real config; this only bounds what a broken reply can make us allocate.
constexpr long long max_reply_windows = 1024;

// Log throttle, shared by every worker thread's store (an atomic, no lock).
std::atomic<std::int64_t> last_error_log_ms{0};

void log_script_error(const std::string& text)
{
    const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now().time_since_epoch())
                                    .count();
    std::int64_t last = last_error_log_ms.load(std::memory_order_relaxed);
    if (last != 0 && now_ms - last < error_log_interval_ms) return;
    if (!last_error_log_ms.compare_exchange_strong(last, now_ms, std::memory_order_relaxed)) return;
    spdlog::warn("rate limit script failed in Redis: {}", sanitize(text));
}

// Reads the script's flat reply front to back; the first mismatch makes it fail for good.
class ReplyCursor {
public:
    explicit ReplyCursor(const std::vector<Reply>& elements) : elements_(elements) {}

    bool ok() const noexcept { return ok_; }
    bool at_end() const noexcept { return pos_ == elements_.size(); }

    // integer - the next element, an integer in [lo, hi].
    long long integer(long long lo, long long hi)
    {
        if (!ok_ || pos_ >= elements_.size() || elements_[pos_].type != Reply::Type::integer) return fail();
        const long long v = elements_[pos_++].integer;
        return (v < lo || v > hi) ? fail() : v;
    }

    bool flag() { return integer(0, 1) == 1; }

    // string - the next element, a bulk string.
    std::string text()
    {
        if (!ok_ || pos_ >= elements_.size() || elements_[pos_].type != Reply::Type::string) {
            fail();
            return {};
        }
        return elements_[pos_++].str;
    }

private:
    long long fail() noexcept
    {
        ok_ = false;
        return 0;
    }

    const std::vector<Reply>& elements_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

constexpr long long max_ll = std::numeric_limits<long long>::max();

// First element of the script's short reply: nothing refused, or (then followed by allowed,
// refused op, retry-after) some op refused. The detailed reply starts with 0 or 1 (allowed).
constexpr long long short_reply_allowed = 2;
constexpr long long short_reply_refusal = 3;

constexpr std::int64_t micros_per_second = 1'000'000;

// Added to a call's deadline: the hosts' clocks and Redis's are never exactly equal, and a
// fleet whose clocks drift apart by a few hundred ms must not see every call voided (that would
// put every request under on_error). Stalls this guards against (a blocked Redis, a paused or
// swapped-out one) last seconds.
constexpr std::chrono::milliseconds deadline_clock_tolerance{500};

// The script's status reply when Redis ran it after the call's deadline (rate_script.cpp).
constexpr std::string_view expired_reply = "EXPIRED";

// wall_clock_us - microseconds since the epoch, the scale of Redis TIME.
std::int64_t wall_clock_us()
{
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// remaining - what gcra() reports for a window whose TAT is `full_in_us` ahead of now (the
// x - now of gcra()): the same double operations, so the short reply need not carry it.
std::uint64_t remaining(const Rate& rate, std::int64_t full_in_us)
{
    const std::int64_t period_us = rate.period.count() * micros_per_second;
    if (rate.count == 0 || period_us <= 0) return 0;
    const double rem = std::floor(static_cast<double>(period_us - full_in_us) * static_cast<double>(rate.count) /
                                  static_cast<double>(period_us));
    if (rem <= 0) return 0;
    if (rem >= static_cast<double>(rate.count)) return rate.count;
    return static_cast<std::uint64_t>(rem);
}

// effective_rates - the op's rates: the config's, or an override's canonical text.
bool effective_rates(OpOutcome& op, const CounterOp& request_op, const std::string& spec)
{
    if (op.source == OpOutcome::Source::config) {
        if (!spec.empty()) return false;
        op.effective = request_op.defaults;
        return true;
    }
    auto parsed = parse_rate_spec(spec);
    if (!parsed) return false;
    op.effective = std::move(*parsed);
    return true;
}

// decode_detail - the detailed reply (consume == false): every field spelled out.
bool decode_detail(ReplyCursor& in, const StoreRequest& request, const std::vector<std::size_t>& order,
                   StoreResult& result)
{
    const std::size_t nops = request.ops.size();
    result.allowed = in.flag();
    const long long refused = in.integer(-1, static_cast<long long>(nops) - 1);
    result.retry_after_us = in.integer(0, max_ll);
    if (in.integer(0, max_ll) != static_cast<long long>(nops) || !in.ok()) return false;
    if (refused >= 0) result.refused_op = order[static_cast<std::size_t>(refused)];
    for (std::size_t k = 0; k < nops; ++k) {
        const std::size_t i = order[k];
        OpOutcome& op = result.ops[i];
        op.allowed = in.flag();
        op.already_counted = in.flag();
        op.source = static_cast<OpOutcome::Source>(in.integer(0, 2));
        const std::string spec = in.text();
        op.retry_after_us = in.integer(0, max_ll);
        const long long nwindows = in.integer(0, max_reply_windows);
        if (!in.ok() || !effective_rates(op, request.ops[i], spec)) return false;
        if (static_cast<std::size_t>(nwindows) != op.effective.rates.size()) return false;
        op.windows.reserve(op.effective.rates.size());
        for (const Rate& rate : op.effective.rates) {
            WindowUsage w;
            w.rate = rate;
            const auto most = static_cast<long long>(std::min<std::uint64_t>(rate.count, max_ll));
            w.remaining = static_cast<std::uint64_t>(in.integer(0, most));
            w.full_in_us = in.integer(0, max_ll);
            op.windows.push_back(w);
        }
    }
    return in.ok();
}

// decode_short - the short reply (consume == true): remaining and the window count follow from
// the rates and full-in, the rates' text and a retry-after come only where they apply.
bool decode_short(ReplyCursor& in, const StoreRequest& request, const std::vector<std::size_t>& order,
                  StoreResult& result)
{
    const std::size_t nops = request.ops.size();
    if (in.integer(short_reply_allowed, short_reply_refusal) == short_reply_refusal) {
        result.allowed = in.flag();
        const long long refused = in.integer(0, static_cast<long long>(nops) - 1);
        result.retry_after_us = in.integer(0, max_ll);
        if (!in.ok()) return false;
        result.refused_op = order[static_cast<std::size_t>(refused)];
    }
    for (std::size_t k = 0; k < nops; ++k) {
        const std::size_t i = order[k];
        OpOutcome& op = result.ops[i];
        const long long code = in.integer(0, 11); // source x 4 + already x 2 + refused
        op.source = static_cast<OpOutcome::Source>(code / 4);
        op.already_counted = (code & 2) != 0;
        op.allowed = (code & 1) == 0;
        const std::string spec = op.source == OpOutcome::Source::config ? std::string() : in.text();
        if (!in.ok() || !effective_rates(op, request.ops[i], spec)) return false;
        op.windows.reserve(op.effective.rates.size());
        for (const Rate& rate : op.effective.rates) {
            const std::int64_t full_in = in.integer(0, max_ll);
            op.windows.push_back(WindowUsage{rate, remaining(rate, full_in), full_in});
        }
        if (!op.allowed) op.retry_after_us = in.integer(0, max_ll);
    }
    return in.ok();
}

// decode - the script's reply (see rate_script.cpp) into a StoreResult for `request`. The reply
// lists the ops in the script's order: its k-th op is request.ops[order[k]].
std::optional<StoreResult> decode(const Reply& reply, const StoreRequest& request, const std::vector<std::size_t>& order)
{
    if (reply.type != Reply::Type::array || order.size() != request.ops.size()) return std::nullopt;
    ReplyCursor in(reply.elements);
    StoreResult result;
    result.ops.resize(request.ops.size());
    const bool is_short = !reply.elements.empty() && reply.elements[0].type == Reply::Type::integer &&
                          (reply.elements[0].integer == short_reply_allowed ||
                           reply.elements[0].integer == short_reply_refusal);
    if (!(is_short ? decode_short(in, request, order, result) : decode_detail(in, request, order, result)))
        return std::nullopt;
    if (!in.at_end()) return std::nullopt;
    // The verdict must agree with the ops it summarizes.
    if (result.refused_op && result.ops[*result.refused_op].allowed) return std::nullopt;
    if (!result.allowed && !result.refused_op) return std::nullopt;
    return result;
}

// Packer - the script's arguments as one msgpack string (rate_script.cpp): only what Redis's
// cmsgpack decodes into Lua numbers and strings, i.e. integers and byte strings.
class Packer {
public:
    void integer(std::int64_t v)
    {
        if (v >= 0) {
            unsigned_integer(static_cast<std::uint64_t>(v));
        } else if (v >= -32) {
            out_.push_back(static_cast<char>(static_cast<std::uint8_t>(v))); // negative fixint
        } else {
            out_.push_back(static_cast<char>(0xd3)); // int 64
            big_endian(static_cast<std::uint64_t>(v), 8);
        }
    }

    void unsigned_integer(std::uint64_t v)
    {
        if (v < 0x80) {
            out_.push_back(static_cast<char>(v)); // positive fixint
        } else if (v <= 0xff) {
            out_.push_back(static_cast<char>(0xcc));
            big_endian(v, 1);
        } else if (v <= 0xffff) {
            out_.push_back(static_cast<char>(0xcd));
            big_endian(v, 2);
        } else if (v <= 0xffffffff) {
            out_.push_back(static_cast<char>(0xce));
            big_endian(v, 4);
        } else {
            out_.push_back(static_cast<char>(0xcf));
            big_endian(v, 8);
        }
    }

    void text(std::string_view s)
    {
        if (s.size() < 32) {
            out_.push_back(static_cast<char>(0xa0 | s.size())); // fixstr
        } else if (s.size() <= 0xff) {
            out_.push_back(static_cast<char>(0xd9));
            big_endian(s.size(), 1);
        } else if (s.size() <= 0xffff) {
            out_.push_back(static_cast<char>(0xda));
            big_endian(s.size(), 2);
        } else {
            out_.push_back(static_cast<char>(0xdb));
            big_endian(s.size(), 4);
        }
        out_.append(s);
    }

    std::string take() { return std::move(out_); }

private:
    // big_endian - the `bytes` low bytes of v after the type byte just pushed, in one append.
    void big_endian(std::uint64_t v, int bytes)
    {
        char b[8];
        for (int i = 0; i < bytes; ++i) b[i] = static_cast<char>((v >> (8 * (bytes - 1 - i))) & 0xff);
        out_.append(b, static_cast<std::size_t>(bytes));
    }

    std::string out_;
};

// increment - what gcra() adds to a window's TAT for `cost` units, with the same double
// operations (the script uses it as it is); for a count of 0, one more than the period, which
// no request fits in (gcra() refuses it).
std::int64_t increment(const Rate& rate, std::uint64_t cost)
{
    const std::int64_t period_us = rate.period.count() * micros_per_second;
    if (rate.count == 0) return period_us + 1;
    if (cost == 0) return 0;
    const double d =
        std::floor(static_cast<double>(cost) * static_cast<double>(period_us) / static_cast<double>(rate.count));
    return d >= static_cast<double>(detail::max_increment_us) ? detail::max_increment_us : static_cast<std::int64_t>(d);
}

// Entity - the ops of one request on one state hash (one key value), in request order.
struct Entity {
    std::string state_key;
    std::string override_key;
    std::vector<std::size_t> ops;
};

// index_of - the position of `value` in `list`, appended if missing.
std::size_t index_of(std::vector<std::string>& list, std::string value)
{
    const auto it = std::find(list.begin(), list.end(), value);
    if (it != list.end()) return static_cast<std::size_t>(it - list.begin());
    list.push_back(std::move(value));
    return list.size() - 1;
}

// ScriptCall - the script's KEYS and its one argument for a request, and the script's op order
// (its k-th op is the request's order[k]).
struct ScriptCall {
    std::vector<std::string> keys;
    std::vector<std::string> argv;
    std::vector<std::size_t> order;
};

// append_number - v in decimal, appended (std::to_string without a string of its own).
template <class Int>
void append_number(std::string& out, Int v)
{
    char digits[24];
    const auto r = std::to_chars(digits, digits + sizeof digits, v);
    out.append(digits, r.ptr);
}

// make_call - the ops grouped by state hash, so that the script reads and writes each hash once,
// and every name and number it needs made here rather than in Lua (layout in rate_script.cpp).
ScriptCall make_call(const StoreRequest& request, std::string_view prefix, std::chrono::seconds instance_ttl)
{
    const std::size_t n = request.ops.size();
    std::vector<Entity> entities;
    std::vector<std::string> parents; // parent override hashes
    std::vector<std::string> members; // instance members
    std::vector<std::size_t> parent_of(n, 0), member_of(n, 0); // 1-based; 0 none
    for (std::size_t i = 0; i < n; ++i) {
        const CounterOp& op = request.ops[i];
        std::string key = state_key(prefix, op.key, op.value);
        auto it = std::find_if(entities.begin(), entities.end(), [&](const Entity& e) { return e.state_key == key; });
        if (it == entities.end())
            it = entities.insert(entities.end(), Entity{std::move(key), override_key(prefix, op.key, op.value), {}});
        it->ops.push_back(i);
        if (!op.parent.empty()) parent_of[i] = 1 + index_of(parents, override_key(prefix, op.key, op.parent));
        // An empty instance cannot be deduplicated: such a message counts every time.
        if (op.once_per_instance && !request.instance.empty())
            member_of[i] = 1 + index_of(members, instance_member(op.limit, op.key, op.value));
    }

    // KEYS: the state hashes, their override hashes, the parents' override hashes (so that one
    // EXISTS covers every override hash), the instance set.
    ScriptCall call;
    std::vector<std::string>& keys = call.keys;
    keys.reserve(2 * entities.size() + parents.size() + 1);
    for (const Entity& e : entities) keys.push_back(e.state_key);
    for (const Entity& e : entities) keys.push_back(e.override_key);
    const std::size_t first_parent = keys.size(); // KEYS index of parents[0], minus 1
    for (std::string& p : parents) keys.push_back(std::move(p));
    if (!members.empty()) keys.push_back(instance_key(prefix, request.instance));

    Packer args;
    args.integer(request.consume ? 1 : 0);
    args.text(std::to_string(instance_ttl.count())); // as text: only ever an EXPIRE argument
    args.unsigned_integer(entities.size());
    args.unsigned_integer(n);
    args.unsigned_integer(members.size());
    for (const std::string& m : members) args.text(m);
    std::vector<std::size_t>& order = call.order;
    order.reserve(n);
    std::string field; // scratch for names and numbers as text
    for (const Entity& e : entities) {
        std::size_t fields = 0;
        for (const std::size_t i : e.ops) {
            const RateSpec& d = request.ops[i].defaults;
            if (d.kind == RateSpec::Kind::rates) fields += 2 * d.rates.size(); // TAT and count fields
        }
        args.unsigned_integer(e.ops.size());
        args.unsigned_integer(fields);
        for (const std::size_t i : e.ops) args.text(request.ops[i].limit);
        for (const std::size_t i : e.ops) {
            const CounterOp& op = request.ops[i];
            if (op.defaults.kind != RateSpec::Kind::rates) continue;
            for (const Rate& rate : op.defaults.rates) {
                // "t:LIMIT:PERIOD" then "n:LIMIT:PERIOD" (tat_field, rate_count_field), made in
                // one reused buffer: this runs per window of every op of every request.
                field.assign("t:");
                field += op.limit;
                field += ':';
                append_number(field, rate.period.count());
                args.text(field);
                field[0] = 'n';
                args.text(field);
            }
        }
        for (const std::size_t i : e.ops) {
            const CounterOp& op = request.ops[i];
            args.unsigned_integer(2 * i + (op.shadow ? 1 : 0));
            args.unsigned_integer(op.cost);
            args.unsigned_integer(member_of[i]);
            args.unsigned_integer(parent_of[i] == 0 ? 0 : first_parent + parent_of[i]);
            // The config's rates (-1: "unlimited"); per window the count as text (the script
            // compares it with the one stored with the TAT, converting neither), the period in
            // µs and the TAT increment of this op's cost.
            if (op.defaults.kind == RateSpec::Kind::unlimited) {
                args.integer(-1);
            } else {
                args.unsigned_integer(op.defaults.rates.size());
                for (const Rate& rate : op.defaults.rates) {
                    field.clear();
                    append_number(field, rate.count);
                    args.text(field);
                    args.integer(rate.period.count() * micros_per_second);
                    args.integer(increment(rate, op.cost));
                }
            }
            order.push_back(i);
        }
    }

    call.argv.push_back(args.take());
    return call;
}

} // namespace

RedisStore::RedisStore(redis::Client& client, std::string key_prefix, std::chrono::seconds instance_ttl,
                       std::chrono::milliseconds deadline_after)
    : client_(client), prefix_(std::move(key_prefix)), instance_ttl_(instance_ttl), deadline_after_(deadline_after)
{
}

boost::asio::awaitable<Result> RedisStore::apply(const StoreRequest& request)
{
    ScriptCall call = make_call(request, prefix_, instance_ttl_);
    // A call the client gives up on may still reach Redis later (queued behind a slow command);
    // run then, it would count what the caller already answered without it (on_error = local
    // even counted it here too). The deadline makes such a late run a no-op. Wall clock, as
    // Redis TIME (see BUGS above).
    const std::int64_t deadline_us =
        deadline_after_.count() > 0
            ? wall_clock_us() + std::chrono::duration_cast<std::chrono::microseconds>(deadline_after_ + deadline_clock_tolerance).count()
            : 0;
    call.argv.push_back(std::to_string(deadline_us));
    std::string error_text;
    auto reply = co_await client_.eval(rate_script(), call.keys, call.argv, &error_text);
    if (!reply) {
        if (reply.error() == redis::errc::server_error) log_script_error(error_text);
        co_return Result(boost::system::in_place_error, reply.error());
    }
    // The script's "too late" answer: for the caller, the same as no answer in time.
    if (reply->type == Reply::Type::status && reply->str == expired_reply)
        co_return Result(boost::system::in_place_error, make_error_code(redis::errc::timeout));
    auto result = decode(*reply, request, call.order);
    if (!result) co_return Result(boost::system::in_place_error, make_error_code(redis::errc::protocol_error));
    co_return std::move(*result);
}

} // namespace relayguard
