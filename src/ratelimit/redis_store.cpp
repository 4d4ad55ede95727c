// SPDX-License-Identifier: MIT
// redis_store.cpp - RedisStore: one EVALSHA of rate_script() per policy request.
//
// Builds the script's KEYS/ARGV from a StoreRequest and decodes its flat reply. Not
// thread-safe (one per worker thread, like its redis::Client). SECURITY: the reply is checked
// field by field; any other shape is errc::protocol_error, never a guess.
#include <relayguard/redis_store.hpp>

#include <algorithm>
#include <atomic>
#include <limits>
#include <optional>
#include <utility>

#include <spdlog/spdlog.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/strings.hpp>

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

// decode - the script's reply (see rate_script.cpp) into a StoreResult for `request`.
std::optional<StoreResult> decode(const Reply& reply, const StoreRequest& request)
{
    const std::size_t nops = request.ops.size();
    if (reply.type != Reply::Type::array) return std::nullopt;
    ReplyCursor in(reply.elements);
    StoreResult result;
    result.allowed = in.flag();
    const long long refused = in.integer(-1, static_cast<long long>(nops) - 1);
    result.retry_after_us = in.integer(0, max_ll);
    if (in.integer(0, max_ll) != static_cast<long long>(nops) || !in.ok()) return std::nullopt;
    if (refused >= 0) result.refused_op = static_cast<std::size_t>(refused);

    result.ops.resize(nops);
    for (std::size_t i = 0; i < nops; ++i) {
        OpOutcome& op = result.ops[i];
        op.allowed = in.flag();
        op.already_counted = in.flag();
        op.source = static_cast<OpOutcome::Source>(in.integer(0, 2));
        const std::string spec = in.text();
        op.retry_after_us = in.integer(0, max_ll);
        const long long nwindows = in.integer(0, max_reply_windows);
        if (!in.ok()) return std::nullopt;
        // The script sends the rates' text only for overrides; the config's are ours.
        if (op.source == OpOutcome::Source::config) {
            if (!spec.empty()) return std::nullopt;
            op.effective = request.ops[i].defaults;
        } else {
            auto parsed = parse_rate_spec(spec);
            if (!parsed) return std::nullopt;
            op.effective = std::move(*parsed);
        }
        if (static_cast<std::size_t>(nwindows) != op.effective.rates.size()) return std::nullopt;
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
    if (!in.ok() || !in.at_end()) return std::nullopt;
    // The verdict must agree with the ops it summarizes.
    if (result.refused_op && result.ops[*result.refused_op].allowed) return std::nullopt;
    if (!result.allowed && !result.refused_op) return std::nullopt;
    return result;
}

} // namespace

RedisStore::RedisStore(redis::Client& client, std::string key_prefix, std::chrono::seconds instance_ttl)
    : client_(client), prefix_(std::move(key_prefix)), instance_ttl_(instance_ttl)
{
}

boost::asio::awaitable<Result> RedisStore::apply(const StoreRequest& request)
{
    const std::size_t n = request.ops.size();
    std::vector<std::string> keys;
    std::vector<std::string> args;
    keys.reserve(3 * n + 1);
    args.reserve(3 + 11 * n);
    args.emplace_back(request.consume ? "1" : "0");
    args.push_back(std::to_string(instance_ttl_.count()));
    args.push_back(std::to_string(n));

    bool any_once = false;
    for (const CounterOp& op : request.ops) {
        // An empty instance cannot be deduplicated: such a message counts every time.
        const bool once = op.once_per_instance && !request.instance.empty();
        const bool has_parent = !op.parent.empty();
        keys.push_back(state_key(prefix_, op.key, op.value));
        keys.push_back(override_key(prefix_, op.key, op.value));
        // No parent: the override hash again (the script does not read it; has_parent is 0).
        keys.push_back(has_parent ? override_key(prefix_, op.key, op.parent) : keys.back());
        args.push_back(op.limit);
        args.push_back(std::to_string(op.cost));
        args.emplace_back(once ? "1" : "0");
        args.push_back(once ? instance_member(op.limit, op.key, op.value) : std::string());
        args.emplace_back(op.shadow ? "1" : "0");
        args.emplace_back(has_parent ? "1" : "0");
        // The config's rates as numbers; -1 for "unlimited".
        if (op.defaults.kind == RateSpec::Kind::unlimited) {
            args.emplace_back("-1");
        } else {
            args.push_back(std::to_string(op.defaults.rates.size()));
            for (const Rate& rate : op.defaults.rates) {
                args.push_back(std::to_string(rate.count));
                args.push_back(std::to_string(rate.period.count()));
            }
        }
        any_once = any_once || once;
    }
    if (any_once) keys.push_back(instance_key(prefix_, request.instance));

    std::string error_text;
    auto reply = co_await client_.eval(rate_script(), keys, args, &error_text);
    if (!reply) {
        if (reply.error() == redis::errc::server_error) log_script_error(error_text);
        co_return Result(boost::system::in_place_error, reply.error());
    }
    auto result = decode(*reply, request);
    if (!result) co_return Result(boost::system::in_place_error, make_error_code(redis::errc::protocol_error));
    co_return std::move(*result);
}

} // namespace relayguard
