// SPDX-License-Identifier: MIT
// client.cpp - relayguard::redis::Client: one pipelined connection with deadlines and reconnect.
//
// Owns the connection (Stream), the RESP codec, the queue of commands awaiting replies, one
// deadline timer per connection and the reconnect loop. Not thread-safe: everything runs on the
// Client's executor. Impl is a shared_ptr held by every loop and handler it starts, so the
// Client may be destroyed (it calls close()) while they unwind. SECURITY: replies bounded by
// resp_codec; the password is never logged; TLS verifies the server unless told not to.
#include <relayguard/redis.hpp>

#include <algorithm>
#include <cassert>
#include <deque>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <relayguard/strings.hpp>

#include "redis/resp_codec.hpp"
#include "redis/stream.hpp"

namespace relayguard::redis {

namespace asio = boost::asio;

namespace {

using Clock = std::chrono::steady_clock;
using Handler = asio::any_completion_handler<void(std::error_code, Reply)>;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// A connection whose oldest command is still unanswered this long after it was sent is taken
// as dead: dead_after_timeouts x command_timeout, but never less than dead_after_min, so that
// a short command_timeout does not turn a brief Redis stall (fork for BGSAVE, a slow script)
// into a reconnect storm; the commands themselves still time out after command_timeout.
constexpr int dead_after_timeouts = 4;
constexpr std::chrono::milliseconds dead_after_min{1000};

// Bytes asked of the socket per read: replies are small, but a busy pipeline returns many.
constexpr std::size_t read_chunk_bytes = 16 * 1024;

// Floor for reconnect_min: a zero backoff would spin on a server that refuses at once.
constexpr std::chrono::milliseconds min_backoff{1};

// Most bytes of an error reply from AUTH/SELECT quoted in the log.
constexpr std::size_t max_logged_error = 200;

class ErrorCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "relayguard.redis"; }
    std::string message(int ev) const override
    {
        switch (static_cast<errc>(ev)) {
        case errc::not_connected: return "not connected to redis";
        case errc::timeout: return "redis command timed out";
        case errc::connection_lost: return "redis connection lost";
        case errc::protocol_error: return "redis protocol error";
        case errc::server_error: return "redis error reply";
        case errc::shutting_down: return "redis client shut down";
        }
        return "unknown redis error";
    }
};

struct Endpoint {
    enum class Kind { tcp, unix_socket, tls };
    Kind kind = Kind::tcp;
    std::string host; // tcp, tls
    std::string port; // tcp, tls
    std::string path; // unix_socket
    std::string label; // normalized address, for log lines
};

bool all_digits(std::string_view s)
{
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// parse_endpoint - ClientConfig::address (see redis.hpp); nullopt if malformed.
std::optional<Endpoint> parse_endpoint(std::string_view address)
{
    Endpoint e;
    if (address.starts_with("unix:")) {
        e.kind = Endpoint::Kind::unix_socket;
        e.path = address.substr(5);
        if (e.path.empty()) return std::nullopt;
        e.label = "unix:" + e.path;
        return e;
    }
    std::string_view prefix = "tcp:";
    if (address.starts_with("tls:")) {
        e.kind = Endpoint::Kind::tls;
        prefix = "tls:";
        address.remove_prefix(4);
    } else if (address.starts_with("tcp:")) {
        address.remove_prefix(4);
    }
    std::string_view host;
    std::string_view port;
    if (address.starts_with('[')) {
        const auto end = address.find(']');
        if (end == std::string_view::npos || address.substr(end + 1, 1) != ":") return std::nullopt;
        host = address.substr(1, end - 1);
        port = address.substr(end + 2);
    } else {
        const auto colon = address.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = address.substr(0, colon);
        port = address.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return std::nullopt; // IPv6 needs brackets
    }
    if (host.empty() || !all_digits(port) || port.size() > 5 || std::stoul(std::string(port)) == 0
        || std::stoul(std::string(port)) > 65535)
        return std::nullopt;
    e.host = host;
    e.port = port;
    const bool v6 = e.host.find(':') != std::string::npos;
    e.label = fmt::format("{}{}{}{}:{}", prefix, v6 ? "[" : "", e.host, v6 ? "]" : "", e.port);
    return e;
}

bool is_ip_literal(const std::string& name)
{
    boost::system::error_code ec;
    asio::ip::make_address(name, ec);
    return !ec;
}

// describe - a socket error as it should read in "connection lost: ..." log lines.
std::string describe(const boost::system::error_code& ec)
{
    if (ec == asio::error::eof) return "closed by the server";
    if (ec == asio::ssl::error::stream_truncated) return "closed by the server (TLS stream truncated)";
    return ec.message();
}

// A command waiting for its reply. Its handler is empty once it has timed out ("abandoned"):
// the entry stays so that replies keep matching commands in order, and its reply is dropped.
struct Pending {
    Handler handler;
    Clock::time_point sent;
};

struct Connection {
    explicit Connection(const asio::any_io_executor& ex) : timer(ex), rbuf(read_chunk_bytes) {}

    // abort_io - make every outstanding operation on this connection finish (with an error).
    void abort_io() noexcept
    {
        if (resolver) resolver->cancel();
        stream.close();
    }

    detail::Stream stream;
    std::shared_ptr<asio::ssl::context> tls;         // outlives the TLS stream that uses it
    std::optional<asio::ip::tcp::resolver> resolver; // while resolving, so it can be cancelled
    asio::steady_timer timer;   // connect watchdog while opening, then the command deadlines
    bool timer_armed = false;   // a deadline wait is outstanding for timer.expiry()
    detail::ReplyReader reader;
    std::vector<char> rbuf;
    std::deque<Pending> pending;
    std::size_t abandoned = 0;  // pending[0, abandoned) have timed out (they are always oldest)
    std::string wbuf;           // encoded commands waiting for the write in progress to finish
    std::string wbuf_sending;   // the bytes of the write in progress
    bool writing = false;
    bool connecting = false;
    bool timed_out = false;     // the connect watchdog fired
    bool closed = false;
    std::string stage = "connect"; // what opening was doing, for "timed out" messages
    std::string close_reason;
};

} // namespace

