// SPDX-License-Identifier: MIT
// live_store_test.cpp - one table of scenarios, run against EmbeddedLiveStore and RedisLiveStore
// (a real redis-server on a UNIX socket) with the same expectations and the same injected
// clock; then what only Redis has (relayguardctl's suspension form, key types and TTLs, several
// daemons, errors, an outage) and what only the embedded store has (its memory bound, its cap).
//
// Redis keeps real time for TTLs, but bucket numbers and "until" come from the store's clock,
// so advancing the test clock moves both stores through their windows alike, with no sleep.
#include <relayguard/live_store.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/redis.hpp>

#include "testing/redis_server.hpp"
#include "testing/redis_sync.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using relayguard::EmbeddedLiveStore;
using relayguard::LiveFacts;
using relayguard::LiveQuery;
using relayguard::LiveStore;
using relayguard::RedisLiveStore;
using relayguard::Signal;
using relayguard::Suspension;
using relayguard::redis::Client;
using relayguard::redis::errc;
using relayguard::redis::Reply;
using relayguard::testing::RedisServer;

constexpr std::int64_t sec = 1'000'000;
constexpr auto window = 60s; // buckets of 15 s

// ---------------------------------------------------------------------------------------------
// Running coroutines from a test body (testing/redis_sync.hpp)

using relayguard::testing::connect;
using relayguard::testing::redis_cmd;
using relayguard::testing::run_sync;
using relayguard::testing::send;

// sync - run `aw` on an io_context of its own (a store that never waits: the embedded one).
template <class T>
T sync(asio::awaitable<T> aw)
{
    asio::io_context io;
    return run_sync(io, std::move(aw));
}


// TestClock - starts on the next whole hour (bucket edges for every window that divides an
// hour; and within an hour of real time, so that Redis's EXPIREAT of a suspension the store
// writes is in the real future).
class TestClock final : public relayguard::Clock {
public:
    TestClock()
    {
        const std::int64_t real = relayguard::system_clock().now_us();
        now_ = (real / (3600 * sec) + 1) * 3600 * sec;
    }
    std::int64_t now_us() const noexcept override { return now_; }
    std::int64_t now_s() const noexcept { return now_ / sec; }
    void advance(std::chrono::seconds d) noexcept { now_ += d.count() * sec; }

private:
    std::int64_t now_;
};

// ---------------------------------------------------------------------------------------------
// The two stores behind one face

class Backend {
public:
    explicit Backend(std::string name) : name_(std::move(name)) {}
    virtual ~Backend() = default;
    virtual LiveStore& store() = 0;
    virtual asio::io_context* io() = 0; // nullptr: the store never suspends
    // What an operator writes to Redis; the embedded store has no owners or domains to add.
    virtual void add_owner(const std::string& key, const std::string& login) = 0;
    virtual void add_domain(const std::string& domain) = 0;
    virtual bool keeps_sets() const = 0;
    const std::string& name() const { return name_; }

    TestClock clock;

    template <class T>
    T run(asio::awaitable<T> aw)
    {
        if (asio::io_context* ctx = io()) return run_sync(*ctx, std::move(aw));
        return sync(std::move(aw));
    }

    LiveFacts query(const LiveQuery& q)
    {
        auto r = run(store().query(q));
        if (!r) throw std::runtime_error(name_ + " query: " + r.error().message());
        return std::move(*r);
    }
    std::uint64_t count_refusal(const std::string& login)
    {
        auto r = run(store().count_refusal(login, window));
        if (!r) throw std::runtime_error(name_ + " count_refusal: " + r.error().message());
        return *r;
    }
    bool suspend(const std::string& login, const Suspension& s)
    {
        auto r = run(store().suspend(login, s));
        if (!r) throw std::runtime_error(name_ + " suspend: " + r.error().message());
        return *r;
    }
    bool first_event(const std::string& login, std::string_view what, std::chrono::seconds ttl = window)
    {
        auto r = run(store().first_event(login, what, ttl));
        if (!r) throw std::runtime_error(name_ + " first_event: " + r.error().message());
        return *r;
    }

private:
    std::string name_;
};

class EmbeddedBackend final : public Backend {
public:
    EmbeddedBackend() : Backend("embedded") {}
    LiveStore& store() override { return store_; }
    asio::io_context* io() override { return nullptr; }
    void add_owner(const std::string&, const std::string&) override {}
    void add_domain(const std::string&) override {}
    bool keeps_sets() const override { return false; }

private:
    EmbeddedLiveStore store_{clock};
};

