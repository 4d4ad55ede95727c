// SPDX-License-Identifier: MIT
// redis_live_store.cpp - RedisLiveStore: suspensions, owners, local domains and compromise
// signals in Redis, on the keys of key_schema.hpp (the ones relayguardctl writes).
//
// query() and count_refusal() are one pipelined batch of plain commands each; suspend() is one
// small script (check and write in one atomic step). Not thread-safe (one per worker thread,
// like its redis::Client). SECURITY: replies are checked for their exact shape; anything else
// is errc::protocol_error, an error reply errc::server_error, never a guess.
#include <relayguard/live_store.hpp>

#include <atomic>
#include <charconv>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/redis.hpp>
#include <relayguard/strings.hpp>

#include "ratelimit/live_buckets.hpp"

namespace relayguard {
namespace {

namespace asio = boost::asio;
using redis::Reply;
using CommandResult = boost::system::result<Reply, std::error_code>;
using Command = std::vector<std::string>;

using detail::bucket_index;
using detail::bucket_length;
using detail::floor_div;
using detail::micros_per_second;

// An error reply (WRONGTYPE on a key someone wrote by hand, OOM, ...) repeats on every request
// while it lasts; log one at most this often. The policy engine counts every failure.
constexpr std::int64_t error_log_interval_ms = 10'000;

// Log throttle, shared by every worker thread's store (an atomic, no lock).
std::atomic<std::int64_t> last_error_log_ms{0};

void log_error_reply(std::string_view command, const std::string& text)
{
    const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now().time_since_epoch())
                                    .count();
    std::int64_t last = last_error_log_ms.load(std::memory_order_relaxed);
    if (last != 0 && now_ms - last < error_log_interval_ms) return;
    if (!last_error_log_ms.compare_exchange_strong(last, now_ms, std::memory_order_relaxed)) return;
    spdlog::warn("live store: Redis {} failed: {}", command, sanitize(text));
}

std::error_code protocol_error() { return make_error_code(redis::errc::protocol_error); }

// suspend_script - write a suspension as relayguardctl does (hash, its expiry, the index
// entry) unless one is in force; in one step, so two daemons suspending one login at once
// write once and only one of them reports it. A hash without a readable "until" is in force
// until lifted, as query() and relayguardctl read it. KEYS: the suspension hash, the
// {suspended} index (another slot: as relayguardctl's MULTI, not for Redis Cluster).
// ARGV: reason, since, until, by, now (unix s), login. Returns 1 when it wrote, else 0.
const redis::Script& suspend_script()
{
    static const redis::Script script(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then
  local u = redis.call('HGET', KEYS[1], 'until')
  local n = u and string.match(u, '^%-?%d+$') and tonumber(u) or 0
  if n == 0 or n > tonumber(ARGV[5]) then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'since', ARGV[2], 'until', ARGV[3], 'by', ARGV[4])
if ARGV[3] ~= '0' then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
return 1
)lua");
    return script;
}

asio::awaitable<CommandResult> send(redis::Client& client, const Command& command)
{
    std::vector<std::string_view> args(command.begin(), command.end());
    co_return co_await client.command(std::move(args));
}

// pipeline - every command of `commands` queued on the connection before any reply is awaited:
// one write, one round trip. The Client writes them in the order they are submitted and Redis
// runs one connection's commands in order, so a PFCOUNT sees the PFADD queued before it.
asio::awaitable<std::vector<CommandResult>> pipeline(redis::Client& client, const std::vector<Command>& commands)
{
    std::vector<CommandResult> out;
    if (commands.size() == 1) {
        out.push_back(co_await send(client, commands.front()));
        co_return out;
    }
    const auto ex = co_await asio::this_coro::executor;
    using Op = decltype(asio::co_spawn(ex, send(client, commands.front()), asio::deferred));
    std::vector<Op> ops;
    ops.reserve(commands.size());
    for (const Command& command : commands) ops.push_back(asio::co_spawn(ex, send(client, command), asio::deferred));
    auto [order, failures, results] = co_await asio::experimental::make_parallel_group(std::move(ops))
                                          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
    // command() throws nothing but bad_alloc: not ours to handle.
    for (const std::exception_ptr& e : failures)
        if (e) std::rethrow_exception(e);
    co_return std::move(results);
}

