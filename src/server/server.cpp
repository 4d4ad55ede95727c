// SPDX-License-Identifier: MIT
// server.cpp - Server: bind, worker threads, reload and drain (see server.hpp).
//
// bind() makes plain sockets (it runs before the daemon forks); start() makes the workers and
// their threads and hands the sockets to the accept loops on worker 0. stop() closes the
// listeners there first, then tells each worker, so that no connection starts on a worker
// after it was told to stop. The mutex guards this life cycle only, never the request path.
#include <relayguard/server.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <mutex>
#include <pthread.h>
#include <stdexcept>
#include <thread>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <relayguard/metrics.hpp>

#include "server/acceptor.hpp"
#include "server/limiter.hpp"
#include "server/listener.hpp"
#include "server/worker.hpp"

namespace relayguard {

using server_detail::AcceptorSet;
using server_detail::BoundListeners;
using server_detail::ConnectionLimit;
using server_detail::Worker;

namespace {

// Past store.redis.connect_timeout, how long start() still waits for the workers to report
// (a loaded host's thread start-up); they give up on Redis by themselves at the timeout.
constexpr std::chrono::milliseconds redis_ready_slack{500};

// Signals a daemon handles in its main thread; worker threads block them so that they are
// delivered there whichever way main waits for them (sigwait or a handler).
constexpr int process_signals[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM, SIGPIPE};

// warn_restart_needed - reload() does not rebind, rethread or resize: say so when asked to.
void warn_restart_needed(const ServerConfig& running, const ServerConfig& wanted)
{
    const auto warn = [](std::string_view key) {
        spdlog::warn("reload: server.{} changed; the new value takes effect after a restart", key);
    };
    if (running.listen != wanted.listen) warn("listen");
    if (running.threads != wanted.threads) warn("threads");
    if (running.max_connections != wanted.max_connections) warn("max_connections");
    if (running.socket_mode != wanted.socket_mode) warn("socket_mode");
    if (running.socket_owner != wanted.socket_owner) warn("socket_owner");
    if (running.socket_group != wanted.socket_group) warn("socket_group");
    // The process dropped to `user` for good at start: only a restart (as root) can change it.
    if (running.user != wanted.user) warn("user");
    if (running.group != wanted.group) warn("group");
    if (running.allow_root != wanted.allow_root) warn("allow_root");
}

// warn_store_restart_needed - the store and its connections are made at start.
void warn_store_restart_needed(const StoreConfig& running, const StoreConfig& wanted)
{
    const auto& a = running.redis;
    const auto& b = wanted.redis;
    const bool redis_changed = a.address != b.address || a.username != b.username || a.password != b.password ||
                               a.database != b.database || a.command_timeout != b.command_timeout ||
                               a.connect_timeout != b.connect_timeout || a.tls_ca_file != b.tls_ca_file ||
                               a.tls_cert_file != b.tls_cert_file || a.tls_key_file != b.tls_key_file ||
                               a.tls_server_name != b.tls_server_name || a.tls_verify != b.tls_verify;
    const auto warn = [](std::string_view key) {
        spdlog::warn("reload: store.{} changed; the new value takes effect after a restart", key);
    };
    if (running.type != wanted.type) warn("type");
    if (running.key_prefix != wanted.key_prefix) warn("key_prefix");
    if (running.instance_ttl != wanted.instance_ttl) warn("instance_ttl");
    if (redis_changed) warn("redis");
}

} // namespace

struct Server::Impl {
    enum class State : unsigned char { created, bound, started, stopping, stopped };

    mutable std::mutex mutex;
    State state = State::created;
    std::shared_ptr<const Snapshot> snapshot; // newest, as given to reload()
    ServerConfig bound_config;                // what bind() used, to spot changes needing a restart
    BoundListeners listeners;                 // sockets until start(); files until stop()
    std::vector<std::string> endpoint_names;

    // Declaration order is destruction order reversed: acceptors (on worker 0's io_context)
    // go before the workers, and the limit, which sessions release into, after them.
    ConnectionLimit limit{default_max_connections};
    std::shared_ptr<Metrics> metrics; // outlives the workers, which count into it
    std::unique_ptr<server_detail::LimiterShared> limits; // outlives the workers' Limiters
    std::vector<std::unique_ptr<Worker>> workers;
    std::unique_ptr<AcceptorSet> acceptors;
    std::vector<std::thread> threads;

    // abandon_start - a worker thread could not be created: end the ones that run, drop all.
    void abandon_start() noexcept
    {
        for (auto& w : workers) {
            boost::asio::post(w->context(), [w = w.get(), a = acceptors.get(), first = w == workers.front()] {
                if (first) a->close();
                w->stop(std::chrono::milliseconds(0));
            });
        }
        for (auto& t : threads) t.join();
        threads.clear();
        acceptors.reset();
        workers.clear();
        remove_socket_files();
        state = State::stopped;
    }