class RedisBackend final : public Backend {
public:
    RedisBackend(const std::string& unix_path, std::string prefix)
        : Backend("redis"), client_(connect(io_, "unix:" + unix_path)), prefix_(prefix),
          store_(*client_, std::move(prefix), clock)
    {
    }
    LiveStore& store() override { return store_; }
    asio::io_context* io() override { return &io_; }
    void add_owner(const std::string& key, const std::string& login) override
    {
        redis_cmd(io_, *client_, {"SADD", relayguard::owners_key(prefix_, key), login});
    }
    void add_domain(const std::string& domain) override
    {
        redis_cmd(io_, *client_, {"SADD", relayguard::domains_key(prefix_), domain});
    }
    bool keeps_sets() const override { return true; }

private:
    asio::io_context io_;
    std::unique_ptr<Client> client_;
    std::string prefix_;
    RedisLiveStore store_;
};

// ---------------------------------------------------------------------------------------------
// Queries and checks

LiveQuery ask_suspension(std::string login)
{
    LiveQuery q;
    q.login = std::move(login);
    q.suspension = true;
    return q;
}

LiveQuery track(std::string login, std::vector<LiveQuery::Track> tracks, bool consume = true)
{
    LiveQuery q;
    q.login = std::move(login);
    q.track = std::move(tracks);
    q.window = window;
    q.consume = consume;
    return q;
}

LiveQuery::Track net(std::string element) { return {Signal::networks, std::move(element)}; }
LiveQuery::Track rcpt_domain(std::string element) { return {Signal::recipient_domains, std::move(element)}; }
LiveQuery::Track refusals() { return {Signal::rate_refusals, ""}; }

std::uint64_t count(const LiveFacts& f, Signal s) { return f.counts[static_cast<std::size_t>(s)]; }

std::string show(const std::optional<Suspension>& s)
{
    if (!s) return "none";
    return fmt::format("{{reason={} since={} until={} by={}}}", s->reason, s->since, s->until, s->by);
}

void expect_suspension(const LiveFacts& f, const std::optional<Suspension>& want, const std::string& at)
{
    const bool same = f.suspension.has_value() == want.has_value() &&
                      (!want || (f.suspension->reason == want->reason && f.suspension->since == want->since &&
                                 f.suspension->until == want->until && f.suspension->by == want->by));
    EXPECT_TRUE(same) << at << ": suspension got=" << show(f.suspension) << " want=" << show(want);
}

void expect_count(const LiveFacts& f, Signal s, std::uint64_t want, const std::string& at)
{
    EXPECT_EQ(count(f, s), want) << at << ": " << relayguard::signal_name(s) << " got=" << count(f, s)
                                 << " want=" << want;
}

Suspension automatic(std::string reason, std::int64_t since, std::int64_t until)
{
    return Suspension{std::move(reason), since, until, "automatic"};
}

// ---------------------------------------------------------------------------------------------
// The scenario table

struct Scenario {
    std::string name;
    std::function<void(Backend&)> run;
};

