// SPDX-License-Identifier: MIT
// embedded_store_test.cpp - EmbeddedStore on a FakeClock: atomicity, windows, overrides,
// instance dedupe, shadow ops, read-only requests, expiry and sweeping, threads. Also the
// keyed hash it uses (SipHash-2-4 against the paper's test vectors).
#include <relayguard/counter_store.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <relayguard/redis_store.hpp>

#include "ratelimit/siphash.hpp"

namespace {

using namespace std::chrono_literals;
using relayguard::CounterOp;
using relayguard::EmbeddedStore;
using relayguard::LimitKey;
using relayguard::OpOutcome;
using relayguard::Rate;
using relayguard::RateSpec;
using relayguard::StoreRequest;
using relayguard::StoreResult;

constexpr std::int64_t sec = 1'000'000;

class FakeClock final : public relayguard::Clock {
public:
    std::int64_t now_us() const noexcept override { return now_.load(); }
    void advance(std::chrono::microseconds d) { now_ += d.count(); }

private:
    std::atomic<std::int64_t> now_{1'700'000'000'000'000};
};

RateSpec rates(std::vector<Rate> r) { return RateSpec{RateSpec::Kind::rates, std::move(r)}; }

CounterOp op(std::string limit, std::string value, RateSpec defaults, std::uint64_t cost = 1)
{
    CounterOp o;
    o.limit = std::move(limit);
    o.key = LimitKey::sasl_username;
    o.value = std::move(value);
    o.defaults = std::move(defaults);
    o.cost = cost;
    return o;
}

StoreRequest request(std::vector<CounterOp> ops, std::string instance = "", bool consume = true)
{
    return StoreRequest{std::move(ops), std::move(instance), consume};
}

// remaining - the remaining of every window of op i, for got=/want= messages.
std::vector<std::uint64_t> remaining(const StoreResult& r, std::size_t i)
{
    std::vector<std::uint64_t> out;
    for (const auto& w : r.ops.at(i).windows) out.push_back(w.remaining);
    return out;
}

std::string show(const std::vector<std::uint64_t>& v) { return fmt::format("{}", fmt::join(v, ",")); }

// ---------------------------------------------------------------------------------------------

TEST(SipHash, MatchesThePaperTestVectors)
{
    // Key 00 01 .. 0f; messages 00 01 .. (n-1). From the SipHash paper's appendix / reference
    // implementation's vectors (first entry and the 15-byte example of the paper).
    const relayguard::detail::SipKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    std::string msg;
    for (int i = 0; i < 15; ++i) msg.push_back(static_cast<char>(i));
    EXPECT_EQ(relayguard::detail::siphash24(key, ""), 0x726fdb47dd0e0e31ULL);
    EXPECT_EQ(relayguard::detail::siphash24(key, msg), 0xa129ca6149be45e5ULL);
}

TEST(EmbeddedStore, AllowsBurstThenRefusesWithExactRetry)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    const auto req = request({op("per_login", "alice", rates({{3, 60s}}))});
    for (std::uint64_t k = 1; k <= 3; ++k) {
        const StoreResult r = store.apply_now(req);
        EXPECT_TRUE(r.allowed) << "request " << k;
        EXPECT_EQ(remaining(r, 0), std::vector<std::uint64_t>{3 - k}) << "request " << k << " got=" << show(remaining(r, 0));
        EXPECT_EQ(r.ops[0].windows[0].full_in_us, static_cast<std::int64_t>(k) * 20 * sec) << "request " << k;
    }
    const StoreResult r = store.apply_now(req);
    EXPECT_FALSE(r.allowed);
    ASSERT_TRUE(r.refused_op.has_value());
    EXPECT_EQ(*r.refused_op, 0u);
    EXPECT_EQ(r.retry_after_us, 20 * sec) << "got=" << r.retry_after_us;
    EXPECT_EQ(r.ops[0].retry_after_us, 20 * sec);
    EXPECT_EQ(r.ops[0].source, OpOutcome::Source::config);
    EXPECT_EQ(r.ops[0].effective, rates({{3, 60s}}));