const std::error_category& error_category() noexcept
{
    static const ErrorCategory category;
    return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

Script::Script(std::string body) : body_(std::move(body))
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(body_.data(), body_.size(), md, &len, EVP_sha1(), nullptr) != 1)
        throw std::runtime_error("redis script: SHA1 failed");
    static constexpr char hex[] = "0123456789abcdef";
    sha1_.reserve(2 * len);
    for (unsigned i = 0; i < len; ++i) {
        sha1_.push_back(hex[md[i] >> 4]);
        sha1_.push_back(hex[md[i] & 0xf]);
    }
}

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
    Impl(asio::any_io_executor ex, ClientConfig cfg, Endpoint ep)
        : executor(std::move(ex)), config(std::move(cfg)), endpoint(std::move(ep)), backoff_timer(executor)
    {
        config.reconnect_min = std::max(config.reconnect_min, min_backoff);
        config.reconnect_max = std::max(config.reconnect_max, config.reconnect_min);
        dead_after = std::max(std::chrono::milliseconds(config.command_timeout * dead_after_timeouts), dead_after_min);
    }

    void start();
    void close();
    void submit(Handler handler, std::span<const std::string_view> args);
    void complete_later(Handler handler, std::error_code ec);
    void arm_timer(const std::shared_ptr<Connection>& c);
    void on_timer(const std::shared_ptr<Connection>& c);
    void start_write(const std::shared_ptr<Connection>& c);
    void fail(std::shared_ptr<Connection> c, errc code, std::string reason);
    void note_connect_failure(const std::string& reason, std::chrono::milliseconds retry_in);
    std::string make_tls_context(Connection& c) const;

    static asio::awaitable<void> run(std::shared_ptr<Impl> self);
    asio::awaitable<std::string> open(std::shared_ptr<Connection> c);
    asio::awaitable<std::string> open_transport(Connection& c);
    asio::awaitable<std::string> handshake(Connection& c);
    asio::awaitable<void> read_loop(std::shared_ptr<Connection> c);

    asio::any_io_executor executor;
    ClientConfig config;
    Endpoint endpoint;
    std::chrono::milliseconds dead_after{};
    asio::steady_timer backoff_timer;
    std::shared_ptr<Connection> up;      // the usable connection; null while down
    std::shared_ptr<Connection> attempt; // the connection being opened, so close() can abort it
    bool started = false;
    bool stopping = false;
    std::string last_failure; // connect failure last logged; the same one again goes to debug
};

// start - spawn the connection loop; it holds the Impl until it ends.
void Client::Impl::start()
{
    if (started || stopping) return;
    started = true;
    asio::co_spawn(executor, run(shared_from_this()), [label = endpoint.label](std::exception_ptr e) {
        if (!e) return;
        // Only allocation failure should get here; the client stays down rather than crash.
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            spdlog::critical("redis {}: connection loop failed: {}", label, ex.what());
        } catch (...) {
            spdlog::critical("redis {}: connection loop failed", label);
        }
    });
}