const std::vector<Scenario>& scenarios()
{
    static const std::vector<Scenario> table = {
        {"SuspensionAbsentThenWrittenAndReadBack",
         [](Backend& b) {
             expect_suspension(b.query(ask_suspension("alice")), std::nullopt, "before");
             const Suspension s = automatic("compromise: 6 networks in 1h", b.clock.now_s(), b.clock.now_s() + 600);
             EXPECT_TRUE(b.suspend("alice", s)) << "first suspend got=false want=true";
             expect_suspension(b.query(ask_suspension("alice")), s, "after suspend");
             expect_suspension(b.query(ask_suspension("bob")), std::nullopt, "another login");
         }},
        {"SuspendWritesOnceThenReportsFalse",
         [](Backend& b) {
             const Suspension first = automatic("first", b.clock.now_s(), 0);
             EXPECT_TRUE(b.suspend("alice", first)) << "got=false want=true";
             EXPECT_FALSE(b.suspend("alice", automatic("second", b.clock.now_s(), b.clock.now_s() + 60)))
                 << "second suspend got=true want=false";
             expect_suspension(b.query(ask_suspension("alice")), first, "the first one stays");
         }},
        {"SuspensionUntilLiftedNeverExpires",
         [](Backend& b) {
             const Suspension s = automatic("manual review", b.clock.now_s(), 0);
             ASSERT_TRUE(b.suspend("alice", s));
             b.clock.advance(std::chrono::hours(24 * 400));
             expect_suspension(b.query(ask_suspension("alice")), s, "400 days later");
         }},
        {"SuspensionExpiresAtUntil",
         [](Backend& b) {
             const Suspension s = automatic("hold", b.clock.now_s(), b.clock.now_s() + 30);
             ASSERT_TRUE(b.suspend("alice", s));
             b.clock.advance(29s);
             expect_suspension(b.query(ask_suspension("alice")), s, "1 s before until");
             b.clock.advance(1s);
             expect_suspension(b.query(ask_suspension("alice")), std::nullopt, "at until");
             const Suspension again = automatic("again", b.clock.now_s(), b.clock.now_s() + 60);
             EXPECT_TRUE(b.suspend("alice", again)) << "an expired suspension blocks a new one";
             expect_suspension(b.query(ask_suspension("alice")), again, "the new one");
         }},
        {"OwnersAndDomainsFromRedisSets",
         [](Backend& b) {
             b.add_owner("@example.com", "alice");
             b.add_owner("carol@example.org", "carol");
             b.add_domain(".example.com");
             const bool want = b.keeps_sets();
             struct Case {
                 std::string login;
                 std::vector<std::string> owner_keys, domains;
                 bool owned, local;
             };
             const std::vector<Case> cases = {
                 {"alice", {"alice+x@example.com", "alice@example.com", "@example.com"}, {}, want, false},
                 {"bob", {"bob@example.com", "@example.com"}, {}, false, false},
                 {"carol", {"carol@example.org", "@example.org"}, {}, want, false},
                 {"carol", {"x@example.org", "@example.org"}, {}, false, false},
                 {"alice", {}, {"mail.example.com", ".example.com"}, false, want},
                 {"alice", {}, {"example.org", ".org"}, false, false},
                 {"alice", {"@example.com"}, {"example.com", ".com"}, want, false},
             };
             for (const auto& c : cases) {
                 LiveQuery q;
                 q.login = c.login;
                 q.owner_keys = c.owner_keys;
                 q.domain_candidates = c.domains;
                 const LiveFacts f = b.query(q);
                 const std::string at = fmt::format("login={} keys={} domains={}", c.login,
                                                    fmt::join(c.owner_keys, ","), fmt::join(c.domains, ","));
                 EXPECT_EQ(f.sender_owned, c.owned) << at << " owned got=" << f.sender_owned << " want=" << c.owned;
                 EXPECT_EQ(f.recipient_domain_local, c.local)
                     << at << " local got=" << f.recipient_domain_local << " want=" << c.local;
             }
         }},
        {"DistinctNetworksCounted",
         [](Backend& b) {
             const std::vector<std::string> seen = {"192.0.2.0/24", "198.51.100.0/24", "192.0.2.0/24",
                                                    "203.0.113.0/24", "2001:db8::/48", "198.51.100.0/24",
                                                    "2001:db8:1::/48", "203.0.113.0/24"};
             const std::vector<std::uint64_t> want = {1, 2, 2, 3, 4, 4, 5, 5};
             for (std::size_t i = 0; i < seen.size(); ++i)
                 expect_count(b.query(track("alice", {net(seen[i])})), Signal::networks, want[i],
                              fmt::format("request {} ({})", i, seen[i]));
             expect_count(b.query(track("bob", {net("192.0.2.0/24")})), Signal::networks, 1, "another login");
         }},
        {"SignalsCountedApart",
         [](Backend& b) {
             b.query(track("alice", {net("192.0.2.0/24"), rcpt_domain("example.net")}));
             b.query(track("alice", {net("192.0.2.0/24"), rcpt_domain("example.org")}));
             const LiveFacts f = b.query(track("alice", {net("198.51.100.0/24"), rcpt_domain("example.org")}));
             expect_count(f, Signal::networks, 2, "third request");
             expect_count(f, Signal::recipient_domains, 2, "third request");
             expect_count(f, Signal::rate_refusals, 0, "not tracked");
         }},
        {"ReadOnlyQueryAddsNothing",
         [](Backend& b) {
             expect_count(b.query(track("alice", {net("192.0.2.0/24")}, false)), Signal::networks, 0, "read only");
             expect_count(b.query(track("alice", {net("192.0.2.0/24")}, false)), Signal::networks, 0, "read only again");
             expect_count(b.query(track("alice", {net("192.0.2.0/24")})), Signal::networks, 1, "consumed");
             expect_count(b.query(track("alice", {net("198.51.100.0/24")}, false)), Signal::networks, 1,
                          "read only, a new element");
             expect_count(b.query(track("alice", {net("")})), Signal::networks, 1, "empty element: read only");
         }},
        {"CountsFallOutOfTheWindow",
         [](Backend& b) {
             // Buckets of 15 s; a count covers the current bucket and the three before it.
             b.query(track("alice", {net("A"), rcpt_domain("a.example")}));
             b.query(track("alice", {net("B")}));
             b.clock.advance(15s);
             expect_count(b.query(track("alice", {net("C")})), Signal::networks, 3, "t=15");
             b.clock.advance(30s);
             expect_count(b.query(track("alice", {net("A")})), Signal::networks, 3, "t=45, A seen again");
             b.clock.advance(15s);
             const LiveFacts f = b.query(track("alice", {net(""), rcpt_domain("")}));
             expect_count(f, Signal::networks, 2, "t=60, the first bucket is out (A and C left)");
             expect_count(f, Signal::recipient_domains, 0, "t=60");
             b.clock.advance(15s);
             expect_count(b.query(track("alice", {net("")})), Signal::networks, 1, "t=75, C is out");
             b.clock.advance(45s);
             expect_count(b.query(track("alice", {net("")})), Signal::networks, 0, "t=120");
         }},
        {"RefusalsCountedOverTheWindow",
         [](Backend& b) {
             for (std::uint64_t want = 1; want <= 3; ++want) {
                 const std::uint64_t got = b.count_refusal("alice");
                 EXPECT_EQ(got, want) << "count_refusal got=" << got << " want=" << want;
             }
             expect_count(b.query(track("alice", {refusals()})), Signal::rate_refusals, 3, "query");
             expect_count(b.query(track("bob", {refusals()})), Signal::rate_refusals, 0, "another login");
             b.clock.advance(15s);
             EXPECT_EQ(b.count_refusal("alice"), 4u) << "t=15";
             b.clock.advance(45s);
             expect_count(b.query(track("alice", {refusals()})), Signal::rate_refusals, 1, "t=60, first bucket out");
             b.clock.advance(15s);
             expect_count(b.query(track("alice", {refusals()})), Signal::rate_refusals, 0, "t=75");
             EXPECT_EQ(b.count_refusal("alice"), 1u) << "t=75, anew";
         }},
        {"FirstEventTrueOncePerLoginAndWhat",
         [](Backend& b) {
             struct Case {
                 std::string login, what;
                 bool want;
             };
             const std::vector<Case> cases = {
                 {"alice", "warn", true}, {"alice", "warn", false}, {"alice", "hold", true},
                 {"bob", "warn", true},   {"alice", "hold", false}, {"alice", "warn", false},
             };
             for (const auto& c : cases) {
                 const bool got = b.first_event(c.login, c.what);
                 EXPECT_EQ(got, c.want) << c.login << " " << c.what << " got=" << got << " want=" << c.want;
             }
         }},
        {"EmptyQueryAnswersNothing",
         [](Backend& b) {
             b.add_owner("@example.com", "alice");
             ASSERT_TRUE(b.suspend("alice", automatic("x", b.clock.now_s(), 0)));
             LiveQuery q;
             q.login = "alice";
             const LiveFacts f = b.query(q);
             expect_suspension(f, std::nullopt, "not asked");
             EXPECT_FALSE(f.sender_owned);
             EXPECT_FALSE(f.recipient_domain_local);
             for (std::size_t i = 0; i < relayguard::signal_count; ++i) EXPECT_EQ(f.counts[i], 0u) << "signal " << i;
         }},
    };
    return table;
}