    clock.advance(20s);
    EXPECT_TRUE(store.apply_now(req).allowed) << "one interval later one more fits";
    EXPECT_FALSE(store.apply_now(req).allowed);
}

TEST(EmbeddedStore, EveryWindowMustHaveRoom)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    // 2 per second, 3 per hour (1200 s per unit).
    const auto req = request({op("per_login", "alice", rates({{2, 1s}, {3, 3600s}}))});
    EXPECT_TRUE(store.apply_now(req).allowed);
    EXPECT_TRUE(store.apply_now(req).allowed);
    StoreResult r = store.apply_now(req);
    EXPECT_FALSE(r.allowed) << "the per-second window is full";
    EXPECT_EQ(r.retry_after_us, sec / 2) << "got=" << r.retry_after_us;
    // Each window reports as if this request had its way in it (0 left in the hour window)...
    EXPECT_EQ(remaining(r, 0), (std::vector<std::uint64_t>{0, 0})) << "got=" << show(remaining(r, 0));
    // ...but the refused request took nothing from the hour window: one is still left there.
    auto read = req;
    read.ops[0].cost = 0;
    EXPECT_EQ(remaining(store.apply_now(read), 0), (std::vector<std::uint64_t>{0, 1}));

    clock.advance(1s);
    r = store.apply_now(req);
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(remaining(r, 0), (std::vector<std::uint64_t>{1, 0})) << "got=" << show(remaining(r, 0));

    // Now the hour window refuses: TAT t0+3600s, +1200s, at t0+1s: 1199 s to wait.
    r = store.apply_now(req);
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.retry_after_us, 1199 * sec) << "got=" << r.retry_after_us;
    // The refused request took nothing from the per-second window either.
    EXPECT_EQ(remaining(store.apply_now(read), 0), (std::vector<std::uint64_t>{1, 0}));
}

TEST(EmbeddedStore, RefusedOpConsumesNothingForAnyOp)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    const auto big = op("recipients", "alice", rates({{10, 3600s}}));
    const auto small = op("per_ip", "192.0.2.1", rates({{1, 3600s}}));
    EXPECT_TRUE(store.apply_now(request({big, small})).allowed);

    const StoreResult r = store.apply_now(request({big, small}));
    EXPECT_FALSE(r.allowed);
    ASSERT_TRUE(r.refused_op.has_value());
    EXPECT_EQ(*r.refused_op, 1u);
    EXPECT_TRUE(r.ops[0].allowed) << "the op with room is not itself refused";
    EXPECT_FALSE(r.ops[1].allowed);

    auto read = big;
    read.cost = 0;
    const StoreResult after = store.apply_now(request({read}));
    EXPECT_EQ(remaining(after, 0), std::vector<std::uint64_t>{9})
        << "got=" << show(remaining(after, 0)) << " want=9 (only the first request counted)";
}