// run - connect, serve until the connection breaks, back off, again; until close().
asio::awaitable<void> Client::Impl::run(std::shared_ptr<Impl> self)
{
    auto backoff = self->config.reconnect_min;
    while (!self->stopping) {
        auto c = std::make_shared<Connection>(self->executor);
        self->attempt = c;
        std::string error = co_await self->open(c);
        self->attempt.reset();
        if (self->stopping) {
            self->fail(c, errc::shutting_down, "client closed");
            break;
        }
        if (error.empty()) {
            // Reset only now: the server has answered, so a later loss is not a refusal loop.
            backoff = self->config.reconnect_min;
            self->last_failure.clear();
            self->up = c;
            spdlog::info("redis {}: connected", self->endpoint.label);
            co_await self->read_loop(c);
            if (self->stopping) break;
            spdlog::warn("redis {}: connection lost: {}; reconnecting", self->endpoint.label, c->close_reason);
        } else {
            self->fail(c, errc::not_connected, error);
            self->note_connect_failure(error, backoff);
        }
        // Also after a loss: at most one connection per reconnect_min even if a server accepts,
        // answers and then drops us every time.
        self->backoff_timer.expires_after(backoff);
        co_await self->backoff_timer.async_wait(use_tuple);
        if (!error.empty()) backoff = std::min(backoff * 2, self->config.reconnect_max);
    }
}

// note_connect_failure - warn once per distinct reason, not once per attempt.
void Client::Impl::note_connect_failure(const std::string& reason, std::chrono::milliseconds retry_in)
{
    if (reason != last_failure) {
        spdlog::warn("redis {}: cannot connect: {}; retrying", endpoint.label, reason);
        last_failure = reason;
    } else {
        spdlog::debug("redis {}: cannot connect: {}; retrying in {} ms", endpoint.label, reason, retry_in.count());
    }
}

// open - transport, TLS, AUTH/SELECT (or PING), all within connect_timeout. "" on success.
asio::awaitable<std::string> Client::Impl::open(std::shared_ptr<Connection> c)
{
    c->connecting = true;
    c->timer.expires_after(config.connect_timeout);
    c->timer.async_wait([c](boost::system::error_code ec) {
        // Closing the socket (and cancelling the resolver) is what bounds every step below.
        if (ec || !c->connecting) return;
        c->timed_out = true;
        c->abort_io();
    });
    std::string error = co_await open_transport(*c);
    if (error.empty() && !c->timed_out && !c->closed) error = co_await handshake(*c);
    c->connecting = false;
    c->timer.cancel();
    if (c->timed_out)
        error = fmt::format("timed out after {} ms ({})", config.connect_timeout.count(), c->stage);
    else if (c->closed && error.empty())
        error = "client closed";
    co_return error;
}

// make_tls_context - a client context per connection attempt (so renewed CA, certificate and
// key files are read again at reconnect). "" on success.
std::string Client::Impl::make_tls_context(Connection& c) const
{
    namespace ssl = asio::ssl;
    boost::system::error_code ec;
    try {
        c.tls = std::make_shared<ssl::context>(ssl::context::tls_client);
    } catch (const boost::system::system_error& e) {
        return fmt::format("TLS context: {}", e.what());
    }
    ssl::context& ctx = *c.tls;
    if (SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION) != 1) return "TLS context: cannot require TLS 1.2";
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_compression, ec);
    if (config.tls_verify) {
        ctx.set_verify_mode(ssl::verify_peer, ec);
        if (!config.tls_ca_file.empty()) {
            if (ctx.load_verify_file(config.tls_ca_file, ec); ec)
                return fmt::format("TLS CA file {}: {}", config.tls_ca_file, ec.message());
        } else if (ctx.set_default_verify_paths(ec); ec) {
            return fmt::format("TLS default CA paths: {}", ec.message());
        }
    } else {
        ctx.set_verify_mode(ssl::verify_none, ec);
    }
    if (!config.tls_cert_file.empty()) {
        if (ctx.use_certificate_chain_file(config.tls_cert_file, ec); ec)
            return fmt::format("TLS certificate {}: {}", config.tls_cert_file, ec.message());
        // No key file: the key is in the certificate file (a combined PEM).
        const std::string& key = config.tls_key_file.empty() ? config.tls_cert_file : config.tls_key_file;
        if (ctx.use_private_key_file(key, ssl::context::pem, ec); ec)
            return fmt::format("TLS key {}: {}", key, ec.message());
    }
    return {};
}