// ---------------------------------------------------------------------------------------------
// Both stores, every scenario

enum class Kind { embedded, redis };

class LiveStoreConformance : public ::testing::TestWithParam<std::tuple<Kind, std::size_t>> {
protected:
    static void SetUpTestSuite() { server_ = std::make_unique<RedisServer>(); }
    static void TearDownTestSuite() { server_.reset(); }

    std::unique_ptr<Backend> make_backend()
    {
        if (std::get<0>(GetParam()) == Kind::embedded) return std::make_unique<EmbeddedBackend>();
        // A fresh keyspace per scenario.
        return std::make_unique<RedisBackend>(server_->unix_path(), fmt::format("lt{}:", next_prefix_++));
    }

    static inline std::unique_ptr<RedisServer> server_;
    static inline int next_prefix_ = 0;
};

TEST_P(LiveStoreConformance, Scenario)
{
    const Scenario& scenario = scenarios().at(std::get<1>(GetParam()));
    const auto backend = make_backend();
    scenario.run(*backend);
}

INSTANTIATE_TEST_SUITE_P(
    BothStores, LiveStoreConformance,
    ::testing::Combine(::testing::Values(Kind::embedded, Kind::redis), ::testing::Range<std::size_t>(0, scenarios().size())),
    [](const ::testing::TestParamInfo<LiveStoreConformance::ParamType>& info) {
        return std::string(std::get<0>(info.param) == Kind::embedded ? "Embedded_" : "Redis_") +
               scenarios().at(std::get<1>(info.param)).name;
    });