// checked - the reply of commands[i], or the error the whole call fails with.
boost::system::result<const Reply*, std::error_code> checked(const std::vector<CommandResult>& replies,
                                                             const std::vector<Command>& commands, std::size_t i)
{
    const CommandResult& r = replies.at(i);
    if (!r) return r.error();
    if (r->is_error()) {
        log_error_reply(commands[i].front(), r->str);
        return make_error_code(redis::errc::server_error);
    }
    return &*r;
}

// first_failure - the first transport error or error reply among `replies`, if any.
std::error_code first_failure(const std::vector<CommandResult>& replies, const std::vector<Command>& commands)
{
    for (std::size_t i = 0; i < replies.size(); ++i) {
        auto r = checked(replies, commands, i);
        if (!r) return r.error();
    }
    return {};
}

template <class Int>
bool parse_int(std::string_view text, Int& out) noexcept
{
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size();
}

// as relayguardctl reads them: an unreadable number is 0 ("until" 0: until lifted).
std::int64_t to_int(std::string_view text) noexcept
{
    std::int64_t v = 0;
    return parse_int(text, v) ? v : 0;
}

// suspension_of - an HGETALL reply: nullopt for no hash; a flat list of field, value.
boost::system::result<std::optional<Suspension>, std::error_code> suspension_of(const Reply& reply)
{
    if (reply.type != Reply::Type::array || reply.elements.size() % 2 != 0) return protocol_error();
    if (reply.elements.empty()) return std::optional<Suspension>();
    Suspension s;
    for (std::size_t i = 0; i < reply.elements.size(); i += 2) {
        const Reply& name = reply.elements[i];
        const Reply& value = reply.elements[i + 1];
        if (name.type != Reply::Type::string || value.type != Reply::Type::string) return protocol_error();
        if (name.str == "reason")
            s.reason = value.str;
        else if (name.str == "since")
            s.since = to_int(value.str);
        else if (name.str == "until")
            s.until = to_int(value.str);
        else if (name.str == "by")
            s.by = value.str;
    }
    return std::optional<Suspension>(std::move(s));
}

// counter_sum - an MGET reply over bucket counters: missing buckets (nil) are 0.
boost::system::result<std::uint64_t, std::error_code> counter_sum(const Reply& reply, std::size_t keys)
{
    if (reply.type != Reply::Type::array || reply.elements.size() != keys) return protocol_error();
    std::uint64_t total = 0;
    for (const Reply& e : reply.elements) {
        if (e.type == Reply::Type::nil) continue;
        std::uint64_t v = 0;
        if (e.type != Reply::Type::string || !parse_int(e.str, v)) return protocol_error();
        total += v;
    }
    return total;
}

boost::system::result<long long, std::error_code> integer_of(const Reply& reply)
{
    if (reply.type != Reply::Type::integer) return protocol_error();
    return reply.integer;
}

// bucket_keys - the keys of a signal's current bucket and the three before it, newest first.
std::vector<std::string> bucket_keys(std::string_view prefix, const std::string& login, Signal signal,
                                     std::int64_t index)
{
    std::vector<std::string> keys;
    keys.reserve(signal_buckets);
    for (unsigned k = 0; k < signal_buckets; ++k)
        keys.push_back(signal_key(prefix, login, signal_name(signal), index - static_cast<std::int64_t>(k)));
    return keys;
}

// A bucket key lives one window past the end of its bucket (key_schema.hpp): from any moment
// within the bucket, at most window + bucket length.
std::string bucket_ttl(std::chrono::seconds window, std::int64_t length_s)
{
    return std::to_string(std::max<std::int64_t>(window.count(), 0) + length_s);
}

Command with_keys(std::string name, std::vector<std::string> keys)
{
    Command c;
    c.reserve(1 + keys.size());
    c.push_back(std::move(name));
    for (auto& k : keys) c.push_back(std::move(k));
    return c;
}

} // namespace

