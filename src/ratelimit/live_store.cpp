// SPDX-License-Identifier: MIT
// live_store.cpp - signal_name() and EmbeddedLiveStore: the ladder's per-login state in memory.
//
// One mutex over a table of logins: suspension, compromise signals in quarter-window buckets
// (distinct sets of SipHash values, capped; refusal counters), event markers with expiry.
// Thread-safe. SECURITY: logins and elements are untrusted; tables are keyed by SipHash, a
// bucket holds at most embedded_signal_cap values, and state older than a window is dropped by
// sweep() and, a few table buckets at a time, by every query().
#include <relayguard/live_store.hpp>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "ratelimit/live_buckets.hpp"
#include "ratelimit/siphash.hpp"

namespace relayguard {
namespace {

using detail::bucket_length;
using detail::floor_div;
using detail::micros_per_second;

// Login table buckets each query() looks through for logins whose state has all expired: more
// than the one login a query can add, so dead logins go faster than new ones come, and cheap.
constexpr std::size_t incremental_sweep_buckets = 4;

struct LoginHash {
    detail::SipKey key;
    std::size_t operator()(const std::string& s) const { return static_cast<std::size_t>(detail::siphash24(key, s)); }
};

// Element values are SipHash outputs under a secret key: std::hash (identity) spreads them.
struct Bucket {
    std::int64_t length_s = 0; // the bucket length it was made with (a window change starts anew)
    std::int64_t index = 0;    // unix seconds / length_s
    std::unordered_set<std::uint64_t> elements;
    std::uint64_t counter = 0; // rate_refusals
};

struct Event {
    std::string what;
    std::int64_t deadline_us = 0;
};

struct LoginState {
    std::optional<Suspension> suspension;
    std::array<std::vector<Bucket>, signal_count> signals; // per Signal; few, oldest first
    std::vector<Event> events;

    bool empty() const noexcept
    {
        return !suspension && events.empty() &&
               std::all_of(signals.begin(), signals.end(), [](const auto& b) { return b.empty(); });
    }
};

using LoginMap = std::unordered_map<std::string, LoginState, LoginHash>;

// in_window - the bucket is the current one at `now_s` or one of the three before it (by its
// own length; a bucket "from the future", after the clock stepped back, is kept too).
bool in_window(const Bucket& b, std::int64_t now_s) noexcept
{
    return b.index > floor_div(now_s, b.length_s) - static_cast<std::int64_t>(signal_buckets);
}

// in_force - a suspension whose `until` has passed is no suspension (Redis: the key expired).
bool in_force(const Suspension& s, std::int64_t now_s) noexcept { return s.until == 0 || s.until > now_s; }

// prune - drop what has expired from one login's state.
void prune(LoginState& state, std::int64_t now_us)
{
    const std::int64_t now_s = floor_div(now_us, micros_per_second);
    if (state.suspension && !in_force(*state.suspension, now_s)) state.suspension.reset();
    for (auto& buckets : state.signals)
        std::erase_if(buckets, [now_s](const Bucket& b) { return !in_window(b, now_s); });
    std::erase_if(state.events, [now_us](const Event& e) { return e.deadline_us <= now_us; });
}

// current_bucket - the bucket of `now_s` for `length_s`, made if missing.
Bucket& current_bucket(std::vector<Bucket>& buckets, std::int64_t length_s, std::int64_t now_s)
{
    const std::int64_t index = floor_div(now_s, length_s);
    for (auto& b : buckets)
        if (b.length_s == length_s && b.index == index) return b;
    auto& b = buckets.emplace_back();
    b.length_s = length_s;
    b.index = index;
    return b;
}

// The buckets a count covers: this length, the current index and the three before it.
bool counts(const Bucket& b, std::int64_t length_s, std::int64_t now_s) noexcept
{
    const std::int64_t index = floor_div(now_s, length_s);
    return b.length_s == length_s && b.index <= index && b.index > index - static_cast<std::int64_t>(signal_buckets);
}

// distinct_count - the size of the union of the counted buckets' sets, saturating at
// embedded_signal_cap: each element is counted in the newest bucket holding it.
std::uint64_t distinct_count(const std::vector<Bucket>& buckets, std::int64_t length_s, std::int64_t now_s)
{
    std::vector<const Bucket*> counted;
    for (const auto& b : buckets)
        if (counts(b, length_s, now_s)) counted.push_back(&b);
    std::sort(counted.begin(), counted.end(), [](const Bucket* x, const Bucket* y) { return x->index > y->index; });
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < counted.size(); ++i) {
        for (const std::uint64_t e : counted[i]->elements) {
            const bool newer = std::any_of(counted.begin(), counted.begin() + static_cast<std::ptrdiff_t>(i),
                                           [e](const Bucket* n) { return n->elements.contains(e); });
            if (!newer && ++total >= embedded_signal_cap) return embedded_signal_cap;
        }
    }
    return total;
}

std::uint64_t counter_sum(const std::vector<Bucket>& buckets, std::int64_t length_s, std::int64_t now_s)
{
    std::uint64_t total = 0;
    for (const auto& b : buckets)
        if (counts(b, length_s, now_s)) total += b.counter;
    return total;
}

} // namespace