// ---------------------------------------------------------------------------------------------
// Redis only

class RedisLiveStoreTest : public ::testing::Test {
protected:
    RedisLiveStoreTest() : client_(connect(io_, "unix:" + server_.unix_path())), store_(*client_, std::string(prefix)) {}

    Reply cmd(std::vector<std::string> args) { return redis_cmd(io_, *client_, std::move(args)); }
    long long integer(std::vector<std::string> args)
    {
        const Reply r = cmd(std::move(args));
        if (r.type != Reply::Type::integer) throw std::runtime_error("not an integer reply");
        return r.integer;
    }
    LiveFacts query(const LiveQuery& q)
    {
        auto r = run_sync(io_, store_.query(q));
        if (!r) throw std::runtime_error("query: " + r.error().message());
        return std::move(*r);
    }
    static std::int64_t now_s() { return relayguard::system_clock().now_us() / sec; }

    // write_as_relayguardctl - the commands of `relayguardctl suspend` (src/ctl/admin_commands.cpp).
    void write_as_relayguardctl(const std::string& login, const Suspension& x)
    {
        const std::string key = relayguard::suspension_key(prefix, login);
        const std::string since = std::to_string(x.since), until = std::to_string(x.until);
        cmd({"MULTI"});
        cmd({"DEL", key});
        cmd({"HSET", key, "reason", x.reason, "since", since, "until", until, "by", x.by});
        if (x.until != 0) cmd({"EXPIREAT", key, until});
        cmd({"ZADD", relayguard::suspended_index_key(prefix), since, login});
        const Reply exec = cmd({"EXEC"});
        if (exec.type != Reply::Type::array) throw std::runtime_error("EXEC failed");
    }

    static constexpr std::string_view prefix = "rg:";
    RedisServer server_;
    asio::io_context io_;
    std::unique_ptr<Client> client_;
    RedisLiveStore store_;
};

TEST_F(RedisLiveStoreTest, ReadsASuspensionWrittenByRelayguardctl)
{
    const std::vector<Suspension> cases = {
        {"spam run, ticket 4711", now_s(), now_s() + 3600, "operator alice"},
        {"until lifted", now_s(), 0, "operator bob"},
    };
    for (const auto& x : cases) {
        const std::string login = "user" + std::to_string(x.until) + "@example.com";
        write_as_relayguardctl(login, x);
        expect_suspension(query(ask_suspension(login)), x, "written by relayguardctl");
        auto wrote = run_sync(io_, store_.suspend(login, automatic("ladder", now_s(), now_s() + 60)));
        ASSERT_TRUE(wrote.has_value()) << wrote.error().message();
        EXPECT_FALSE(*wrote) << "suspend() overwrote an operator's suspension";
        expect_suspension(query(ask_suspension(login)), x, "still the operator's");
    }
}

