// SPDX-License-Identifier: MIT
// live_store.hpp - per-login state that operators and the compromise ladder change at run time:
// suspensions, sender owners and local domains kept in Redis, and compromise signals.
//
// The daemon asks everything one request needs in one round trip (query()), before the checks
// run; the few writes (a refusal counted, an automatic suspension, an event's dedupe marker,
// PUBLISH) happen only on the rare requests that need them. Two implementations with one
// conformance suite: EmbeddedLiveStore (one host; suspensions only from the ladder; no owners or
// domains beyond the config) and RedisLiveStore (the key schema in key_schema.hpp, shared with
// relayguardctl). Signals are distinct counts (Redis HyperLogLog; exact sets, capped, embedded)
// and counters kept in buckets of a quarter window: a count covers the last 3/4 to 1 window.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <relayguard/counter_store.hpp>
#include <relayguard/live_facts.hpp>

namespace relayguard {

namespace redis {
class Client;
}

class LiveStore {
public:
    virtual ~LiveStore() = default;

    // query - one round trip. Errors are store failures: the caller treats facts as unknown
    // (no suspension, nothing owned or local beyond the config, counts 0) and goes on.
    virtual boost::asio::awaitable<boost::system::result<LiveFacts, std::error_code>>
    query(const LiveQuery& query) = 0;

    // count_refusal - one more rate-limit refusal of `login`; returns the count over `window`.
    virtual boost::asio::awaitable<boost::system::result<std::uint64_t, std::error_code>>
    count_refusal(const std::string& login, std::chrono::seconds window) = 0;

    // suspend - an automatic suspension, in the same form as relayguardctl's (index included),
    // expiring at suspension.until if non-zero. Returns false if the login was suspended
    // already (another worker or daemon got there first: it alone reports the event).
    virtual boost::asio::awaitable<boost::system::result<bool, std::error_code>>
    suspend(const std::string& login, const Suspension& suspension) = 0;

    // first_event - true exactly once per (login, what) within `ttl`, fleet-wide for Redis:
    // whoever gets true logs and publishes the event ("warn", "hold", "suspend", ...).
    virtual boost::asio::awaitable<boost::system::result<bool, std::error_code>>
    first_event(const std::string& login, std::string_view what, std::chrono::seconds ttl) = 0;

    // publish - PUBLISH channel message (Redis); the embedded store has no channel: no-op.
    virtual boost::asio::awaitable<boost::system::result<void, std::error_code>>
    publish(const std::string& channel, const std::string& message) = 0;
};

// EmbeddedLiveStore - in memory, thread-safe (one mutex; the ladder's state is small and its
// calls are few compared to rate limits). Memory bounded: buckets older than a window are
// dropped by sweep() and incrementally by query().
class EmbeddedLiveStore final : public LiveStore {
public:
    explicit EmbeddedLiveStore(const Clock& clock = system_clock());
    ~EmbeddedLiveStore() override;

    boost::asio::awaitable<boost::system::result<LiveFacts, std::error_code>> query(const LiveQuery& query) override;
    boost::asio::awaitable<boost::system::result<std::uint64_t, std::error_code>>
    count_refusal(const std::string& login, std::chrono::seconds window) override;
    boost::asio::awaitable<boost::system::result<bool, std::error_code>>
    suspend(const std::string& login, const Suspension& suspension) override;
    boost::asio::awaitable<boost::system::result<bool, std::error_code>>
    first_event(const std::string& login, std::string_view what, std::chrono::seconds ttl) override;
    boost::asio::awaitable<boost::system::result<void, std::error_code>>
    publish(const std::string& channel, const std::string& message) override;

    // Synchronous forms (tests, relayguardctl has no use for them).
    LiveFacts query_now(const LiveQuery& query);
    std::optional<Suspension> suspension_of(const std::string& login) const;
    void lift(const std::string& login);
    std::size_t sweep();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// RedisLiveStore - on a redis::Client (not owned; one per worker). query() is one pipelined
// batch of plain commands (HGETALL, SISMEMBER, PFADD, PFCOUNT) on the keys of key_schema.hpp;
// suspend() is one small Lua script (check and write in one atomic step); the clock for buckets
// and "until" is the caller's host (buckets need no precision beyond seconds; fleets run NTP).
class RedisLiveStore final : public LiveStore {
public:
    RedisLiveStore(redis::Client& client, std::string key_prefix, const Clock& clock = system_clock());
    ~RedisLiveStore() override;

    boost::asio::awaitable<boost::system::result<LiveFacts, std::error_code>> query(const LiveQuery& query) override;
    boost::asio::awaitable<boost::system::result<std::uint64_t, std::error_code>>
    count_refusal(const std::string& login, std::chrono::seconds window) override;
    boost::asio::awaitable<boost::system::result<bool, std::error_code>>
    suspend(const std::string& login, const Suspension& suspension) override;
    boost::asio::awaitable<boost::system::result<bool, std::error_code>>
    first_event(const std::string& login, std::string_view what, std::chrono::seconds ttl) override;
    boost::asio::awaitable<boost::system::result<void, std::error_code>>
    publish(const std::string& channel, const std::string& message) override;

private:
    redis::Client& client_;
    std::string prefix_;
    const Clock& clock_;
};

} // namespace relayguard