TEST(EmbeddedStore, OverridesReplaceInheritAndRemove)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    auto alice = op("per_login", "alice@example.com", rates({{5, 3600s}}), 0);
    alice.parent = "@example.com";
    const auto read = [&] { return store.apply_now(request({alice})).ops[0]; };

    OpOutcome o = read();
    EXPECT_EQ(o.source, OpOutcome::Source::config);
    EXPECT_EQ(o.effective, rates({{5, 3600s}}));

    store.set_override(LimitKey::sasl_username, "@example.com", "per_login", rates({{20, 3600s}}));
    o = read();
    EXPECT_EQ(o.source, OpOutcome::Source::override_parent);
    EXPECT_EQ(o.effective, rates({{20, 3600s}}));

    store.set_override(LimitKey::sasl_username, "alice@example.com", "per_login", rates({{7, 60s}}));
    o = read();
    EXPECT_EQ(o.source, OpOutcome::Source::override_value) << "the value's own override wins";
    EXPECT_EQ(o.effective, rates({{7, 60s}}));

    // Another limit's override, or another key type's, does not apply.
    store.set_override(LimitKey::sasl_username, "alice@example.com", "other_limit", rates({{1, 60s}}));
    store.set_override(LimitKey::sender, "alice@example.com", "per_login", rates({{1, 60s}}));
    EXPECT_EQ(read().effective, rates({{7, 60s}}));

    store.set_override(LimitKey::sasl_username, "alice@example.com", "per_login", std::nullopt);
    EXPECT_EQ(read().source, OpOutcome::Source::override_parent) << "removed: the parent's again";
    store.set_override(LimitKey::sasl_username, "@example.com", "per_login", std::nullopt);
    EXPECT_EQ(read().source, OpOutcome::Source::config);
    EXPECT_EQ(read().effective, rates({{5, 3600s}}));

    // No parent: a parent-level override is not looked at.
    auto bob = op("per_login", "bob@example.com", rates({{5, 3600s}}));
    store.set_override(LimitKey::sasl_username, "@example.com", "per_login", rates({{20, 3600s}}));
    EXPECT_EQ(store.apply_now(request({bob})).ops[0].source, OpOutcome::Source::config);
}

TEST(EmbeddedStore, RaisedOrLoweredRateCarriesTheUnitsUsedOver)
{
    // 3/1h used up; an override raising it to 100/1h lets the very next request through with
    // 96 left (3 used + 1), and lowering it to 5/1h leaves 1 (4 used + 1 = 5: the next refused).
    FakeClock clock;
    EmbeddedStore store(clock);
    const auto alice = op("per_login", "alice@example.com", rates({{3, 3600s}}));
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(store.apply_now(request({alice})).allowed) << "request " << i;
    ASSERT_FALSE(store.apply_now(request({alice})).allowed);

    store.set_override(LimitKey::sasl_username, "alice@example.com", "per_login", rates({{100, 3600s}}));
    StoreResult r = store.apply_now(request({alice}));
    EXPECT_TRUE(r.allowed) << "raised: the next request must fit";
    EXPECT_EQ(show(remaining(r, 0)), "96");

    store.set_override(LimitKey::sasl_username, "alice@example.com", "per_login", rates({{5, 3600s}}));
    r = store.apply_now(request({alice}));
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(show(remaining(r, 0)), "0");
    EXPECT_FALSE(store.apply_now(request({alice})).allowed) << "lowered: 5 used of 5";

    // Lifted: back at 3/1h, 5 units used read as 5 of 3: refused for (5 - 3 + 1) * 20 min.
    store.set_override(LimitKey::sasl_username, "alice@example.com", "per_login", std::nullopt);
    r = store.apply_now(request({alice}));
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.retry_after_us, 3 * 1200 * sec);
}

TEST(EmbeddedStore, UnlimitedOverrideAllowsAndKeepsNoState)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    store.set_override(LimitKey::sasl_username, "vip", "per_login", RateSpec{RateSpec::Kind::unlimited, {}});
    auto vip = op("per_login", "vip", rates({{1, 3600s}}));
    vip.once_per_instance = true;
    for (int i = 0; i < 5; ++i) {
        const StoreResult r = store.apply_now(request({vip}, "Q1"));
        EXPECT_TRUE(r.allowed) << "request " << i;
        EXPECT_TRUE(r.ops[0].windows.empty()) << "request " << i;
        EXPECT_FALSE(r.ops[0].already_counted) << "request " << i;
        EXPECT_EQ(r.ops[0].effective.kind, RateSpec::Kind::unlimited);
    }
    EXPECT_EQ(store.entries(), 0u) << "neither state nor an instance set";
}

TEST(EmbeddedStore, ZeroOverrideBlocks)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    store.set_override(LimitKey::sasl_username, "spammer", "per_login", RateSpec{RateSpec::Kind::rates, {{0, 1s}}});
    const StoreResult r = store.apply_now(request({op("per_login", "spammer", rates({{100, 3600s}}))}));
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.retry_after_us, sec);
    EXPECT_EQ(remaining(r, 0), std::vector<std::uint64_t>{0});
    // A blocked key is still counted (refused attempts), and that state expires.
    EXPECT_EQ(store.entries(), 1u);
    clock.advance(2s);
    EXPECT_EQ(store.sweep(), 1u);
    EXPECT_EQ(store.entries(), 0u);
}

