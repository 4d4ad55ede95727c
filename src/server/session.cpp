// SPDX-License-Identifier: MIT
// session.cpp - one connection: read requests, decide, answer in order; deadlines; shutdown.
//
// One coroutine per connection holds the parser, the request and the output buffer in its
// frame; a watchdog coroutine beside it closes the socket when the session's deadline passes.
// Runs on its worker's thread only. SECURITY: input untrusted, bounded by ParserLimits; any
// parse error closes the connection without a reply (SMTPD_POLICY_README).
#include "server/worker.hpp"

#include <algorithm>
#include <array>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <relayguard/action.hpp>
#include <relayguard/rate_stage.hpp>
#include <relayguard/request_parser.hpp>
#include <relayguard/strings.hpp>

namespace relayguard::server_detail {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

// Bytes asked of each read. Postfix writes a 0.6-1.3 KiB request in one go: 4 KiB takes one
// (or a few pipelined ones) per read while an idle connection stays small.
constexpr std::size_t read_chunk_bytes = 4096;
// Raw input quoted in the warning about a refused connection.
constexpr std::size_t error_sample_bytes = 64;
// Longest attribute value quoted in a debug line.
constexpr std::size_t debug_value_bytes = 128;

// peer_name - the client as log lines show it: "192.0.2.1:port", "[2001:db8::1]:port", "unix".
std::string peer_name(const TcpSocket& socket)
{
    boost::system::error_code ec;
    const auto ep = socket.remote_endpoint(ec);
    if (ec) return "unknown";
    auto addr = ep.address();
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; show them as IPv4.
    if (addr.is_v6() && addr.to_v6().is_v4_mapped())
        addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
    if (addr.is_v4()) return fmt::format("{}:{}", addr.to_string(), ep.port());
    return fmt::format("[{}]:{}", addr.to_string(), ep.port());
}

std::string peer_name(const UnixSocket&) { return "unix"; }

// What the connection is waiting for, which decides its deadline.
enum class Phase : unsigned char {
    idle,    // between requests: idle_timeout
    request, // a request partly received: request_timeout from its first bytes
    write,   // replies being written: request_timeout
};

template <class Socket>
class Session final : public SessionHandle {
public:
    Session(Worker& worker, Socket socket)
        : worker_(worker),
          socket_(std::move(socket)),
          peer_(peer_name(socket_)),
          parser_(worker.snapshot().config.protocol),
          timer_(worker.context())
    {
        worker_.add(this);
        worker_.metrics().connection_opened();
    }
    ~Session()
    {
        worker_.metrics().connection_closed();
        worker_.remove(this);
    }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    const std::string& peer() const noexcept { return peer_; }

    // run - serve the connection until it ends, with the watchdog beside it.
    awaitable<void> run();

    void on_stop() noexcept override
    {
        // Blocked in a read between requests: end it. Otherwise serve() does once the request
        // it is receiving or the replies it is writing are done.
        if (parser_.idle() && !write_pending_) shutdown_receive();
    }

    void force_close() noexcept override
    {
        if (closed_) return;
        spdlog::info("closing connection from {}: shutdown_timeout reached", peer_);
        close();
    }

private:
    awaitable<void> serve();
    awaitable<void> watch();
    awaitable<RequestParser::Status> answer();
    awaitable<void> answer_one(const Snapshot& snapshot);
    void log_decision(const Decision& decision) const;

    // arm_read_deadline - the deadline of the next read. Deadlines are plain time_points that
    // the watchdog reads: no timer operation per read.
    void arm_read_deadline() noexcept
    {
        const ServerConfig& config = worker_.snapshot().config.server;
        if (parser_.idle()) {
            set_deadline(Phase::idle, config.idle_timeout);
        } else if (phase_ != Phase::request) {
            // Counted from the request's first bytes, not per read: a client trickling one
            // byte at a time must not hold the connection open for ever.
            set_deadline(Phase::request, config.request_timeout);
        }
    }

