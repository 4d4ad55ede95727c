// SPDX-License-Identifier: MIT
// acceptor.hpp - the accept loops: new connections to the workers, round-robin (private).
//
// Every listener's accept loop runs on one io_context (worker 0's). Each connection is
// accepted straight onto the io_context of the next worker and started there. At
// max_connections the loops stop accepting (clients wait in the kernel's listen backlog) and
// resume when a connection closes. Not thread-safe: after start(), only on that io_context.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include "server/listener.hpp"
#include "server/worker.hpp"

namespace relayguard::server_detail {

class AcceptorSet {
public:
    // The loops run on workers.front()'s io_context; `limit` must outlive every connection.
    AcceptorSet(std::vector<Worker*> workers, ConnectionLimit& limit);
    AcceptorSet(const AcceptorSet&) = delete;
    AcceptorSet& operator=(const AcceptorSet&) = delete;

    // adopt - take over a bound, listening socket (before start()).
    void adopt(BoundSocket socket);

    // start - spawn the accept loops (before the worker threads run, or on the loops' thread).
    void start();

    // close - stop accepting for good: close the listeners, end the loops. On the loops' thread.
    void close();

private:
    using TcpAcceptor =
        boost::asio::ip::tcp::acceptor::rebind_executor<boost::asio::io_context::executor_type>::other;
    using UnixAcceptor = boost::asio::local::stream_protocol::acceptor::rebind_executor<
        boost::asio::io_context::executor_type>::other;

    template <class Acceptor>
    boost::asio::awaitable<void> accept_loop(Acceptor& acceptor, std::string name);
    boost::asio::awaitable<void> wait_for_room();
    void note_below_limit();

    boost::asio::io_context& ctx_;
    std::vector<Worker*> workers_;
    std::size_t next_worker_ = 0;
    ConnectionLimit& limit_;
    std::vector<std::pair<std::unique_ptr<TcpAcceptor>, std::string>> tcp_;
    std::vector<std::pair<std::unique_ptr<UnixAcceptor>, std::string>> unix_;
    // Never expires: the loops wait on it while at the limit, and cancel() wakes them all.
    boost::asio::steady_timer room_timer_;
    bool closing_ = false;
    bool at_limit_ = false; // a limit episode is going on (warned once)
};

} // namespace relayguard::server_detail