std::string_view signal_name(Signal signal) noexcept
{
    switch (signal) {
    case Signal::networks: return "networks";
    case Signal::recipient_domains: return "recipient_domains";
    case Signal::rate_refusals: return "rate_refusals";
    }
    return "unknown";
}

struct EmbeddedLiveStore::Impl {
    explicit Impl(const Clock& c) : clock(c), hash{detail::random_sip_key()}, logins(0, LoginHash{hash}) {}

    // find - the login's state with what has expired dropped (the login too, if nothing is
    // left), or nullptr. Caller holds the mutex.
    LoginState* find(const std::string& login, std::int64_t now_us)
    {
        const auto it = logins.find(login);
        if (it == logins.end()) return nullptr;
        prune(it->second, now_us);
        if (it->second.empty()) {
            logins.erase(it);
            return nullptr;
        }
        return &it->second;
    }

    // sweep_some - the incremental sweep: a few table buckets, round robin. Caller holds the mutex.
    void sweep_some(std::int64_t now_us)
    {
        if (logins.empty()) return;
        std::vector<std::string> dead;
        for (std::size_t k = 0; k < incremental_sweep_buckets; ++k) {
            if (cursor >= logins.bucket_count()) cursor = 0;
            for (auto it = logins.begin(cursor); it != logins.end(cursor); ++it) {
                prune(it->second, now_us);
                if (it->second.empty()) dead.push_back(it->first);
            }
            ++cursor;
        }
        for (const auto& login : dead) logins.erase(login);
    }

    const Clock& clock;
    detail::SipKey hash;
    mutable std::mutex mutex;
    LoginMap logins;
    std::size_t cursor = 0; // next table bucket for the incremental sweep
};

EmbeddedLiveStore::EmbeddedLiveStore(const Clock& clock) : impl_(std::make_unique<Impl>(clock)) {}

EmbeddedLiveStore::~EmbeddedLiveStore() = default;

LiveFacts EmbeddedLiveStore::query_now(const LiveQuery& query)
{
    Impl& s = *impl_;
    const std::lock_guard lock(s.mutex);
    const std::int64_t now_us = s.clock.now_us();
    const std::int64_t now_s = floor_div(now_us, micros_per_second);
    LiveFacts facts;
    // Owners and domains: none here beyond the config's, which the policy engine reads itself.
    LoginState* state = s.find(query.login, now_us);
    if (query.suspension && state != nullptr) facts.suspension = state->suspension;

    const std::int64_t length_s = bucket_length(query.window);
    for (const auto& track : query.track) {
        const auto i = static_cast<std::size_t>(track.signal);
        if (i >= signal_count) continue;
        if (track.signal == Signal::rate_refusals) {
            facts.counts[i] = state != nullptr ? counter_sum(state->signals[i], length_s, now_s) : 0;
            continue;
        }
        if (query.consume && !track.element.empty()) {
            if (state == nullptr) state = &s.logins[query.login];
            Bucket& b = current_bucket(state->signals[i], length_s, now_s);
            // Full: the count saturates (a config warning says thresholds above the cap never trigger).
            if (b.elements.size() < embedded_signal_cap) b.elements.insert(detail::siphash24(s.hash, track.element));
        }
        facts.counts[i] = state != nullptr ? distinct_count(state->signals[i], length_s, now_s) : 0;
    }
    s.sweep_some(now_us);
    return facts;
}