// open_transport - resolve (each time: the name may move), connect, TLS handshake.
asio::awaitable<std::string> Client::Impl::open_transport(Connection& c)
{
    using tcp = asio::ip::tcp;
    if (endpoint.kind == Endpoint::Kind::unix_socket) {
        auto& sock = c.stream.emplace_unix(executor);
        c.stage = "connect";
        auto [ec] = co_await sock.async_connect(asio::local::stream_protocol::endpoint(endpoint.path), use_tuple);
        co_return ec ? ec.message() : std::string();
    }

    c.stage = "resolve";
    c.resolver.emplace(executor);
    auto [rec, results] = co_await c.resolver->async_resolve(endpoint.host, endpoint.port, use_tuple);
    c.resolver.reset();
    if (rec) co_return fmt::format("resolve {}: {}", endpoint.host, rec.message());
    if (c.timed_out || c.closed) co_return "aborted";

    tcp::socket* sock = nullptr;
    detail::Stream::TlsStream* tls = nullptr;
    if (endpoint.kind == Endpoint::Kind::tls) {
        if (auto error = make_tls_context(c); !error.empty()) co_return error;
        tls = &c.stream.emplace_tls(executor, *c.tls);
        sock = &tls->next_layer();
    } else {
        sock = &c.stream.emplace_tcp(executor);
    }

    // One endpoint at a time rather than asio::async_connect(range): after the watchdog has
    // closed the socket, the range version would go on to the next address with a new one.
    c.stage = "connect";
    boost::system::error_code cec = asio::error::host_not_found;
    for (const auto& entry : results) {
        if (c.timed_out || c.closed) co_return "aborted";
        boost::system::error_code ignored;
        sock->close(ignored);
        if (sock->open(entry.endpoint().protocol(), cec); cec) continue;
        std::tie(cec) = co_await sock->async_connect(entry.endpoint(), use_tuple);
        if (!cec) break;
    }
    if (cec) co_return cec.message();
    if (c.timed_out || c.closed) co_return "aborted";
    boost::system::error_code ignored;
    // Commands are written as soon as they are queued; Nagle would hold back the next batch.
    sock->set_option(tcp::no_delay(true), ignored);
    sock->set_option(asio::socket_base::keep_alive(true), ignored);

    if (tls != nullptr) {
        const std::string& name = config.tls_server_name.empty() ? endpoint.host : config.tls_server_name;
        // RFC 6066 3: SNI carries host names only, never address literals.
        if (!is_ip_literal(name)) SSL_set_tlsext_host_name(tls->native_handle(), name.c_str());
        if (config.tls_verify) tls->set_verify_callback(asio::ssl::host_name_verification(name), ignored);
        c.stage = "TLS handshake";
        auto [hec] = co_await tls->async_handshake(asio::ssl::stream_base::client, use_tuple);
        if (hec) co_return fmt::format("TLS handshake: {}", hec.message());
    }
    co_return std::string();
}

// handshake - AUTH and SELECT, pipelined; PING when neither is needed, so that "connected"
// always means the server has answered (a TLS 1.3 server refusing our certificate, or Redis
// at maxclients, only tells us after accepting). "" on success.
asio::awaitable<std::string> Client::Impl::handshake(Connection& c)
{
    std::string out;
    std::vector<std::string> steps;
    const std::string db = std::to_string(config.database);
    if (!config.password.empty()) {
        if (config.username.empty()) {
            std::string_view args[] = {"AUTH", config.password};
            detail::append_command(out, args);
        } else {
            std::string_view args[] = {"AUTH", config.username, config.password};
            detail::append_command(out, args);
        }
        steps.emplace_back("AUTH");
    }
    if (config.database != 0) {
        std::string_view args[] = {"SELECT", db};
        detail::append_command(out, args);
        steps.push_back("SELECT " + db);
    }
    if (steps.empty()) {
        std::string_view args[] = {"PING"};
        detail::append_command(out, args);
        steps.emplace_back("PING");
    }
    c.stage = steps.front();
    auto [wec, written] = co_await c.stream.async_write(asio::buffer(out), use_tuple);
    if (wec) co_return fmt::format("{}: {}", steps.front(), describe(wec));

    for (std::size_t answered = 0; answered < steps.size();) {
        Reply reply;
        switch (c.reader.next(reply)) {
        case detail::ReplyReader::Status::reply:
            if (reply.is_error())
                co_return fmt::format("{} failed: {}", steps[answered], sanitize(reply.str, max_logged_error));
            ++answered;
            continue;
        case detail::ReplyReader::Status::error:
            co_return fmt::format("{}: protocol error: {}", steps[answered], sanitize(c.reader.error()));
        case detail::ReplyReader::Status::need_more:
            break;
        }
        auto [rec, n] = co_await c.stream.async_read_some(asio::buffer(c.rbuf), use_tuple);
        if (rec) co_return fmt::format("{}: {}", steps[answered], describe(rec));
        c.reader.feed(c.rbuf.data(), n);
    }
    co_return std::string();
}

