// SPDX-License-Identifier: MIT
// limiter.cpp - the store call of the rate_limits check and Redis failure modes (limiter.hpp).
#include "server/limiter.hpp"

#include <chrono>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
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

LimiterShared::LimiterShared(const StoreConfig& config, Metrics& metrics, std::size_t event_queue)
    : config_(config), metrics_(metrics), events_(event_queue, metrics)
{
}
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
    : shared_(shared), metrics_(metrics), ready_(ready_promise_.get_future().share())
{
    const StoreConfig& config = shared.config();
    if (config.type != StoreConfig::Type::redis) {
        ready_promise_.set_value();
        return;
    }
    client_ = std::make_unique<redis::Client>(ctx.get_executor(), config.redis);
    // The deadline: the rate script voids a call that reaches Redis after we have given up on it.
    store_ = std::make_unique<RedisStore>(*client_, config.key_prefix, config.instance_ttl, config.redis.command_timeout);
    live_ = std::make_unique<RedisLiveStore>(*client_, config.key_prefix);
    connect_timer_ = std::make_unique<boost::asio::steady_timer>(ctx);
}

Limiter::~Limiter() = default;

void Limiter::start()
{
    if (!client_) return;
    client_->start();
    boost::asio::co_spawn(connect_timer_->get_executor(), watch_connect(), boost::asio::detached);
}

void Limiter::close()
{
    if (connect_timer_) connect_timer_->cancel();
    if (client_) client_->close();
}

bool Limiter::wait_ready(std::chrono::steady_clock::time_point deadline) const
{
    return ready_.wait_until(deadline) == std::future_status::ready;
}

// watch_connect - until the first connection is up or connect_timeout has passed: then the
// worker is ready to serve. Requests before it would all get on_error's answer. Redis down at
// start is an outage like any other, logged once.
boost::asio::awaitable<void> Limiter::watch_connect()
{
    // Looks this often at the client: connecting takes a millisecond or two on loopback.
    constexpr std::chrono::milliseconds poll_interval{2};
    const auto deadline = std::chrono::steady_clock::now() + shared_.config().redis.connect_timeout;
    bool cancelled = false;
    while (!client_->connected() && std::chrono::steady_clock::now() < deadline) {
        connect_timer_->expires_after(poll_interval);
        boost::system::error_code ec;
        co_await connect_timer_->async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
        if (ec) {
            cancelled = true;
            break;
        }
    }
    if (!client_->connected() && !cancelled)
        shared_.store_failed(redis::make_error_code(redis::errc::not_connected), shared_.config().on_error, down_);
    ready_promise_.set_value();
}

void Limiter::answered(std::chrono::steady_clock::time_point started)
{
    metrics_.store_call(std::chrono::steady_clock::now() - started);
    shared_.store_answered(down_);
}

void Limiter::failed(std::chrono::steady_clock::time_point started, const std::error_code& ec,
                     StoreConfig::OnError mode)
{
    metrics_.store_call(std::chrono::steady_clock::now() - started);
    metrics_.store_error(store_error_of(ec));
    shared_.store_failed(ec, mode, down_);
}

boost::asio::awaitable<std::optional<LiveFacts>> Limiter::live(const LiveQuery& query, StoreConfig::OnError on_error)
{
    if (!live_) co_return shared_.embedded_live().query_now(query);
    const auto started = std::chrono::steady_clock::now();
    auto answer = co_await live_->query(query);
    if (answer) {
        answered(started);
        co_return std::move(*answer);
    }
    failed(started, answer.error(), on_error);
    if (on_error == StoreConfig::OnError::local) co_return shared_.embedded_live().query_now(query);
    co_return std::nullopt;
}

boost::asio::awaitable<std::optional<std::uint64_t>>
Limiter::count_refusal(const std::string& login, std::chrono::seconds window, StoreConfig::OnError on_error)
{
    const bool local = on_error == StoreConfig::OnError::local;
    if (live_) {
        const auto started = std::chrono::steady_clock::now();
        auto answer = co_await live_->count_refusal(login, window);
        if (answer) {
            answered(started);
            co_return *answer;
        }
        failed(started, answer.error(), on_error);
        if (!local) co_return std::nullopt;
    }
    auto answer = co_await shared_.embedded_live().count_refusal(login, window);
    if (!answer) co_return std::nullopt;
    co_return *answer;
}

boost::asio::awaitable<std::optional<bool>> Limiter::suspend(const std::string& login, const Suspension& suspension,
                                                             StoreConfig::OnError on_error)
{
    const bool local = on_error == StoreConfig::OnError::local;
    if (live_) {
        const auto started = std::chrono::steady_clock::now();
        auto answer = co_await live_->suspend(login, suspension);
        if (answer) {
            answered(started);
            co_return *answer;
        }
        failed(started, answer.error(), on_error);
        if (!local) co_return std::nullopt;
    }
    auto answer = co_await shared_.embedded_live().suspend(login, suspension);
    if (!answer) co_return std::nullopt;
    co_return *answer;
}

boost::asio::awaitable<std::optional<bool>> Limiter::first_event(const std::string& login, std::string_view what,
                                                                 std::chrono::seconds ttl,
                                                                 StoreConfig::OnError on_error)
{
    const bool local = on_error == StoreConfig::OnError::local;
    if (live_) {
        const auto started = std::chrono::steady_clock::now();
        auto answer = co_await live_->first_event(login, what, ttl);
        if (answer) {
            answered(started);
            co_return *answer;
        }
        failed(started, answer.error(), on_error);
        if (!local) co_return std::nullopt;
    }
    auto answer = co_await shared_.embedded_live().first_event(login, what, ttl);
    if (!answer) co_return std::nullopt;
    co_return *answer;
}

boost::asio::awaitable<bool> Limiter::publish(const std::string& channel, const std::string& message,
                                              StoreConfig::OnError on_error)
{
    if (!live_ || channel.empty()) co_return false;
    const auto started = std::chrono::steady_clock::now();
    auto answer = co_await live_->publish(channel, message);
    if (answer) {
        answered(started);
        co_return true;
    }
    failed(started, answer.error(), on_error);
    co_return false;
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