std::optional<Suspension> EmbeddedLiveStore::suspension_of(const std::string& login) const
{
    const Impl& s = *impl_;
    const std::lock_guard lock(s.mutex);
    const auto it = s.logins.find(login);
    if (it == s.logins.end() || !it->second.suspension) return std::nullopt;
    const std::int64_t now_s = floor_div(s.clock.now_us(), micros_per_second);
    if (!in_force(*it->second.suspension, now_s)) return std::nullopt;
    return it->second.suspension;
}

void EmbeddedLiveStore::lift(const std::string& login)
{
    Impl& s = *impl_;
    const std::lock_guard lock(s.mutex);
    if (LoginState* state = s.find(login, s.clock.now_us())) {
        state->suspension.reset();
        if (state->empty()) s.logins.erase(login);
    }
}

std::size_t EmbeddedLiveStore::sweep()
{
    Impl& s = *impl_;
    const std::lock_guard lock(s.mutex);
    const std::int64_t now_us = s.clock.now_us();
    std::size_t dropped = 0;
    for (auto it = s.logins.begin(); it != s.logins.end();) {
        prune(it->second, now_us);
        if (it->second.empty()) {
            it = s.logins.erase(it);
            ++dropped;
        } else {
            ++it;
        }
    }
    return dropped;
}

boost::asio::awaitable<boost::system::result<LiveFacts, std::error_code>>
EmbeddedLiveStore::query(const LiveQuery& query)
{
    co_return query_now(query);
}

boost::asio::awaitable<boost::system::result<std::uint64_t, std::error_code>>
EmbeddedLiveStore::count_refusal(const std::string& login, std::chrono::seconds window)
{
    Impl& s = *impl_;
    std::uint64_t total = 0;
    {
        const std::lock_guard lock(s.mutex);
        const std::int64_t now_us = s.clock.now_us();
        const std::int64_t now_s = floor_div(now_us, micros_per_second);
        const std::int64_t length_s = bucket_length(window);
        LoginState* state = s.find(login, now_us);
        if (state == nullptr) state = &s.logins[login];
        auto& buckets = state->signals[static_cast<std::size_t>(Signal::rate_refusals)];
        ++current_bucket(buckets, length_s, now_s).counter;
        total = counter_sum(buckets, length_s, now_s);
    }
    co_return total;
}

boost::asio::awaitable<boost::system::result<bool, std::error_code>>
EmbeddedLiveStore::suspend(const std::string& login, const Suspension& suspension)
{
    Impl& s = *impl_;
    bool wrote = false;
    {
        const std::lock_guard lock(s.mutex);
        LoginState* state = s.find(login, s.clock.now_us());
        if (state == nullptr || !state->suspension) {
            if (state == nullptr) state = &s.logins[login];
            state->suspension = suspension;
            wrote = true;
        }
    }
    co_return wrote;
}

boost::asio::awaitable<boost::system::result<bool, std::error_code>>
EmbeddedLiveStore::first_event(const std::string& login, std::string_view what, std::chrono::seconds ttl)
{
    Impl& s = *impl_;
    bool first = false;
    {
        const std::lock_guard lock(s.mutex);
        const std::int64_t now_us = s.clock.now_us();
        LoginState* state = s.find(login, now_us);
        if (state == nullptr) state = &s.logins[login];
        const bool seen = std::any_of(state->events.begin(), state->events.end(),
                                      [what](const Event& e) { return e.what == what; });
        if (!seen) {
            // As Redis SET EX: at least a second.
            const std::int64_t ttl_us = std::max<std::int64_t>(ttl.count(), 1) * micros_per_second;
            state->events.push_back(Event{std::string(what), now_us + ttl_us});
            first = true;
        }
    }
    co_return first;
}

boost::asio::awaitable<boost::system::result<void, std::error_code>>
EmbeddedLiveStore::publish(const std::string&, const std::string&)
{
    co_return boost::system::result<void, std::error_code>();
}

} // namespace relayguard
