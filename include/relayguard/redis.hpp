// SPDX-License-Identifier: MIT
// redis.hpp - a pipelined Redis client on Boost.Asio: TCP, UNIX socket or TLS.
//
// Asio owns the socket (and TLS through asio::ssl / OpenSSL); hiredis is only the RESP reader
// (redisReader; commands are encoded by our own writer) and never appears in this header.
// One Client per worker thread: every member must be called on the thread running the
// io_context of the executor it was made with (no locks; share nothing). Many coroutines may
// have commands in flight at once: they are written back to back on one connection and their
// replies matched in order. Every command has a deadline; a broken connection is re-opened in the
// background with backoff, and while it is down commands fail at once (errc::not_connected)
// instead of waiting, so that no SMTP client ever waits on Redis.
// SECURITY: replies are bounded (reader buffer and element limits below).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <relayguard/redis_config.hpp>

namespace relayguard::redis {

// Most elements in one array reply, and the deepest nesting, accepted from the server; a reply
// past them is a protocol error that closes the connection.
inline constexpr std::size_t max_reply_elements = 1u << 20;

struct Reply {
    enum class Type : unsigned char { string, status, error, integer, nil, array };
    Type type = Type::nil;
    long long integer = 0;
    std::string str;             // string, status, error
    std::vector<Reply> elements; // array

    bool is_error() const noexcept { return type == Type::error; }
};

enum class errc {
    not_connected = 1, // connection down (reconnecting); the command was not sent
    timeout,           // no reply within command_timeout
    connection_lost,   // the connection broke with the command in flight
    protocol_error,    // the server sent something that is not RESP (or past the limits)
    server_error,      // an error reply where the caller needed a value (see Client::eval)
    shutting_down,     // close() was called
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

// A Lua script: its body and SHA1 (computed once, OpenSSL).
class Script {
public:
    explicit Script(std::string body);
    const std::string& body() const noexcept { return body_; }
    const std::string& sha1() const noexcept { return sha1_; }

private:
    std::string body_;
    std::string sha1_;
};

class Client {
public:
    Client(boost::asio::any_io_executor executor, ClientConfig config);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // start - begin connecting (in the background). Commands before the first connection is up
    // fail with not_connected.
    void start();

    // command - send one command, wait for its reply. An error *reply* ("-ERR ...") is a
    // successful result of type error; the error_code is for transport failures (errc above).
    boost::asio::awaitable<boost::system::result<Reply, std::error_code>>
    command(std::vector<std::string_view> args);

    // eval - EVALSHA the script; on NOSCRIPT (after a Redis restart or SCRIPT FLUSH) send it
    // with EVAL once, which also caches it again. Error replies from the script come back as
    // errc::server_error with the text logged by the caller from `error_text` (if given).
    boost::asio::awaitable<boost::system::result<Reply, std::error_code>>
    eval(const Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args,
         std::string* error_text = nullptr);

    // connected - the connection is up (authenticated and selected).
    bool connected() const noexcept;

    // close - stop reconnecting, fail every pending command with shutting_down, close.
    void close();

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

} // namespace relayguard::redis

template <>
struct std::is_error_code_enum<relayguard::redis::errc> : std::true_type {};
