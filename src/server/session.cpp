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
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/post.hpp>
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
// A connection idle this long gives its read buffer back (the watchdog asks serve() to; it
// checks at most every request_timeout). Postfix keeps a policy connection open across SMTP
// sessions (smtpd max_idle 100 s): thousands of them may be open and quiet at once.
constexpr std::chrono::seconds release_buffer_after{1};
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

// Ladder events of one worker being reported (first_event, PUBLISH) at once; past this a
// request's events are dropped and counted: a flood of compromised logins must not pile up
// coroutines faster than Redis answers them.
constexpr unsigned max_pending_event_batches = 256;

// What the ladder decided for the answer (hold or suspend): a reply in the snapshot.
struct LadderAction {
    std::string_view reply;
};

// One event to report: its name ("warn", "shadow_hold", ...), its JSON, its reason for the log.
struct PendingEvent {
    std::string name;
    std::string json;
    std::string reason;
};

// host_name - this host's name for events, looked up once.
const std::string& host_name()
{
    static const std::string name = [] {
        char buf[256] = {};
        if (gethostname(buf, sizeof buf - 1) != 0) return std::string("unknown");
        return std::string(buf);
    }();
    return name;
}

void session_done(std::exception_ptr e);

// report_events - for each event: first_event (once per login and rung within the window,
// fleet-wide), then one warning line, PUBLISH on the events channel (Redis; skipped if the
// channel is empty) and the event command (if set).
awaitable<void> report_events(Limiter& limiter, std::vector<PendingEvent> events, std::string login,
                              EventsConfig config, std::chrono::seconds window, StoreConfig::OnError on_error)
{
    for (const auto& e : events) {
        const std::optional<bool> first = co_await limiter.first_event(login, e.name, window, on_error);
        // A store failure: not reported now (it would be reported on every request of an
        // outage); the next request that reaches this rung tries again.
        if (!first || !*first) continue;
        spdlog::warn("compromise ladder: {} login={}: {}", e.name, sanitize(login, debug_value_bytes), e.reason);
        co_await limiter.publish(config.channel, e.json, on_error);
        if (!config.command.empty()) limiter.shared().events().submit(config.command, e.json, config.command_timeout);
        limiter.shared().metrics().event_published();
    }
}

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
        // it is receiving or the replies it is writing are done. Bytes the kernel holds that
        // serve() has not read yet (it may be waiting for readability first) are a request
        // being received, not an idle connection.
        if (parser_.idle() && !write_pending_ && !input_pending()) shutdown_receive();
    }

    void force_close() noexcept override
    {
        if (closed_) return;
        spdlog::info("closing connection from {}: shutdown_timeout reached", peer_);
        close();
    }

