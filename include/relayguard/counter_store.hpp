// SPDX-License-Identifier: MIT
// counter_store.hpp - where rate-limit state lives: the store interface and the embedded store.
//
// A StoreRequest is every limit that applies to one policy request, as ops (limit x key value).
// apply() checks them all against one clock reading and, only if every enforcing op has room,
// consumes them all (atomicity: a refused recipient spends nothing). Overrides (per key value,
// per limit: rates, "unlimited", "0") are read in the same step, so a change made in the store
// applies to the very next request. Two implementations share these semantics and one
// conformance suite: EmbeddedStore (here; one host, no Redis) and RedisStore (redis_store.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <relayguard/limits.hpp>

namespace relayguard {

// One limit applied to one key value.
struct CounterOp {
    std::string limit;        // LimitConfig::name
    LimitKey key = LimitKey::sasl_username;
    std::string value;        // normalized key value: "alice@example.com", "192.0.2.0/24", "" (global)
    std::string parent;       // value whose override is inherited when `value` has none
                              // ("@example.com" for a login or sender), "" for none
    RateSpec defaults;        // the config's rates, used when neither has an override
    std::uint64_t cost = 1;   // units this request takes; 0 only reads (usage)
    bool once_per_instance = false; // messages: consume at most once per StoreRequest::instance
    bool shadow = false;      // a refusal does not refuse the request (see LimitConfig::shadow)
};

struct StoreRequest {
    std::vector<CounterOp> ops;
    std::string instance;     // the SMTP transaction, for once_per_instance ops
    bool consume = true;      // false: compute everything, change nothing (relayguardctl check)
};

struct WindowUsage {
    Rate rate;
    std::uint64_t remaining = 0;   // units left now (after this request, if it was consumed)
    std::int64_t full_in_us = 0;   // microseconds until the window is completely refilled
};

struct OpOutcome {
    enum class Source : unsigned char { config, override_value, override_parent };
    bool allowed = true;
    bool already_counted = false;  // once_per_instance and this instance was counted before
    Source source = Source::config;
    RateSpec effective;            // the rates that applied
    std::int64_t retry_after_us = 0; // refused: until every window of this op has room
    std::vector<WindowUsage> windows;
};

struct StoreResult {
    bool allowed = true;                    // every non-shadow op had room
    std::optional<std::size_t> refused_op;  // the refusing op with the longest retry_after
    std::int64_t retry_after_us = 0;        // of that op
    std::vector<OpOutcome> ops;             // one per StoreRequest::ops, same order
};

class CounterStore {
public:
    virtual ~CounterStore() = default;

    // apply - check (and if allowed and request.consume, consume) every op. Errors are store
    // failures (Redis down, timeout, bad reply): the caller applies the configured failure mode.
    virtual boost::asio::awaitable<boost::system::result<StoreResult, std::error_code>>
    apply(const StoreRequest& request) = 0;
};

// Microseconds since the epoch. Injected so tests control time (STYLE.md: inject time).
class Clock {
public:
    virtual ~Clock() = default;
    virtual std::int64_t now_us() const noexcept = 0;
};
// The system's real-time clock (what Redis TIME reads too).
const Clock& system_clock() noexcept;

// EmbeddedStore - in-process state, for a single host. Thread-safe: state is sharded, each shard
// under its own mutex; apply() locks the shards of its ops in order (no deadlock) and never
// waits on I/O. Memory is bounded: state whose every TAT has passed is worth nothing (a fresh
// key behaves the same) and is reclaimed by sweep() and, incrementally, by apply().
class EmbeddedStore final : public CounterStore {
public:
    explicit EmbeddedStore(const Clock& clock = system_clock());
    ~EmbeddedStore() override;

    boost::asio::awaitable<boost::system::result<StoreResult, std::error_code>>
    apply(const StoreRequest& request) override;

    // apply_now - the same, synchronously, at the clock's now.
    StoreResult apply_now(const StoreRequest& request);

    // Overrides (the Redis store keeps them in Redis; here they live in memory and are set by
    // the config's [[override]] entries and by tests). nullopt spec removes one.
    void set_override(LimitKey key, const std::string& value, const std::string& limit, std::optional<RateSpec> spec);

    // sweep - drop state that has fully expired; returns how many entries were dropped.
    std::size_t sweep();
    std::size_t entries() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace relayguard
