// SPDX-License-Identifier: MIT
// redis_sync.hpp - driving the Redis client and stores from a test body: run a coroutine to its
// end, connect a client, send one command (shared by the store and live-store tests).
//
// Header-only: templates, and the test executables that include it link the client already.
// Every wait has a deadline; a test fails with an exception instead of hanging.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/result.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <relayguard/redis.hpp>

namespace relayguard::testing {

// run_sync - run `aw` on `io` until it is done (the Client's own loops keep running).
template <class T>
T run_sync(boost::asio::io_context& io, boost::asio::awaitable<T> aw,
           std::chrono::seconds limit = std::chrono::seconds{10})
{
    std::optional<T> out;
    std::exception_ptr failure;
    bool done = false;
    boost::asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T value) {
        failure = e;
        if (!e) out.emplace(std::move(value));
        done = true;
    });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done && std::chrono::steady_clock::now() < deadline) io.run_one_for(std::chrono::milliseconds{100});
    if (failure) std::rethrow_exception(failure);
    if (!done) throw std::runtime_error("coroutine not done in time");
    return std::move(*out);
}

// connect - a started client on `address`, connected within 5 s (else throws). The default
// command timeout suits a loaded 2-core test machine, not production.
inline std::unique_ptr<redis::Client> connect(boost::asio::io_context& io, const std::string& address,
                                              std::chrono::milliseconds command_timeout = std::chrono::seconds{5})
{
    redis::ClientConfig config;
    config.address = address;
    config.command_timeout = command_timeout;
    auto client = std::make_unique<redis::Client>(io.get_executor(), config);
    client->start();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    while (!client->connected() && std::chrono::steady_clock::now() < deadline)
        io.run_one_for(std::chrono::milliseconds{10});
    if (!client->connected()) throw std::runtime_error("no connection to " + address);
    return client;
}

// send - one command, its reply or error.
inline boost::asio::awaitable<boost::system::result<redis::Reply, std::error_code>> send(redis::Client& client,
                                                                                        std::vector<std::string> args)
{
    std::vector<std::string_view> argv(args.begin(), args.end());
    co_return co_await client.command(std::move(argv));
}

// redis_cmd - one command that must get a non-error reply.
inline redis::Reply redis_cmd(boost::asio::io_context& io, redis::Client& client, std::vector<std::string> args)
{
    const std::string text = fmt::format("{}", fmt::join(args, " "));
    auto r = run_sync(io, send(client, std::move(args)));
    if (!r) throw std::runtime_error(text + ": " + r.error().message());
    if (r->is_error()) throw std::runtime_error(text + ": " + r->str);
    return std::move(*r);
}

} // namespace relayguard::testing
