// SPDX-License-Identifier: MIT
// http_server.cpp - MetricsHttpServer: /metrics and /healthz over HTTP/1.1 (Boost.Beast).
//
// One thread, one io_context, one coroutine per connection: read one request (bounded in size
// and time), answer it, close. Nothing here touches the workers: a scrape reads their atomics.
// SECURITY: peers are untrusted; at most max_http_connections at once, each request at most
// max_http_request_bytes (headers, and again a body) and http_read_timeout; GET only.
#include <relayguard/metrics.hpp>

#include <csignal>
#include <exception>
#include <pthread.h>
#include <stdexcept>
#include <string_view>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace relayguard {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
using asio::use_awaitable;

// Prometheus text exposition format, version 0.0.4 (what every Prometheus scrapes).
constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view text_content_type = "text/plain; charset=utf-8";
// After a failed accept (EMFILE, ENFILE...), wait this long before the next: an immediate retry
// would spin on the same error.
constexpr std::chrono::milliseconds accept_retry_delay{100};

// Signals the daemon handles on its main thread (as the Server's workers, this thread blocks them).
constexpr int process_signals[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM, SIGPIPE};

// endpoint_name - as Endpoint::text is written, with the port actually bound.
std::string endpoint_name(const Endpoint& endpoint, std::uint16_t port)
{
    if (endpoint.host.find(':') != std::string::npos) return fmt::format("inet:[{}]:{}", endpoint.host, port);
    return fmt::format("inet:{}:{}", endpoint.host, port);
}

// path_of - the target without its query string.
std::string_view path_of(std::string_view target)
{
    return target.substr(0, target.find('?'));
}

} // namespace

struct MetricsHttpServer::Impl {
    std::shared_ptr<const Metrics> metrics;
    Endpoint endpoint;
    std::uint16_t port = 0;
    bool started = false;
    std::size_t active = 0; // connections being served; on the thread only
    std::thread thread;
    // Last member: destroying it destroys the coroutine frames still in it, which use the
    // members above.
    std::unique_ptr<asio::io_context> ctx = std::make_unique<asio::io_context>(1);
    std::unique_ptr<tcp::acceptor> acceptor;

    awaitable<void> accept_loop();
    awaitable<void> serve(tcp::socket socket);
    http::response<http::string_body> respond(const http::request<http::string_body>& request) const;
};

// accept_loop - hand each connection its own coroutine, up to max_http_connections at once.
awaitable<void> MetricsHttpServer::Impl::accept_loop()
{
    asio::steady_timer retry(*ctx);
    for (;;) {
        auto [ec, socket] = co_await acceptor->async_accept(asio::as_tuple(use_awaitable));
        if (!acceptor->is_open() || ec == asio::error::operation_aborted) co_return;
        if (ec) {
            spdlog::warn("metrics endpoint {}: accept failed: {}", endpoint_name(endpoint, port), ec.message());
            retry.expires_after(accept_retry_delay);
            co_await retry.async_wait(asio::as_tuple(use_awaitable));
            continue;
        }
        if (active >= max_http_connections) {
            // A scraper needs one connection: past the cap, the extra ones are dropped at once.
            boost::system::error_code ignored;
            socket.close(ignored);
            continue;
        }
        asio::co_spawn(*ctx, serve(std::move(socket)), asio::detached);
    }
}

// serve - one request, one response, close (Connection: close).
awaitable<void> MetricsHttpServer::Impl::serve(tcp::socket socket)
{
    ++active;
    struct Release {
        std::size_t& n;
        ~Release() { --n; }
    } release{active};

    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer(max_http_request_bytes);
    // A body is read (so that a POST gets its 405, not a reset) and ignored.
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_http_request_bytes);
    parser.body_limit(max_http_request_bytes);

    stream.expires_after(http_read_timeout);
    auto [read_error, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(use_awaitable));
    (void)n;
    http::response<http::string_body> response;
    if (!read_error) {
        response = respond(parser.get());
    } else {
        // Timeouts, resets and a close before a whole request get nothing: nobody listens.
        const bool malformed = read_error.category() == http::make_error_code(http::error::bad_target).category() &&
                               read_error != http::error::end_of_stream && read_error != http::error::partial_message;
        if (!malformed) co_return;
        const bool too_large = read_error == http::error::header_limit || read_error == http::error::buffer_overflow ||
                               read_error == http::error::body_limit;
        response.result(too_large ? http::status::payload_too_large : http::status::bad_request);
        response.set(http::field::content_type, text_content_type);
        response.body() = too_large ? "request too large\n" : "bad request\n";
    }
    response.set(http::field::server, "relayguard");
    response.keep_alive(false);
    response.prepare_payload();
    stream.expires_after(http_read_timeout);
    co_await http::async_write(stream, response, asio::as_tuple(use_awaitable));
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.socket().close(ignored);
}