private:
    // request - the request being answered (answer() makes it before the first one).
    const Request& request() const noexcept { return *request_holder_; }

    awaitable<void> serve();
    awaitable<void> watch();
    awaitable<RequestParser::Status> answer();
    awaitable<void> answer_one(const Snapshot& snapshot);
    awaitable<std::optional<LadderAction>> climb_ladder(const Snapshot& snapshot, const std::optional<LiveQuery>& query,
                                                        const std::optional<LiveFacts>& facts, bool rate_refused);
    void queue_events(const Snapshot& snapshot, const std::string& login,
                      const std::array<std::uint64_t, signal_count>& counts, const LadderVerdict& ladder,
                      std::int64_t now);
    void log_decision(const Decision& decision) const;

    // arm_read_deadline - the deadline of the next read. Deadlines are plain time_points that
    // the watchdog reads: no timer operation per read.
    void arm_read_deadline() noexcept
    {
        const ServerConfig& config = worker_.snapshot().config.server;
        if (parser_.idle()) {
            // Already idle (a read cancelled to release the buffer): the idle time runs on.
            if (phase_ != Phase::idle) set_deadline(Phase::idle, config.idle_timeout);
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

    // input_pending - bytes received by the kernel and not read by serve() yet.
    bool input_pending() noexcept
    {
        boost::system::error_code ec;
        return socket_.available(ec) > 0 && !ec;
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
    // The request being answered; made at the first request and dropped with the read buffer,
    // so a quiet connection does not hold its ~1 KiB of attribute strings.
    std::unique_ptr<Request> request_holder_;
    std::string out_; // replies of one batch, written in one go

    asio::steady_timer timer_;
    Clock::time_point deadline_{};
    std::chrono::milliseconds timeout_{};
    Phase phase_ = Phase::idle; // run() sets the first deadline
    bool write_pending_ = false;
    bool release_buffer_ = false; // watch() asks serve() to give the read buffer back
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
    // Non-blocking for serve()'s direct write_some (asynchronous operations do not mind); a
    // socket that cannot be made so could block the worker in that write: not served.
    boost::system::error_code nb_error;
    socket_.non_blocking(true, nb_error);
    if (nb_error) {
        spdlog::warn("closing connection from {}: cannot make the socket non-blocking: {}", peer_, nb_error.message());
        co_return;
    }
    spdlog::debug("connection from {}", peer_);
    set_deadline(Phase::idle, worker_.snapshot().config.server.idle_timeout);

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
        if (release_buffer_ && parser_.idle()) {
            // Quiet for a while (watch() cancelled the read to get here): hold no buffer.
            release_buffer_ = false;
            parser_.release();
            request_holder_.reset();
        }
        if (!parser_.holds_buffer()) {
            // A new or quiet connection: wait until there is something to read before taking
            // memory to read it into.
            auto [wait_error] = co_await socket_.async_wait(asio::socket_base::wait_read, asio::as_tuple(use_awaitable));
            if (wait_error == asio::error::operation_aborted && !closed_) continue;
            if (wait_error) {
                if (!closed_) spdlog::info("closing connection from {}: read failed: {}", peer_, wait_error.message());
                co_return;
            }
            if (closed_) co_return;
        }
        const auto space = parser_.prepare(read_chunk_bytes);
        auto [read_error, n] =
            co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), asio::as_tuple(use_awaitable));
        parser_.commit(n);
        if (read_error == asio::error::operation_aborted && release_buffer_ && !closed_) continue;

        out_.clear();
        const RequestParser::Status status = co_await answer();
        if (!out_.empty()) {
            // Several requests read at once (a client that did not wait for each reply) are
            // answered in order, in one write.
            // The client is waiting for these replies, so the socket buffer almost always has
            // room: write them now, without an asynchronous operation (its op, queueing and
            // resumption cost more than the send itself); only what does not fit waits.
            set_deadline(Phase::write, worker_.snapshot().config.server.request_timeout);
            boost::system::error_code write_error;
            const std::size_t sent = socket_.write_some(asio::buffer(out_), write_error);
            if (write_error == asio::error::would_block || write_error == asio::error::try_again) write_error.clear();
            if (!write_error && sent < out_.size()) {
                write_pending_ = true;
                std::tie(write_error, std::ignore) = co_await asio::async_write(
                    socket_, asio::buffer(out_.data() + sent, out_.size() - sent), asio::as_tuple(use_awaitable));
                write_pending_ = false;
            } else if (!write_error) {
                // Let the other connections' ready work run before this one reads again: by
                // then the client has usually sent its next request, and the read finds it
                // instead of costing a failed recv and a trip through epoll.
                co_await asio::post(socket_.get_executor(), use_awaitable);
            }
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
        if (phase_ == Phase::idle && !release_buffer_ && parser_.holds_buffer() &&
            now - (deadline_ - timeout_) >= release_buffer_after) {
            // Between requests for a while: have serve() drop its read buffer (its pending
            // read ends with operation_aborted and it waits for readability instead).
            release_buffer_ = true;
            boost::system::error_code ec;
            socket_.cancel(ec);
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
    if (!request_holder_) request_holder_ = std::make_unique<Request>();
    Request& request = *request_holder_;
    while ((status = parser_.next(request)) == RequestParser::Status::request) {
        const auto started = Clock::now();
        co_await answer_one(*snapshot);
        worker_.metrics().request(request.protocol_state(), Clock::now() - started);
    }
    co_return status;
}

// answer_one - the live store's answer (only for requests that need one), the static checks,
// then (if they pass) the rate limits and the compromise ladder. Appends the reply to out_.
template <class Socket>
awaitable<void> Session<Socket>::answer_one(const Snapshot& snapshot)
{
    WorkerMetrics& metrics = worker_.metrics();
    Limiter& limiter = worker_.limiter();
    const StoreConfig& store = snapshot.config.store;
    // The hot path (no login, no ladder) gets nullopt here: no allocation, no store call.
    const std::optional<LiveQuery> query = plan_live(request(), snapshot);
    std::optional<LiveFacts> facts;
    if (query) facts = co_await limiter.live(*query, store.on_error);

    const Decision decision = decide(request(), snapshot, nullptr, facts ? &*facts : nullptr);
    log_decision(decision);
    for (const auto& shadowed : decision.shadowed) metrics.shadow(shadowed.check);
    if (decision.outcome == Decision::Outcome::refuse) {
        metrics.decision(decision.decided_by, decision.reply);
        append_reply(out_, decision.reply);
        co_return;
    }
    // Answered with the static pipeline's DUNNO: "none" decided, or the exempt check.
    std::optional<Check> decided_by =
        decision.outcome == Decision::Outcome::exempt ? std::optional(Check::exempt) : std::nullopt;
    std::string_view reply = decision.reply;

    RateVerdict verdict;
    if (std::optional<RatePlan> plan = plan_rate_limits(request(), snapshot, decision)) {
        const LimitOutcome outcome = co_await limiter.check(plan->request, store.on_error);
        switch (outcome.kind) {
        case LimitOutcome::Kind::fail_open: break;
        case LimitOutcome::Kind::defer:
            // The failure itself is logged once per outage by the limiter, not per request.
            metrics.decision(Check::rate_limits, store.defer_reply);
            append_reply(out_, store.defer_reply);
            co_return;
        case LimitOutcome::Kind::result:
            verdict = judge_rate_limits(*plan, outcome.result);
            for (const auto& shadowed : verdict.shadowed) {
                spdlog::info("{}", format_decision_log(request(), Check::rate_limits, shadowed.reply, true,
                                                       shadowed.reason));
                metrics.shadow(Check::rate_limits);
            }
            if (verdict.refuse) {
                spdlog::info("{}",
                             format_decision_log(request(), Check::rate_limits, verdict.reply, false, verdict.reason));
                decided_by = Check::rate_limits;
                reply = verdict.reply;
            }
            break;
        }
    }

    const CompromiseConfig& cc = snapshot.config.compromise;
    const bool tracked = query && !query->track.empty();
    if (cc.enabled && request().authenticated() && (tracked || verdict.refuse)) {
        std::optional<LadderAction> action = co_await climb_ladder(snapshot, query, facts, verdict.refuse);
        // A rate refusal still answers the rate refusal; a suspension applies from the next request.
        if (action && !verdict.refuse) {
            decided_by = Check::compromise;
            reply = action->reply;
        }
    }
    metrics.decision(decided_by, reply);
    append_reply(out_, reply);
}

// climb_ladder - the compromise ladder for the request's login: count a rate refusal (if a rung
// uses them), judge the counts, act on the enforced rung (hold: the hold reply; suspend: an
// automatic suspension and the suspended reply), log shadow rungs, and hand the events of every
// rung reached to a detached coroutine so that the answer does not wait for them.
template <class Socket>
awaitable<std::optional<LadderAction>> Session<Socket>::climb_ladder(const Snapshot& snapshot,
                                                                     const std::optional<LiveQuery>& query,
                                                                     const std::optional<LiveFacts>& facts,
                                                                     bool rate_refused)
{
    const CompromiseConfig& cc = snapshot.config.compromise;
    const StoreConfig& store = snapshot.config.store;
    Limiter& limiter = worker_.limiter();
    const std::string login = query ? query->login : ascii_lower(request()[Attr::sasl_username]);
    std::array<std::uint64_t, signal_count> counts{};
    if (facts) counts = facts->counts;
    const auto refusals = static_cast<std::size_t>(Signal::rate_refusals);
    if (rate_refused && (cc.warn.rate_refusals != 0 || cc.hold.rate_refusals != 0 || cc.suspend.rate_refusals != 0)) {
        if (auto n = co_await limiter.count_refusal(login, cc.window, store.on_error)) counts[refusals] = *n;
    }
    const LadderVerdict ladder = judge_compromise(counts, cc);
    if (ladder.rung == Rung::none) co_return std::nullopt;

    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    std::optional<LadderAction> action;
    if (ladder.enforced == Rung::suspend) {
        Suspension suspension{.reason = ladder.reason,
                              .since = now,
                              .until = cc.suspend_duration.count() != 0 ? now + cc.suspend_duration.count() : 0,
                              .by = "automatic"};
        const std::optional<bool> fresh = co_await limiter.suspend(login, suspension, store.on_error);
        if (fresh && *fresh) limiter.shared().metrics().suspended_automatically();
        action = LadderAction{snapshot.config.suspended.reply};
        spdlog::info("{}", format_decision_log(request(), Check::compromise, action->reply, false,
                                               "suspended automatically: " + ladder.reason));
    } else if (ladder.enforced == Rung::hold) {
        action = LadderAction{cc.hold_reply};
        spdlog::info("{}", format_decision_log(request(), Check::compromise, action->reply, false, ladder.reason));
    }
    if (ladder.shadow) {
        const std::string_view would =
            ladder.rung == Rung::suspend ? std::string_view(snapshot.config.suspended.reply) : cc.hold_reply;
        if (ladder.rung != Rung::warn) {
            spdlog::info("shadow {}: {}", rung_name(ladder.rung),
                         format_decision_log(request(), Check::compromise, would, true, ladder.reason));
            worker_.metrics().shadow(Check::compromise);
        }
    }
    queue_events(snapshot, login, counts, ladder, now);
    co_return action;
}

// queue_events - the event of each rung reached (its lower rungs' too: a login that jumps
// straight to suspend reports warn and hold as well), deduplicated fleet-wide by first_event,
// then logged, published and handed to the event command, off the answer's path.
template <class Socket>
void Session<Socket>::queue_events(const Snapshot& snapshot, const std::string& login,
                                   const std::array<std::uint64_t, signal_count>& counts,
                                   const LadderVerdict& ladder, std::int64_t now)
{
    Limiter& limiter = worker_.limiter();
    if (limiter.pending_events() >= max_pending_event_batches) {
        limiter.shared().metrics().event_dropped();
        return;
    }
    const CompromiseConfig& cc = snapshot.config.compromise;
    std::vector<PendingEvent> events;
    for (Rung rung : {Rung::warn, Rung::hold, Rung::suspend}) {
        if (rung > ladder.rung) break;
        LadderVerdict v;
        if (rung == ladder.rung) {
            v = ladder;
        } else {
            // The verdict of this rung alone: the ladder with the rungs above it taken away.
            CompromiseConfig lower = cc;
            if (rung < Rung::suspend) lower.suspend = LadderRung{};
            if (rung < Rung::hold) lower.hold = LadderRung{};
            v = judge_compromise(counts, lower);
            if (v.rung != rung) continue; // no threshold of this rung reached
        }
        std::string name = v.shadow ? "shadow_" + std::string(rung_name(rung)) : std::string(rung_name(rung));
        std::string json = event_json(name, login, v, cc.window, request(), now, host_name());
        events.push_back(PendingEvent{std::move(name), std::move(json), std::move(v.reason)});
    }
    if (events.empty()) return;
    ++limiter.pending_events();
    asio::co_spawn(worker_.context(),
                   report_events(limiter, std::move(events), login, snapshot.config.events, cc.window,
                                 snapshot.config.store.on_error),
                   [&limiter](std::exception_ptr e) {
                       --limiter.pending_events();
                       if (e) session_done(e);
                   });
}

// log_decision - one info line per refusal and per shadowed failure; passes only at debug.
template <class Socket>
void Session<Socket>::log_decision(const Decision& decision) const
{
    for (const auto& shadowed : decision.shadowed)
        spdlog::info("{}", format_decision_log(request(), shadowed.check, shadowed.reply, true, shadowed.reason));
    if (decision.outcome == Decision::Outcome::refuse) {
        spdlog::info("{}", format_decision_log(request(), decision.decided_by, decision.reply, false, decision.reason));
        return;
    }
    // Built only when wanted: this is the path of most requests.
    if (!spdlog::should_log(spdlog::level::debug)) return;
    spdlog::debug("{}: peer={} state={} client={} login={} sender=<{}> recipient=<{}> action={}{}{}",
                  decision.outcome == Decision::Outcome::exempt ? "exempt" : "pass", peer_,
                  sanitize(request()[Attr::protocol_state], debug_value_bytes),
                  sanitize(request()[Attr::client_address], debug_value_bytes),
                  request().authenticated() ? sanitize(request()[Attr::sasl_username], debug_value_bytes) : "-",
                  sanitize(request()[Attr::sender], debug_value_bytes),
                  sanitize(request()[Attr::recipient], debug_value_bytes), decision.reply,
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
