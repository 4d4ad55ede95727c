// SPDX-License-Identifier: MIT
// worker.hpp - one worker thread: its io_context, its snapshot, its sessions (private).
//
// Share nothing: a Worker's members are touched only on its own thread, except through post()
// (reload, stop) and the connection counter (an atomic). Sessions register themselves so that
// stop can reach them. ConnectionLimit counts connections over all workers for max_connections.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_set>
#include <utility>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include <relayguard/metrics.hpp>
#include <relayguard/policy.hpp>

#include "server/limiter.hpp"

namespace relayguard::server_detail {

// Accepted sockets live on their worker's io_context; naming its executor type directly avoids
// any_io_executor's type erasure on every operation.
using TcpSocket = boost::asio::ip::tcp::socket::rebind_executor<boost::asio::io_context::executor_type>::other;
using UnixSocket =
    boost::asio::local::stream_protocol::socket::rebind_executor<boost::asio::io_context::executor_type>::other;

// The global connection count (max_connections). The acceptors increment it; a closing
// connection decrements it and, if the acceptors may be paused at the limit, calls on_room.
class ConnectionLimit {
public:
    explicit ConnectionLimit(std::size_t max) noexcept : max_(max) {}

    // set_max - before any connection is counted (the worker threads see it at their creation).
    void set_max(std::size_t max) noexcept { max_ = max; }

    // One counted connection; releases its count when destroyed (also when a coroutine frame
    // is destroyed without having run).
    class Slot {
    public:
        Slot() = default;
        explicit Slot(ConnectionLimit* limit) noexcept : limit_(limit) {}
        Slot(Slot&& other) noexcept : limit_(std::exchange(other.limit_, nullptr)) {}
        Slot& operator=(Slot&& other) noexcept
        {
            if (this != &other) {
                reset();
                limit_ = std::exchange(other.limit_, nullptr);
            }
            return *this;
        }
        ~Slot() { reset(); }
        void reset() noexcept
        {
            if (limit_) std::exchange(limit_, nullptr)->release();
        }

    private:
        ConnectionLimit* limit_ = nullptr;
    };

    // acquire - count one more connection (which may go over the max: see AcceptorSet).
    Slot acquire() noexcept
    {
        open_.fetch_add(1, std::memory_order_relaxed);
        return Slot(this);
    }

    std::size_t open() const noexcept { return open_.load(std::memory_order_relaxed); }
    std::size_t max() const noexcept { return max_; }

    // set_on_room - called (on any thread) when a connection closes at or above the max.
    // Set before any connection exists; cleared (disable_on_room) before it may dangle.
    void set_on_room(std::function<void()> f) { on_room_ = std::move(f); }
    void disable_on_room() noexcept { room_enabled_.store(false, std::memory_order_release); }
    void enable_on_room() noexcept { room_enabled_.store(true, std::memory_order_release); }

private:
    void release() noexcept
    {
        const std::size_t before = open_.fetch_sub(1, std::memory_order_acq_rel);
        if (before >= max_ && room_enabled_.load(std::memory_order_acquire) && on_room_) on_room_();
    }

    std::size_t max_;
    std::atomic<std::size_t> open_{0};
    std::atomic<bool> room_enabled_{false};
    std::function<void()> on_room_;
};

// What a Worker needs from a session to shut it down.
class SessionHandle {
public:
    // on_stop - the server is stopping: close when nothing is half-received or unwritten.
    virtual void on_stop() noexcept = 0;
    // force_close - shutdown_timeout has passed: close now.
    virtual void force_close() noexcept = 0;

protected:
    ~SessionHandle() = default;
};

class Worker {
public:
    // `metrics`: this worker's own block, written on its thread only.
    Worker(unsigned index, std::shared_ptr<const Snapshot> snapshot, LimiterShared& limits, WorkerMetrics& metrics);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    boost::asio::io_context& context() noexcept { return ctx_; }
    unsigned index() const noexcept { return index_; }

    // run - the thread body: until stop() has ended every session.
    void run() noexcept;

    // The rest: on this worker's thread only.
    const Snapshot& snapshot() const noexcept { return *snapshot_; }
    // snapshot_ptr - for work that awaits (the store): keeps the snapshot alive across a reload.
    const std::shared_ptr<const Snapshot>& snapshot_ptr() const noexcept { return snapshot_; }
    Limiter& limiter() noexcept { return limiter_; }
    WorkerMetrics& metrics() noexcept { return metrics_; }
    void set_snapshot(std::shared_ptr<const Snapshot> snapshot) noexcept { snapshot_ = std::move(snapshot); }
    bool stopping() const noexcept { return stopping_; }
    void add(SessionHandle* session) { sessions_.insert(session); }
    void remove(SessionHandle* session) noexcept;

    // stop - tell every session to finish; force-close those left after shutdown_timeout; let
    // run() return once none is left.
    void stop(std::chrono::milliseconds shutdown_timeout);

    // start_session - run a new connection on this worker (call from any thread; it is posted).
    void start_session(TcpSocket socket, ConnectionLimit::Slot slot);
    void start_session(UnixSocket socket, ConnectionLimit::Slot slot);

private:
    const unsigned index_;
    // Concurrency hint 1: one thread runs this context (other threads only post to it).
    boost::asio::io_context ctx_{1};
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::shared_ptr<const Snapshot> snapshot_;
    std::unordered_set<SessionHandle*> sessions_;
    bool stopping_ = false;
    boost::asio::steady_timer force_timer_;
    WorkerMetrics& metrics_;
    Limiter limiter_;

    void drained() noexcept;
};

} // namespace relayguard::server_detail
