// SPDX-License-Identifier: MIT
// worker.cpp - a worker's event loop and its part of a shutdown (see worker.hpp).
#include "server/worker.hpp"

#include <exception>
#include <vector>

#include <spdlog/spdlog.h>

namespace relayguard::server_detail {

Worker::Worker(unsigned index, std::shared_ptr<const Snapshot> snapshot, LimiterShared& limits,
               WorkerMetrics& metrics)
    : index_(index),
      work_(boost::asio::make_work_guard(ctx_)),
      snapshot_(std::move(snapshot)),
      force_timer_(ctx_),
      metrics_(metrics),
      limiter_(ctx_, limits, metrics)
{
    limiter_.start();
}

void Worker::run() noexcept
{
    // A handler that throws is our bug; sessions catch their own exceptions, so this is a
    // last resort that keeps every other connection of this worker alive.
    for (;;) {
        try {
            ctx_.run();
            return;
        } catch (const std::exception& e) {
            spdlog::critical("worker {}: unhandled exception: {}", index_, e.what());
        } catch (...) {
            spdlog::critical("worker {}: unhandled exception", index_);
        }
    }
}

void Worker::remove(SessionHandle* session) noexcept
{
    sessions_.erase(session);
    if (stopping_ && sessions_.empty()) drained();
}

// drained - stopping and the last session is gone: end what else keeps the loop running.
void Worker::drained() noexcept
{
    force_timer_.cancel();
    limiter_.close();
}

void Worker::stop(std::chrono::milliseconds shutdown_timeout)
{
    if (stopping_) return;
    stopping_ = true;
    // Without the guard, run() returns once the last session and timer are gone.
    work_.reset();
    if (sessions_.empty()) {
        drained();
        return;
    }

    // Copies: a session may leave the set while we walk it.
    for (auto* s : std::vector<SessionHandle*>(sessions_.begin(), sessions_.end())) s->on_stop();
    force_timer_.expires_after(shutdown_timeout);
    force_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec) return; // every session ended in time
        for (auto* s : std::vector<SessionHandle*>(sessions_.begin(), sessions_.end())) s->force_close();
    });
}

} // namespace relayguard::server_detail