TEST_F(RedisLiveStoreTest, SuspendWritesWhatRelayguardctlReads)
{
    const std::string login = "alice@example.com";
    const Suspension x = automatic("compromise: 5 networks", now_s(), now_s() + 1800);
    auto wrote = run_sync(io_, store_.suspend(login, x));
    ASSERT_TRUE(wrote.has_value() && *wrote);
    const std::string key = relayguard::suspension_key(prefix, login);
    EXPECT_EQ(key, "rg:{l:alice@example.com}:s");
    const Reply fields = cmd({"HGETALL", key});
    std::vector<std::string> got;
    for (const auto& e : fields.elements) got.push_back(e.str);
    std::sort(got.begin(), got.end());
    std::vector<std::string> want = {"reason", x.reason, "since", std::to_string(x.since),
                                     "until",  std::to_string(x.until), "by", "automatic"};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << "got=" << fmt::format("{}", fmt::join(got, ",")) << " want=" << fmt::format("{}", fmt::join(want, ","));
    const long long ttl = integer({"TTL", key});
    EXPECT_TRUE(ttl > 1790 && ttl <= 1800) << "TTL got=" << ttl << " want=~1800 (EXPIREAT until)";
    const Reply score = cmd({"ZSCORE", relayguard::suspended_index_key(prefix), login});
    EXPECT_EQ(score.str, std::to_string(x.since)) << "index got=" << score.str << " want=" << x.since;

    const std::string forever = "bob@example.com";
    ASSERT_TRUE(*run_sync(io_, store_.suspend(forever, automatic("x", now_s(), 0))));
    EXPECT_EQ(integer({"TTL", relayguard::suspension_key(prefix, forever)}), -1) << "until 0: no expiry";
}

TEST_F(RedisLiveStoreTest, PastUntilWrittenDirectlyIsAbsentAndReplaced)
{
    // As relayguardctl reads it, minus the EXPIREAT that would have removed it already.
    const std::string key = relayguard::suspension_key(prefix, "alice");
    const std::string past = std::to_string(now_s() - 10);
    cmd({"HSET", key, "reason", "old", "since", std::to_string(now_s() - 100), "until", past, "by", "automatic"});
    expect_suspension(query(ask_suspension("alice")), std::nullopt, "until in the past");
    const Suspension x = automatic("new", now_s(), now_s() + 60);
    auto wrote = run_sync(io_, store_.suspend("alice", x));
    ASSERT_TRUE(wrote.has_value());
    EXPECT_TRUE(*wrote) << "an expired suspension blocked a new one";
    expect_suspension(query(ask_suspension("alice")), x, "the new one");
}

TEST_F(RedisLiveStoreTest, SuspensionWithoutUntilFieldIsInForce)
{
    const std::string key = relayguard::suspension_key(prefix, "alice");
    cmd({"HSET", key, "reason", "hand made"});
    expect_suspension(query(ask_suspension("alice")), Suspension{"hand made", 0, 0, ""}, "no until: until lifted");
    auto wrote = run_sync(io_, store_.suspend("alice", automatic("x", now_s(), 0)));
    ASSERT_TRUE(wrote.has_value());
    EXPECT_FALSE(*wrote) << "suspend() replaced a suspension in force";
}

TEST_F(RedisLiveStoreTest, SignalKeysAreHyperLogLogsAndCountersThatExpire)
{
    const std::int64_t bucket = now_s() / 15;
    LiveQuery q = track("alice", {net("192.0.2.0/24")});
    query(q);
    const std::string hll = relayguard::signal_key(prefix, "alice", "networks", bucket);
    // The bucket may have turned between the two lines above; then it is the next one.
    const std::string key = integer({"EXISTS", hll}) == 1 ? hll : relayguard::signal_key(prefix, "alice", "networks", bucket + 1);
    EXPECT_EQ(integer({"PFCOUNT", key}), 1) << key;
    long long ttl = integer({"TTL", key});
    EXPECT_TRUE(ttl > 0 && ttl <= 75) << "TTL got=" << ttl << " want in (0, window + bucket]";

    auto n = run_sync(io_, store_.count_refusal("alice", window));
    ASSERT_TRUE(n.has_value() && *n == 1);
    const Reply keys = cmd({"KEYS", "rg:{l:alice}:g:rate_refusals:*"});
    ASSERT_EQ(keys.elements.size(), 1u);
    EXPECT_EQ(cmd({"GET", keys.elements[0].str}).str, "1");
    ttl = integer({"TTL", keys.elements[0].str});
    EXPECT_TRUE(ttl > 0 && ttl <= 75) << "TTL got=" << ttl;

    ASSERT_TRUE(*run_sync(io_, store_.first_event("alice", "warn", 3600s)));
    ttl = integer({"TTL", relayguard::event_key(prefix, "alice", "warn")});
    EXPECT_TRUE(ttl > 3590 && ttl <= 3600) << "TTL got=" << ttl;

    q.consume = false;
    q.track[0].element = "198.51.100.0/24";
    query(q);
    EXPECT_EQ(integer({"PFCOUNT", key}), 1) << "a read-only query wrote";
}

