// SPDX-License-Identifier: MIT
// store_conformance_test.cpp - one table of scenarios, run against EmbeddedStore (FakeClock)
// and RedisStore (a real redis-server on a UNIX socket) with the same expectations; then what
// only Redis has: the script cache, overrides written with redis-cli, TTLs, several hosts,
// bit-for-bit GCRA against gcra(), failures and malformed replies.
//
// Redis runs in real time: periods are minutes and hours, a retry-after may be off by up to 1 s
// (Redis only), and every rate gives each unit seconds (T/N >= 3.6 s), so that the few ms a
// test takes never change a remaining count.
#include <relayguard/redis_store.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <relayguard/counter_store.hpp>
#include <relayguard/key_schema.hpp>

#include "testing/redis_server.hpp"
#include "testing/redis_sync.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using relayguard::CounterOp;
using relayguard::EmbeddedStore;
using relayguard::LimitKey;
using relayguard::OpOutcome;
using relayguard::RedisStore;
using relayguard::StoreRequest;
using relayguard::StoreResult;
using relayguard::redis::Client;
using relayguard::redis::errc;
using relayguard::redis::Reply;
using relayguard::testing::RedisServer;
using Source = OpOutcome::Source;
using StoreReply = boost::system::result<StoreResult, std::error_code>;

constexpr std::int64_t sec = 1'000'000;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// ---------------------------------------------------------------------------------------------
// Running coroutines from a test body (testing/redis_sync.hpp)

using relayguard::testing::connect;
using relayguard::testing::redis_cmd;
using relayguard::testing::run_sync;
using relayguard::testing::send;


// ---------------------------------------------------------------------------------------------
// The two stores behind one face

class FakeClock final : public relayguard::Clock {
public:
    std::int64_t now_us() const noexcept override { return now_; }

private:
    std::int64_t now_ = 1'700'000'000'000'000;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual StoreReply apply(const StoreRequest& request) = 0;
    // Set (or with nullopt remove) an override as an operator would.
    virtual void set_override(LimitKey key, const std::string& value, const std::string& limit,
                              const std::optional<std::string>& spec) = 0;
    virtual std::int64_t retry_tolerance_us() const = 0;
    virtual std::string name() const = 0;
};

class EmbeddedBackend final : public Backend {
public:
    StoreReply apply(const StoreRequest& request) override { return store_.apply_now(request); }
    void set_override(LimitKey key, const std::string& value, const std::string& limit,
                      const std::optional<std::string>& spec) override
    {
        std::optional<relayguard::RateSpec> parsed;
        if (spec) {
            std::string why;
            parsed = relayguard::parse_rate_spec(*spec, &why);
            if (!parsed) throw std::runtime_error("bad spec in test: " + why);
        }
        store_.set_override(key, value, limit, parsed);
    }
    std::int64_t retry_tolerance_us() const override { return 0; }
    std::string name() const override { return "embedded"; }

private:
    FakeClock clock_;
    EmbeddedStore store_{clock_};
};

class RedisBackend final : public Backend {
public:
    RedisBackend(asio::io_context& io, Client& client, std::string prefix)
        : io_(io), client_(client), prefix_(prefix), store_(client, std::move(prefix))
    {
    }
    StoreReply apply(const StoreRequest& request) override { return run_sync(io_, store_.apply(request)); }
    void set_override(LimitKey key, const std::string& value, const std::string& limit,
                      const std::optional<std::string>& spec) override
    {
        const std::string okey = relayguard::override_key(prefix_, key, value);
        if (spec)
            redis_cmd(io_, client_, {"HSET", okey, limit, *spec});
        else
            redis_cmd(io_, client_, {"HDEL", okey, limit});
    }
    std::int64_t retry_tolerance_us() const override { return sec; }
    std::string name() const override { return "redis"; }

private:
    asio::io_context& io_;
    Client& client_;
    std::string prefix_;
    RedisStore store_;
};

// ---------------------------------------------------------------------------------------------
// The scenario table

CounterOp op(std::string limit, std::string value, const std::string& defaults, std::uint64_t cost = 1,
             LimitKey key = LimitKey::sasl_username)
{
    CounterOp o;
    o.limit = std::move(limit);
    o.key = key;
    o.value = std::move(value);
    auto spec = relayguard::parse_rate_spec(defaults);
    if (!spec) throw std::runtime_error("bad default spec in test: " + defaults);
    o.defaults = *spec;
    o.cost = cost;
    return o;
}
CounterOp once(CounterOp o)
{
    o.once_per_instance = true;
    return o;
}
CounterOp shadow(CounterOp o)
{
    o.shadow = true;
    return o;
}
CounterOp with_parent(CounterOp o, std::string parent)
{
    o.parent = std::move(parent);
    return o;
}
StoreRequest req(std::vector<CounterOp> ops, std::string instance = "", bool consume = true)
{
    return StoreRequest{std::move(ops), std::move(instance), consume};
}