// respond - the response to a well-formed request.
http::response<http::string_body>
MetricsHttpServer::Impl::respond(const http::request<http::string_body>& request) const
{
    http::response<http::string_body> response;
    response.version(request.version());
    response.set(http::field::content_type, text_content_type);
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = path_of(target);
    const bool known = path == "/metrics" || path == "/healthz";
    if (!known) {
        response.result(http::status::not_found);
        response.body() = "not found\n";
        return response;
    }
    if (request.method() != http::verb::get) {
        // RFC 9110 section 15.5.6: a 405 lists the methods the resource has.
        response.result(http::status::method_not_allowed);
        response.set(http::field::allow, "GET");
        response.body() = "method not allowed\n";
        return response;
    }
    if (path == "/metrics") {
        response.result(http::status::ok);
        response.set(http::field::content_type, metrics_content_type);
        response.body() = metrics->render(steady_now_us());
        return response;
    }
    // /healthz: requests are answered while the server runs, even with Redis down (on_error
    // decides then), so degraded is still 200; a load balancer that should avoid a degraded
    // host can match the body.
    const Health health = metrics->health();
    if (!health.serving) {
        response.result(http::status::service_unavailable);
        response.body() = "not serving\n";
    } else {
        response.result(http::status::ok);
        response.body() = health.store_degraded ? "degraded: store redis unavailable\n" : "ok\n";
    }
    return response;
}

MetricsHttpServer::MetricsHttpServer(std::shared_ptr<const Metrics> metrics, Endpoint endpoint)
    : impl_(std::make_unique<Impl>())
{
    if (!metrics) throw std::invalid_argument("MetricsHttpServer: null metrics");
    impl_->metrics = std::move(metrics);
    impl_->endpoint = std::move(endpoint);
}

MetricsHttpServer::~MetricsHttpServer()
{
    stop();
}

void MetricsHttpServer::start()
{
    Impl& impl = *impl_;
    if (impl.started) throw std::logic_error("MetricsHttpServer::start() called twice");
    const Endpoint& ep = impl.endpoint;
    if (ep.kind != Endpoint::Kind::inet)
        throw std::runtime_error("metrics endpoint " + ep.text + ": not an inet endpoint");

    auto acceptor = std::make_unique<tcp::acceptor>(*impl.ctx);
    boost::system::error_code ec;
    const auto fail = [&](std::string_view what) {
        throw std::runtime_error(fmt::format("metrics endpoint {}: {}: {}", ep.text, what, ec.message()));
    };
    tcp::endpoint bind_to;
    if (ep.host == "*") {
        // Every address: one dual-stack IPv6 socket, or IPv4 alone where IPv6 is off.
        acceptor->open(tcp::v6(), ec);
        if (!ec) acceptor->set_option(asio::ip::v6_only(false), ec);
        if (ec) {
            acceptor = std::make_unique<tcp::acceptor>(*impl.ctx);
            acceptor->open(tcp::v4(), ec);
            bind_to = tcp::endpoint(tcp::v4(), ep.port);
        } else {
            bind_to = tcp::endpoint(tcp::v6(), ep.port);
        }
    } else {
        const auto address = asio::ip::make_address(ep.host, ec);
        if (ec) fail("address");
        bind_to = tcp::endpoint(address, ep.port);
        acceptor->open(bind_to.protocol(), ec);
    }
    if (ec) fail("socket");
    // A restarted daemon must not wait out the old one's TIME_WAIT connections.
    acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (ec) fail("SO_REUSEADDR");
    acceptor->bind(bind_to, ec);
    if (ec) fail("bind");
    acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) fail("listen");
    impl.port = acceptor->local_endpoint(ec).port();
    if (ec) fail("getsockname");
    impl.acceptor = std::move(acceptor);

    asio::co_spawn(*impl.ctx, impl.accept_loop(), [](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            spdlog::error("metrics endpoint stopped by an internal error: {}", x.what());
        }
    });

    // Threads inherit the signal mask of their creator.
    sigset_t block, previous;
    sigemptyset(&block);
    for (int sig : process_signals) sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, &previous);
    try {
        impl.thread = std::thread([ctx = impl.ctx.get()] {
            pthread_setname_np(pthread_self(), "relayguard-http");
            // A handler that throws is our bug; keep serving the other connections.
            for (;;) {
                try {
                    ctx->run();
                    return;
                } catch (const std::exception& e) {
                    spdlog::critical("metrics endpoint: unhandled exception: {}", e.what());
                }
            }
        });
    } catch (...) {
        pthread_sigmask(SIG_SETMASK, &previous, nullptr);
        throw;
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    impl.started = true;
}

std::string MetricsHttpServer::endpoint() const
{
    return endpoint_name(impl_->endpoint, impl_->port);
}

std::uint16_t MetricsHttpServer::port() const noexcept
{
    return impl_->port;
}

void MetricsHttpServer::stop()
{
    Impl& impl = *impl_;
    if (!impl.started) return;
    impl.started = false;
    impl.ctx->stop();
    if (impl.thread.joinable()) impl.thread.join();
    // Connections still open and the accept loop are coroutine frames in the context: destroying
    // it ends them (and closes their sockets) on this thread, now that the other has ended.
    impl.acceptor.reset();
    impl.ctx.reset();
}

} // namespace relayguard