TEST_F(RedisLiveStoreTest, CountsPastBucketsWrittenDirectly)
{
    // Another daemon's earlier buckets: the three before the current one count, older do not.
    const TestClock clock;
    RedisLiveStore store(*client_, std::string(prefix), clock);
    const std::int64_t current = clock.now_s() / 15;
    for (std::int64_t back = 1; back <= 5; ++back) {
        cmd({"PFADD", relayguard::signal_key(prefix, "alice", "networks", current - back), "net" + std::to_string(back)});
        cmd({"SET", relayguard::signal_key(prefix, "alice", "rate_refusals", current - back), std::to_string(back)});
    }
    auto f = run_sync(io_, store.query(track("alice", {net(""), refusals()})));
    ASSERT_TRUE(f.has_value()) << f.error().message();
    expect_count(*f, Signal::networks, 3, "buckets -1..-3");
    expect_count(*f, Signal::rate_refusals, 1 + 2 + 3, "buckets -1..-3");
}

TEST_F(RedisLiveStoreTest, TwoDaemonsShareEventsAndSuspensions)
{
    asio::io_context io2;
    auto client2 = connect(io2, "unix:" + server_.unix_path());
    RedisLiveStore other(*client2, std::string(prefix));
    EXPECT_TRUE(*run_sync(io_, store_.first_event("alice", "suspend", 60s)));
    EXPECT_FALSE(*run_sync(io2, other.first_event("alice", "suspend", 60s))) << "second daemon got=true want=false";
    const Suspension x = automatic("ladder", now_s(), 0);
    EXPECT_TRUE(*run_sync(io2, other.suspend("alice", x)));
    EXPECT_FALSE(*run_sync(io_, store_.suspend("alice", x))) << "second daemon got=true want=false";
    run_sync(io2, other.query(track("alice", {net("192.0.2.0/24")})));
    auto f = run_sync(io_, store_.query(track("alice", {net("198.51.100.0/24")})));
    ASSERT_TRUE(f.has_value());
    expect_count(*f, Signal::networks, 2, "seen by both daemons");
}

TEST_F(RedisLiveStoreTest, PublishIsSent)
{
    auto r = run_sync(io_, store_.publish("relayguard:events", R"({"login":"alice","event":"warn"})"));
    EXPECT_TRUE(r.has_value()) << r.error().message();
}

TEST_F(RedisLiveStoreTest, ErrorReplyIsAnError)
{
    // A key of the wrong type (someone's hand-made key): WRONGTYPE, not a silent "no".
    cmd({"SET", relayguard::suspension_key(prefix, "alice"), "x"});
    auto got = run_sync(io_, store_.query(ask_suspension("alice")));
    ASSERT_FALSE(got.has_value()) << "an error reply looked like an answer";
    EXPECT_EQ(got.error(), errc::server_error) << "got=" << got.error().message();
    cmd({"SET", relayguard::domains_key(prefix), "x"});
    LiveQuery q;
    q.login = "bob";
    q.domain_candidates = {"example.com"};
    got = run_sync(io_, store_.query(q));
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error(), errc::server_error) << "got=" << got.error().message();
}

TEST_F(RedisLiveStoreTest, RedisDownFailsQuickly)
{
    query(ask_suspension("alice"));
    server_.kill();
    LiveQuery q = track("alice", {net("192.0.2.0/24"), refusals()});
    q.suspension = true;
    q.owner_keys = {"@example.com"};
    const auto start = std::chrono::steady_clock::now();
    auto got = run_sync(io_, store_.query(q));
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(got.has_value()) << "a store failure must not look like facts";
    EXPECT_TRUE(got.error() == errc::not_connected || got.error() == errc::connection_lost)
        << "got=" << got.error().message();
    EXPECT_LT(took, 1s) << "took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
    EXPECT_FALSE(run_sync(io_, store_.suspend("alice", automatic("x", now_s(), 0))).has_value());
    EXPECT_FALSE(run_sync(io_, store_.count_refusal("alice", window)).has_value());
    EXPECT_FALSE(run_sync(io_, store_.first_event("alice", "warn", window)).has_value());
    EXPECT_FALSE(run_sync(io_, store_.publish("c", "m")).has_value());
}

// ---------------------------------------------------------------------------------------------
// Embedded only

