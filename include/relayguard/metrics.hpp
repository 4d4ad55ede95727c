// SPDX-License-Identifier: MIT
// metrics.hpp - counters, latency histograms, and their HTTP endpoint (/metrics, /healthz).
//
// Each worker thread counts into its own WorkerMetrics block (single writer, relaxed atomics,
// its own cache lines): no lock and no shared cache line on the request path. A scrape sums
// the blocks with relaxed loads, so it never blocks a worker; a scrape racing a request may
// see that request's counters partly updated. MetricsHttpServer serves them on its own thread.
// SECURITY: HTTP peers are untrusted: requests bounded in size and time; serves GET only.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <relayguard/config.hpp>
#include <relayguard/policy.hpp>
#include <relayguard/request.hpp>
#include <relayguard/request_parser.hpp>

namespace relayguard {

// Upper bounds of the latency histograms' buckets, in microseconds (Prometheus `le`, plus +Inf).
// A policy answer from memory takes tens of microseconds and one with a Redis round trip well
// under a millisecond; Postfix gives up after 100s, but past 1s the exact value no longer matters.
inline constexpr std::array<std::int64_t, 14> latency_bucket_bounds_us = {
    50, 100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000};

// What a reply does, from its first word: a 5xx code or REJECT is `reject`, a 4xx code or DEFER
// is `defer`; the other access(5) actions by name. A fixed set, so that the label's values are
// bounded whatever replies the config holds.
enum class ActionClass : unsigned char {
    dunno, reject, defer, defer_if_permit, defer_if_reject, hold, discard, warn, other
};
inline constexpr std::size_t action_class_count = 9;
ActionClass action_class(std::string_view reply) noexcept;
std::string_view action_class_name(ActionClass action) noexcept;

// Why a connection was closed by us: its input was refused (one reason per ParseError), it
// ended in the middle of a request, or a deadline passed.
enum class CloseReason : unsigned char {
    line_too_long,
    request_too_large,
    too_many_attributes,
    missing_equals,
    empty_name,
    nul_byte,
    missing_request_type,
    unknown_request_type,
    truncated_request, // end of input in the middle of a request
    request_timeout,   // a request not complete within request_timeout
    write_timeout,     // replies not read within request_timeout
    idle_timeout,      // no request within idle_timeout
};
inline constexpr std::size_t close_reason_count = 12;
CloseReason close_reason(ParseError error) noexcept;
std::string_view close_reason_name(CloseReason reason) noexcept;

// How a store (Redis) call failed; the names of redis::errc (`other` for anything else).
enum class StoreError : unsigned char { timeout, not_connected, connection_lost, protocol_error, server_error, other };
inline constexpr std::size_t store_error_count = 6;
std::string_view store_error_name(StoreError error) noexcept;

inline constexpr std::size_t protocol_state_count = static_cast<std::size_t>(ProtocolState::unknown) + 1;
inline constexpr std::size_t check_count = static_cast<std::size_t>(Check::compromise) + 1;

// A monotonic counter with one writing thread: add() is a plain load and store (no locked
// read-modify-write); any thread may read it.
class Counter {
public:
    void add(std::uint64_t n = 1) noexcept
    {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    std::uint64_t get() const noexcept { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> value_{0};
};

// What a scrape reads of a histogram: counts per bucket (not cumulative; the last is +Inf).
struct HistogramCounts {
    std::array<std::uint64_t, latency_bucket_bounds_us.size() + 1> buckets{};
    std::uint64_t sum_ns = 0;

    std::uint64_t count() const noexcept;
    HistogramCounts& operator+=(const HistogramCounts& other) noexcept;
};

// A latency histogram over latency_bucket_bounds_us, one writing thread (see Counter).
class Histogram {
public:
    // observe - one duration; negative ones count as 0.
    void observe(std::chrono::nanoseconds d) noexcept;
    HistogramCounts read() const noexcept;

    // bucket_of - index of the bucket that `d` falls into (the first bound >= d; last: +Inf).
    static std::size_t bucket_of(std::chrono::nanoseconds d) noexcept;

private:
    std::array<Counter, latency_bucket_bounds_us.size() + 1> buckets_;
    Counter sum_ns_;
};

// One worker thread's counters. Every member: on that worker's thread only (reads from any).
// Aligned so that two workers' blocks never share a cache line.
class alignas(64) WorkerMetrics {
public:
    // request - one request answered at `state`, `took` from its parse to its reply.
    void request(ProtocolState state, std::chrono::nanoseconds took) noexcept
    {
        requests_[index(state)].add();
        request_duration_.observe(took);
    }
    // decision - the reply sent; `check` is the one that decided, nullopt if every check passed.
    void decision(std::optional<Check> check, std::string_view reply) noexcept
    {
        decisions_[check ? index(*check) : check_count][static_cast<std::size_t>(action_class(reply))].add();
    }
    // shadow - a check in shadow mode did not pass (and the answer went on as if it had).
    void shadow(Check check) noexcept { shadow_[index(check)].add(); }
    // store_call - one store round trip, whatever its result.
    void store_call(std::chrono::nanoseconds took) noexcept { store_duration_.observe(took); }
    void store_error(StoreError error) noexcept { store_errors_[static_cast<std::size_t>(error)].add(); }
    void connection_opened() noexcept { connections_opened_.add(); }
    void connection_closed() noexcept { connections_closed_.add(); }
    void closed_for(CloseReason reason) noexcept { closed_for_[static_cast<std::size_t>(reason)].add(); }

private:
    friend class Metrics;
    template <class E>
    static constexpr std::size_t index(E e) noexcept
    {
        return static_cast<std::size_t>(e);
    }

    std::array<Counter, protocol_state_count> requests_;
    // [check, or check_count for "none"][ActionClass]
    std::array<std::array<Counter, action_class_count>, check_count + 1> decisions_;
    std::array<Counter, check_count> shadow_;
    Histogram request_duration_;
    Histogram store_duration_;
    std::array<Counter, store_error_count> store_errors_;
    Counter connections_opened_;
    Counter connections_closed_;
    std::array<Counter, close_reason_count> closed_for_;
};

// Every counter summed over the workers, as of one scrape.
struct MetricsTotals {
    std::array<std::uint64_t, protocol_state_count> requests{};
    std::array<std::array<std::uint64_t, action_class_count>, check_count + 1> decisions{};
    std::array<std::uint64_t, check_count> shadow{};
    HistogramCounts request_duration;
    HistogramCounts store_duration;
    std::array<std::uint64_t, store_error_count> store_errors{};
    bool store_degraded = false;
    std::uint64_t store_outages = 0;
    double store_degraded_seconds = 0;
    std::uint64_t connections_open = 0;
    std::uint64_t connections_total = 0;
    std::array<std::uint64_t, close_reason_count> closed_for{};
    std::uint64_t reloads_ok = 0;
    std::uint64_t reloads_failed = 0;
    std::uint64_t suspensions_automatic = 0; // logins the compromise ladder suspended
    std::uint64_t events_published = 0;      // ladder events logged and handed on (PUBLISH, command)
    std::uint64_t events_dropped = 0;        // events dropped: too many pending, or the command queue full

    std::uint64_t decisions_of(std::optional<Check> check, ActionClass action) const noexcept
    {
        return decisions[check ? static_cast<std::size_t>(*check) : check_count][static_cast<std::size_t>(action)];
    }
};

// What /healthz says.
struct Health {
    bool serving = false;        // the policy server is running (else 503)
    bool store_degraded = false; // Redis is failing: on_error decides
};

class Metrics {
public:
    Metrics();
    ~Metrics();
    Metrics(const Metrics&) = delete;
    Metrics& operator=(const Metrics&) = delete;

    // add_worker - a new block for one worker thread; valid as long as this Metrics. Blocks are
    // never removed (counters stay monotonic across a Server's life). Thread-safe; not for the
    // request path (it takes a lock that scrapes take too).
    WorkerMetrics& add_worker();

    // store_outage_began / store_outage_ended - Redis stopped / started answering, at
    // `now_us` (steady clock, microseconds). Called once per transition by whichever worker
    // saw it (LimiterShared decides which); any thread. They take a lock that only scrapes
    // share, and only at the two transitions of an outage. A began/ended pair that arrives in
    // the wrong order (two workers racing at a flap) cancels out.
    void store_outage_began(std::int64_t now_us) noexcept;
    void store_outage_ended(std::int64_t now_us) noexcept;

    // reloaded - a SIGHUP reload was applied (ok) or refused (failed). Any thread.
    void reloaded(bool ok) noexcept;

    // suspended_automatically / event_published / event_dropped - the compromise ladder
    // suspended a login; an event was reported; one was dropped (bounded queues). Any thread.
    void suspended_automatically() noexcept { suspensions_automatic_.fetch_add(1, std::memory_order_relaxed); }
    void event_published() noexcept { events_published_.fetch_add(1, std::memory_order_relaxed); }
    void event_dropped() noexcept { events_dropped_.fetch_add(1, std::memory_order_relaxed); }

    // set_serving - the policy server started / is stopping (for /healthz). Any thread.
    void set_serving(bool serving) noexcept { serving_.store(serving, std::memory_order_relaxed); }

    // totals - every counter summed, with time in degraded mode counted up to `now_us`.
    MetricsTotals totals(std::int64_t now_us) const;
    Health health() const noexcept;

    // render - the Prometheus text exposition format (version 0.0.4) of totals(now_us).
    std::string render(std::int64_t now_us) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::atomic<bool> serving_{false};
    std::atomic<bool> store_degraded_{false}; // a copy of Impl's, for health() without a lock
    std::atomic<std::uint64_t> reloads_ok_{0};
    std::atomic<std::uint64_t> reloads_failed_{0};
    std::atomic<std::uint64_t> suspensions_automatic_{0};
    std::atomic<std::uint64_t> events_published_{0};
    std::atomic<std::uint64_t> events_dropped_{0};
};

// render_metrics - the text format of `totals` (what Metrics::render() sends).
std::string render_metrics(const MetricsTotals& totals);

// steady_now_us - the steady clock in microseconds, the time base of Metrics' `now_us`.
std::int64_t steady_now_us() noexcept;

// Largest HTTP request header accepted (request line and fields), and largest body (read and
// ignored). A scraper sends a few hundred bytes.
inline constexpr std::size_t max_http_request_bytes = 8192;
// A connection must send its whole request within this.
inline constexpr std::chrono::seconds http_read_timeout{10};
// Connections served at once; more are closed at accept: a scraper needs one, a flood gets no
// more than this of the metrics thread.
inline constexpr std::size_t max_http_connections = 16;

// MetricsHttpServer - HTTP/1.1 on one inet endpoint, on its own thread and io_context (a slow
// scraper never touches the workers). GET /metrics: the text format; GET /healthz: 200 "ok" or
// "degraded: store redis unavailable", 503 "not serving" while the policy server is not
// running; other paths 404, other methods 405. Every response closes the connection.
// Thread-safety: call every member from one thread (the daemon's main).
class MetricsHttpServer {
public:
    // `metrics` must outlive the server's thread (it is shared).
    MetricsHttpServer(std::shared_ptr<const Metrics> metrics, Endpoint endpoint);
    ~MetricsHttpServer(); // stop()s
    MetricsHttpServer(const MetricsHttpServer&) = delete;
    MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

    // start - bind, listen and start the thread. Throws std::runtime_error naming the endpoint
    // (startup edge). Only an inet endpoint ("*" binds every address, IPv6 and IPv4).
    void start();

    // endpoint - "inet:127.0.0.1:PORT" with the real port (if 0 was asked for); port() alone.
    // Valid after start().
    std::string endpoint() const;
    std::uint16_t port() const noexcept;

    // stop - close the listener and every connection, join the thread. Idempotent.
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace relayguard