struct OpWant {
    std::vector<std::uint64_t> remaining;
    bool allowed = true;
    bool already = false;
    Source source = Source::config;
    std::string effective; // canonical text; "" = not checked
};
OpWant rem(std::vector<std::uint64_t> r) { return OpWant{std::move(r)}; }
OpWant refused(std::vector<std::uint64_t> r)
{
    OpWant w{std::move(r)};
    w.allowed = false;
    return w;
}
OpWant already(std::vector<std::uint64_t> r)
{
    OpWant w{std::move(r)};
    w.already = true;
    return w;
}
OpWant from(Source source, std::string effective, std::vector<std::uint64_t> r, bool allowed = true)
{
    OpWant w{std::move(r)};
    w.source = source;
    w.effective = std::move(effective);
    w.allowed = allowed;
    return w;
}

struct Step {
    // Either a request and what must come of it...
    StoreRequest request;
    bool allowed = true;
    std::optional<std::size_t> refused_op;
    std::int64_t retry_after_us = 0;
    std::vector<OpWant> ops;
    // ...or an override to set (spec) or remove (no spec).
    bool is_override = false;
    LimitKey key = LimitKey::sasl_username;
    std::string value, limit;
    std::optional<std::string> spec;
};

Step ok(StoreRequest r, std::vector<OpWant> ops) { return Step{std::move(r), true, std::nullopt, 0, std::move(ops)}; }
// ok_but - allowed, with a refused shadow op.
Step ok_but(StoreRequest r, std::size_t shadow_op, std::int64_t retry_us, std::vector<OpWant> ops)
{
    return Step{std::move(r), true, shadow_op, retry_us, std::move(ops)};
}
Step no(StoreRequest r, std::size_t refused_op, std::int64_t retry_us, std::vector<OpWant> ops)
{
    return Step{std::move(r), false, refused_op, retry_us, std::move(ops)};
}
Step set(LimitKey key, std::string value, std::string limit, std::optional<std::string> spec)
{
    Step s;
    s.is_override = true;
    s.key = key;
    s.value = std::move(value);
    s.limit = std::move(limit);
    s.spec = std::move(spec);
    return s;
}

struct Scenario {
    std::string name;
    std::vector<Step> steps;
};

