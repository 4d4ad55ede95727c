// SPDX-License-Identifier: MIT
// metrics.cpp - counters and histograms, their sum over the workers, the Prometheus text format.
//
// Label values all come from the fixed tables below, so they need no escaping and their number
// is bounded whatever the peers send. Thread-safety: see metrics.hpp.
#include <relayguard/metrics.hpp>

#include <algorithm>
#include <deque>
#include <mutex>

#include <fmt/format.h>

#include <relayguard/strings.hpp>

namespace relayguard {
namespace {

constexpr std::array<std::string_view, action_class_count> action_class_names = {
    "dunno", "reject", "defer", "defer_if_permit", "defer_if_reject", "hold", "discard", "warn", "other"};
static_assert(static_cast<std::size_t>(ActionClass::other) + 1 == action_class_count);

constexpr std::array<std::string_view, close_reason_count> close_reason_names = {
    "line_too_long", "request_too_large",  "too_many_attributes", "missing_equals",
    "empty_name",    "nul_byte",           "missing_request_type", "unknown_request_type",
    "truncated_request", "request_timeout", "write_timeout",       "idle_timeout"};
static_assert(static_cast<std::size_t>(CloseReason::idle_timeout) + 1 == close_reason_count);

constexpr std::array<std::string_view, store_error_count> store_error_names = {
    "timeout", "not_connected", "connection_lost", "protocol_error", "server_error", "other"};
static_assert(static_cast<std::size_t>(StoreError::other) + 1 == store_error_count);

// protocol_state label values: as Postfix sends them (request.cpp's names; the metrics module
// does not link the protocol module).
constexpr std::array<std::string_view, protocol_state_count> protocol_state_labels = {
    "CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN", "unknown"};

// check label values (policy.cpp's check_name(), for the same reason), then "none": every
// check passed.
constexpr std::array<std::string_view, check_count + 1> check_labels = {
    "exempt", "suspended", "auth_required", "plaintext_auth", "relay", "sender_ownership", "rate_limits", "compromise",
    "none"};
static_assert(static_cast<std::size_t>(Check::compromise) + 1 == check_count);

// The named access(5) actions, upper case, and their class.
constexpr std::pair<std::string_view, ActionClass> named_actions[] = {
    {"DUNNO", ActionClass::dunno},
    {"REJECT", ActionClass::reject},
    {"DEFER", ActionClass::defer},
    {"DEFER_IF_PERMIT", ActionClass::defer_if_permit},
    {"DEFER_IF_REJECT", ActionClass::defer_if_reject},
    {"HOLD", ActionClass::hold},
    {"DISCARD", ActionClass::discard},
    {"WARN", ActionClass::warn},
};

// seconds_label - microseconds as a decimal number of seconds, exactly ("0.00005", "2.5", "1"),
// for `le` labels: a float would print 5e-05.
std::string seconds_label(std::int64_t us)
{
    std::string out = std::to_string(us / 1'000'000);
    std::int64_t frac = us % 1'000'000;
    if (frac == 0) return out;
    std::string digits = fmt::format("{:06}", frac);
    while (digits.back() == '0') digits.pop_back();
    return out + "." + digits;
}

// Out - appends one metric family at a time: HELP and TYPE, then its samples.
class Out {
public:
    void family(std::string_view name, std::string_view type, std::string_view help)
    {
        fmt::format_to(std::back_inserter(text_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    template <class V>
    void sample(std::string_view name, std::string_view labels, V value)
    {
        if (labels.empty())
            fmt::format_to(std::back_inserter(text_), "{} {}\n", name, value);
        else
            fmt::format_to(std::back_inserter(text_), "{}{{{}}} {}\n", name, labels, value);
    }
    void histogram(std::string_view name, std::string_view help, const HistogramCounts& h)
    {
        family(name, "histogram", help);
        // Prometheus buckets are cumulative: `le` counts every observation up to its bound.
        std::uint64_t cumulative = 0;
        const std::string bucket = std::string(name) + "_bucket";
        for (std::size_t i = 0; i < latency_bucket_bounds_us.size(); ++i) {
            cumulative += h.buckets[i];
            sample(bucket, fmt::format("le=\"{}\"", seconds_label(latency_bucket_bounds_us[i])), cumulative);
        }
        cumulative += h.buckets.back();
        sample(bucket, "le=\"+Inf\"", cumulative);
        sample(std::string(name) + "_sum", "", static_cast<double>(h.sum_ns) / 1e9);
        sample(std::string(name) + "_count", "", cumulative);
    }
    std::string take() { return std::move(text_); }

private:
    std::string text_;
};

} // namespace

ActionClass action_class(std::string_view reply) noexcept
{
    const std::string_view word = reply.substr(0, reply.find_first_of(" \t"));
    // access(5): "4NN text" defers, "5NN text" rejects.
    if (word.size() == 3 && std::all_of(word.begin(), word.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (word[0] == '4') return ActionClass::defer;
        if (word[0] == '5') return ActionClass::reject;
        return ActionClass::other;
    }
    for (const auto& [name, cls] : named_actions)
        if (iequals(word, name)) return cls;
    return ActionClass::other;
}

std::string_view action_class_name(ActionClass action) noexcept
{
    const auto i = static_cast<std::size_t>(action);
    return i < action_class_names.size() ? action_class_names[i] : action_class_names.back();
}

CloseReason close_reason(ParseError error) noexcept
{
    switch (error) {
    case ParseError::line_too_long: return CloseReason::line_too_long;
    case ParseError::request_too_large: return CloseReason::request_too_large;
    case ParseError::too_many_attributes: return CloseReason::too_many_attributes;
    case ParseError::missing_equals: return CloseReason::missing_equals;
    case ParseError::empty_name: return CloseReason::empty_name;
    case ParseError::nul_byte: return CloseReason::nul_byte;
    case ParseError::missing_request_type: return CloseReason::missing_request_type;
    case ParseError::unknown_request_type: return CloseReason::unknown_request_type;
    }
    return CloseReason::unknown_request_type; // not reached: every ParseError is listed
}

std::string_view close_reason_name(CloseReason reason) noexcept
{
    const auto i = static_cast<std::size_t>(reason);
    return i < close_reason_names.size() ? close_reason_names[i] : "unknown";
}

std::string_view store_error_name(StoreError error) noexcept
{
    const auto i = static_cast<std::size_t>(error);
    return i < store_error_names.size() ? store_error_names[i] : store_error_names.back();
}

std::uint64_t HistogramCounts::count() const noexcept
{
    std::uint64_t n = 0;
    for (auto b : buckets) n += b;
    return n;
}

HistogramCounts& HistogramCounts::operator+=(const HistogramCounts& other) noexcept
{
    for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] += other.buckets[i];
    sum_ns += other.sum_ns;
    return *this;
}

std::size_t Histogram::bucket_of(std::chrono::nanoseconds d) noexcept
{
    // Bounds are whole microseconds: d is in the bucket of bound b when d <= b, i.e. when its
    // microseconds rounded up are <= b (1001 ns is over the 1 us bound).
    const std::int64_t ns = std::max<std::int64_t>(d.count(), 0);
    const std::int64_t us_ceil = ns / 1000 + (ns % 1000 != 0);
    const auto it = std::lower_bound(latency_bucket_bounds_us.begin(), latency_bucket_bounds_us.end(), us_ceil);
    return static_cast<std::size_t>(it - latency_bucket_bounds_us.begin());
}

void Histogram::observe(std::chrono::nanoseconds d) noexcept
{
    buckets_[bucket_of(d)].add();
    sum_ns_.add(static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 0)));
}

HistogramCounts Histogram::read() const noexcept
{
    HistogramCounts out;
    for (std::size_t i = 0; i < buckets_.size(); ++i) out.buckets[i] = buckets_[i].get();
    out.sum_ns = sum_ns_.get();
    return out;
}

std::int64_t steady_now_us() noexcept
{
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Metrics::Impl {
    // Guards the list of blocks (add_worker, scrapes) and the store's outage bookkeeping; the
    // workers' counters themselves are atomics that nobody locks.
    mutable std::mutex mutex;
    // A deque keeps each block where it is as more are added; unique_ptr for the alignment.
    std::deque<std::unique_ptr<WorkerMetrics>> workers;

    // Outages: began - ended > 0 means degraded. Counted rather than a flag so that a pair
    // delivered out of order cancels out instead of sticking.
    std::int64_t outage_level = 0;
    std::uint64_t outages = 0;
    std::int64_t down_since_us = 0;
    std::int64_t degraded_us = 0; // of outages that have ended
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

WorkerMetrics& Metrics::add_worker()
{
    std::lock_guard lock(impl_->mutex);
    impl_->workers.push_back(std::make_unique<WorkerMetrics>());
    return *impl_->workers.back();
}

void Metrics::store_outage_began(std::int64_t now_us) noexcept
{
    std::lock_guard lock(impl_->mutex);
    if (++impl_->outage_level == 1) {
        ++impl_->outages;
        impl_->down_since_us = now_us;
        store_degraded_.store(true, std::memory_order_relaxed);
    }
}

void Metrics::store_outage_ended(std::int64_t now_us) noexcept
{
    std::lock_guard lock(impl_->mutex);
    if (--impl_->outage_level == 0) {
        impl_->degraded_us += std::max<std::int64_t>(now_us - impl_->down_since_us, 0);
        store_degraded_.store(false, std::memory_order_relaxed);
    }
}

void Metrics::reloaded(bool ok) noexcept
{
    (ok ? reloads_ok_ : reloads_failed_).fetch_add(1, std::memory_order_relaxed);
}

Health Metrics::health() const noexcept
{
    return {serving_.load(std::memory_order_relaxed), store_degraded_.load(std::memory_order_relaxed)};
}

MetricsTotals Metrics::totals(std::int64_t now_us) const
{
    MetricsTotals t;
    std::uint64_t opened = 0;
    std::uint64_t closed = 0;
    std::lock_guard lock(impl_->mutex);
    for (const auto& w : impl_->workers) {
        // Closes before opens: a connection that opens and closes between the two reads then
        // counts as open for a moment rather than the open gauge going below zero.
        closed += w->connections_closed_.get();
        opened += w->connections_opened_.get();
        for (std::size_t i = 0; i < protocol_state_count; ++i) t.requests[i] += w->requests_[i].get();
        for (std::size_t c = 0; c <= check_count; ++c)
            for (std::size_t a = 0; a < action_class_count; ++a) t.decisions[c][a] += w->decisions_[c][a].get();
        for (std::size_t c = 0; c < check_count; ++c) t.shadow[c] += w->shadow_[c].get();
        t.request_duration += w->request_duration_.read();
        t.store_duration += w->store_duration_.read();
        for (std::size_t i = 0; i < store_error_count; ++i) t.store_errors[i] += w->store_errors_[i].get();
        for (std::size_t i = 0; i < close_reason_count; ++i) t.closed_for[i] += w->closed_for_[i].get();
    }
    t.connections_total = opened;
    t.connections_open = opened > closed ? opened - closed : 0;

    t.store_degraded = impl_->outage_level > 0;
    t.store_outages = impl_->outages;
    std::int64_t degraded_us = impl_->degraded_us;
    if (t.store_degraded) degraded_us += std::max<std::int64_t>(now_us - impl_->down_since_us, 0);
    t.store_degraded_seconds = static_cast<double>(degraded_us) / 1e6;

    t.reloads_ok = reloads_ok_.load(std::memory_order_relaxed);
    t.reloads_failed = reloads_failed_.load(std::memory_order_relaxed);
    t.suspensions_automatic = suspensions_automatic_.load(std::memory_order_relaxed);
    t.events_published = events_published_.load(std::memory_order_relaxed);
    t.events_dropped = events_dropped_.load(std::memory_order_relaxed);
    return t;
}

std::string Metrics::render(std::int64_t now_us) const
{
    return render_metrics(totals(now_us));
}

// render_metrics - every family always has HELP and TYPE. Label sets that are one small fixed
// list are printed in full, zeros included, so that rate() works from the first scrape;
// decisions (checks x actions, most combinations impossible) only once they happened.
std::string render_metrics(const MetricsTotals& t)
{
    Out out;
    out.family("relayguard_build_info", "gauge", "Always 1; the version label says which relayguard runs.");
    out.sample("relayguard_build_info", fmt::format("version=\"{}\"", RELAYGUARD_VERSION), 1);

    out.family("relayguard_requests_total", "counter", "Policy requests answered, by protocol_state.");
    for (std::size_t i = 0; i < protocol_state_count; ++i)
        out.sample("relayguard_requests_total", fmt::format("protocol_state=\"{}\"", protocol_state_labels[i]),
                   t.requests[i]);

    out.family("relayguard_decisions_total", "counter",
               "Replies sent, by the check that decided (\"none\": every check passed) and the reply's action "
               "(reject: 5xx or REJECT, defer: 4xx or DEFER, else the access(5) action).");
    for (std::size_t c = 0; c <= check_count; ++c)
        for (std::size_t a = 0; a < action_class_count; ++a)
            if (t.decisions[c][a] != 0)
                out.sample("relayguard_decisions_total",
                           fmt::format("check=\"{}\",action=\"{}\"", check_labels[c], action_class_names[a]),
                           t.decisions[c][a]);

    out.family("relayguard_shadow_decisions_total", "counter",
               "Checks in shadow mode that did not pass (the request was answered as if they had).");
    for (std::size_t c = 0; c < check_count; ++c)
        out.sample("relayguard_shadow_decisions_total", fmt::format("check=\"{}\"", check_labels[c]), t.shadow[c]);

    out.histogram("relayguard_request_duration_seconds",
                  "Time from a complete request to its reply, store round trip included.", t.request_duration);
    out.histogram("relayguard_store_duration_seconds",
                  "Time of one call of the rate-limit store (a Redis round trip, failed ones included).",
                  t.store_duration);

    out.family("relayguard_store_errors_total", "counter", "Failed calls of the rate-limit store (Redis), by kind.");
    for (std::size_t i = 0; i < store_error_count; ++i)
        out.sample("relayguard_store_errors_total", fmt::format("kind=\"{}\"", store_error_names[i]),
                   t.store_errors[i]);
    out.family("relayguard_store_degraded", "gauge",
               "1 while Redis fails and store.on_error decides (dunno, defer or local), else 0.");
    out.sample("relayguard_store_degraded", "", t.store_degraded ? 1 : 0);
    out.family("relayguard_store_outages_total", "counter", "Times Redis stopped answering (degraded mode entered).");
    out.sample("relayguard_store_outages_total", "", t.store_outages);
    out.family("relayguard_store_degraded_seconds_total", "counter", "Time spent in degraded mode.");
    out.sample("relayguard_store_degraded_seconds_total", "", t.store_degraded_seconds);

    out.family("relayguard_connections_open", "gauge", "Client connections open now.");
    out.sample("relayguard_connections_open", "", t.connections_open);
    out.family("relayguard_connections_total", "counter", "Client connections accepted.");
    out.sample("relayguard_connections_total", "", t.connections_total);
    out.family("relayguard_connections_closed_total", "counter",
               "Connections closed by relayguard for bad input or a timeout, by reason (a client's own close is "
               "not counted).");
    for (std::size_t i = 0; i < close_reason_count; ++i)
        out.sample("relayguard_connections_closed_total", fmt::format("reason=\"{}\"", close_reason_names[i]),
                   t.closed_for[i]);

    out.family("relayguard_config_reloads_total", "counter", "SIGHUP reloads, applied (ok) or refused (failed).");
    out.sample("relayguard_config_reloads_total", "result=\"ok\"", t.reloads_ok);
    out.sample("relayguard_config_reloads_total", "result=\"failed\"", t.reloads_failed);
    out.family("relayguard_suspensions_total", "counter",
               "Logins suspended by the compromise ladder (operator suspensions are relayguardctl's, not counted).");
    out.sample("relayguard_suspensions_total", "by=\"automatic\"", t.suspensions_automatic);
    out.family("relayguard_events_total", "counter",
               "Compromise ladder events: reported (logged, published, handed to the command) or dropped.");
    out.sample("relayguard_events_total", "result=\"published\"", t.events_published);
    out.sample("relayguard_events_total", "result=\"dropped\"", t.events_dropped);
    return out.take();
}

} // namespace relayguard
