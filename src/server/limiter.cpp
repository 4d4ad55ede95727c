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

} // namespace

LimiterShared::LimiterShared(const StoreConfig& config) : config_(config) {}
LimiterShared::~LimiterShared() = default;

void LimiterShared::store_failed(const std::error_code& ec, StoreConfig::OnError mode) noexcept
{
    failures_.fetch_add(1, std::memory_order_relaxed);
    if (down_.load(std::memory_order_relaxed) || down_.exchange(true, std::memory_order_acq_rel)) return;
    down_since_us_.store(steady_now_us(), std::memory_order_relaxed);
    spdlog::warn("rate-limit store redis {} unavailable ({}); {}", config_.redis.address, ec.message(),
                 mode_effect(mode));
}

void LimiterShared::recovered() noexcept
{
    if (!down_.exchange(false, std::memory_order_acq_rel)) return;
    const double seconds = static_cast<double>(steady_now_us() - down_since_us_.load(std::memory_order_relaxed)) / 1e6;
    spdlog::warn("rate-limit store redis {} answering again after {:.1f} s; limits are shared again",
                 config_.redis.address, seconds);
}

Limiter::Limiter(boost::asio::io_context& ctx, LimiterShared& shared) : shared_(shared)
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
    auto answer = co_await store_->apply(request);
    if (answer) {
        shared_.store_answered();
        outcome.result = std::move(*answer);
        co_return outcome;
    }
    shared_.store_failed(answer.error(), on_error);
    switch (on_error) {
    case StoreConfig::OnError::dunno: outcome.kind = LimitOutcome::Kind::fail_open; break;
    case StoreConfig::OnError::defer: outcome.kind = LimitOutcome::Kind::defer; break;
    case StoreConfig::OnError::local: outcome.result = shared_.embedded().apply_now(request); break;
    }
    co_return outcome;
}

} // namespace relayguard::server_detail