    void set_deadline(Phase phase, std::chrono::milliseconds timeout) noexcept
    {
        phase_ = phase;
        timeout_ = timeout;
        deadline_ = Clock::now() + timeout;
    }

    // shutdown_receive - the peer's next read from us after buffered input is EOF: requests
    // already received are still answered (a stop must not lose a request in flight), and
    // the read loop then ends as on any EOF.
    void shutdown_receive() noexcept
    {
        if (receive_shut_ || closed_) return;
        receive_shut_ = true;
        boost::system::error_code ec;
        socket_.shutdown(asio::socket_base::shutdown_receive, ec);
    }

    void close() noexcept
    {
        closed_ = true;
        boost::system::error_code ec;
        socket_.close(ec);
    }

    Worker& worker_;
    Socket socket_;
    std::string peer_;
    RequestParser parser_;
    Request request_;
    std::string out_; // replies of one batch, written in one go

    asio::steady_timer timer_;
    Clock::time_point deadline_{};
    std::chrono::milliseconds timeout_{};
    Phase phase_ = Phase::idle;
    bool write_pending_ = false;
    bool receive_shut_ = false;
    bool closed_ = false; // closed by us (timeout, shutdown): the error that follows is ours
};

// run - serve() and watch() side by side; the first to end (EOF, error, deadline) ends both.
template <class Socket>
awaitable<void> Session<Socket>::run()
{
    if constexpr (std::is_same_v<Socket, TcpSocket>) {
        // One request in flight per connection: Nagle would hold each reply back for an ACK.
        boost::system::error_code ec;
        socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    }
    spdlog::debug("connection from {}", peer_);

    auto ex = co_await asio::this_coro::executor;
    auto [order, serve_error, watch_error] =
        co_await asio::experimental::make_parallel_group(asio::co_spawn(ex, serve(), asio::deferred),
                                                         asio::co_spawn(ex, watch(), asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), use_awaitable);
    // The first to finish cancels the other; an exception of the cancelled one is only the
    // cancellation itself.
    if (order[0] == 0 && serve_error) std::rethrow_exception(serve_error);
    if (order[0] == 1 && watch_error) std::rethrow_exception(watch_error);
    spdlog::debug("connection from {} closed", peer_);
}

// serve - the read/answer loop: read what is there, answer every complete request, write the
// answers in one go; on a parse error or EOF, answer what came before it and end.
template <class Socket>
awaitable<void> Session<Socket>::serve()
{
    for (;;) {
        if (parser_.idle() && worker_.stopping()) shutdown_receive();
        arm_read_deadline();
        const auto space = parser_.prepare(read_chunk_bytes);
        auto [read_error, n] =
            co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), asio::as_tuple(use_awaitable));
        parser_.commit(n);

        out_.clear();
        const RequestParser::Status status = co_await answer();
        if (!out_.empty()) {
            // Several requests read at once (a client that did not wait for each reply) are
            // answered in order, in one write.
            set_deadline(Phase::write, worker_.snapshot().config.server.request_timeout);
            write_pending_ = true;
            auto [write_error, written] = co_await asio::async_write(socket_, asio::buffer(out_), asio::as_tuple(use_awaitable));
            write_pending_ = false;
            if (write_error) {
                if (!closed_) spdlog::info("closing connection from {}: write failed: {}", peer_, write_error.message());
                co_return;
            }
        }