RedisLiveStore::RedisLiveStore(redis::Client& client, std::string key_prefix, const Clock& clock)
    : client_(client), prefix_(std::move(key_prefix)), clock_(clock)
{
}

RedisLiveStore::~RedisLiveStore() = default;

boost::asio::awaitable<boost::system::result<LiveFacts, std::error_code>>
RedisLiveStore::query(const LiveQuery& query)
{
    using Result = boost::system::result<LiveFacts, std::error_code>;
    LiveFacts facts;
    if (query.empty()) co_return facts;

    // Plan: the commands, and where each answer is.
    const std::int64_t now_us = clock_.now_us();
    const std::int64_t length_s = bucket_length(query.window);
    const std::int64_t index = bucket_index(now_us, length_s);
    std::vector<Command> commands;
    std::size_t suspension_at = 0;
    if (query.suspension) {
        suspension_at = commands.size();
        commands.push_back({"HGETALL", suspension_key(prefix_, query.login)});
    }
    const std::size_t owners_at = commands.size();
    for (const auto& key : query.owner_keys) commands.push_back({"SISMEMBER", owners_key(prefix_, key), query.login});
    const std::size_t domains_at = commands.size();
    if (!query.domain_candidates.empty()) {
        // SMISMEMBER: Redis >= 6.2 (Debian 12 has 7.0), one command for every candidate.
        Command c{"SMISMEMBER", domains_key(prefix_)};
        c.insert(c.end(), query.domain_candidates.begin(), query.domain_candidates.end());
        commands.push_back(std::move(c));
    }
    struct Count {
        std::size_t signal;
        std::size_t at;
        bool counter;
    };
    std::vector<Count> counts;
    for (const auto& track : query.track) {
        const auto i = static_cast<std::size_t>(track.signal);
        if (i >= signal_count) continue;
        std::vector<std::string> keys = bucket_keys(prefix_, query.login, track.signal, index);
        if (track.signal == Signal::rate_refusals) {
            counts.push_back(Count{i, commands.size(), true});
            commands.push_back(with_keys("MGET", std::move(keys)));
            continue;
        }
        if (query.consume && !track.element.empty()) {
            commands.push_back({"PFADD", keys.front(), track.element});
            commands.push_back({"EXPIRE", keys.front(), bucket_ttl(query.window, length_s)});
        }
        counts.push_back(Count{i, commands.size(), false});
        commands.push_back(with_keys("PFCOUNT", std::move(keys)));
    }

    const std::vector<CommandResult> replies = co_await pipeline(client_, commands);
    if (const std::error_code ec = first_failure(replies, commands)) co_return Result(boost::system::in_place_error, ec);

    if (query.suspension) {
        auto s = suspension_of(*replies[suspension_at]);
        if (!s) co_return Result(boost::system::in_place_error, s.error());
        const std::int64_t now_s = floor_div(now_us, micros_per_second);
        // Redis drops the hash at "until" (EXPIREAT); one written without that expiry, or read
        // in the last second, is no suspension either.
        if (*s && ((*s)->until == 0 || (*s)->until > now_s)) facts.suspension = std::move(**s);
    }
    for (std::size_t k = 0; k < query.owner_keys.size(); ++k) {
        auto member = integer_of(*replies[owners_at + k]);
        if (!member) co_return Result(boost::system::in_place_error, member.error());
        if (*member == 1) facts.sender_owned = true;
    }
    if (!query.domain_candidates.empty()) {
        const Reply& r = *replies[domains_at];
        if (r.type != Reply::Type::array || r.elements.size() != query.domain_candidates.size())
            co_return Result(boost::system::in_place_error, protocol_error());
        for (const Reply& e : r.elements) {
            auto member = integer_of(e);
            if (!member) co_return Result(boost::system::in_place_error, member.error());
            if (*member == 1) facts.recipient_domain_local = true;
        }
    }
    for (const Count& c : counts) {
        const Reply& r = *replies[c.at];
        if (c.counter) {
            auto sum = counter_sum(r, signal_buckets);
            if (!sum) co_return Result(boost::system::in_place_error, sum.error());
            facts.counts[c.signal] = *sum;
        } else {
            auto n = integer_of(r);
            if (!n || *n < 0) co_return Result(boost::system::in_place_error, protocol_error());
            facts.counts[c.signal] = static_cast<std::uint64_t>(*n);
        }
    }
    co_return facts;
}

