// SPDX-License-Identifier: MIT
// stream.hpp - one byte stream to Redis: TCP socket, UNIX socket or TLS over TCP (asio::ssl).
//
// A closed sum type instead of a virtual interface: the three cases are known, and the
// templated async calls keep Asio's handler allocation and completion-token machinery intact.
// Not thread-safe; one read and one write may be outstanding at once (as Asio allows).
#pragma once

#include <variant>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

namespace relayguard::redis::detail {

class Stream {
public:
    using TcpSocket = boost::asio::ip::tcp::socket;
    using UnixSocket = boost::asio::local::stream_protocol::socket;
    using TlsStream = boost::asio::ssl::stream<TcpSocket>;

    // emplace_* - make the stream of that kind (unconnected), replacing any previous one.
    TcpSocket& emplace_tcp(const boost::asio::any_io_executor& ex) { return v_.emplace<TcpSocket>(ex); }
    UnixSocket& emplace_unix(const boost::asio::any_io_executor& ex) { return v_.emplace<UnixSocket>(ex); }
    TlsStream& emplace_tls(const boost::asio::any_io_executor& ex, boost::asio::ssl::context& ctx)
    {
        return v_.emplace<TlsStream>(ex, ctx);
    }

    // async_read_some / async_write - as Asio's; the stream must have been emplaced.
    template <typename Token>
    auto async_read_some(boost::asio::mutable_buffer buf, Token&& token)
    {
        if (auto* s = std::get_if<TlsStream>(&v_)) return s->async_read_some(buf, std::forward<Token>(token));
        if (auto* s = std::get_if<UnixSocket>(&v_)) return s->async_read_some(buf, std::forward<Token>(token));
        return std::get<TcpSocket>(v_).async_read_some(buf, std::forward<Token>(token));
    }

    template <typename Token>
    auto async_write(boost::asio::const_buffer buf, Token&& token)
    {
        if (auto* s = std::get_if<TlsStream>(&v_)) return boost::asio::async_write(*s, buf, std::forward<Token>(token));
        if (auto* s = std::get_if<UnixSocket>(&v_)) return boost::asio::async_write(*s, buf, std::forward<Token>(token));
        return boost::asio::async_write(std::get<TcpSocket>(v_), buf, std::forward<Token>(token));
    }

    // close - close the socket underneath; outstanding operations finish with operation_aborted.
    // No TLS close_notify: the peer is Redis, which needs none, and a hung peer must not delay us.
    void close() noexcept
    {
        boost::system::error_code ignored;
        if (auto* s = std::get_if<TlsStream>(&v_)) s->lowest_layer().close(ignored);
        else if (auto* s = std::get_if<UnixSocket>(&v_)) s->close(ignored);
        else if (auto* s = std::get_if<TcpSocket>(&v_)) s->close(ignored);
    }

private:
    std::variant<std::monostate, TcpSocket, UnixSocket, TlsStream> v_;
};

} // namespace relayguard::redis::detail