        if (status == RequestParser::Status::error) {
            // SMTPD_POLICY_README: in case of trouble, log a warning and disconnect without a reply.
            spdlog::warn("closing connection from {}: {} (sample \"{}\")", peer_, parser_.error().message(),
                         sanitize(parser_.sample(error_sample_bytes), error_sample_bytes));
            if (parser_.error().category() == parse_error_category())
                worker_.metrics().closed_for(close_reason(static_cast<ParseError>(parser_.error().value())));
            co_return;
        }
        if (read_error) {
            if (closed_) co_return; // our own close; the reason is logged already
            if (read_error == asio::error::eof) {
                // Exim's ${readsocket} half-closes after its request: it has its answer by now.
                if (!parser_.idle()) {
                    spdlog::info("closing connection from {}: end of input in the middle of a request "
                                 "({} bytes received)",
                                 peer_, parser_.buffered());
                    worker_.metrics().closed_for(CloseReason::truncated_request);
                }
            } else {
                spdlog::info("closing connection from {}: read failed: {}", peer_, read_error.message());
            }
            co_return;
        }
    }
}

// watch - the watchdog: close the socket once the deadline serve() keeps has passed.
template <class Socket>
awaitable<void> Session<Socket>::watch()
{
    for (;;) {
        const auto now = Clock::now();
        if (deadline_ <= now) {
            switch (phase_) {
            case Phase::idle:
                spdlog::info("closing connection from {}: no request within idle_timeout ({})", peer_, timeout_);
                worker_.metrics().closed_for(CloseReason::idle_timeout);
                break;
            case Phase::request:
                spdlog::info("closing connection from {}: request not complete within request_timeout ({})", peer_,
                             timeout_);
                worker_.metrics().closed_for(CloseReason::request_timeout);
                break;
            case Phase::write:
                spdlog::info("closing connection from {}: replies not read within request_timeout ({})", peer_,
                             timeout_);
                worker_.metrics().closed_for(CloseReason::write_timeout);
                break;
            }
            close();
            co_return;
        }
        // serve() may move the deadline earlier (idle -> request) without waking us, so sleep
        // no longer than request_timeout: a request deadline set after now cannot come before
        // now + request_timeout. An idle connection costs one wakeup per request_timeout.
        const auto cap = now + worker_.snapshot().config.server.request_timeout;
        timer_.expires_at(std::min(deadline_, cap));
        auto [ec] = co_await timer_.async_wait(asio::as_tuple(use_awaitable));
        if (ec) co_return; // cancelled: serve() has ended
    }
}

// answer - decide every complete buffered request and append its reply to out_; returns the
// parser status that ended the batch (need_more or error).
template <class Socket>
awaitable<RequestParser::Status> Session<Socket>::answer()
{
    // Every request of this batch sees the snapshot the worker has now; reload() swaps it
    // between batches, never during one. The copy keeps it alive across a store await.
    const std::shared_ptr<const Snapshot> snapshot = worker_.snapshot_ptr();
    RequestParser::Status status;
    while ((status = parser_.next(request_)) == RequestParser::Status::request) {
        const auto started = Clock::now();
        co_await answer_one(*snapshot);
        worker_.metrics().request(request_.protocol_state(), Clock::now() - started);
    }
    co_return status;
}

