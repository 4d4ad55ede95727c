// SPDX-License-Identifier: MIT
// limiter.hpp - the rate-limit store as the server sees it: the configured store, and the
// failure mode when that store is Redis and Redis fails (private to the server module).
//
// LimiterShared lives once per Server: the embedded store (the store itself, or the local
// fallback of on_error = "local") and Redis's health, whose transitions are logged once each
// whichever worker sees them first (atomics; no lock). Limiter lives once per worker: its own
// redis::Client and RedisStore (share nothing), used only on that worker's thread.
// The store type and Redis settings are read at start; a reload that changes them is logged as
// needing a restart. on_error and defer_reply are read from the request's snapshot (live).
//
// The live store (suspensions, owners, domains, compromise signals) follows the same store:
// RedisLiveStore on the worker's own client (no second connection), or the shared
// EmbeddedLiveStore. With Redis failing, live facts are unknown (no suspension, nothing owned or
// local beyond the config) unless on_error = "local", where the embedded live store stands in:
// the ladder keeps counting on this host, and suspends on this host alone, until Redis is back.
// A live store error is an outage signal like a rate-limit one; a success ends it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <relayguard/config.hpp>
#include <relayguard/counter_store.hpp>
#include <relayguard/live_store.hpp>
#include <relayguard/metrics.hpp>

#include "server/events.hpp"

namespace relayguard::redis {
class Client;
}

namespace relayguard {
class RedisStore;
}

namespace relayguard::server_detail {

class LimiterShared {
public:
    // `metrics` hears of each outage's start and end (and must outlive this); `event_queue`:
    // EventsConfig::queue, read at start.
    LimiterShared(const StoreConfig& config, Metrics& metrics, std::size_t event_queue = default_event_queue);
    ~LimiterShared();

    const StoreConfig& config() const noexcept { return config_; }
    EmbeddedStore& embedded() noexcept { return embedded_; }
    EmbeddedLiveStore& embedded_live() noexcept { return embedded_live_; }
    EventRunner& events() noexcept { return events_; }
    Metrics& metrics() noexcept { return metrics_; }

    // store_failed - Redis failed a request; `mode` is the on_error that applies. Logs the
    // first failure of an outage (warning) and counts every one.
    // An outage lasts from the first worker that sees Redis fail to the last of those that sees
    // it answer again (each worker has its own connection, which come back one by one):
    // `worker_down` is the calling worker's own flag, touched only on its thread.
    void store_failed(const std::error_code& ec, StoreConfig::OnError mode, bool& worker_down) noexcept;
    // store_answered - Redis answered; logs the end of an outage once.
    void store_answered(bool& worker_down) noexcept
    {
        if (worker_down) recovered(worker_down);
    }

    bool degraded() const noexcept { return down_workers_.load(std::memory_order_relaxed) > 0; }
    std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }

private:
    void recovered(bool& worker_down) noexcept;

    const StoreConfig config_;
    Metrics& metrics_;
    EmbeddedStore embedded_;
    EmbeddedLiveStore embedded_live_;
    EventRunner events_; // stopped (its child killed) before the rest goes
    std::atomic<unsigned> down_workers_{0};
    std::atomic<std::int64_t> down_since_us_{0};
    std::atomic<std::uint64_t> failures_{0};
};

// What check() found: the store's result, or that the store failed and on_error said
// answer as if every limit passed (fail_open) or defer.
struct LimitOutcome {
    enum class Kind : unsigned char { result, fail_open, defer };
    Kind kind = Kind::result;
    StoreResult result;
};

class Limiter {
public:
    // `metrics`: the worker's block (Redis round trips and errors).
    Limiter(boost::asio::io_context& ctx, LimiterShared& shared, WorkerMetrics& metrics);
    ~Limiter();
    Limiter(const Limiter&) = delete;
    Limiter& operator=(const Limiter&) = delete;

    // start - begin connecting to Redis (if that is the store). Any thread, before the worker runs.
    void start();
    // close - stop the Redis client (its reconnect loop would keep the worker's loop alive).
    // On the worker's thread.
    void close();

    // wait_ready - whether this worker's Redis connection came up (or the store is embedded)
    // before `deadline`. start() gives it store.redis.connect_timeout; past that the worker
    // serves anyway, its outage logged. Any thread (the server's start waits on it).
    bool wait_ready(std::chrono::steady_clock::time_point deadline) const;

    // check - every op of `request` against the store; on a Redis failure, `on_error`.
    boost::asio::awaitable<LimitOutcome> check(const StoreRequest& request, StoreConfig::OnError on_error);

    // The live store's calls (live_store.hpp), with the same metrics and outage accounting as
    // check(). On a Redis failure: the embedded live store if on_error = local, else nothing
    // (live: nullopt; the writes: nullopt, nothing done).
    boost::asio::awaitable<std::optional<LiveFacts>> live(const LiveQuery& query, StoreConfig::OnError on_error);
    boost::asio::awaitable<std::optional<std::uint64_t>>
    count_refusal(const std::string& login, std::chrono::seconds window, StoreConfig::OnError on_error);
    boost::asio::awaitable<std::optional<bool>> suspend(const std::string& login, const Suspension& suspension,
                                                        StoreConfig::OnError on_error);
    boost::asio::awaitable<std::optional<bool>> first_event(const std::string& login, std::string_view what,
                                                            std::chrono::seconds ttl, StoreConfig::OnError on_error);
    // publish - PUBLISH on Redis; false if not published (embedded store, failure).
    boost::asio::awaitable<bool> publish(const std::string& channel, const std::string& message,
                                         StoreConfig::OnError on_error);

    bool redis() const noexcept { return client_ != nullptr; }
    LimiterShared& shared() noexcept { return shared_; }

    // Event side effects in flight on this worker (session.cpp bounds them). Worker thread only.
    unsigned& pending_events() noexcept { return pending_events_; }

private:
    boost::asio::awaitable<void> watch_connect();
    // failed/answered - one live store call's metrics and outage accounting.
    void answered(std::chrono::steady_clock::time_point started);
    void failed(std::chrono::steady_clock::time_point started, const std::error_code& ec, StoreConfig::OnError mode);

    LimiterShared& shared_;
    WorkerMetrics& metrics_;
    std::unique_ptr<redis::Client> client_;
    std::unique_ptr<RedisStore> store_;
    std::unique_ptr<RedisLiveStore> live_;
    std::unique_ptr<boost::asio::steady_timer> connect_timer_;
    std::promise<void> ready_promise_;
    std::shared_future<void> ready_;
    bool down_ = false; // this worker has seen Redis fail and not answer since
    unsigned pending_events_ = 0;
};

} // namespace relayguard::server_detail