const std::vector<Scenario>& scenarios()
{
    constexpr auto l = LimitKey::sasl_username;
    static const std::vector<Scenario> table = [] {
        std::vector<Scenario> t;
        {
            const auto o = op("per_login", "alice", "3/1h");
            t.push_back({"burst_then_refuse",
                         {ok(req({o}), {rem({2})}), ok(req({o}), {rem({1})}), ok(req({o}), {rem({0})}),
                          no(req({o}), 0, 1200 * sec, {refused({0})})}});
        }
        {
            const auto o = op("per_login", "alice", "2/1m, 100/1h");
            auto read = o;
            read.cost = 0;
            t.push_back({"every_window_must_have_room",
                         {ok(req({o}), {rem({1, 99})}), ok(req({o}), {rem({0, 98})}),
                          no(req({o}), 0, 30 * sec, {refused({0, 97})}), ok(req({read}), {rem({0, 98})})}});
        }
        {
            const auto a = op("recipients", "alice", "10/1h");
            const auto b = op("per_ip", "192.0.2.0/24", "1/1h", 1, LimitKey::client_address);
            auto read = a;
            read.cost = 0;
            t.push_back({"refused_op_consumes_nothing_for_any_op",
                         {ok(req({a, b}), {rem({9}), rem({0})}),
                          no(req({a, b}), 1, 3600 * sec, {rem({8}), refused({0})}),
                          ok(req({read}), {rem({9})})}});
        }
        {
            const auto o = op("per_login", "alice", "100/1h");
            t.push_back({"value_override",
                         {set(l, "alice", "per_login", "1/1h"),
                          ok(req({o}), {from(Source::override_value, "1/3600s", {0})}),
                          no(req({o}), 0, 3600 * sec, {from(Source::override_value, "1/3600s", {0}, false)})}});
        }
        {
            const auto o = with_parent(op("per_login", "alice@example.com", "100/1h"), "@example.com");
            t.push_back({"parent_override_inherited_value_override_wins",
                         {set(l, "@example.com", "per_login", "2/1h"),
                          ok(req({o}), {from(Source::override_parent, "2/3600s", {1})}),
                          set(l, "alice@example.com", "per_login", "5/1h"),
                          // The units used carry over a rate change: 1 used at 2/1h is 1 of 5,
                          // +1 = 2 used, 3 left.
                          ok(req({o}), {from(Source::override_value, "5/3600s", {3})}),
                          set(l, "alice@example.com", "per_login", std::nullopt),
                          // 2 used at 2/1h: full; the next fits when one has refilled... plus
                          // this one: (2 + 1 - 2) slots of 1800 s.
                          no(req({o}), 0, 1800 * sec, {from(Source::override_parent, "2/3600s", {0}, false)}),
                          set(l, "@example.com", "per_login", std::nullopt),
                          // 2 used of 100, +1: 97 left.
                          ok(req({o}), {from(Source::config, "100/3600s", {97})})}});
        }
        {
            const auto o = once(op("per_login", "vip", "1/1h"));
            const auto u = from(Source::override_value, "unlimited", {});
            t.push_back({"unlimited_override_touches_nothing",
                         {set(l, "vip", "per_login", "unlimited"), ok(req({o}, "Q1"), {u}), ok(req({o}, "Q1"), {u}),
                          ok(req({o}, "Q1"), {u}), set(l, "vip", "per_login", std::nullopt),
                          ok(req({o}, "Q1"), {from(Source::config, "1/3600s", {0})})}});
        }
        {
            const auto o = op("per_login", "spammer", "100/1h");
            t.push_back({"zero_override_blocks",
                         {set(l, "spammer", "per_login", "0"),
                          no(req({o}), 0, sec, {from(Source::override_value, "0", {0}, false)}),
                          no(req({o}), 0, sec, {from(Source::override_value, "0", {0}, false)})}});
        }
        {
            const auto o = op("per_login", "bob", "100/1h");
            t.push_back({"override_in_operator_units",
                         {set(l, "bob", "per_login", " 10/1m 100/1h "),
                          ok(req({o}), {from(Source::override_value, "10/60s,100/3600s", {9, 99})}),
                          set(l, "bob", "per_login", "50/3600"),
                          ok(req({o}), {from(Source::override_value, "50/3600s", {48})})}});
        }
        {
            const auto m = once(op("messages", "alice", "5/1h"));
            t.push_back({"message_counted_once_per_instance",
                         {ok(req({m}, "Q1"), {rem({4})}), ok(req({m}, "Q1"), {already({4})}),
                          ok(req({m}, "Q2"), {rem({3})}), ok(req({m}, "Q1"), {already({3})}),
                          ok(req({m}, ""), {rem({2})}), ok(req({m}, ""), {rem({1})})}});
        }
        {
            const auto m = once(op("messages", "alice", "5/1h"));
            const auto blocked = op("rcpt", "alice", "0");
            t.push_back({"refused_request_does_not_mark_instance",
                         {no(req({m, blocked}, "Q1"), 1, sec, {rem({4}), refused({0})}),
                          ok(req({m}, "Q1"), {rem({4})}), ok(req({m}, "Q1"), {already({4})})}});
        }
        {
            const auto s = shadow(op("trial", "alice", "1/1h"));
            const auto e = op("per_login", "alice", "10/1h");
            auto read = s;
            read.cost = 0;
            t.push_back({"shadow_op_counts_but_does_not_refuse",
                         {ok(req({s, e}), {rem({0}), rem({9})}),
                          ok_but(req({s, e}), 0, 3600 * sec, {refused({0}), rem({8})}),
                          ok_but(req({s, e}), 0, 3600 * sec, {refused({0}), rem({7})}), ok(req({read}), {rem({0})})}});
        }
        {
            const auto s = shadow(op("trial", "alice", "1/1m, 10/1h"));
            const auto e = op("per_login", "alice", "10/1h");
            auto read = s;
            read.cost = 0;
            t.push_back({"refused_shadow_op_writes_none_of_its_windows",
                         {ok(req({s, e}), {rem({0, 9}), rem({9})}),
                          ok_but(req({s, e}), 0, 60 * sec, {refused({0, 8}), rem({8})}),
                          ok(req({read}), {rem({0, 9})})}});
        }
        {
            const auto s = shadow(op("trial", "alice", "1/1d"));
            const auto minute = op("per_minute", "alice", "1/1m");
            const auto hour = op("per_hour", "bob", "1/1h");
            t.push_back({"enforcing_refusal_reported_before_longer_shadow_one",
                         {ok(req({s, minute, hour}), {rem({0}), rem({0}), rem({0})}),
                          no(req({s, minute, hour}), 2, 3600 * sec, {refused({0}), refused({0}), refused({0})})}});
        }
        {
            const auto one_window = op("two_windows", "alice", "1/1m, 1/1h");
            t.push_back({"op_retry_is_its_longest_window",
                         {ok(req({one_window}), {rem({0, 0})}), no(req({one_window}), 0, 3600 * sec, {refused({0, 0})})}});
        }
        {
            t.push_back({"bytes_cost_above_one_and_above_count",
                         {ok(req({op("bytes", "alice", "1000/1h", 600)}), {rem({400})}),
                          no(req({op("bytes", "alice", "1000/1h", 500)}), 0, 360 * sec, {refused({400})}),
                          ok(req({op("bytes", "alice", "1000/1h", 400)}), {rem({0})}),
                          no(req({op("bytes", "bob", "1000/1h", 1001)}), 0, 3600'000, {refused({1000})})}});
        }
        {
            const auto m = once(op("messages", "alice", "3/1h"));
            t.push_back({"read_only_request_changes_nothing",
                         {ok(req({m}, "Q1", false), {rem({2})}), ok(req({m}, "Q1", false), {rem({2})}),
                          ok(req({m}, "Q1", false), {rem({2})}), ok(req({m}, "Q1"), {rem({2})}),
                          ok(req({m}, "Q1"), {already({2})})}});
        }
        {
            const auto msgs = op("messages", "alice", "5/1h");
            const auto rcpt = op("recipients", "alice", "3/1h");
            t.push_back({"two_limits_share_one_key_value",
                         {ok(req({rcpt}), {rem({2})}), ok(req({rcpt}), {rem({1})}), ok(req({rcpt}), {rem({0})}),
                          no(req({msgs, rcpt}), 1, 1200 * sec, {rem({4}), refused({0})}),
                          ok(req({msgs}), {rem({4})})}});
        }
        {
            const auto hostile = op("per_login", "a}b {c}%\xff", "1/1h");
            const auto lookalike = op("per_login", "a%7Db %7Bc%7D%25%FF", "1/1h");
            t.push_back({"hostile_values_do_not_collide",
                         {ok(req({hostile}), {rem({0})}), no(req({hostile}), 0, 3600 * sec, {refused({0})}),
                          ok(req({lookalike}), {rem({0})})}});
        }
        {
            const auto g = op("everything", "", "2/1m", 1, LimitKey::global);
            t.push_back({"global_key",
                         {ok(req({g}), {rem({1})}), ok(req({g}), {rem({0})}), no(req({g}), 0, 30 * sec, {refused({0})})}});
        }
        return t;
    }();
    return table;
}

// run_scenario - every step against one backend; failures name the backend, scenario and step.
void run_scenario(Backend& backend, const Scenario& scenario)
{
    for (std::size_t i = 0; i < scenario.steps.size(); ++i) {
        const Step& step = scenario.steps[i];
        if (step.is_override) {
            backend.set_override(step.key, step.value, step.limit, step.spec);
            continue;
        }
        const std::string where = fmt::format("{} {} step {}", backend.name(), scenario.name, i);
        const StoreReply got = backend.apply(step.request);
        ASSERT_TRUE(got.has_value()) << where << " got=error " << got.error().message();
        const StoreResult& r = *got;
        EXPECT_EQ(r.allowed, step.allowed) << where << " got=" << r.allowed << " want=" << step.allowed;
        EXPECT_EQ(r.refused_op, step.refused_op)
            << where << " got=" << (r.refused_op ? std::to_string(*r.refused_op) : "none")
            << " want=" << (step.refused_op ? std::to_string(*step.refused_op) : "none");
        EXPECT_NEAR(r.retry_after_us, step.retry_after_us, backend.retry_tolerance_us())
            << where << " retry_after got=" << r.retry_after_us << " want=" << step.retry_after_us;
        ASSERT_EQ(r.ops.size(), step.request.ops.size()) << where;
        for (std::size_t k = 0; k < step.ops.size(); ++k) {
            const OpOutcome& o = r.ops[k];
            const OpWant& w = step.ops[k];
            const std::string at = fmt::format("{} op {}", where, k);
            std::vector<std::uint64_t> remaining;
            for (const auto& win : o.windows) remaining.push_back(win.remaining);
            EXPECT_EQ(remaining, w.remaining)
                << at << " remaining got=" << fmt::format("{}", fmt::join(remaining, ","))
                << " want=" << fmt::format("{}", fmt::join(w.remaining, ","));
            EXPECT_EQ(o.allowed, w.allowed) << at << " allowed got=" << o.allowed << " want=" << w.allowed;
            EXPECT_EQ(o.already_counted, w.already) << at << " already_counted got=" << o.already_counted;
            EXPECT_EQ(o.source, w.source) << at << " source got=" << static_cast<int>(o.source)
                                          << " want=" << static_cast<int>(w.source);
            if (!w.effective.empty()) {
                EXPECT_EQ(relayguard::format_rate_spec(o.effective), w.effective) << at << " effective";
            }
            if (!o.allowed && !w.already) {
                EXPECT_GT(o.retry_after_us, 0) << at;
            }
            for (const auto& win : o.windows) EXPECT_GE(win.full_in_us, 0) << at;
        }
    }
}

TEST(StoreConformance, EmbeddedStorePassesEveryScenario)
{
    for (const auto& scenario : scenarios()) {
        EmbeddedBackend backend;
        run_scenario(backend, scenario);
    }
}

TEST(StoreConformance, RedisStorePassesEveryScenario)
{
    RedisServer server;
    asio::io_context io;
    auto client = connect(io, "unix:" + server.unix_path());
    int n = 0;
    for (const auto& scenario : scenarios()) {
        RedisBackend backend(io, *client, fmt::format("rg{}:", n++)); // a fresh keyspace each
        run_scenario(backend, scenario);
    }
}

// ---------------------------------------------------------------------------------------------
// Redis only

class RedisStoreTest : public ::testing::Test {
protected:
    RedisStoreTest() : client_(connect(io_, "unix:" + server_.unix_path())), store_(*client_, std::string(prefix)) {}

    StoreResult apply(const StoreRequest& r) { return apply(store_, r); }
    StoreResult apply(RedisStore& store, const StoreRequest& r)
    {
        StoreReply got = run_sync(io_, store.apply(r));
        if (!got) throw std::runtime_error("apply: " + got.error().message());
        return std::move(*got);
    }
    Reply cmd(std::vector<std::string> args) { return redis_cmd(io_, *client_, std::move(args)); }
    long long integer(std::vector<std::string> args)
    {
        const Reply r = cmd(std::move(args));
        if (r.type != Reply::Type::integer) throw std::runtime_error("not an integer reply");
        return r.integer;
    }

    static constexpr std::string_view prefix = "rg:";
    RedisServer server_;
    asio::io_context io_;
    std::unique_ptr<Client> client_;
    RedisStore store_;
};

TEST_F(RedisStoreTest, ScriptFlushMidRunIsHarmless)
{
    const auto o = op("per_login", "alice", "3/1h");
    EXPECT_EQ(apply(req({o})).ops[0].windows[0].remaining, 2u);
    cmd({"SCRIPT", "FLUSH"});
    const StoreResult r = apply(req({o}));
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.ops[0].windows[0].remaining, 1u) << "the state survived, the script was loaded again";
    EXPECT_EQ(cmd({"SCRIPT", "EXISTS", relayguard::rate_script().sha1()}).elements.at(0).integer, 1);
}

TEST_F(RedisStoreTest, RaisedOrLoweredRateCarriesTheUnitsUsedOver)
{
    // As EmbeddedStore.RaisedOrLoweredRateCarriesTheUnitsUsedOver, with the override written
    // by an operator's HSET: 3/1h used up, raised to 100/1h, then lowered to 5/1h.
    const auto o = op("per_login", "alice@example.com", "3/1h");
    const std::string own = relayguard::override_key(prefix, LimitKey::sasl_username, "alice@example.com");
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(apply(req({o})).allowed) << "request " << i;
    ASSERT_FALSE(apply(req({o})).allowed);

    cmd({"HSET", own, "per_login", "100/1h"});
    StoreResult r = apply(req({o}));
    EXPECT_TRUE(r.allowed) << "raised: the next request must fit";
    EXPECT_EQ(r.ops[0].windows.at(0).remaining, 96u);

    cmd({"HSET", own, "per_login", "5/1h"});
    r = apply(req({o}));
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.ops[0].windows.at(0).remaining, 0u);
    EXPECT_FALSE(apply(req({o})).allowed) << "lowered: 5 used of 5";
    const std::string state = relayguard::state_key(prefix, LimitKey::sasl_username, "alice@example.com");
    EXPECT_EQ(cmd({"HGET", state, "n:per_login:3600"}).str, "5");
}

TEST_F(RedisStoreTest, OverrideWrittenWithHsetAppliesToTheNextRequest)
{
    const auto o = with_parent(op("per_login", "alice@example.com", "100/1h", 0), "@example.com");
    const std::string own = relayguard::override_key(prefix, LimitKey::sasl_username, "alice@example.com");
    const std::string parent = relayguard::override_key(prefix, LimitKey::sasl_username, "@example.com");
    EXPECT_EQ(own, "rg:{l:alice@example.com}:o");

    struct Case {
        std::string own_value, parent_value; // "" = not set
        Source source;
        std::string effective;
    };
    const std::vector<Case> cases = {
        {"", "", Source::config, "100/3600s"},
        {"20000/1d", "", Source::override_value, "20000/86400s"},
        {"", "7/1m", Source::override_parent, "7/60s"},
        {"garbage", "7/1m", Source::override_parent, "7/60s"}, // an invalid override is ignored
        {"5/1m,", "", Source::config, "100/3600s"},
        {"", "1/0s", Source::config, "100/3600s"},
        {"unlimited", "0", Source::override_value, "unlimited"},
    };
    for (const auto& c : cases) {
        cmd({"DEL", own, parent});
        if (!c.own_value.empty()) cmd({"HSET", own, "per_login", c.own_value});
        if (!c.parent_value.empty()) cmd({"HSET", parent, "per_login", c.parent_value});
        const StoreResult r = apply(req({o}));
        const std::string at = fmt::format("own=\"{}\" parent=\"{}\"", c.own_value, c.parent_value);
        EXPECT_EQ(r.ops[0].source, c.source) << at << " got=" << static_cast<int>(r.ops[0].source);
        EXPECT_EQ(relayguard::format_rate_spec(r.ops[0].effective), c.effective) << at;
    }
    EXPECT_EQ(integer({"PTTL", own}), -1) << "overrides never expire";
}

TEST_F(RedisStoreTest, SetsTtlsOnStateAndInstanceKeys)
{
    const std::string alice = relayguard::state_key(prefix, LimitKey::sasl_username, "alice");
    const std::string q1 = relayguard::instance_key(prefix, "Q1");

    // 2/1h: the TAT is 1800 s ahead, and so is the expiry.
    apply(req({once(op("messages", "alice", "2/1h"))}, "Q1"));
    long long pttl = integer({"PTTL", alice});
    EXPECT_GT(pttl, 1790'000) << "got=" << pttl;
    EXPECT_LE(pttl, 1800'000) << "got=" << pttl;
    const long long ttl = integer({"TTL", q1});
    EXPECT_GT(ttl, relayguard::default_instance_ttl.count() - 10) << "got=" << ttl;
    EXPECT_LE(ttl, relayguard::default_instance_ttl.count()) << "got=" << ttl;
    EXPECT_EQ(integer({"SISMEMBER", q1, "messages|l:alice"}), 1);
    EXPECT_EQ(cmd({"HGET", alice, "t:messages:3600"}).type, Reply::Type::string);

    // A request that only touches a short limit keeps the expiry of the longer one.
    apply(req({op("per_second", "alice", "10/1m")}));
    pttl = integer({"PTTL", alice});
    EXPECT_GT(pttl, 1790'000) << "got=" << pttl << ": a short limit cut the hash's life";

    // A refusal on a new key: a refused counter, living for the op's longest window.
    const std::string bob = relayguard::state_key(prefix, LimitKey::sasl_username, "bob");
    apply(req({op("per_login", "bob", "0/1m")}));
    apply(req({op("per_login", "bob", "0/1m")}));
    EXPECT_EQ(cmd({"HGET", bob, "r:per_login"}).str, "2");
    pttl = integer({"PTTL", bob});
    EXPECT_GT(pttl, 50'000) << "got=" << pttl;
    EXPECT_LE(pttl, 60'000) << "got=" << pttl;

    // A refusal on an existing key keeps its TTL.
    const auto carol = op("per_login", "carol", "1/1h");
    apply(req({carol}));
    const std::string carol_key = relayguard::state_key(prefix, LimitKey::sasl_username, "carol");
    apply(req({carol}));
    EXPECT_EQ(cmd({"HGET", carol_key, "r:per_login"}).str, "1");
    pttl = integer({"PTTL", carol_key});
    EXPECT_GT(pttl, 3590'000) << "got=" << pttl;
}

TEST_F(RedisStoreTest, ReadOnlyRequestWritesNoKey)
{
    apply(req({once(op("messages", "alice", "2/1h")), op("rcpt", "bob", "0")}, "Q1", false));
    apply(req({once(op("messages", "alice", "2/1h"))}, "Q1", false));
    EXPECT_EQ(integer({"DBSIZE"}), 0);
}

TEST_F(RedisStoreTest, TwoHostsShareOneLimitExactly)
{
    // A second "host": its own connection and store on the same Redis.
    auto other_client = connect(io_, "unix:" + server_.unix_path());
    RedisStore other(*other_client, std::string(prefix));
    const auto o = op("per_login", "alice", "10/1h");
    int allowed = 0;
    for (int i = 0; i < 30; ++i) {
        const StoreResult r = apply(i % 2 == 0 ? store_ : other, req({o}));
        if (r.allowed) ++allowed;
        EXPECT_EQ(r.allowed, i < 10) << "request " << i;
    }
    EXPECT_EQ(allowed, 10) << "got=" << allowed;
}

// The script's GCRA against gcra(), bit for bit, on random rates, costs and stored TATs. Redis
// reads its own clock; a reference window (cost 0, TAT in the future) reveals which `now` it
// used: its full_in_us is exactly TAT - now.
TEST_F(RedisStoreTest, ScriptComputesExactlyWhatGcraComputes)
{
    std::mt19937_64 rng(20240611);
    const auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
        return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    const std::vector<std::uint64_t> counts = {1, 2, 3, 7, 60, 100, 12345, 1'000'000, 1'000'000'000,
                                               1'000'000'000'000'000};
    const Reply time = cmd({"TIME"});
    const std::int64_t redis_now = std::stoll(time.elements.at(0).str) * sec + std::stoll(time.elements.at(1).str);

    for (int i = 0; i < 300; ++i) {
        const std::uint64_t count = i % 3 == 0 ? pick(1, 1'000'000) : counts[pick(0, counts.size() - 1)];
        const std::int64_t period_s = static_cast<std::int64_t>(i % 4 == 0 ? pick(1, 31622400) : pick(1, 7200));
        const std::uint64_t cost = i % 5 == 0 ? 0 : i % 5 == 1 ? count + pick(0, count) : pick(1, count);
        const std::int64_t period_us = period_s * sec;
        const std::int64_t tat = i % 7 == 0 ? 0
                                 : redis_now + static_cast<std::int64_t>(pick(0, 2 * period_us + 2 * sec)) -
                                       period_us;
        const std::string value = fmt::format("v{}", i);
        const std::string key = relayguard::state_key(prefix, LimitKey::sasl_username, value);
        const std::int64_t ref_tat = redis_now + 600 * sec;
        const std::string rate_text = fmt::format("{}/{}s", count, period_s);
        cmd({"HSET", key, "t:ref:86400", std::to_string(ref_tat), fmt::format("t:g:{}", period_s), std::to_string(tat)});

        const StoreResult r =
            apply(req({op("ref", value, "1/1d", 0), op("g", value, rate_text, cost)}, "", false));
        const std::int64_t now = ref_tat - r.ops.at(0).windows.at(0).full_in_us;
        const relayguard::Rate rate{count, std::chrono::seconds{period_s}};
        const relayguard::GcraResult want = relayguard::gcra(tat, now, rate, cost);
        const std::string at = fmt::format("case {}: rate={} cost={} tat=now{:+}", i, rate_text, cost, tat - now);

        const OpOutcome& got = r.ops.at(1);
        ASSERT_EQ(got.windows.size(), 1u) << at;
        EXPECT_EQ(got.allowed, want.allowed) << at << " got=" << got.allowed << " want=" << want.allowed;
        EXPECT_EQ(got.retry_after_us, want.allowed ? 0 : want.retry_after)
            << at << " got=" << got.retry_after_us << " want=" << want.retry_after;
        EXPECT_EQ(got.windows[0].remaining, want.remaining)
            << at << " got=" << got.windows[0].remaining << " want=" << want.remaining;
        const std::int64_t x = want.allowed ? want.new_tat : std::max(tat, now);
        EXPECT_EQ(got.windows[0].full_in_us, std::max<std::int64_t>(x - now, 0))
            << at << " got=" << got.windows[0].full_in_us;
    }
}

TEST_F(RedisStoreTest, RedisDownIsAnError)
{
    const auto o = op("per_login", "alice", "3/1h");
    apply(req({o}));
    server_.kill();
    const StoreReply got = run_sync(io_, store_.apply(req({o})));
    ASSERT_FALSE(got.has_value()) << "a store failure must not look like a decision";
    EXPECT_TRUE(got.error() == errc::not_connected || got.error() == errc::connection_lost)
        << "got=" << got.error().message();
}

// A call that timed out in the daemon (which then answered per on_error, and with "local"
// counted it itself) must not be counted by Redis when Redis gets to it later: the script sees
// that its deadline has passed and changes nothing.
TEST_F(RedisStoreTest, CallRunAfterItsDeadlineConsumesNothing)
{
    // The daemon's production default (store.redis.timeout); the sleep is far longer.
    constexpr auto timeout = 50ms;
    auto fast = connect(io_, "unix:" + server_.unix_path(), timeout);
    RedisStore store(*fast, std::string(prefix), relayguard::default_instance_ttl, timeout);
    const auto o = once(op("per_login", "alice", "3/1h"));
    const std::string state = relayguard::state_key(prefix, LimitKey::sasl_username, "alice");
    const std::string instance = relayguard::instance_key(prefix, "Q-late");

    // The script cached, so that the late call is an EVALSHA that runs (not a NOSCRIPT whose
    // EVAL fallback the client, having given up, never sends).
    cmd({"SCRIPT", "LOAD", relayguard::rate_script().body()});

    // Redis busy for 1.2 s (past the 50 ms timeout plus the store's 500 ms clock tolerance), from
    // another connection (the fixture's, 5 s timeout).
    std::optional<boost::system::result<Reply, std::error_code>> slept;
    asio::co_spawn(io_, send(*client_, {"DEBUG", "SLEEP", "1.2"}), [&](std::exception_ptr, auto r) { slept = r; });
    // Proof that Redis is stuck before the store call goes out: a PING times out too.
    const auto ping = run_sync(io_, send(*fast, {"PING"}));
    ASSERT_FALSE(ping.has_value()) << "Redis answered PING during DEBUG SLEEP: the test proves nothing";
    ASSERT_EQ(ping.error(), errc::timeout) << "got=" << ping.error().message();

    const StoreReply late = run_sync(io_, store.apply(req({o}, "Q-late")));
    ASSERT_FALSE(late.has_value()) << "got=a result while Redis slept";
    EXPECT_EQ(late.error(), errc::timeout) << "got=" << late.error().message();

    // Redis wakes up and runs the queued script: it must find its deadline passed.
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (!slept && std::chrono::steady_clock::now() < end) io_.run_one_for(50ms);
    ASSERT_TRUE(slept && slept->has_value()) << "DEBUG SLEEP did not complete";
    // A command on the fixture's connection is answered after everything Redis had queued
    // before it (one thread), so by now the late script has run or never will.
    EXPECT_EQ(integer({"EXISTS", state}), 0) << "the late script wrote " << fmt::format("{}", cmd({"HGETALL", state}).elements.size()) << " fields";
    EXPECT_EQ(integer({"EXISTS", instance}), 0) << "the late script marked the instance counted";

    // The same store, Redis healthy again: calls within their deadline count as always.
    const StoreReply ok = run_sync(io_, store.apply(req({o}, "Q-late")));
    ASSERT_TRUE(ok.has_value()) << "got=" << ok.error().message();
    EXPECT_TRUE(ok->allowed);
    EXPECT_EQ(ok->ops.at(0).windows.at(0).remaining, 2u) << "got=" << ok->ops.at(0).windows.at(0).remaining << " want=2 (one unit, once)";
    EXPECT_EQ(integer({"SISMEMBER", instance, "per_login|l:alice"}), 1);
}

// ---------------------------------------------------------------------------------------------
// Malformed replies, from a fake "Redis" on loopback

// resp - RESP text for a flat array of integers and bulk strings ("$..." marks a string).
std::string resp(const std::vector<std::string>& items)
{
    std::string out = fmt::format("*{}\r\n", items.size());
    for (const auto& it : items) {
        if (it.starts_with('$'))
            out += fmt::format("${}\r\n{}\r\n", it.size() - 1, it.substr(1));
        else
            out += fmt::format(":{}\r\n", it);
    }
    return out;
}

// FakeRedis - accepts on 127.0.0.1, answers the connect-time PING with +PONG and every later
// command with `reply`.
class FakeRedis {
public:
    FakeRedis(asio::io_context& io, std::string reply)
        : acceptor_(io, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)), reply_(std::move(reply))
    {
        asio::co_spawn(io, serve(), asio::detached);
    }
    ~FakeRedis()
    {
        boost::system::error_code ignored;
        acceptor_.close(ignored);
        for (auto& s : sockets_) s->close(ignored);
    }
    std::string address() const { return fmt::format("tcp:127.0.0.1:{}", acceptor_.local_endpoint().port()); }

private:
    asio::awaitable<void> serve()
    {
        auto [ec, sock] = co_await acceptor_.async_accept(use_tuple);
        if (ec) co_return;
        auto s = std::make_shared<asio::ip::tcp::socket>(std::move(sock));
        sockets_.push_back(s);
        char buf[65536];
        for (bool first = true;; first = false) {
            auto [rec, n] = co_await s->async_read_some(asio::buffer(buf), use_tuple);
            if (rec) co_return;
            const std::string out = first ? std::string("+PONG\r\n") : reply_;
            auto [wec, m] = co_await asio::async_write(*s, asio::buffer(out), use_tuple);
            if (wec) co_return;
        }
    }

    asio::ip::tcp::acceptor acceptor_;
    std::string reply_;
    std::vector<std::shared_ptr<asio::ip::tcp::socket>> sockets_;
};

TEST(RedisStoreReply, RejectsEveryMalformedReply)
{
    // One op, one window "1/3600s": header (4) + op (6) + window (2).
    // The rates' text comes only with an override (source 1 or 2); the config's are the op's.
    const std::vector<std::string> good = {"1", "-1", "0", "1", "1", "0", "0", "$", "0", "1", "0", "3600000000"};
    const auto with = [&](std::vector<std::pair<std::size_t, std::string>> changes) {
        auto items = good;
        for (auto& [i, v] : changes) items.at(i) = std::move(v);
        return resp(items);
    };
    const auto with1 = [&](std::size_t i, std::string v) { return with({{i, std::move(v)}}); };
    struct Case {
        std::string name;
        std::string reply;
        std::error_code want; // {} = decodes
    };
    const std::error_code protocol = errc::protocol_error;
    std::vector<std::string> truncated(good.begin(), good.end() - 1);
    std::vector<std::string> extra = good;
    extra.push_back("0");
    const std::vector<Case> cases = {
        {"well formed", resp(good), {}},
        {"integer, not an array", ":1\r\n", protocol},
        {"nil", "$-1\r\n", protocol},
        {"empty array", "*0\r\n", protocol},
        {"error reply", "-ERR boom\r\n", errc::server_error},
        {"override source with its rates", with({{6, "1"}, {7, "$2/1h"}}), {}},
        {"allowed not 0/1", with1(0, "2"), protocol},
        {"refused op out of range", with1(1, "1"), protocol},
        {"negative retry", with1(2, "-5"), protocol},
        {"wrong op count", with1(3, "2"), protocol},
        {"source out of range", with1(6, "3"), protocol},
        {"spec not a string", with1(7, "5"), protocol},
        {"config source with rates text", with1(7, "$1/3600s"), protocol},
        {"override source without rates", with1(6, "2"), protocol},
        {"override rates unparsable", with({{6, "1"}, {7, "$lots"}}), protocol},
        {"window count off", with1(9, "2"), protocol},
        {"remaining above count", with1(10, "2"), protocol},
        {"negative full_in", with1(11, "-1"), protocol},
        {"truncated", resp(truncated), protocol},
        {"trailing element", resp(extra), protocol},
        {"refused without refused op", with1(0, "0"), protocol},
        {"refused op that was allowed", with1(1, "0"), protocol},
    };
    for (const auto& c : cases) {
        asio::io_context io;
        FakeRedis fake(io, c.reply);
        auto client = connect(io, fake.address());
        RedisStore store(*client, "rg:");
        const StoreReply got = run_sync(io, store.apply(req({op("per_login", "alice", "1/1h")})));
        if (!c.want) {
            ASSERT_TRUE(got.has_value()) << c.name << " got=error " << got.error().message();
            EXPECT_TRUE(got->allowed) << c.name;
            EXPECT_EQ(got->ops.at(0).windows.at(0).full_in_us, 3600 * sec) << c.name;
            continue;
        }
        ASSERT_FALSE(got.has_value()) << c.name << " got=a result want=" << c.want.message();
        EXPECT_EQ(got.error(), c.want) << c.name << " got=" << got.error().message() << " want=" << c.want.message();
    }
}

} // namespace