    void remove_socket_files() noexcept
    {
        for (const auto& f : listeners.files) server_detail::remove_socket_file(f);
        listeners.files.clear();
    }
};

Server::Server(std::shared_ptr<const Snapshot> snapshot) : impl_(std::make_unique<Impl>())
{
    if (!snapshot) throw std::invalid_argument("Server: null snapshot");
    impl_->snapshot = std::move(snapshot);
}

Server::~Server()
{
    stop();
    wait();
}

void Server::bind()
{
    std::lock_guard lock(impl_->mutex);
    if (impl_->state != Impl::State::created) throw std::logic_error("Server::bind() called twice or after stop()");
    impl_->bound_config = impl_->snapshot->config.server;
    impl_->listeners = server_detail::open_listeners(impl_->bound_config);
    for (const auto& s : impl_->listeners.sockets) impl_->endpoint_names.push_back(s.name);
    impl_->state = Impl::State::bound;
}

std::vector<std::string> Server::endpoints() const
{
    std::lock_guard lock(impl_->mutex);
    return impl_->endpoint_names;
}

void Server::set_metrics(std::shared_ptr<Metrics> metrics)
{
    std::lock_guard lock(impl_->mutex);
    if (impl_->state != Impl::State::created && impl_->state != Impl::State::bound)
        throw std::logic_error("Server::set_metrics() after start()");
    impl_->metrics = std::move(metrics);
}

void Server::start()
{
    std::lock_guard lock(impl_->mutex);
    if (impl_->state == Impl::State::stopping || impl_->state == Impl::State::stopped) return;
    if (impl_->state != Impl::State::bound) throw std::logic_error("Server::start() before bind()");

    const ServerConfig& config = impl_->bound_config;
    unsigned count = config.threads;
    if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());

    impl_->limit.set_max(config.max_connections);
    if (!impl_->metrics) impl_->metrics = std::make_shared<Metrics>();
    impl_->limits = std::make_unique<server_detail::LimiterShared>(impl_->snapshot->config.store, *impl_->metrics,
                                                                   impl_->snapshot->config.events.queue);
    std::vector<Worker*> workers;
    for (unsigned i = 0; i < count; ++i) {
        impl_->workers.push_back(
            std::make_unique<Worker>(i, impl_->snapshot, *impl_->limits, impl_->metrics->add_worker()));
        workers.push_back(impl_->workers.back().get());
    }
    impl_->acceptors = std::make_unique<AcceptorSet>(workers, impl_->limit);
    for (auto& s : impl_->listeners.sockets) impl_->acceptors->adopt(std::move(s));
    impl_->listeners.sockets.clear();

    // Threads inherit the signal mask of their creator.
    sigset_t block, previous;
    sigemptyset(&block);
    for (int sig : process_signals) sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, &previous);
    try {
        for (Worker* w : workers) {
            impl_->threads.emplace_back([w] {
                const std::string name = fmt::format("relayguard-w{}", w->index());
                pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
                w->run();
            });
        }
    } catch (...) {
        pthread_sigmask(SIG_SETMASK, &previous, nullptr);
        impl_->abandon_start();
        throw;
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    // Serve only once every worker's Redis connection is up (else the first requests would all
    // get on_error's answer), or store.redis.connect_timeout has passed: Redis down at start is
    // an outage, logged once by the worker, and the daemon serves anyway. The listeners are
    // bound already: clients that come meanwhile wait in the backlog.
    const auto ready_by = std::chrono::steady_clock::now() + impl_->snapshot->config.store.redis.connect_timeout +
                          redis_ready_slack;
    for (Worker* w : workers) w->limiter().wait_ready(ready_by);
    impl_->acceptors->start(); // co_spawns onto worker 0's loop: safe from this thread
    impl_->state = Impl::State::started;
    impl_->metrics->set_serving(true);
}

void Server::reload(std::shared_ptr<const Snapshot> snapshot)
{
    if (!snapshot) return;
    std::lock_guard lock(impl_->mutex);
    if (impl_->state != Impl::State::created) warn_restart_needed(impl_->bound_config, snapshot->config.server);
    if (impl_->limits) warn_store_restart_needed(impl_->limits->config(), snapshot->config.store);
    impl_->snapshot = snapshot;
    for (auto& w : impl_->workers)
        boost::asio::post(w->context(), [w = w.get(), snapshot] { w->set_snapshot(snapshot); });
}

void Server::stop()
{
    std::lock_guard lock(impl_->mutex);
    switch (impl_->state) {
    case Impl::State::created:
        impl_->state = Impl::State::stopped;
        return;
    case Impl::State::bound:
        impl_->remove_socket_files();
        impl_->listeners.sockets.clear();
        impl_->state = Impl::State::stopped;
        return;
    case Impl::State::started:
        break;
    case Impl::State::stopping:
    case Impl::State::stopped:
        return;
    }
    impl_->state = Impl::State::stopping;
    impl_->metrics->set_serving(false);
    // Files first: from now on a new client finds no socket rather than one nobody answers.
    impl_->remove_socket_files();
    const auto shutdown_timeout = impl_->snapshot->config.server.shutdown_timeout;
    Impl* impl = impl_.get();
    boost::asio::post(impl->workers.front()->context(), [impl, shutdown_timeout] {
        impl->acceptors->close();
        // Posted after close(): every connection accepted before it reached its worker first.
        for (auto& w : impl->workers)
            boost::asio::post(w->context(), [w = w.get(), shutdown_timeout] { w->stop(shutdown_timeout); });
    });
}

void Server::wait()
{
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(impl_->mutex);
        threads.swap(impl_->threads);
    }
    for (auto& t : threads) t.join();

    std::lock_guard lock(impl_->mutex);
    if (impl_->state != Impl::State::stopping) return;
    // Sessions' frames, if any were left, release their connection counts here.
    impl_->acceptors.reset();
    impl_->workers.clear();
    impl_->state = Impl::State::stopped;
}

std::size_t Server::open_connections() const noexcept
{
    return impl_->limit.open();
}

} // namespace relayguard