TEST(EmbeddedLiveStore, SweepDropsEveryLoginAfterTheWindow)
{
    constexpr std::size_t logins = 10'000;
    TestClock clock;
    EmbeddedLiveStore store(clock);
    for (std::size_t i = 0; i < logins; ++i) {
        const std::string login = "user" + std::to_string(i);
        store.query_now(track(login, {net("192.0.2." + std::to_string(i % 256)), rcpt_domain("example.net")}));
        ASSERT_TRUE(*sync(store.count_refusal(login, window)));
        ASSERT_TRUE(*sync(store.first_event(login, "warn", window)));
    }
    ASSERT_TRUE(*sync(store.suspend("kept", automatic("x", clock.now_s(), 0))));
    EXPECT_EQ(store.sweep(), 0u) << "dropped live state";
    clock.advance(window - 1s);
    EXPECT_EQ(store.sweep(), 0u) << "t=window-1s: the first bucket still counts, the events still hold";
    clock.advance(1s);
    const std::size_t dropped = store.sweep();
    EXPECT_EQ(dropped, logins) << "got=" << dropped << " want=" << logins;
    EXPECT_EQ(store.sweep(), 0u);
    EXPECT_TRUE(store.suspension_of("kept").has_value()) << "a suspension until lifted was swept";
}

TEST(EmbeddedLiveStore, QueriesSweepOtherLoginsIncrementally)
{
    constexpr std::size_t logins = 2'000;
    TestClock clock;
    EmbeddedLiveStore store(clock);
    for (std::size_t i = 0; i < logins; ++i) store.query_now(track("user" + std::to_string(i), {net("x")}));
    clock.advance(2 * window);
    // Each query looks at a few table buckets: a few thousand queries pass every one.
    for (std::size_t i = 0; i < logins; ++i) store.query_now(track("alice", {net("")}));
    EXPECT_EQ(store.sweep(), 0u) << "logins left for sweep() to drop";
}

TEST(EmbeddedLiveStore, DistinctCountSaturatesAtTheCap)
{
    TestClock clock;
    EmbeddedLiveStore store(clock);
    const std::size_t n = relayguard::embedded_signal_cap + 100;
    std::uint64_t got = 0;
    for (std::size_t i = 0; i < n; ++i)
        got = count(store.query_now(track("alice", {rcpt_domain("d" + std::to_string(i) + ".example")})),
                    Signal::recipient_domains);
    EXPECT_EQ(got, relayguard::embedded_signal_cap) << "got=" << got << " want=" << relayguard::embedded_signal_cap;
    clock.advance(15s);
    for (std::size_t i = 0; i < 10; ++i)
        got = count(store.query_now(track("alice", {rcpt_domain("new" + std::to_string(i) + ".example")})),
                    Signal::recipient_domains);
    EXPECT_EQ(got, relayguard::embedded_signal_cap) << "over several buckets, got=" << got;
}

TEST(EmbeddedLiveStore, FirstEventAgainAfterItsTtl)
{
    TestClock clock;
    EmbeddedLiveStore store(clock);
    EXPECT_TRUE(*sync(store.first_event("alice", "warn", 60s)));
    clock.advance(59s);
    EXPECT_FALSE(*sync(store.first_event("alice", "warn", 60s))) << "t=59 got=true want=false";
    clock.advance(1s);
    EXPECT_TRUE(*sync(store.first_event("alice", "warn", 60s))) << "t=60 got=false want=true";
}

TEST(EmbeddedLiveStore, LiftEndsASuspension)
{
    TestClock clock;
    EmbeddedLiveStore store(clock);
    const Suspension x = automatic("x", clock.now_s(), clock.now_s() + 60);
    ASSERT_TRUE(*sync(store.suspend("alice", x)));
    ASSERT_TRUE(store.suspension_of("alice").has_value());
    store.lift("alice");
    EXPECT_FALSE(store.suspension_of("alice").has_value());
    EXPECT_TRUE(*sync(store.suspend("alice", x))) << "after lift got=false want=true";
    clock.advance(60s);
    EXPECT_FALSE(store.suspension_of("alice").has_value()) << "at until";
}

TEST(LiveStore, SignalNames)
{
    EXPECT_EQ(relayguard::signal_name(Signal::networks), "networks");
    EXPECT_EQ(relayguard::signal_name(Signal::recipient_domains), "recipient_domains");
    EXPECT_EQ(relayguard::signal_name(Signal::rate_refusals), "rate_refusals");
}

} // namespace