TEST(EmbeddedStore, CountsAMessageOncePerInstance)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    auto msgs = op("messages", "alice", rates({{5, 3600s}}));
    msgs.once_per_instance = true;

    struct Step {
        std::string instance;
        bool already_counted;
        std::uint64_t remaining;
    };
    const std::vector<Step> steps = {
        {"Q1", false, 4}, {"Q1", true, 4}, {"Q1", true, 4}, {"Q2", false, 3},
        {"Q1", true, 3},  {"", false, 2},  {"", false, 1}, // no instance: counts every time
    };
    for (std::size_t i = 0; i < steps.size(); ++i) {
        const StoreResult r = store.apply_now(request({msgs}, steps[i].instance));
        EXPECT_TRUE(r.allowed) << "step " << i;
        EXPECT_EQ(r.ops[0].already_counted, steps[i].already_counted) << "step " << i;
        EXPECT_EQ(remaining(r, 0), std::vector<std::uint64_t>{steps[i].remaining})
            << "step " << i << " got=" << show(remaining(r, 0));
    }

    // The marker lives for the instance TTL; after it the same instance counts again.
    clock.advance(relayguard::default_instance_ttl + 1s);
    const StoreResult r = store.apply_now(request({msgs}, "Q1"));
    EXPECT_FALSE(r.ops[0].already_counted);
}

TEST(EmbeddedStore, RefusedRequestDoesNotMarkTheInstance)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    auto msgs = op("messages", "alice", rates({{5, 3600s}}));
    msgs.once_per_instance = true;
    const auto blocked = op("rcpt", "alice", rates({{0, 1s}}));

    EXPECT_FALSE(store.apply_now(request({msgs, blocked}, "Q1")).allowed);
    const StoreResult r = store.apply_now(request({msgs}, "Q1"));
    EXPECT_FALSE(r.ops[0].already_counted) << "the refused request did not count the message";
    EXPECT_EQ(remaining(r, 0), std::vector<std::uint64_t>{4}) << "got=" << show(remaining(r, 0));
}

TEST(EmbeddedStore, ShadowOpsCountButDoNotRefuse)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    auto shadow = op("trial", "alice", rates({{1, 3600s}}));
    shadow.shadow = true;
    const auto enforcing = op("per_login", "alice", rates({{10, 3600s}}));

    StoreResult r = store.apply_now(request({shadow, enforcing}));
    EXPECT_TRUE(r.allowed);
    EXPECT_FALSE(r.refused_op.has_value());
    EXPECT_EQ(remaining(r, 0), std::vector<std::uint64_t>{0}) << "an allowed shadow op consumes";

    r = store.apply_now(request({shadow, enforcing}));
    EXPECT_TRUE(r.allowed) << "a full shadow limit only reports";
    ASSERT_TRUE(r.refused_op.has_value());
    EXPECT_EQ(*r.refused_op, 0u);
    EXPECT_FALSE(r.ops[0].allowed);
    EXPECT_EQ(r.retry_after_us, 3600 * sec) << "got=" << r.retry_after_us;
    EXPECT_EQ(remaining(r, 1), std::vector<std::uint64_t>{8}) << "the enforcing op consumed";

    // The refused shadow op wrote nothing: its TAT is still one period ahead, not two.
    auto read = shadow;
    read.cost = 0;
    EXPECT_EQ(store.apply_now(request({read})).ops[0].windows[0].full_in_us, 3600 * sec);
}

