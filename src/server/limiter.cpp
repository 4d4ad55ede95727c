// SPDX-License-Identifier: MIT
// limiter.cpp - the store call of the rate_limits check and Redis failure modes (limiter.hpp).
#include "server/limiter.hpp"

#include <chrono>

#include <spdlog/spdlog.h>

#include <relayguard/redis.hpp>
#include <relayguard/redis_store.hpp>

namespace relayguard::server_detail {
namespace {

std::int64_t steady_now_us() noexcept
{
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string_view mode_effect(StoreConfig::OnError mode) noexcept
{
    switch (mode) {
    case StoreConfig::OnError::dunno: return "on_error = dunno: rate limits are NOT enforced until it is back";
    case StoreConfig::OnError::defer: return "on_error = defer: rate-limited requests are deferred until it is back";
    case StoreConfig::OnError::local:
        return "on_error = local: rate limits are enforced by this host alone until it is back";
    }
    return "";
}

// store_error_of - the metrics' kind of a store failure.
StoreError store_error_of(const std::error_code& ec) noexcept
{
    if (ec.category() != redis::error_category()) return StoreError::other;
    switch (static_cast<redis::errc>(ec.value())) {
    case redis::errc::timeout: return StoreError::timeout;
    case redis::errc::not_connected: return StoreError::not_connected;
    case redis::errc::connection_lost: return StoreError::connection_lost;
    case redis::errc::protocol_error: return StoreError::protocol_error;
    case redis::errc::server_error: return StoreError::server_error;
    case redis::errc::shutting_down: break;
    }
    return StoreError::other;
}

} // namespace

LimiterShared::LimiterShared(const StoreConfig& config, Metrics& metrics) : config_(config), metrics_(metrics) {}
LimiterShared::~LimiterShared() = default;

void LimiterShared::store_failed(const std::error_code& ec, StoreConfig::OnError mode, bool& worker_down) noexcept
{
    failures_.fetch_add(1, std::memory_order_relaxed);
    if (worker_down) return;
    worker_down = true;
    if (down_workers_.fetch_add(1, std::memory_order_acq_rel) != 0) return; // already logged
    const std::int64_t now = steady_now_us();
    down_since_us_.store(now, std::memory_order_relaxed);
    metrics_.store_outage_began(now);
    spdlog::warn("rate-limit store redis {} unavailable ({}); {}", config_.redis.address, ec.message(),
                 mode_effect(mode));
}

void LimiterShared::recovered(bool& worker_down) noexcept
{
    worker_down = false;
    if (down_workers_.fetch_sub(1, std::memory_order_acq_rel) != 1) return; // others still down
    const std::int64_t now = steady_now_us();
    metrics_.store_outage_ended(now);
    const double seconds = static_cast<double>(now - down_since_us_.load(std::memory_order_relaxed)) / 1e6;
    spdlog::warn("rate-limit store redis {} answering again after {:.1f} s; limits are shared again",
                 config_.redis.address, seconds);
}

Limiter::Limiter(boost::asio::io_context& ctx, LimiterShared& shared, WorkerMetrics& metrics)
    : shared_(shared), metrics_(metrics)
{
    const StoreConfig& config = shared.config();
    if (config.type != StoreConfig::Type::redis) return;
    client_ = std::make_unique<redis::Client>(ctx.get_executor(), config.redis);
    store_ = std::make_unique<RedisStore>(*client_, config.key_prefix, config.instance_ttl);
}

Limiter::~Limiter() = default;

void Limiter::start()
{
    if (client_) client_->start();
}

void Limiter::close()
{
    if (client_) client_->close();
}

boost::asio::awaitable<LimitOutcome> Limiter::check(const StoreRequest& request, StoreConfig::OnError on_error)
{
    LimitOutcome outcome;
    if (!store_) {
        // The embedded store never waits on I/O: no coroutine hop for it.
        outcome.result = shared_.embedded().apply_now(request);
        co_return outcome;
    }
    const auto started = std::chrono::steady_clock::now();
    auto answer = co_await store_->apply(request);
    metrics_.store_call(std::chrono::steady_clock::now() - started);
    if (answer) {
        shared_.store_answered(down_);
        outcome.result = std::move(*answer);
        co_return outcome;
    }
    metrics_.store_error(store_error_of(answer.error()));
    shared_.store_failed(answer.error(), on_error, down_);
    switch (on_error) {
    case StoreConfig::OnError::dunno: outcome.kind = LimitOutcome::Kind::fail_open; break;
    case StoreConfig::OnError::defer: outcome.kind = LimitOutcome::Kind::defer; break;
    case StoreConfig::OnError::local: outcome.result = shared_.embedded().apply_now(request); break;
    }
    co_return outcome;
}

} // namespace relayguard::server_detail
