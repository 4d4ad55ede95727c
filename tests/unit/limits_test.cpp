// SPDX-License-Identifier: MIT
// limits_test.cpp - rate spec grammar (parse, canonical text), limit names, GCRA arithmetic.
//
// The GCRA expectations are worked out by hand from the formulas in limits.cpp (emission
// interval T/N, tolerance T - T/N), in microseconds, at a realistic epoch time.
#include <relayguard/limits.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace {

using namespace std::chrono_literals;
using relayguard::format_rate_spec;
using relayguard::gcra;
using relayguard::GcraResult;
using relayguard::parse_rate_spec;
using relayguard::Rate;
using relayguard::RateSpec;

// 2023-11-14 22:13:20 UTC in µs: TATs are this big in real use.
constexpr std::int64_t t0 = 1'700'000'000'000'000;
constexpr std::int64_t sec = 1'000'000;

std::string show(const std::vector<Rate>& rates)
{
    std::string out;
    for (const auto& r : rates) out += fmt::format("{}{}/{}s", out.empty() ? "" : ",", r.count, r.period.count());
    return out;
}

// ---------------------------------------------------------------------------------------------
// parse_rate_spec / format_rate_spec

TEST(ParseRateSpec, AcceptsValidSpecsAndFormatsThemCanonically)
{
    struct Case {
        std::string text;
        std::vector<Rate> want;
        std::string canonical;
    };
    const std::vector<Case> cases = {
        {"100/1m, 1000/1h, 5000/1d", {{100, 60s}, {1000, 3600s}, {5000, 86400s}}, "100/60s,1000/3600s,5000/86400s"},
        {"5000/1d 100/1m", {{100, 60s}, {5000, 86400s}}, "100/60s,5000/86400s"},
        {"100/1m,1000/1h", {{100, 60s}, {1000, 3600s}}, "100/60s,1000/3600s"},
        {"  10/1s ,\t20/2s  ", {{10, 1s}, {20, 2s}}, "10/1s,20/2s"},
        {"100/1m ,1000/1h", {{100, 60s}, {1000, 3600s}}, "100/60s,1000/3600s"},
        {"100/60", {{100, 60s}}, "100/60s"},
        {"100/60s", {{100, 60s}}, "100/60s"},
        {"007/01m", {{7, 60s}}, "7/60s"},
        {"1/1w", {{1, 604800s}}, "1/604800s"},
        {"1/52w", {{1, 52 * 604800s}}, "1/31449600s"},
        {"1/366d", {{1, 366 * 86400s}}, "1/31622400s"},
        {"1/31622400", {{1, 31622400s}}, "1/31622400s"},
        {"1000000000000000/1s", {{1'000'000'000'000'000, 1s}}, "1000000000000000/1s"},
        {"1000000000/1d", {{1'000'000'000, 86400s}}, "1000000000/86400s"},
        {"0/1h", {{0, 3600s}}, "0/3600s"},
        {"0/1h, 10/1d", {{0, 3600s}, {10, 86400s}}, "0/3600s,10/86400s"},
        {"0", {{0, 1s}}, "0"},
        {" 0 ", {{0, 1s}}, "0"},
        {"0/1s", {{0, 1s}}, "0"}, // the same block, spelled out
    };
    for (const auto& c : cases) {
        std::string why;
        const auto got = parse_rate_spec(c.text, &why);
        ASSERT_TRUE(got.has_value()) << "text=\"" << c.text << "\" got=error \"" << why << "\" want=" << show(c.want);
        EXPECT_EQ(got->kind, RateSpec::Kind::rates) << "text=\"" << c.text << "\"";
        EXPECT_EQ(got->rates, c.want) << "text=\"" << c.text << "\" got=" << show(got->rates) << " want=" << show(c.want);
        EXPECT_EQ(format_rate_spec(*got), c.canonical) << "text=\"" << c.text << "\"";
        // The canonical text parses back to the same spec (the Redis script relies on it).
        const auto again = parse_rate_spec(c.canonical);
        ASSERT_TRUE(again.has_value()) << "canonical=\"" << c.canonical << "\"";
        EXPECT_EQ(*again, *got) << "canonical=\"" << c.canonical << "\"";
    }
}

TEST(ParseRateSpec, AcceptsUnlimited)
{
    for (const std::string text : {"unlimited", "  unlimited\t"}) {
        const auto got = parse_rate_spec(text);
        ASSERT_TRUE(got.has_value()) << "text=\"" << text << "\"";
        EXPECT_EQ(got->kind, RateSpec::Kind::unlimited) << "text=\"" << text << "\"";
        EXPECT_TRUE(got->rates.empty()) << "text=\"" << text << "\" got=" << show(got->rates);
        EXPECT_EQ(format_rate_spec(*got), "unlimited");
    }
}

TEST(ParseRateSpec, RejectsInvalidSpecsWithReason)
{
    struct Case {
        std::string text;
        std::string why;
    };
    const std::vector<Case> cases = {
        {"", "empty rate spec"},
        {"   \t", "empty rate spec"},
        {"abc", "rate 'abc' is not COUNT/PERIOD"},
        {"100", "rate '100' is not COUNT/PERIOD"},
        {"100 / 1m", "rate '100' is not COUNT/PERIOD"},
        {"Unlimited", "rate 'Unlimited' is not COUNT/PERIOD"},
        {"-1/1m", "count of '-1/1m' is not a non-negative integer"},
        {"1.5/1m", "count of '1.5/1m' is not a non-negative integer"},
        {"/1m", "count of '/1m' is not a non-negative integer"},
        {"1000000000000001/1s", "count of '1000000000000001/1s' is over 1000000000000000"},
        {"99999999999999999999/1s", "count of '99999999999999999999/1s' is over 1000000000000000"},
        {"100/0", "period of '100/0' is 0"},
        {"100/0m", "period of '100/0m' is 0"},
        {"100/", "period of '100/' is not N, Ns, Nm, Nh, Nd or Nw"},
        {"100/m", "period of '100/m' is not N, Ns, Nm, Nh, Nd or Nw"},
        {"100/1y", "period of '100/1y' is not N, Ns, Nm, Nh, Nd or Nw"},
        {"100/1M", "period of '100/1M' is not N, Ns, Nm, Nh, Nd or Nw"},
        {"100/1m/1h", "period of '100/1m/1h' is not N, Ns, Nm, Nh, Nd or Nw"},
        {"100/1m\x01", "period of '100/1m\\x01' is not N, Ns, Nm, Nh, Nd or Nw"},
        {"100/367d", "period of '100/367d' is over 366 days"},
        {"100/53w", "period of '100/53w' is over 366 days"},
        {"100/31622401", "period of '100/31622401' is over 366 days"},
        {"100/99999999999999999999", "period of '100/99999999999999999999' is over 366 days"},
        {"100/1m,,1000/1h", "empty rate between two commas"},
        {"100/1m, ,1000/1h", "empty rate between two commas"},
        {",100/1m", "rate spec starts with a comma"},
        {"100/1m,", "rate spec ends with a comma"},
        {",", "rate spec starts with a comma"},
        {"100/1m, 200/60s", "two rates for the period 60s"},
        {"1/1d 2/24h", "two rates for the period 86400s"},
        {"unlimited, 100/1m", "'unlimited' cannot be combined with other rates"},
        {"100/1m unlimited", "'unlimited' cannot be combined with other rates"},
        {"0 100/1m", "'0' cannot be combined with other rates"},
    };
    for (const auto& c : cases) {
        std::string why;
        const auto got = parse_rate_spec(c.text, &why);
        EXPECT_FALSE(got.has_value()) << "text=\"" << c.text << "\" got=" << (got ? format_rate_spec(*got) : "")
                                      << " want=error";
        EXPECT_EQ(why, c.why) << "text=\"" << c.text << "\"";
    }
}

TEST(ParseRateSpec, ReasonIsOptional)
{
    EXPECT_FALSE(parse_rate_spec("nonsense").has_value());
}

TEST(FormatRateSpec, FormatsSpecsBuiltInCode)
{
    struct Case {
        RateSpec spec;
        std::string want;
    };
    const std::vector<Case> cases = {
        {RateSpec{RateSpec::Kind::unlimited, {}}, "unlimited"},
        {RateSpec{RateSpec::Kind::rates, {{0, 1s}}}, "0"},
        {RateSpec{RateSpec::Kind::rates, {{0, 2s}}}, "0/2s"},
        {RateSpec{RateSpec::Kind::rates, {{3, 60s}, {10, 3600s}}}, "3/60s,10/3600s"},
        {RateSpec{RateSpec::Kind::rates, {}}, ""},
    };
    for (const auto& c : cases) EXPECT_EQ(format_rate_spec(c.spec), c.want) << "want=" << c.want;
}

// ---------------------------------------------------------------------------------------------
// Names

TEST(LimitNames, RoundTripEveryKeyAndUnit)
{
    using relayguard::LimitKey;
    using relayguard::LimitUnit;
    const std::vector<std::pair<LimitKey, std::string>> keys = {
        {LimitKey::sasl_username, "sasl_username"}, {LimitKey::sender, "sender"},
        {LimitKey::sender_domain, "sender_domain"}, {LimitKey::client_address, "client_address"},
        {LimitKey::recipient_domain, "recipient_domain"}, {LimitKey::global, "global"},
    };
    for (const auto& [key, name] : keys) {
        EXPECT_EQ(relayguard::limit_key_name(key), name);
        const auto parsed = relayguard::parse_limit_key(name);
        ASSERT_TRUE(parsed.has_value()) << "name=" << name;
        EXPECT_EQ(*parsed, key) << "name=" << name;
    }
    const std::vector<std::pair<LimitUnit, std::string>> units = {
        {LimitUnit::messages, "messages"}, {LimitUnit::recipients, "recipients"}, {LimitUnit::bytes, "bytes"},
    };
    for (const auto& [unit, name] : units) {
        EXPECT_EQ(relayguard::limit_unit_name(unit), name);
        const auto parsed = relayguard::parse_limit_unit(name);
        ASSERT_TRUE(parsed.has_value()) << "name=" << name;
        EXPECT_EQ(*parsed, unit) << "name=" << name;
    }
}

TEST(LimitNames, RejectsUnknownNames)
{
    for (const std::string name : {"", "login", "Sender", "sasl_username ", "message", "byte"}) {
        EXPECT_FALSE(relayguard::parse_limit_key(name).has_value()) << "name=\"" << name << "\"";
        EXPECT_FALSE(relayguard::parse_limit_unit(name).has_value()) << "name=\"" << name << "\"";
    }
}

// ---------------------------------------------------------------------------------------------
// gcra

// One request against one window: what it is, and what must come out.
struct Step {
    std::int64_t at;    // now, µs
    std::uint64_t cost;
    bool allowed;
    std::int64_t retry_after; // µs, refused only
    std::uint64_t remaining;
};

// run_steps - feed the steps through gcra(), keeping the TAT as a store would (only allowed
// requests move it), and compare every result.
void run_steps(const std::string& name, const Rate& rate, const std::vector<Step>& steps, std::int64_t tat = 0)
{
    for (std::size_t i = 0; i < steps.size(); ++i) {
        const Step& s = steps[i];
        const GcraResult got = gcra(tat, s.at, rate, s.cost);
        const std::string where = fmt::format("{} step {} (now=t0{:+}us cost={})", name, i, s.at - t0, s.cost);
        EXPECT_EQ(got.allowed, s.allowed) << where << " got=" << got.allowed << " want=" << s.allowed;
        if (!s.allowed) {
            EXPECT_EQ(got.retry_after, s.retry_after) << where << " got=" << got.retry_after << " want=" << s.retry_after;
        }
        EXPECT_EQ(got.remaining, s.remaining) << where << " got=" << got.remaining << " want=" << s.remaining;
        if (got.allowed) tat = got.new_tat;
    }
}

TEST(Gcra, AllowsBurstOfExactlyCountThenRefuses)
{
    // 5/1m: emission interval 12 s. Five fit at once, the sixth waits one interval.
    run_steps("5/1m", {5, 60s},
              {{t0, 1, true, 0, 4},
               {t0, 1, true, 0, 3},
               {t0, 1, true, 0, 2},
               {t0, 1, true, 0, 1},
               {t0, 1, true, 0, 0},
               {t0, 1, false, 12 * sec, 0},
               {t0 + 5 * sec, 1, false, 7 * sec, 0}});
}

TEST(Gcra, BurstIsExactWhenPeriodIsNotAMultipleOfCount)
{
    // 7/1m: interval floor(60e6/7) = 8571428 µs; 7 of them (59999996) fit in 60 s, 8 do not.
    std::vector<Step> steps;
    for (std::uint64_t k = 1; k <= 7; ++k) steps.push_back({t0, 1, true, 0, 7 - k});
    steps.push_back({t0, 1, false, 8 * 8571428 - 60 * sec, 0});
    run_steps("7/1m", {7, 60s}, steps);
}

TEST(Gcra, RefillsAfterRetryAfterExactly)
{
    // 2/10s: interval 5 s. After the burst, one fits again exactly 5 s later, not 1 µs earlier.
    run_steps("2/10s", {2, 10s},
              {{t0, 1, true, 0, 1},
               {t0, 1, true, 0, 0},
               {t0, 1, false, 5 * sec, 0},
               {t0 + 5 * sec - 1, 1, false, 1, 0},
               {t0 + 5 * sec, 1, true, 0, 0},
               // A long pause refills the whole window, never more than count.
               {t0 + 60 * sec, 0, true, 0, 2},
               {t0 + 60 * sec, 1, true, 0, 1}});
}

TEST(Gcra, RemainingRefillsSmoothly)
{
    // 10/10s: one unit per second comes back.
    run_steps("10/10s", {10, 10s},
              {{t0, 0, true, 0, 10},
               {t0, 10, true, 0, 0},
               {t0 + sec - 1, 0, true, 0, 0},
               {t0 + sec, 0, true, 0, 1},
               {t0 + 3 * sec + sec / 2, 0, true, 0, 3},
               {t0 + 10 * sec, 0, true, 0, 10}});
}

TEST(Gcra, CostAboveOneCountsUnits)
{
    // 1000 bytes/1m: 60 ms per byte.
    run_steps("1000/1m", {1000, 60s},
              {{t0, 600, true, 0, 400},
               // 500 more would end 6 s past the window: refused, and the 400 left stay.
               {t0, 500, false, 6 * sec, 400},
               {t0, 400, true, 0, 0},
               {t0 + 6 * sec, 100, true, 0, 0}});
}

TEST(Gcra, CostAboveCountNeverFits)
{
    // 1001 units never fit a window of 1000, however long one waits.
    const Rate rate{1000, 60s};
    for (const std::int64_t wait : {std::int64_t{0}, 60 * sec, 3600 * sec, 86400 * 365 * sec}) {
        const GcraResult got = gcra(0, t0 + wait, rate, 1001);
        EXPECT_FALSE(got.allowed) << "wait=" << wait;
        // inc = floor(1001 * 60e6 / 1000) = 60060000: 60 ms past the window.
        EXPECT_EQ(got.retry_after, 60'000) << "wait=" << wait;
        EXPECT_EQ(got.remaining, 1000u) << "wait=" << wait;
    }
}

TEST(Gcra, HugeCostDoesNotOverflow)
{
    const GcraResult got = gcra(0, t0, {1, 1s}, std::numeric_limits<std::uint64_t>::max());
    EXPECT_FALSE(got.allowed);
    EXPECT_GT(got.retry_after, 0) << "got=" << got.retry_after;
    EXPECT_GT(got.new_tat, t0) << "got=" << got.new_tat;
    EXPECT_EQ(got.remaining, 1u);
}

TEST(Gcra, CountZeroRefusesEverything)
{
    const Rate block{0, 1s};
    for (const std::uint64_t cost : {0u, 1u, 1000u}) {
        const GcraResult got = gcra(0, t0, block, cost);
        EXPECT_FALSE(got.allowed) << "cost=" << cost;
        EXPECT_EQ(got.retry_after, sec) << "cost=" << cost;
        EXPECT_EQ(got.remaining, 0u) << "cost=" << cost;
    }
    const GcraResult hour = gcra(t0 + 5 * sec, t0, {0, 3600s}, 1);
    EXPECT_FALSE(hour.allowed);
    EXPECT_EQ(hour.retry_after, 3600 * sec);
}

TEST(Gcra, CostZeroOnlyReads)
{
    const Rate rate{4, 40s}; // 10 s per unit
    const GcraResult empty = gcra(0, t0, rate, 0);
    EXPECT_TRUE(empty.allowed);
    EXPECT_EQ(empty.new_tat, t0) << "a past TAT counts as now";
    EXPECT_EQ(empty.remaining, 4u);
    const GcraResult full = gcra(t0 + 40 * sec, t0, rate, 0);
    EXPECT_TRUE(full.allowed);
    EXPECT_EQ(full.new_tat, t0 + 40 * sec);
    EXPECT_EQ(full.remaining, 0u);
}

TEST(Gcra, PastTatCountsAsNow)
{
    const Rate rate{3, 30s};
    const GcraResult old_tat = gcra(t0 - 3600 * sec, t0, rate, 1);
    const GcraResult no_tat = gcra(0, t0, rate, 1);
    EXPECT_TRUE(old_tat.allowed);
    EXPECT_EQ(old_tat.new_tat, t0 + 10 * sec);
    EXPECT_EQ(old_tat.new_tat, no_tat.new_tat);
    EXPECT_EQ(old_tat.remaining, 2u);
}

TEST(Gcra, LongPeriodsAndBigCountsStayExact)
{
    // 1/1w: the second one waits a whole week.
    run_steps("1/1w", {1, 604800s}, {{t0, 1, true, 0, 0}, {t0 + sec, 1, false, 604799 * sec, 0}});

    // 10^9 bytes/1d: 86.4 µs per byte. The whole day's bytes fit in one go, then nothing.
    run_steps("1e9/1d", {1'000'000'000, 86400s},
              {{t0, 500'000'000, true, 0, 500'000'000},
               {t0, 500'000'000, true, 0, 0},
               {t0, 1, false, 86, 0},
               // Half a day later, half of it is back.
               {t0 + 43200 * sec, 0, true, 0, 500'000'000},
               {t0 + 43200 * sec, 500'000'001, false, 86, 500'000'000}});

    // The largest rate: 10^15 per 366 days, 31.6 units per µs. Flooring the increment can
    // give back up to 1 µs per request, here up to 32 units, but nothing overflows and the whole
    // count still fits once and not twice.
    const Rate big{1'000'000'000'000'000, 31622400s};
    const GcraResult all = gcra(0, t0, big, big.count);
    EXPECT_TRUE(all.allowed);
    EXPECT_LE(all.remaining, 32u) << "got=" << all.remaining;
    const GcraResult again = gcra(all.new_tat, t0, big, big.count);
    EXPECT_FALSE(again.allowed);
    EXPECT_GT(again.retry_after, 31622300 * sec) << "got=" << again.retry_after;
    const GcraResult half = gcra(0, t0, big, big.count / 2);
    EXPECT_TRUE(half.allowed);
    EXPECT_NEAR(static_cast<double>(half.remaining), 5e14, 32.0) << "got=" << half.remaining;
}

} // namespace