TEST(EmbeddedStore, RefusedShadowOpWritesNoneOfItsWindows)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    // The minute window refuses the second request; the hour window alone would have room.
    auto shadow = op("trial", "alice", rates({{1, 60s}, {10, 3600s}}));
    shadow.shadow = true;
    EXPECT_TRUE(store.apply_now(request({shadow})).allowed);
    const StoreResult r = store.apply_now(request({shadow}));
    EXPECT_TRUE(r.allowed);
    EXPECT_FALSE(r.ops[0].allowed);
    EXPECT_EQ(r.retry_after_us, 60 * sec) << "got=" << r.retry_after_us;

    auto read = shadow;
    read.cost = 0;
    EXPECT_EQ(remaining(store.apply_now(request({read})), 0), (std::vector<std::uint64_t>{0, 9}))
        << "the hour window took nothing from the refused op";
}

TEST(EmbeddedStore, ReportsEnforcingRefusalBeforeLongerShadowRefusal)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    auto shadow = op("trial", "alice", rates({{1, 86400s}}));
    shadow.shadow = true;
    const auto minute = op("per_minute", "alice", rates({{1, 60s}}));
    const auto hour = op("per_hour", "bob", rates({{1, 3600s}}));
    EXPECT_TRUE(store.apply_now(request({shadow, minute, hour})).allowed);

    const StoreResult r = store.apply_now(request({shadow, minute, hour}));
    EXPECT_FALSE(r.allowed);
    ASSERT_TRUE(r.refused_op.has_value());
    EXPECT_EQ(*r.refused_op, 2u) << "the enforcing op with the longest retry";
    EXPECT_EQ(r.retry_after_us, 3600 * sec);
}

TEST(EmbeddedStore, ReadOnlyRequestChangesNothing)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    auto msgs = op("messages", "alice", rates({{3, 3600s}}));
    msgs.once_per_instance = true;
    for (int i = 0; i < 5; ++i) {
        const StoreResult r = store.apply_now(request({msgs}, "Q1", false));
        EXPECT_TRUE(r.allowed) << "request " << i;
        EXPECT_FALSE(r.ops[0].already_counted) << "request " << i;
        EXPECT_EQ(remaining(r, 0), std::vector<std::uint64_t>{2}) << "request " << i << " got=" << show(remaining(r, 0));
    }
    EXPECT_EQ(store.entries(), 0u);

    // Also for a refusal: no refused counter is written.
    const auto blocked = op("rcpt", "bob", rates({{0, 1s}}));
    EXPECT_FALSE(store.apply_now(request({blocked}, "", false)).allowed);
    EXPECT_EQ(store.entries(), 0u);
}

TEST(EmbeddedStore, StateExpiresWhenItsLastTatHasPassed)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    const auto hour = op("per_hour", "alice", rates({{1, 3600s}}));
    const auto second = op("per_second", "alice", rates({{10, 1s}}));
    EXPECT_TRUE(store.apply_now(request({hour})).allowed);
    // A later request on the same key value touches only the short limit; the hash must still
    // live until the hour limit's TAT has passed.
    EXPECT_TRUE(store.apply_now(request({second})).allowed);
    clock.advance(10s);
    EXPECT_EQ(store.sweep(), 0u);
    EXPECT_FALSE(store.apply_now(request({hour})).allowed) << "the hour limit kept its state";

    clock.advance(3600s);
    EXPECT_EQ(store.sweep(), 1u);
    EXPECT_EQ(store.entries(), 0u);
}

// fill - `keys` fresh key values (user0, user1, ...), 100 ops per request to keep it quick;
// each request also gets its own instance set.
void fill(EmbeddedStore& store, std::size_t keys)
{
    constexpr std::size_t per_request = 100;
    for (std::size_t first = 0; first < keys; first += per_request) {
        std::vector<CounterOp> ops;
        for (std::size_t i = first; i < std::min(keys, first + per_request); ++i) {
            ops.push_back(op("per_login", fmt::format("user{}", i), rates({{1, 1s}})));
            ops.back().once_per_instance = true;
        }
        ASSERT_TRUE(store.apply_now(request(std::move(ops), fmt::format("Q{}", first))).allowed);
    }
}

