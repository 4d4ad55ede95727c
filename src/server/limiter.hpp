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
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <relayguard/config.hpp>
#include <relayguard/counter_store.hpp>
#include <relayguard/metrics.hpp>

namespace relayguard::redis {
class Client;
}

namespace relayguard {
class RedisStore;
}

namespace relayguard::server_detail {

class LimiterShared {
public:
    // `metrics` hears of each outage's start and end (and must outlive this).
    LimiterShared(const StoreConfig& config, Metrics& metrics);
    ~LimiterShared();

    const StoreConfig& config() const noexcept { return config_; }
    EmbeddedStore& embedded() noexcept { return embedded_; }

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

    // check - every op of `request` against the store; on a Redis failure, `on_error`.
    boost::asio::awaitable<LimitOutcome> check(const StoreRequest& request, StoreConfig::OnError on_error);

private:
    LimiterShared& shared_;
    WorkerMetrics& metrics_;
    std::unique_ptr<redis::Client> client_;
    std::unique_ptr<RedisStore> store_;
    bool down_ = false; // this worker has seen Redis fail and not answer since
};

} // namespace relayguard::server_detail
