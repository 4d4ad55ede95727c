// SPDX-License-Identifier: MIT
// acceptor.cpp - accept loops with a global connection cap and error back-off (see acceptor.hpp).
#include "server/acceptor.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/chrono.h>
#include <spdlog/spdlog.h>

namespace relayguard::server_detail {
namespace {

namespace asio = boost::asio;
using asio::use_awaitable;

// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS...): retrying at once would spin on the
// same error while the connection waits in the backlog anyway.
constexpr std::chrono::milliseconds accept_retry_delay{100};
// After a max_connections episode, warn again only once the count fell this far below the
// max (a tenth, at least one), so that a server hovering at the limit logs one line, not one
// per closed connection.
constexpr std::size_t limit_rearm_divisor = 10;

// log_loop_end - completion of an accept loop: it ends by itself only at close().
void log_loop_end(std::exception_ptr e)
{
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        spdlog::error("accept loop failed: {}", x.what());
    } catch (...) {
        spdlog::error("accept loop failed: unknown exception");
    }
}

} // namespace

AcceptorSet::AcceptorSet(std::vector<Worker*> workers, ConnectionLimit& limit)
    : ctx_(workers.front()->context()),
      workers_(std::move(workers)),
      limit_(limit),
      room_timer_(ctx_, asio::steady_timer::time_point::max())
{
}

void AcceptorSet::adopt(BoundSocket socket)
{
    if (socket.family == AF_UNIX) {
        auto acceptor = std::make_unique<UnixAcceptor>(ctx_, asio::local::stream_protocol(), socket.fd.get());
        socket.fd.release();
        unix_.emplace_back(std::move(acceptor), std::move(socket.name));
    } else {
        const auto protocol = socket.family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
        auto acceptor = std::make_unique<TcpAcceptor>(ctx_, protocol, socket.fd.get());
        socket.fd.release();
        tcp_.emplace_back(std::move(acceptor), std::move(socket.name));
    }
}

void AcceptorSet::start()
{
    // A connection closing at the limit wakes the loops, on their own thread.
    limit_.set_on_room([this] { asio::post(ctx_, [this] { room_timer_.cancel(); }); });
    limit_.enable_on_room();
    for (auto& [acceptor, name] : tcp_) asio::co_spawn(ctx_, accept_loop(*acceptor, name), log_loop_end);
    for (auto& [acceptor, name] : unix_) asio::co_spawn(ctx_, accept_loop(*acceptor, name), log_loop_end);
}

void AcceptorSet::close()
{
    closing_ = true;
    // From here on nobody needs waking, and this object may go away before the last
    // connection does.
    limit_.disable_on_room();
    boost::system::error_code ec;
    for (auto& [acceptor, name] : tcp_) acceptor->close(ec);
    for (auto& [acceptor, name] : unix_) acceptor->close(ec);
    room_timer_.cancel();
}

// accept_loop - accept on one listener for good: wait for room under max_connections, accept
// onto the next worker, start the session there; back off after an error.
template <class Acceptor>
asio::awaitable<void> AcceptorSet::accept_loop(Acceptor& acceptor, std::string name)
{
    asio::steady_timer backoff(ctx_);
    for (;;) {
        // At the limit, do not accept: new clients wait in the kernel's listen backlog.
        while (!closing_ && limit_.open() >= limit_.max()) co_await wait_for_room();
        if (closing_) co_return;
        note_below_limit();

        Worker& target = *workers_[next_worker_];
        next_worker_ = (next_worker_ + 1) % workers_.size();
        auto [ec, socket] = co_await acceptor.async_accept(target.context(), asio::as_tuple(use_awaitable));
        if (closing_) co_return;
        if (ec) {
            spdlog::warn("{}: accept failed: {}; retrying in {}", name, ec.message(), accept_retry_delay);
            backoff.expires_after(accept_retry_delay);
            co_await backoff.async_wait(asio::as_tuple(use_awaitable));
            continue;
        }

        auto slot = limit_.acquire();
        // Another listener's accept may have completed at the same time and taken the last
        // place: hold this connection unserved, as if still in the backlog, until one closes.
        while (!closing_ && limit_.open() > limit_.max()) co_await wait_for_room();
        if (closing_) co_return;
        target.start_session(std::move(socket), std::move(slot));
    }
}

// wait_for_room - sleep until a connection closes (or close()); warn once per limit episode.
asio::awaitable<void> AcceptorSet::wait_for_room()
{
    if (!at_limit_) {
        at_limit_ = true;
        spdlog::warn("max_connections ({}) reached: not accepting new connections until some close",
                     limit_.max());
    }
    co_await room_timer_.async_wait(asio::as_tuple(use_awaitable));
}

// note_below_limit - end a limit episode once the count is clearly below the max again.
void AcceptorSet::note_below_limit()
{
    if (!at_limit_) return;
    const std::size_t max = limit_.max();
    const std::size_t margin = std::max<std::size_t>(1, max / limit_rearm_divisor);
    const std::size_t open = limit_.open();
    if (open + margin > max) return;
    at_limit_ = false;
    spdlog::info("connections below max_connections again ({} of {} open)", open, max);
}

} // namespace relayguard::server_detail