TEST(EmbeddedStore, SweepDropsEveryExpiredEntry)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    constexpr std::size_t keys = 100'000;
    fill(store, keys);
    const std::size_t sets = keys / 100;
    EXPECT_EQ(store.entries(), keys + sets) << "nothing has expired yet";
    clock.advance(2s);
    EXPECT_EQ(store.sweep(), keys) << "the state has expired, the instance sets have not";
    EXPECT_EQ(store.entries(), sets);
    clock.advance(relayguard::default_instance_ttl);
    EXPECT_EQ(store.sweep(), sets);
    EXPECT_EQ(store.entries(), 0u);
}

TEST(EmbeddedStore, ApplyAloneKeepsMemoryBounded)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    constexpr std::size_t keys = 100'000;
    fill(store, keys);
    EXPECT_EQ(store.entries(), keys + keys / 100);
    clock.advance(relayguard::default_instance_ttl + 1s);
    // No sweep() call: ordinary traffic alone must reclaim the expired entries, even traffic
    // that creates no entry of its own (one hash bucket of each table per apply): within a few
    // passes over the tables (16 shards of at most ~2 x 6,250 buckets each).
    const auto req = request({op("per_login", "steady", rates({{1000000, 1s}}))});
    int applies = 0;
    while (applies < 1'000'000 && store.entries() > 1) {
        for (int i = 0; i < 10'000; ++i) store.apply_now(req);
        applies += 10'000;
    }
    EXPECT_LE(store.entries(), 1u) << "got=" << store.entries() << " after " << applies << " applies";
    EXPECT_LE(applies, 500'000);
}

TEST(EmbeddedStore, ChurnOfNewKeysStaysNearTheLiveOnes)
{
    // Every apply creates a key that lives 1 s (one use of a 1/s rate); the clock moves 1 ms per apply, so about 1,000
    // keys are alive at any time. What each new entry pays for in sweeping must keep the table
    // near that, however long the churn goes on (without it: 200,000 entries at the end).
    FakeClock clock;
    EmbeddedStore store(clock);
    constexpr std::size_t alive = 1000;
    std::size_t most = 0;
    for (int i = 0; i < 200'000; ++i) {
        ASSERT_TRUE(store.apply_now(request({op("per_login", fmt::format("churn{}", i), rates({{1, 1s}}))})).allowed);
        clock.advance(1ms);
        if (i % 1000 == 999) most = std::max(most, store.entries());
    }
    EXPECT_LE(most, 3 * alive);
    EXPECT_GE(most, alive);
}

// same - two results equal in everything a caller reads.
void expect_same(const StoreResult& got, const StoreResult& want, const std::string& step)
{
    EXPECT_EQ(got.allowed, want.allowed) << step;
    EXPECT_EQ(got.refused_op, want.refused_op) << step;
    EXPECT_EQ(got.retry_after_us, want.retry_after_us) << step;
    ASSERT_EQ(got.ops.size(), want.ops.size()) << step;
    for (std::size_t i = 0; i < got.ops.size(); ++i) {
        EXPECT_EQ(got.ops[i].allowed, want.ops[i].allowed) << step << " op " << i;
        EXPECT_EQ(got.ops[i].already_counted, want.ops[i].already_counted) << step << " op " << i;
        EXPECT_EQ(remaining(got, i), remaining(want, i)) << step << " op " << i;
        ASSERT_EQ(got.ops[i].windows.size(), want.ops[i].windows.size()) << step << " op " << i;
        for (std::size_t w = 0; w < got.ops[i].windows.size(); ++w)
            EXPECT_EQ(got.ops[i].windows[w].full_in_us, want.ops[i].windows[w].full_in_us) << step << " op " << i;
    }
}

TEST(EmbeddedStore, AnExpiredKeyUsedAgainIsANewKey)
{
    // An expired state hash or instance set is reset and reused rather than erased (the usual
    // case under load: limits far above a key's traffic). Whatever it held before must not show:
    // each step after expiry answers exactly as a store that never saw the key.
    FakeClock clock;
    EmbeddedStore store(clock);
    auto messages = [](RateSpec r) {
        auto o = op("messages", "alice", std::move(r));
        o.once_per_instance = true;
        return o;
    };
    const std::vector<StoreRequest> steps = {
        request({messages(rates({{2, 1s}, {5, 10s}})), op("rcpt", "alice", rates({{3, 1s}}), 3)}, "Q1"),
        request({messages(rates({{1, 1s}})), op("rcpt", "alice", rates({{3, 1s}}), 4)}, "Q1"), // refused
        request({messages(rates({{3, 2s}})), op("rcpt", "alice", rates({{9, 2s}}), 2)}, "Q1"),
        request({op("rcpt", "alice", rates({{0, 1s}}))}),                                       // a block
        request({messages(rates({{2, 1s}, {5, 10s}})), op("rcpt", "alice", rates({{3, 1s}}))}, "Q1", false),
        request({messages(rates({{2, 1s}, {5, 10s}})), op("rcpt", "alice", rates({{3, 1s}}))}, "Q1"),
    };
    for (std::size_t round = 0; round < 3; ++round) {
        for (std::size_t k = 0; k < steps.size(); ++k) {
            FakeClock fresh_clock;
            fresh_clock.advance(std::chrono::microseconds(clock.now_us() - fresh_clock.now_us()));
            EmbeddedStore fresh(fresh_clock);
            const std::string step = fmt::format("round {} step {}", round, k);
            const StoreResult want = fresh.apply_now(steps[k]);
            expect_same(store.apply_now(steps[k]), want, step);
            // Twice within the windows: the second sees the first (the entry is live again).
            expect_same(store.apply_now(steps[k]), fresh.apply_now(steps[k]), step + " again");
            // Past every window and the instance set's life: both the state and the set expire.
            clock.advance(relayguard::default_instance_ttl + 11s);
        }
    }
    const std::size_t kept = store.entries();
    EXPECT_LE(kept, 2u) << "one state hash and one instance set, reused";
    clock.advance(1s);
    EXPECT_EQ(store.sweep(), kept);
    EXPECT_EQ(store.entries(), 0u);
}

TEST(EmbeddedStore, ConcurrentRequestsShareOneLimitExactly)
{
    FakeClock clock; // time stands still: exactly `count` may ever pass
    EmbeddedStore store(clock);
    constexpr std::uint64_t count = 500;
    constexpr int threads = 4;
    constexpr int attempts = 400;
    std::atomic<int> allowed{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            // Each request also has a per-thread op, so threads lock different shard sets in
            // different op orders: the shard ordering must keep that deadlock-free.
            const auto shared = op("global", "", rates({{count, 3600s}}));
            const auto own = op("per_thread", fmt::format("thread{}", t), rates({{1000, 3600s}}));
            for (int i = 0; i < attempts; ++i) {
                const auto req = (i % 2 == 0) ? request({shared, own}) : request({own, shared});
                if (store.apply_now(req).allowed) ++allowed;
            }
        });
    }
    for (auto& th : pool) th.join();
    EXPECT_EQ(allowed.load(), static_cast<int>(count)) << "got=" << allowed.load() << " want=" << count;
}

TEST(EmbeddedStore, AwaitableApplyMatchesApplyNow)
{
    FakeClock clock;
    EmbeddedStore store(clock);
    const auto req = request({op("per_login", "alice", rates({{1, 60s}}))});
    boost::system::result<StoreResult, std::error_code> got = std::error_code{};
    auto coro = store.apply(req);
    // Drive the coroutine on a minimal io_context.
    boost::asio::io_context io;
    boost::asio::co_spawn(io, std::move(coro), [&](std::exception_ptr e, auto r) {
        ASSERT_FALSE(e);
        got = std::move(r);
    });
    io.run();
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(got->allowed);
    EXPECT_FALSE(store.apply_now(req).allowed) << "the awaitable consumed";
}

} // namespace