boost::asio::awaitable<boost::system::result<std::uint64_t, std::error_code>>
RedisLiveStore::count_refusal(const std::string& login, std::chrono::seconds window)
{
    using Result = boost::system::result<std::uint64_t, std::error_code>;
    const std::int64_t length_s = bucket_length(window);
    std::vector<std::string> keys = bucket_keys(prefix_, login, Signal::rate_refusals, bucket_index(clock_.now_us(), length_s));
    std::vector<Command> commands;
    commands.push_back({"INCR", keys.front()});
    commands.push_back({"EXPIRE", keys.front(), bucket_ttl(window, length_s)});
    commands.push_back(with_keys("MGET", std::move(keys)));
    const std::vector<CommandResult> replies = co_await pipeline(client_, commands);
    if (const std::error_code ec = first_failure(replies, commands)) co_return Result(boost::system::in_place_error, ec);
    co_return counter_sum(*replies[2], signal_buckets);
}

boost::asio::awaitable<boost::system::result<bool, std::error_code>>
RedisLiveStore::suspend(const std::string& login, const Suspension& suspension)
{
    using Result = boost::system::result<bool, std::error_code>;
    const std::int64_t now_s = floor_div(clock_.now_us(), micros_per_second);
    const std::vector<std::string> keys = {suspension_key(prefix_, login), suspended_index_key(prefix_)};
    const std::vector<std::string> args = {suspension.reason,          std::to_string(suspension.since),
                                           std::to_string(suspension.until), suspension.by,
                                           std::to_string(now_s),      login};
    std::string error_text;
    auto reply = co_await client_.eval(suspend_script(), keys, args, &error_text);
    if (!reply) {
        if (reply.error() == redis::errc::server_error) log_error_reply("suspend script", error_text);
        co_return Result(boost::system::in_place_error, reply.error());
    }
    auto wrote = integer_of(*reply);
    if (!wrote || (*wrote != 0 && *wrote != 1)) co_return Result(boost::system::in_place_error, protocol_error());
    co_return *wrote == 1;
}

boost::asio::awaitable<boost::system::result<bool, std::error_code>>
RedisLiveStore::first_event(const std::string& login, std::string_view what, std::chrono::seconds ttl)
{
    using Result = boost::system::result<bool, std::error_code>;
    // SET EX takes no 0: at least a second.
    const std::vector<Command> commands = {
        {"SET", event_key(prefix_, login, what), "1", "NX", "EX", std::to_string(std::max<std::int64_t>(ttl.count(), 1))}};
    const std::vector<CommandResult> replies = co_await pipeline(client_, commands);
    auto r = checked(replies, commands, 0);
    if (!r) co_return Result(boost::system::in_place_error, r.error());
    // SET NX: +OK when it set the key, nil when the key was there.
    if ((*r)->type == Reply::Type::nil) co_return false;
    if ((*r)->type == Reply::Type::status && (*r)->str == "OK") co_return true;
    co_return Result(boost::system::in_place_error, protocol_error());
}

boost::asio::awaitable<boost::system::result<void, std::error_code>>
RedisLiveStore::publish(const std::string& channel, const std::string& message)
{
    using Result = boost::system::result<void, std::error_code>;
    const std::vector<Command> commands = {{"PUBLISH", channel, message}};
    const std::vector<CommandResult> replies = co_await pipeline(client_, commands);
    auto r = checked(replies, commands, 0);
    if (!r) co_return Result(boost::system::in_place_error, r.error());
    if ((*r)->type != Reply::Type::integer) co_return Result(boost::system::in_place_error, protocol_error());
    co_return Result();
}

} // namespace relayguard
