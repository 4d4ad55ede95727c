// SPDX-License-Identifier: MIT
// redis_store.hpp - the counter store in Redis, shared by every mail server of a fleet.
//
// One Lua script per policy request (EVALSHA, one round trip): it reads the clock (TIME, so
// hosts with skewed clocks agree), the overrides and the TATs of every op, computes GCRA exactly
// as gcra() does, and writes only if the whole request is allowed. Key schema: key_schema.hpp.
// One RedisStore per worker thread, on that thread's redis::Client (not thread-safe).
// A call carries a deadline (wall clock, µs): if Redis runs it only after that (a call the
// client already gave up on), the script changes nothing and apply() fails with errc::timeout.
#pragma once

#include <chrono>
#include <string>

#include <relayguard/counter_store.hpp>
#include <relayguard/redis.hpp>

namespace relayguard {

// How long the "already counted" marker of an SMTP transaction lives.
inline constexpr std::chrono::seconds default_instance_ttl{3600};

class RedisStore final : public CounterStore {
public:
    // `deadline_after`: the client's command_timeout. Redis must start the script within it (plus
    // a 500 ms allowance for clock differences) of apply() being called (its TIME against our
    // wall clock), else the call is void; 0: no
    // deadline (relayguardctl, whose calls write nothing).
    RedisStore(redis::Client& client, std::string key_prefix,
               std::chrono::seconds instance_ttl = default_instance_ttl,
               std::chrono::milliseconds deadline_after = std::chrono::milliseconds{0});

    boost::asio::awaitable<boost::system::result<StoreResult, std::error_code>>
    apply(const StoreRequest& request) override;

private:
    redis::Client& client_;
    std::string prefix_;
    std::chrono::seconds instance_ttl_;
    std::chrono::milliseconds deadline_after_;
};

// rate_script - the Lua script apply() runs (for tests and relayguardctl).
const redis::Script& rate_script();

} // namespace relayguard