// read_loop - decode replies and hand each to the oldest pending command; returns once the
// connection is closed (by us, or by an error found here).
asio::awaitable<void> Client::Impl::read_loop(std::shared_ptr<Connection> c)
{
    Reply reply;
    for (;;) {
        auto [ec, n] = co_await c->stream.async_read_some(asio::buffer(c->rbuf), use_tuple);
        if (c->closed) co_return;
        if (ec) {
            fail(c, errc::connection_lost, describe(ec));
            co_return;
        }
        c->reader.feed(c->rbuf.data(), n);
        for (;;) {
            const auto status = c->reader.next(reply);
            if (status == detail::ReplyReader::Status::need_more) break;
            if (status == detail::ReplyReader::Status::error) {
                // The reader's text may quote the server's bytes.
                fail(c, errc::protocol_error, "protocol error: " + sanitize(c->reader.error()));
                co_return;
            }
            if (c->pending.empty()) {
                fail(c, errc::protocol_error, "protocol error: a reply to no command");
                co_return;
            }
            Pending p = std::move(c->pending.front());
            c->pending.pop_front();
            if (c->abandoned > 0) { // its caller has had errc::timeout already
                --c->abandoned;
                continue;
            }
            // dispatch: the waiting coroutine usually resumes right here, without a queue hop.
            // It may queue more commands or even close(), hence the check after it.
            asio::dispatch(asio::append(std::move(p.handler), std::error_code{}, std::move(reply)));
            reply = Reply{};
            if (c->closed) co_return;
        }
    }
}

// fail - close `c` for `reason`; every command still waiting gets `code`. Idempotent.
void Client::Impl::fail(std::shared_ptr<Connection> c, errc code, std::string reason)
{
    if (c->closed) return;
    c->closed = true;
    c->connecting = false;
    c->close_reason = std::move(reason);
    c->abort_io();
    c->timer.cancel();
    if (up == c) up.reset();
    auto pending = std::move(c->pending);
    c->pending.clear();
    c->abandoned = 0;
    c->wbuf.clear();
    for (auto& p : pending)
        if (p.handler) complete_later(std::move(p.handler), make_error_code(code));
}

// complete_later - fail a command outside of the current call stack (never inside command()).
void Client::Impl::complete_later(Handler handler, std::error_code ec)
{
    asio::post(executor, [h = std::move(handler), ec]() mutable {
        asio::dispatch(asio::append(std::move(h), ec, Reply{}));
    });
}

// submit - queue one command on the live connection, or fail it at once.
void Client::Impl::submit(Handler handler, std::span<const std::string_view> args)
{
    if (stopping) return complete_later(std::move(handler), make_error_code(errc::shutting_down));
    if (!up) return complete_later(std::move(handler), make_error_code(errc::not_connected));
    if (args.empty()) return complete_later(std::move(handler), std::make_error_code(std::errc::invalid_argument));
    const auto c = up;
    detail::append_command(c->wbuf, args);
    c->pending.push_back(Pending{std::move(handler), Clock::now()});
    arm_timer(c);
    if (!c->writing) start_write(c);
}

// start_write - send everything queued in one write; what is queued meanwhile goes next.
void Client::Impl::start_write(const std::shared_ptr<Connection>& c)
{
    c->writing = true;
    c->wbuf_sending.clear();
    std::swap(c->wbuf, c->wbuf_sending);
    c->stream.async_write(asio::buffer(c->wbuf_sending),
                          [self = shared_from_this(), c](boost::system::error_code ec, std::size_t) {
                              c->writing = false;
                              if (c->closed) return;
                              if (ec) return self->fail(c, errc::connection_lost, "write: " + describe(ec));
                              if (!c->wbuf.empty()) self->start_write(c);
                          });
}

