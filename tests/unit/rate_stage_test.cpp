// SPDX-License-Identifier: MIT
// rate_stage_test.cpp - plan_rate_limits() and judge_rate_limits() without a store: key values
// and their parents, costs by unit and protocol_state, scope, exemption, switches, and verdicts
// from hand-made StoreResults (refusing op, retry rounding, reply templates, shadow limits).
#include <relayguard/rate_stage.hpp>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <relayguard/request_parser.hpp>

#include "testing/test_support.hpp"

namespace relayguard {
namespace {

using namespace std::chrono_literals;

RateSpec rates(std::string_view text)
{
    std::string why;
    auto spec = parse_rate_spec(text, &why);
    if (!spec) ADD_FAILURE() << "bad rates in test: " << text << ": " << why;
    return spec.value_or(RateSpec{});
}

LimitConfig make_limit(std::string name, LimitKey key, LimitUnit unit, std::string_view spec = "10/1m")
{
    LimitConfig l;
    l.name = std::move(name);
    l.key = key;
    l.unit = unit;
    l.rates = rates(spec);
    return l;
}

std::shared_ptr<const Snapshot> snapshot_of(std::vector<LimitConfig> limits, AddressConfig address = {})
{
    Config config;
    config.limits = std::move(limits);
    config.address = std::move(address);
    auto snap = build_snapshot(std::move(config));
    if (!snap) ADD_FAILURE() << snap.error().to_string();
    return snap ? *snap : nullptr;
}

using Attrs = std::initializer_list<std::pair<Attr, std::string_view>>;

Request make_request(Attrs attrs)
{
    Request r;
    r.set(Attr::request, "smtpd_access_policy");
    for (const auto& [attr, value] : attrs) r.set(attr, value);
    return r;
}

Decision pass() { return Decision{}; }
Decision exempt() { return Decision{.outcome = Decision::Outcome::exempt}; }
Decision refuse()
{
    return Decision{.outcome = Decision::Outcome::refuse, .decided_by = Check::relay, .reply = "554 5.7.1 Relay access denied"};
}

// --- keys ---

TEST(PlanRateLimits, NormalizesEachKeyValueAndItsParent)
{
    struct Case {
        const char* name;
        LimitKey key;
        Attrs attrs;
        AddressConfig address;
        unsigned prefix_v4 = 32;
        unsigned prefix_v6 = 64;
        std::optional<std::string> want_value; // nullopt: the limit does not apply
        std::string want_parent;
    };
    using K = LimitKey;
    const AddressConfig plus{.recipient_delimiter = "+"};
    const AddressConfig plus_cs{.local_part_case_sensitive = true, .recipient_delimiter = "+"};
    const Case cases[] = {
        {"login with a domain", K::sasl_username, {{Attr::sasl_username, "Alice@Example.COM"}}, {}, 32, 64,
         "alice@example.com", "@example.com"},
        {"login without a domain", K::sasl_username, {{Attr::sasl_username, "BOB"}}, {}, 32, 64, "bob", ""},
        {"login at the last @", K::sasl_username, {{Attr::sasl_username, "a@b@Example.org"}}, {}, 32, 64, "a@b@example.org",
         "@example.org"},
        {"no login", K::sasl_username, {{Attr::sasl_username, ""}}, {}, 32, 64, std::nullopt, ""},
        {"sender without extension, folded", K::sender, {{Attr::sender, "Alice+news@Example.COM"}}, plus, 32, 64,
         "alice@example.com", "@example.com"},
        {"sender keeps the local part's case when configured", K::sender, {{Attr::sender, "Alice+news@Example.COM"}}, plus_cs,
         32, 64, "Alice@example.com", "@example.com"},
        {"sender extension kept without a delimiter", K::sender, {{Attr::sender, "alice+news@example.com"}}, {}, 32, 64,
         "alice+news@example.com", "@example.com"},
        {"sender without a domain", K::sender, {{Attr::sender, "postmaster"}}, {}, 32, 64, "postmaster", ""},
        {"null sender", K::sender, {{Attr::sender, ""}}, {}, 32, 64, std::nullopt, ""},
        {"sender domain", K::sender_domain, {{Attr::sender, "a+b@Mail.Example.ORG."}}, plus, 32, 64, "mail.example.org", ""},
        {"sender domain of the null sender", K::sender_domain, {{Attr::sender, ""}}, {}, 32, 64, std::nullopt, ""},
        {"sender domain of a sender without one", K::sender_domain, {{Attr::sender, "postmaster"}}, {}, 32, 64, std::nullopt,
         ""},
        {"IPv4 client, default /32", K::client_address, {{Attr::client_address, "192.0.2.77"}}, {}, 32, 64, "192.0.2.77/32",
         ""},
        {"IPv4 client as its /24", K::client_address, {{Attr::client_address, "192.0.2.77"}}, {}, 24, 64, "192.0.2.0/24", ""},
        {"IPv4 client as /0", K::client_address, {{Attr::client_address, "198.51.100.1"}}, {}, 0, 64, "0.0.0.0/0", ""},
        {"IPv4-mapped client counts as IPv4", K::client_address, {{Attr::client_address, "::ffff:192.0.2.9"}}, {}, 24, 64,
         "192.0.2.0/24", ""},
        {"IPv6 client as its /64", K::client_address, {{Attr::client_address, "2001:db8:1:2:3:4:5:6"}}, {}, 24, 64,
         "2001:db8:1:2::/64", ""},
        {"IPv6 client as its /48", K::client_address, {{Attr::client_address, "2001:DB8:1:2::9"}}, {}, 24, 48,
         "2001:db8:1::/48", ""},
        {"IPv6 client as /128", K::client_address, {{Attr::client_address, "::1"}}, {}, 32, 128, "::1/128", ""},
        {"unknown client", K::client_address, {{Attr::client_address, "unknown"}}, {}, 24, 64, std::nullopt, ""},
        {"no client address", K::client_address, {}, {}, 24, 64, std::nullopt, ""},
        {"recipient domain", K::recipient_domain, {{Attr::recipient, "X+y@Example.NET"}}, plus, 32, 64, "example.net", ""},
        {"no recipient", K::recipient_domain, {{Attr::recipient, ""}}, {}, 32, 64, std::nullopt, ""},
        {"recipient without a domain", K::recipient_domain, {{Attr::recipient, "postmaster"}}, {}, 32, 64, std::nullopt, ""},
        {"global", K::global, {}, {}, 32, 64, "", ""},
    };
    for (const auto& c : cases) {
        LimitConfig l = make_limit("l", c.key, LimitUnit::recipients);
        l.prefix_v4 = c.prefix_v4;
        l.prefix_v6 = c.prefix_v6;
        const auto snap = snapshot_of({l}, c.address);
        Request req = make_request(c.attrs);
        req.set(Attr::protocol_state, "RCPT");
        const auto plan = plan_rate_limits(req, *snap, pass());
        if (!c.want_value) {
            EXPECT_FALSE(plan.has_value()) << c.name << ": got=" << plan->request.ops.at(0).value << " want=(does not apply)";
            continue;
        }
        ASSERT_TRUE(plan.has_value()) << c.name << ": got=(does not apply) want=" << *c.want_value;
        ASSERT_EQ(plan->request.ops.size(), 1u) << c.name;
        const CounterOp& op = plan->request.ops[0];
        EXPECT_EQ(op.value, *c.want_value) << c.name << ": got=" << op.value << " want=" << *c.want_value;
        EXPECT_EQ(op.parent, c.want_parent) << c.name << ": got=" << op.parent << " want=" << c.want_parent;
        EXPECT_EQ(op.key, c.key) << c.name;
    }
}

// --- costs ---

TEST(PlanRateLimits, CostsEachUnitOnlyWhereItCounts)
{
    struct Case {
        LimitUnit unit;
        const char* state;
        const char* size;
        std::optional<std::uint64_t> want_cost; // nullopt: does not apply
        bool want_once = false;
    };
    using U = LimitUnit;
    const Case cases[] = {
        {U::recipients, "RCPT", "0", 1},
        {U::recipients, "rcpt", "0", 1}, // protocol_state is read case-insensitively
        {U::recipients, "MAIL", "0", std::nullopt},
        {U::recipients, "DATA", "0", std::nullopt},
        {U::recipients, "END-OF-MESSAGE", "280", std::nullopt},
        {U::recipients, "CONNECT", "0", std::nullopt},
        {U::messages, "MAIL", "0", 1, true},
        {U::messages, "RCPT", "0", 1, true},
        {U::messages, "DATA", "0", 1, true},
        {U::messages, "END-OF-MESSAGE", "280", 1, true},
        {U::messages, "CONNECT", "0", std::nullopt},
        {U::messages, "EHLO", "0", std::nullopt},
        {U::messages, "HELO", "0", std::nullopt},
        {U::messages, "VRFY", "0", std::nullopt},
        {U::messages, "ETRN", "0", std::nullopt},
        {U::messages, "", "0", std::nullopt},
        {U::messages, "BDAT", "0", std::nullopt},
        {U::bytes, "END-OF-MESSAGE", "280", 280},
        {U::bytes, "END-OF-MESSAGE", "52428800", 52428800},
        {U::bytes, "END-OF-MESSAGE", "999999999999999999", 999999999999999999ULL},
        {U::bytes, "END-OF-MESSAGE", "0", std::nullopt},
        {U::bytes, "END-OF-MESSAGE", "", std::nullopt},
        {U::bytes, "END-OF-MESSAGE", "12k", std::nullopt},
        {U::bytes, "END-OF-MESSAGE", "-5", std::nullopt},
        {U::bytes, "END-OF-MESSAGE", "1000000000000000000", std::nullopt}, // 19 digits: not a size
        {U::bytes, "RCPT", "12345", std::nullopt},                          // SIZE= is only a claim
        {U::bytes, "MAIL", "12345", std::nullopt},
        {U::bytes, "DATA", "12345", std::nullopt},
    };
    for (const auto& c : cases) {
        const auto snap = snapshot_of({make_limit("l", LimitKey::global, c.unit)});
        const Request req = make_request({{Attr::protocol_state, c.state}, {Attr::size, c.size}, {Attr::instance, "1f2.3"}});
        const std::string what = std::string(limit_unit_name(c.unit)) + " at \"" + c.state + "\" size=" + c.size;
        const auto plan = plan_rate_limits(req, *snap, pass());
        if (!c.want_cost) {
            EXPECT_FALSE(plan.has_value()) << what << ": got=cost " << plan->request.ops.at(0).cost << " want=(does not apply)";
            continue;
        }
        ASSERT_TRUE(plan.has_value()) << what << ": got=(does not apply) want=cost " << *c.want_cost;
        EXPECT_EQ(plan->request.ops.at(0).cost, *c.want_cost) << what;
        EXPECT_EQ(plan->request.ops.at(0).once_per_instance, c.want_once) << what;
        // The transaction goes with the request only when an op is counted once per transaction.
        EXPECT_EQ(plan->request.instance, c.want_once ? "1f2.3" : "") << what;
    }
}

// --- which limits apply ---

TEST(PlanRateLimits, AppliesEachScopeOnlyToItsTraffic)
{
    struct Case {
        LimitScope scope;
        const char* login;
        bool want;
    };
    const Case cases[] = {
        {LimitScope::any, "", true},
        {LimitScope::any, "alice", true},
        {LimitScope::authenticated, "", false},
        {LimitScope::authenticated, "alice", true},
        {LimitScope::unauthenticated, "", true},
        {LimitScope::unauthenticated, "alice", false},
    };
    for (const auto& c : cases) {
        LimitConfig l = make_limit("l", LimitKey::client_address, LimitUnit::recipients);
        l.scope = c.scope;
        const auto snap = snapshot_of({l});
        const Request req = make_request(
            {{Attr::protocol_state, "RCPT"}, {Attr::client_address, "192.0.2.1"}, {Attr::sasl_username, c.login}});
        const bool got = plan_rate_limits(req, *snap, pass()).has_value();
        EXPECT_EQ(got, c.want) << "scope " << static_cast<int>(c.scope) << " login=\"" << c.login << "\": got=" << got
                               << " want=" << c.want;
    }
}

// names - the limits a plan has ops for, in order.
std::vector<std::string> names(const std::optional<RatePlan>& plan)
{
    std::vector<std::string> out;
    if (plan)
        for (const auto& op : plan->request.ops) out.push_back(op.limit);
    return out;
}

TEST(PlanRateLimits, CountsExemptRequestsOnlyForLimitsThatSaySo)
{
    LimitConfig counted = make_limit("counted", LimitKey::global, LimitUnit::recipients);
    counted.applies_to_exempt = true;
    const auto snap = snapshot_of({make_limit("skipped", LimitKey::global, LimitUnit::recipients), counted});
    const Request req = make_request({{Attr::protocol_state, "RCPT"}});
    EXPECT_EQ(names(plan_rate_limits(req, *snap, pass())), (std::vector<std::string>{"skipped", "counted"}));
    EXPECT_EQ(names(plan_rate_limits(req, *snap, exempt())), std::vector<std::string>{"counted"});
    // A refused request spends nothing, exempt-counting limits included.
    EXPECT_FALSE(plan_rate_limits(req, *snap, refuse()).has_value());
}

TEST(PlanRateLimits, SkipsDisabledLimitsAndEverythingWhenSwitchedOff)
{
    LimitConfig off = make_limit("off", LimitKey::global, LimitUnit::recipients);
    off.enabled = false;
    const Request req = make_request({{Attr::protocol_state, "RCPT"}});

    const auto snap = snapshot_of({off, make_limit("on", LimitKey::global, LimitUnit::recipients)});
    EXPECT_EQ(names(plan_rate_limits(req, *snap, pass())), std::vector<std::string>{"on"});

    // Only disabled limits: no store call at all.
    EXPECT_FALSE(plan_rate_limits(req, *snapshot_of({off}), pass()).has_value());
    // No limits.
    EXPECT_FALSE(plan_rate_limits(req, *snapshot_of({}), pass()).has_value());

    Config config;
    config.rate_limits.enabled = false;
    config.limits = {make_limit("on", LimitKey::global, LimitUnit::recipients)};
    const auto disabled = build_snapshot(std::move(config));
    ASSERT_TRUE(disabled) << disabled.error().to_string();
    EXPECT_FALSE(plan_rate_limits(req, **disabled, pass()).has_value());
}

TEST(PlanRateLimits, BuildsOpsFromTheSnapshotsLimitsInConfigOrder)
{
    LimitConfig login = make_limit("login_messages", LimitKey::sasl_username, LimitUnit::messages, "100/1m, 1000/1h");
    LimitConfig shadow = make_limit("login_recipients", LimitKey::sasl_username, LimitUnit::recipients, "0");
    shadow.shadow = true;
    LimitConfig bytes = make_limit("login_bytes", LimitKey::sasl_username, LimitUnit::bytes); // not at RCPT
    LimitConfig client = make_limit("client", LimitKey::client_address, LimitUnit::recipients, "5/1s");
    client.prefix_v4 = 24;
    const auto snap = snapshot_of({login, shadow, bytes, client});
    const Request req = make_request({{Attr::protocol_state, "RCPT"},
                                      {Attr::sasl_username, "alice@example.com"},
                                      {Attr::client_address, "192.0.2.7"},
                                      {Attr::instance, "abc.123"}});

    for (const bool consume : {true, false}) {
        const auto plan = plan_rate_limits(req, *snap, pass(), consume);
        ASSERT_TRUE(plan.has_value());
        const auto& limits = snap->config.limits;
        ASSERT_EQ(plan->limits, (std::vector<const LimitConfig*>{&limits[0], &limits[1], &limits[3]}));
        ASSERT_EQ(plan->request.ops.size(), 3u);
        EXPECT_EQ(plan->request.consume, consume);
        EXPECT_EQ(plan->request.instance, "abc.123");
        for (std::size_t i = 0; i < 3; ++i) {
            const CounterOp& op = plan->request.ops[i];
            EXPECT_EQ(op.limit, plan->limits[i]->name);
            EXPECT_EQ(op.key, plan->limits[i]->key) << op.limit;
            EXPECT_EQ(op.defaults, plan->limits[i]->rates) << op.limit;
            EXPECT_EQ(op.shadow, plan->limits[i]->shadow) << op.limit;
        }
        EXPECT_TRUE(plan->request.ops[0].once_per_instance);
        EXPECT_FALSE(plan->request.ops[1].once_per_instance);
        EXPECT_EQ(plan->request.ops[2].value, "192.0.2.0/24");
    }
}

// read_sample - the requests of a captured conversation, through the real parser.
std::vector<Request> read_sample(const std::string& name)
{
    RequestParser parser;
    parser.feed(testing::read_file(testing::samples_dir() / name));
    std::vector<Request> out;
    Request r;
    while (parser.next(r) == RequestParser::Status::request) out.push_back(r);
    EXPECT_FALSE(parser.error()) << name << ": " << parser.error().message();
    return out;
}

TEST(PlanRateLimits, CountsACapturedPostfixMessageOnceWithItsRealSize)
{
    // Two RCPTs and END-OF-MESSAGE of one message (Postfix 3.7): the recipients count at each
    // RCPT, the message at every stage under one instance, the bytes at the end (size=280).
    const auto requests = read_sample("postfix-3.7/end_of_message_multi.policy");
    ASSERT_EQ(requests.size(), 3u);
    const auto snap = snapshot_of({make_limit("msgs", LimitKey::client_address, LimitUnit::messages),
                                   make_limit("rcpts", LimitKey::recipient_domain, LimitUnit::recipients),
                                   make_limit("bytes", LimitKey::client_address, LimitUnit::bytes)});
    struct Want {
        std::vector<std::string> limits;
        std::vector<std::uint64_t> costs;
    };
    const Want want[] = {{{"msgs", "rcpts"}, {1, 1}}, {{"msgs", "rcpts"}, {1, 1}}, {{"msgs", "bytes"}, {1, 280}}};
    std::string instance;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const auto plan = plan_rate_limits(requests[i], *snap, pass());
        ASSERT_TRUE(plan.has_value()) << "request " << i;
        EXPECT_EQ(names(plan), want[i].limits) << "request " << i;
        std::vector<std::uint64_t> costs;
        for (const auto& op : plan->request.ops) costs.push_back(op.cost);
        EXPECT_EQ(costs, want[i].costs) << "request " << i;
        EXPECT_FALSE(plan->request.instance.empty()) << "request " << i;
        if (i == 0) instance = plan->request.instance;
        EXPECT_EQ(plan->request.instance, instance) << "request " << i;
    }
}

// --- verdicts ---

// outcome - a hand-made OpOutcome.
OpOutcome outcome(bool allowed, std::int64_t retry_after_us = 0, std::string_view effective = "10/1m",
                  std::vector<WindowUsage> windows = {}, OpOutcome::Source source = OpOutcome::Source::config)
{
    OpOutcome o;
    o.allowed = allowed;
    o.retry_after_us = retry_after_us;
    o.effective = rates(effective);
    o.windows = std::move(windows);
    o.source = source;
    return o;
}

StoreResult refused(std::size_t op, std::int64_t retry_after_us, std::vector<OpOutcome> ops)
{
    return StoreResult{.allowed = false, .refused_op = op, .retry_after_us = retry_after_us, .ops = std::move(ops)};
}

struct Fixture {
    std::shared_ptr<const Snapshot> snap;
    RatePlan plan;
};

// login_fixture - a plan with three limits on alice@example.com at RCPT: a message limit, a
// recipient limit with its own reply, and a shadow recipient limit.
Fixture login_fixture()
{
    LimitConfig msgs = make_limit("login_messages", LimitKey::sasl_username, LimitUnit::messages, "100/1m, 1000/1h");
    LimitConfig rcpts = make_limit("login_recipients", LimitKey::sasl_username, LimitUnit::recipients, "500/1h");
    rcpts.reply = "DEFER_IF_PERMIT {limit}: wait {retry_after}s {other} {limit}";
    LimitConfig trial = make_limit("trial", LimitKey::global, LimitUnit::recipients, "5/1s");
    trial.shadow = true;
    Fixture f;
    f.snap = snapshot_of({msgs, rcpts, trial});
    const Request req = make_request(
        {{Attr::protocol_state, "RCPT"}, {Attr::sasl_username, "Alice@Example.com"}, {Attr::instance, "i.1"}});
    auto plan = plan_rate_limits(req, *f.snap, pass());
    if (!plan || plan->request.ops.size() != 3) ADD_FAILURE() << "the fixture's plan is not three ops";
    if (plan) f.plan = std::move(*plan);
    return f;
}

TEST(JudgeRateLimits, PassesWhenTheStoreAllows)
{
    const Fixture f = login_fixture();
    const StoreResult ok{.allowed = true, .ops = {outcome(true), outcome(true), outcome(true)}};
    const RateVerdict v = judge_rate_limits(f.plan, ok);
    EXPECT_FALSE(v.refuse);
    EXPECT_EQ(v.limit, nullptr);
    EXPECT_EQ(v.reply, "");
    EXPECT_TRUE(v.shadowed.empty());
}

TEST(JudgeRateLimits, RefusesWithTheOpTheStoreNames)
{
    const Fixture f = login_fixture();
    const auto& limits = f.snap->config.limits;
    struct Case {
        std::size_t refused_op;
        const LimitConfig* want_limit;
        std::string want_reply;
    };
    const Case cases[] = {
        {0, &limits[0], "450 4.7.1 Rate limit login_messages exceeded, retry in 42 seconds"},
        {1, &limits[1], "DEFER_IF_PERMIT login_recipients: wait 42s {other} login_recipients"},
    };
    for (const auto& c : cases) {
        // Both enforcing ops are full; the store picked the one with the longer wait.
        const StoreResult r = refused(c.refused_op, 41'000'001, {outcome(false, 3'000'000), outcome(false, 41'000'001), outcome(true)});
        const RateVerdict v = judge_rate_limits(f.plan, r);
        EXPECT_TRUE(v.refuse);
        EXPECT_EQ(v.limit, c.want_limit) << "got=" << (v.limit ? v.limit->name : "null") << " want=" << c.want_limit->name;
        EXPECT_EQ(v.retry_after_s, 42);
        EXPECT_EQ(v.reply, c.want_reply);
    }
}

TEST(JudgeRateLimits, RoundsRetryAfterUpToWholeSecondsAtLeastOne)
{
    const Fixture f = login_fixture();
    struct Case {
        std::int64_t retry_after_us;
        std::int64_t want;
    };
    const Case cases[] = {{-5, 1},           {0, 1},          {1, 1},           {999'999, 1},
                          {1'000'000, 1},    {1'000'001, 2},  {59'500'000, 60}, {3'600'000'000, 3600},
                          {86'400'000'001, 86'401}};
    for (const auto& c : cases) {
        const RateVerdict v = judge_rate_limits(f.plan, refused(0, c.retry_after_us, {outcome(false, c.retry_after_us), outcome(true), outcome(true)}));
        EXPECT_EQ(v.retry_after_s, c.want) << "retry_after_us=" << c.retry_after_us << " got=" << v.retry_after_s
                                           << " want=" << c.want;
        EXPECT_EQ(v.reply, "450 4.7.1 Rate limit login_messages exceeded, retry in " + std::to_string(c.want) + " seconds");
    }
}

TEST(JudgeRateLimits, ReasonNamesLimitWindowKeyValueAndEffectiveRates)
{
    using Source = OpOutcome::Source;
    const std::vector<WindowUsage> minute_full = {{{100, 60s}, 0, 30'000'000}, {{1000, 3600s}, 870, 900'000'000}};
    struct Case {
        const char* name;
        OpOutcome refused_outcome;
        std::string want;
    };
    const Case cases[] = {
        {"full window named", outcome(false, 1'000'000, "100/1m, 1000/1h", minute_full),
         "login_messages: 100/60s used up for sasl_username alice@example.com (messages 100/60s,1000/3600s)"},
        {"no window usage reported", outcome(false, 1'000'000, "100/1m, 1000/1h"),
         "login_messages: 100/60s,1000/3600s used up for sasl_username alice@example.com (messages 100/60s,1000/3600s)"},
        {"override of the value", outcome(false, 1'000'000, "20/1m", {{{20, 60s}, 0, 1}}, Source::override_value),
         "login_messages: 20/60s used up for sasl_username alice@example.com (messages 20/60s, override)"},
        {"override of the parent", outcome(false, 1'000'000, "0", {}, Source::override_parent),
         "login_messages: blocked (rate 0) for sasl_username alice@example.com (messages 0, override of @example.com)"},
    };
    const Fixture f = login_fixture();
    for (const auto& c : cases) {
        const RateVerdict v = judge_rate_limits(f.plan, refused(0, 1'000'000, {c.refused_outcome, outcome(true), outcome(true)}));
        EXPECT_EQ(v.reason, c.want) << c.name;
    }
}

TEST(JudgeRateLimits, ReasonShowsTheCostOfBytesAndSanitizesTheValue)
{
    LimitConfig bytes = make_limit("sender_bytes", LimitKey::sender, LimitUnit::bytes, "1000/1h");
    LimitConfig global = make_limit("all_bytes", LimitKey::global, LimitUnit::bytes, "100000/1d");
    const auto snap = snapshot_of({bytes, global});
    const Request req = make_request({{Attr::protocol_state, "END-OF-MESSAGE"}, {Attr::size, "2048"}, {Attr::sender, "a\x01" "b@Example.com"}});
    const auto plan = plan_rate_limits(req, *snap, pass());
    ASSERT_TRUE(plan.has_value());
    const std::vector<WindowUsage> hour = {{{1000, 3600s}, 1000, 0}};
    const std::vector<WindowUsage> day = {{{100000, 86400s}, 99000, 0}};
    const RateVerdict v0 = judge_rate_limits(*plan, refused(0, 1, {outcome(false, 1, "1000/1h", hour), outcome(true)}));
    EXPECT_EQ(v0.reason, "sender_bytes: 1000/3600s used up for sender a\\x01b@example.com (bytes 1000/3600s, this request 2048)");
    const RateVerdict v1 = judge_rate_limits(*plan, refused(1, 1, {outcome(true), outcome(false, 1, "100000/1d", day)}));
    EXPECT_EQ(v1.reason, "all_bytes: 100000/86400s used up for global (bytes 100000/86400s, this request 2048)");
}

TEST(JudgeRateLimits, ListsEveryFullShadowLimit)
{
    LimitConfig a = make_limit("shadow_a", LimitKey::global, LimitUnit::recipients, "1/1s");
    a.shadow = true;
    a.reply = "450 4.7.1 {limit} in {retry_after}";
    LimitConfig b = make_limit("shadow_b", LimitKey::global, LimitUnit::recipients, "1/1s");
    b.shadow = true;
    LimitConfig enforcing = make_limit("enforcing", LimitKey::global, LimitUnit::recipients, "1/1s");
    const auto snap = snapshot_of({a, b, enforcing});
    const auto plan = plan_rate_limits(make_request({{Attr::protocol_state, "RCPT"}}), *snap, pass());
    ASSERT_TRUE(plan.has_value());
    const auto& limits = snap->config.limits;

    // The request passes: shadow_a is full (its own retry: 2.5 s -> 3), shadow_b has room.
    const StoreResult passes{.allowed = true, .ops = {outcome(false, 2'500'000, "1/1s"), outcome(true), outcome(true)}};
    RateVerdict v = judge_rate_limits(*plan, passes);
    EXPECT_FALSE(v.refuse);
    ASSERT_EQ(v.shadowed.size(), 1u);
    EXPECT_EQ(v.shadowed[0].limit, &limits[0]);
    EXPECT_EQ(v.shadowed[0].reply, "450 4.7.1 shadow_a in 3");
    EXPECT_EQ(v.shadowed[0].reason, "shadow_a: 1/1s used up for global (recipients 1/1s)");

    // Refused by the enforcing limit while both shadow limits are full: both are listed, the
    // enforcing one is not.
    v = judge_rate_limits(*plan, refused(2, 7'000'000, {outcome(false, 1), outcome(false, 4'000'000), outcome(false, 7'000'000)}));
    EXPECT_TRUE(v.refuse);
    EXPECT_EQ(v.limit, &limits[2]);
    EXPECT_EQ(v.retry_after_s, 7);
    ASSERT_EQ(v.shadowed.size(), 2u);
    EXPECT_EQ(v.shadowed[0].limit, &limits[0]);
    EXPECT_EQ(v.shadowed[0].reply, "450 4.7.1 shadow_a in 1");
    EXPECT_EQ(v.shadowed[1].limit, &limits[1]);
    EXPECT_EQ(v.shadowed[1].reply, "450 4.7.1 Rate limit shadow_b exceeded, retry in 4 seconds");
}

// A rate of 0 blocks until an operator changes it: no wait makes room, so the reply must not
// promise one ("retry in 1 seconds" was the bug: "0" is stored as 0/1s).
TEST(JudgeRateLimits, BlockedLimitRepliesWithoutARetryTime)
{
    using Source = OpOutcome::Source;
    struct Case {
        const char* name;
        OpOutcome refused_outcome;
        std::int64_t want_retry_s;
        std::string want_reply;
    };
    const std::string blocked = "450 4.7.1 Rate limit login_messages exceeded";
    const Case cases[] = {
        {"override 0 of the value", outcome(false, 1'000'000, "0", {}, Source::override_value), 0, blocked},
        {"override 0 of the parent", outcome(false, 1'000'000, "0", {}, Source::override_parent), 0, blocked},
        {"a window of 0 with a period", outcome(false, 3'600'000'000, "0/1h", {}, Source::override_value), 0, blocked},
        {"a 0 window beside a real one", outcome(false, 60'000'000, "0/1m, 100/1h", {}, Source::override_value), 0, blocked},
        {"a full window, not a block", outcome(false, 1'000'000, "20/1m", {}, Source::override_value), 1,
         "450 4.7.1 Rate limit login_messages exceeded, retry in 1 seconds"},
    };
    const Fixture f = login_fixture();
    for (const auto& c : cases) {
        const RateVerdict v = judge_rate_limits(f.plan, refused(0, c.refused_outcome.retry_after_us, {c.refused_outcome, outcome(true), outcome(true)}));
        EXPECT_TRUE(v.refuse) << c.name;
        EXPECT_EQ(v.retry_after_s, c.want_retry_s) << c.name << " got=" << v.retry_after_s << " want=" << c.want_retry_s;
        EXPECT_EQ(v.reply, c.want_reply) << c.name << " got=" << v.reply << " want=" << c.want_reply;
    }
}

TEST(JudgeRateLimits, BlockedReplyDropsTheRetryClauseOfAnyTemplate)
{
    struct Case {
        const char* reply;
        const char* want;
    };
    const Case cases[] = {
        {"450 4.7.1 Rate limit {limit} exceeded, retry in {retry_after} seconds", "450 4.7.1 Rate limit blk exceeded"},
        {"450 4.7.1 {limit} full; retry in {retry_after}s, ask postmaster", "450 4.7.1 blk full, ask postmaster"},
        {"450 4.7.1 {limit} full (retry in {retry_after} s) sorry", "450 4.7.1 blk full sorry"},
        {"DEFER_IF_PERMIT {limit}: wait {retry_after}s {other} {limit}", "DEFER_IF_PERMIT blk"},
        {"450 4.7.1 {limit} in {retry_after}", "450 4.7.1 blk in"},
        {"450 4.7.1 {limit} wait {retry_after}s now", "450 4.7.1 blk wait now"},
        {"REJECT {limit} is blocked", "REJECT blk is blocked"},
    };
    for (const auto& c : cases) {
        LimitConfig limit = make_limit("blk", LimitKey::global, LimitUnit::recipients, "0");
        limit.reply = c.reply;
        LimitConfig watch = make_limit("blk_shadow", LimitKey::global, LimitUnit::recipients, "0");
        watch.reply = c.reply;
        watch.shadow = true;
        const auto snap = snapshot_of({limit, watch});
        const auto plan = plan_rate_limits(make_request({{Attr::protocol_state, "RCPT"}}), *snap, pass());
        ASSERT_TRUE(plan.has_value());
        const RateVerdict v = judge_rate_limits(*plan, refused(0, 1'000'000, {outcome(false, 1'000'000, "0"), outcome(false, 1'000'000, "0")}));
        EXPECT_EQ(v.reply, c.want) << c.reply << " got=" << v.reply << " want=" << c.want;
        ASSERT_EQ(v.shadowed.size(), 1u);
        std::string want_shadow = c.want; // the same, under the shadow limit's name
        want_shadow.replace(want_shadow.find("blk"), 3, "blk_shadow");
        EXPECT_EQ(v.shadowed[0].reply, want_shadow) << c.reply;
    }
}

TEST(FillReplyTemplate, ReplacesOnlyTheTwoPlaceholders)
{
    struct Case {
        const char* reply;
        const char* want;
    };
    const Case cases[] = {
        {"450 4.7.1 Rate limit {limit} exceeded, retry in {retry_after} seconds",
         "450 4.7.1 Rate limit login_messages exceeded, retry in 90 seconds"},
        {"{limit}{limit}{retry_after}", "login_messageslogin_messages90"},
        {"450 4.7.1 no placeholders", "450 4.7.1 no placeholders"},
        {"450 4.7.1 {other} {LIMIT} {retry_after", "450 4.7.1 {other} {LIMIT} {retry_after"},
        {"450 4.7.1 {{limit}}", "450 4.7.1 {login_messages}"},
        {"", ""},
    };
    for (const auto& c : cases) EXPECT_EQ(fill_reply_template(c.reply, "login_messages", 90), c.want) << c.reply;
}

} // namespace
} // namespace relayguard