// answer_one - the static checks, then (if they pass) the rate limits: the one step that may
// wait, on the store. Appends the reply to out_.
template <class Socket>
awaitable<void> Session<Socket>::answer_one(const Snapshot& snapshot)
{
    const Decision decision = decide(request_, snapshot);
    log_decision(decision);
    WorkerMetrics& metrics = worker_.metrics();
    for (const auto& shadowed : decision.shadowed) metrics.shadow(shadowed.check);
    if (decision.outcome == Decision::Outcome::refuse) {
        metrics.decision(decision.decided_by, decision.reply);
        append_reply(out_, decision.reply);
        co_return;
    }
    // Answered with the static pipeline's DUNNO: "none" decided, or the exempt check.
    const std::optional<Check> passed_by =
        decision.outcome == Decision::Outcome::exempt ? std::optional(Check::exempt) : std::nullopt;
    std::optional<RatePlan> plan = plan_rate_limits(request_, snapshot, decision);
    if (!plan) {
        metrics.decision(passed_by, decision.reply);
        append_reply(out_, decision.reply);
        co_return;
    }
    const StoreConfig& store = snapshot.config.store;
    const LimitOutcome outcome = co_await worker_.limiter().check(plan->request, store.on_error);
    switch (outcome.kind) {
    case LimitOutcome::Kind::fail_open:
        metrics.decision(passed_by, decision.reply);
        append_reply(out_, decision.reply);
        co_return;
    case LimitOutcome::Kind::defer:
        // The failure itself is logged once per outage by the limiter, not per request.
        metrics.decision(Check::rate_limits, store.defer_reply);
        append_reply(out_, store.defer_reply);
        co_return;
    case LimitOutcome::Kind::result: break;
    }
    const RateVerdict verdict = judge_rate_limits(*plan, outcome.result);
    for (const auto& shadowed : verdict.shadowed) {
        spdlog::info("{}", format_decision_log(request_, Check::rate_limits, shadowed.reply, true, shadowed.reason));
        metrics.shadow(Check::rate_limits);
    }
    if (verdict.refuse) {
        spdlog::info("{}", format_decision_log(request_, Check::rate_limits, verdict.reply, false, verdict.reason));
        metrics.decision(Check::rate_limits, verdict.reply);
        append_reply(out_, verdict.reply);
        co_return;
    }
    metrics.decision(passed_by, decision.reply);
    append_reply(out_, decision.reply);
}

// log_decision - one info line per refusal and per shadowed failure; passes only at debug.
template <class Socket>
void Session<Socket>::log_decision(const Decision& decision) const
{
    for (const auto& shadowed : decision.shadowed)
        spdlog::info("{}", format_decision_log(request_, shadowed.check, shadowed.reply, true, shadowed.reason));
    if (decision.outcome == Decision::Outcome::refuse) {
        spdlog::info("{}", format_decision_log(request_, decision.decided_by, decision.reply, false, decision.reason));
        return;
    }
    // Built only when wanted: this is the path of most requests.
    if (!spdlog::should_log(spdlog::level::debug)) return;
    spdlog::debug("{}: peer={} state={} client={} login={} sender=<{}> recipient=<{}> action={}{}{}",
                  decision.outcome == Decision::Outcome::exempt ? "exempt" : "pass", peer_,
                  sanitize(request_[Attr::protocol_state], debug_value_bytes),
                  sanitize(request_[Attr::client_address], debug_value_bytes),
                  request_.authenticated() ? sanitize(request_[Attr::sasl_username], debug_value_bytes) : "-",
                  sanitize(request_[Attr::sender], debug_value_bytes),
                  sanitize(request_[Attr::recipient], debug_value_bytes), decision.reply,
                  decision.reason.empty() ? "" : ": ", decision.reason);
}

// run_session - the coroutine that owns one connection. The slot is a parameter so that it
// lives in the frame from creation: the count is released however the frame ends.
template <class Socket>
awaitable<void> run_session(Worker& worker, Socket socket, ConnectionLimit::Slot slot)
{
    (void)slot;
    Session<Socket> session(worker, std::move(socket));
    try {
        co_await session.run();
    } catch (const std::exception& e) {
        spdlog::error("connection from {} ended by an internal error: {}", session.peer(), e.what());
    }
}

// session_done - last resort for what run_session did not catch: log it; only that session is gone.
void session_done(std::exception_ptr e)
{
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        spdlog::error("connection ended by an internal error: {}", x.what());
    } catch (...) {
        spdlog::error("connection ended by an unknown internal error");
    }
}

} // namespace

void Worker::start_session(TcpSocket socket, ConnectionLimit::Slot slot)
{
    asio::co_spawn(ctx_, run_session(*this, std::move(socket), std::move(slot)), session_done);
}

void Worker::start_session(UnixSocket socket, ConnectionLimit::Slot slot)
{
    asio::co_spawn(ctx_, run_session(*this, std::move(socket), std::move(slot)), session_done);
}

} // namespace relayguard::server_detail