// arm_timer - make sure the timer fires by the next deadline: the oldest live command's, or
// the moment the oldest abandoned one makes the connection dead. Deadlines only grow along
// the queue (one command_timeout, monotonic clock), so only these two matter.
void Client::Impl::arm_timer(const std::shared_ptr<Connection>& c)
{
    if (c->closed || c->pending.empty()) return;
    auto next = Clock::time_point::max();
    if (c->abandoned < c->pending.size()) next = c->pending[c->abandoned].sent + config.command_timeout;
    if (c->abandoned > 0) next = std::min(next, c->pending.front().sent + dead_after);
    if (c->timer_armed && c->timer.expiry() <= next) return; // an early wake just re-arms
    c->timer.expires_at(next); // cancels the wait for a later time, if any
    c->timer_armed = true;
    c->timer.async_wait([self = shared_from_this(), c](boost::system::error_code ec) {
        if (ec == asio::error::operation_aborted) return; // re-armed earlier, or closed
        c->timer_armed = false;
        self->on_timer(c);
    });
}

// on_timer - time out the overdue commands; declare the connection dead if one is too old.
void Client::Impl::on_timer(const std::shared_ptr<Connection>& c)
{
    if (c->closed) return;
    const auto now = Clock::now();
    while (c->abandoned < c->pending.size() && c->pending[c->abandoned].sent + config.command_timeout <= now) {
        complete_later(std::move(c->pending[c->abandoned].handler), make_error_code(errc::timeout));
        ++c->abandoned;
    }
    if (c->abandoned > 0 && c->pending.front().sent + dead_after <= now) {
        fail(c, errc::connection_lost, fmt::format("no reply for {} ms", dead_after.count()));
        return;
    }
    arm_timer(c);
}

// close - see redis.hpp. Loops notice `stopping` and end; nothing is left to reconnect.
void Client::Impl::close()
{
    if (stopping) return;
    stopping = true;
    backoff_timer.cancel();
    if (auto c = attempt) {
        c->closed = true;
        c->abort_io();
        c->timer.cancel();
    }
    if (auto c = up) fail(c, errc::shutting_down, "client closed");
    if (started) spdlog::info("redis {}: closed", endpoint.label);
}

Client::Client(asio::any_io_executor executor, ClientConfig config)
{
    auto endpoint = parse_endpoint(config.address);
    // Startup only: the configuration is checked before any Client is made.
    if (!endpoint) throw std::invalid_argument("invalid redis address: " + config.address);
    impl_ = std::make_shared<Impl>(std::move(executor), std::move(config), std::move(*endpoint));
}

Client::~Client()
{
    if (impl_) impl_->close();
}

void Client::start() { impl_->start(); }

bool Client::connected() const noexcept { return impl_->up != nullptr; }

void Client::close() { impl_->close(); }

asio::awaitable<boost::system::result<Reply, std::error_code>> Client::command(std::vector<std::string_view> args)
{
    // The Impl outlives this call even if the Client is destroyed while we wait.
    std::shared_ptr<Impl> impl = impl_;
    auto [ec, reply] = co_await asio::async_initiate<decltype(use_tuple), void(std::error_code, Reply)>(
        [&impl, &args](auto handler) { impl->submit(Handler(std::move(handler)), args); }, use_tuple);
    if (ec) co_return boost::system::result<Reply, std::error_code>(boost::system::in_place_error, ec);
    co_return std::move(reply);
}

asio::awaitable<boost::system::result<Reply, std::error_code>>
Client::eval(const Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args,
             std::string* error_text)
{
    const std::string nkeys = std::to_string(keys.size());
    std::vector<std::string_view> argv;
    argv.reserve(3 + keys.size() + args.size());
    argv.insert(argv.end(), {"EVALSHA", script.sha1(), nkeys});
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());

    auto r = co_await command(argv);
    // Redis: EVALSHA of a script not in its cache (after a restart or SCRIPT FLUSH) is answered
    // "-NOSCRIPT No matching script."; EVAL runs it and caches it again.
    if (r && r->is_error() && r->str.starts_with("NOSCRIPT")) {
        argv[0] = "EVAL";
        argv[1] = script.body();
        r = co_await command(argv);
    }
    if (!r) co_return r;
    if (r->is_error()) {
        if (error_text != nullptr) *error_text = std::move(r->str);
        co_return boost::system::result<Reply, std::error_code>(boost::system::in_place_error,
                                                                make_error_code(errc::server_error));
    }
    co_return r;
}

} // namespace relayguard::redis
