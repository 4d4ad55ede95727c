// SPDX-License-Identifier: MIT
// metrics_test.cpp - metrics.hpp without sockets: action classes, close reasons, histogram
// buckets, the sum over worker blocks, store outage time, and the Prometheus text format.
#include <relayguard/metrics.hpp>

#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace relayguard {
namespace {

using namespace std::chrono_literals;

// samples_of - every sample line of a text exposition: "name{labels}" -> value as written.
std::map<std::string, std::string> samples_of(const std::string& text)
{
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto space = line.rfind(' ');
        out[line.substr(0, space)] = line.substr(space + 1);
    }
    return out;
}

// sample - one sample's value, or "(absent)".
std::string sample(const std::map<std::string, std::string>& samples, const std::string& key)
{
    const auto it = samples.find(key);
    return it == samples.end() ? "(absent)" : it->second;
}

TEST(ActionClass, ClassifiesRepliesByTheirFirstWord)
{
    struct Case {
        std::string_view reply;
        ActionClass want;
    };
    const Case cases[] = {
        {"DUNNO", ActionClass::dunno},
        {"dunno", ActionClass::dunno},
        {"554 5.7.1 Relay access denied", ActionClass::reject},
        {"530 5.7.0 Authentication required", ActionClass::reject},
        {"450 4.7.1 Rate exceeded, retry in 30 s", ActionClass::defer},
        {"451 4.3.0 Rate limit service temporarily unavailable", ActionClass::defer},
        {"REJECT Relaying denied", ActionClass::reject},
        {"REJECT", ActionClass::reject},
        {"DEFER Try again later", ActionClass::defer},
        {"DEFER_IF_PERMIT Use TLS", ActionClass::defer_if_permit},
        {"defer_if_reject later", ActionClass::defer_if_reject},
        {"HOLD suspicious", ActionClass::hold},
        {"DISCARD", ActionClass::discard},
        {"WARN odd client", ActionClass::warn},
        {"OK", ActionClass::other},
        {"250 2.0.0 Ok", ActionClass::other},
        {"45 short code", ActionClass::other},
        {"4500 long code", ActionClass::other},
        {"REJECTED no", ActionClass::other},
        {"", ActionClass::other},
    };
    for (const auto& c : cases) {
        const ActionClass got = action_class(c.reply);
        EXPECT_EQ(got, c.want) << "reply=\"" << c.reply << "\" got=" << action_class_name(got)
                               << " want=" << action_class_name(c.want);
    }
}

TEST(CloseReason, NamesEachParseErrorAsItsLabel)
{
    struct Case {
        ParseError error;
        std::string_view want;
    };
    const Case cases[] = {
        {ParseError::line_too_long, "line_too_long"},
        {ParseError::request_too_large, "request_too_large"},
        {ParseError::too_many_attributes, "too_many_attributes"},
        {ParseError::missing_equals, "missing_equals"},
        {ParseError::empty_name, "empty_name"},
        {ParseError::nul_byte, "nul_byte"},
        {ParseError::missing_request_type, "missing_request_type"},
        {ParseError::unknown_request_type, "unknown_request_type"},
    };
    for (const auto& c : cases) {
        const std::string_view got = close_reason_name(close_reason(c.error));
        EXPECT_EQ(got, c.want) << "got=" << got << " want=" << c.want;
    }
    EXPECT_EQ(close_reason_name(CloseReason::idle_timeout), "idle_timeout");
    EXPECT_EQ(close_reason_name(CloseReason::truncated_request), "truncated_request");
}

TEST(Histogram, PutsEachDurationInTheFirstBucketWhoseBoundIsNotBelowIt)
{
    struct Case {
        std::chrono::nanoseconds d;
        std::size_t want;
    };
    const std::size_t inf = latency_bucket_bounds_us.size();
    const Case cases[] = {
        {0ns, 0},
        {-5ns, 0}, // a clock that went backwards: the fastest bucket, not a crash
        {1ns, 0},
        {50us, 0},
        {50us + 1ns, 1},
        {100us, 1},
        {101us, 2},
        {1ms, 4},
        {1ms + 1ns, 5},
        {999ms, 13},
        {1s, 13},
        {1s + 1ns, inf},
        {100s, inf},
    };
    for (const auto& c : cases) {
        const std::size_t got = Histogram::bucket_of(c.d);
        EXPECT_EQ(got, c.want) << c.d.count() << " ns: got=" << got << " want=" << c.want;
    }
}

TEST(Histogram, RendersCumulativeBucketsSumAndCount)
{
    Metrics metrics;
    WorkerMetrics& w = metrics.add_worker();
    // 40us and 50us in the first bucket, 300us in the 500us one, 2s past every bound.
    for (auto d : {40us, 50us, 300us})
        w.request(ProtocolState::rcpt, std::chrono::duration_cast<std::chrono::nanoseconds>(d));
    w.request(ProtocolState::rcpt, 2s);

    const auto s = samples_of(metrics.render(0));
    const std::string b = "relayguard_request_duration_seconds_bucket";
    const std::pair<std::string, std::string> want[] = {
        {b + "{le=\"0.00005\"}", "2"}, {b + "{le=\"0.0001\"}", "2"}, {b + "{le=\"0.00025\"}", "2"},
        {b + "{le=\"0.0005\"}", "3"},  {b + "{le=\"0.001\"}", "3"},  {b + "{le=\"0.0025\"}", "3"},
        {b + "{le=\"0.5\"}", "3"},     {b + "{le=\"1\"}", "3"},      {b + "{le=\"+Inf\"}", "4"},
        {"relayguard_request_duration_seconds_count", "4"},
        {"relayguard_request_duration_seconds_sum", "2.00039"},
        {"relayguard_store_duration_seconds_count", "0"},
        {"relayguard_store_duration_seconds_bucket{le=\"+Inf\"}", "0"},
    };
    for (const auto& [key, value] : want) EXPECT_EQ(sample(s, key), value) << key;
}

TEST(Metrics, SumsEveryWorkerBlock)
{
    Metrics metrics;
    WorkerMetrics& a = metrics.add_worker();
    WorkerMetrics& b = metrics.add_worker();
    a.request(ProtocolState::rcpt, 10us);
    b.request(ProtocolState::rcpt, 10us);
    b.request(ProtocolState::end_of_message, 10us);
    a.decision(std::nullopt, "DUNNO");
    b.decision(std::nullopt, "DUNNO");
    b.decision(Check::relay, "554 5.7.1 Relay access denied");
    a.decision(Check::rate_limits, "450 4.7.1 Slow down");
    a.shadow(Check::sender_ownership);
    b.shadow(Check::sender_ownership);
    a.store_call(200us);
    a.store_error(StoreError::timeout);
    b.store_error(StoreError::not_connected);
    for (int i = 0; i < 3; ++i) a.connection_opened();
    b.connection_opened();
    a.connection_closed();
    b.closed_for(CloseReason::nul_byte);
    a.closed_for(CloseReason::idle_timeout);

    const MetricsTotals t = metrics.totals(0);
    EXPECT_EQ(t.requests[static_cast<std::size_t>(ProtocolState::rcpt)], 2u);
    EXPECT_EQ(t.requests[static_cast<std::size_t>(ProtocolState::end_of_message)], 1u);
    EXPECT_EQ(t.decisions_of(std::nullopt, ActionClass::dunno), 2u);
    EXPECT_EQ(t.decisions_of(Check::relay, ActionClass::reject), 1u);
    EXPECT_EQ(t.decisions_of(Check::rate_limits, ActionClass::defer), 1u);
    EXPECT_EQ(t.shadow[static_cast<std::size_t>(Check::sender_ownership)], 2u);
    EXPECT_EQ(t.request_duration.count(), 3u);
    EXPECT_EQ(t.store_duration.count(), 1u);
    EXPECT_EQ(t.connections_total, 4u);
    EXPECT_EQ(t.connections_open, 3u);

    const auto s = samples_of(metrics.render(0));
    const std::pair<std::string, std::string> want[] = {
        {"relayguard_requests_total{protocol_state=\"RCPT\"}", "2"},
        {"relayguard_requests_total{protocol_state=\"END-OF-MESSAGE\"}", "1"},
        {"relayguard_requests_total{protocol_state=\"MAIL\"}", "0"},
        {"relayguard_decisions_total{check=\"none\",action=\"dunno\"}", "2"},
        {"relayguard_decisions_total{check=\"relay\",action=\"reject\"}", "1"},
        {"relayguard_decisions_total{check=\"rate_limits\",action=\"defer\"}", "1"},
        // Decisions that never happened are left out, not printed as 0.
        {"relayguard_decisions_total{check=\"relay\",action=\"defer\"}", "(absent)"},
        {"relayguard_shadow_decisions_total{check=\"sender_ownership\"}", "2"},
        {"relayguard_shadow_decisions_total{check=\"relay\"}", "0"},
        {"relayguard_store_errors_total{kind=\"timeout\"}", "1"},
        {"relayguard_store_errors_total{kind=\"not_connected\"}", "1"},
        {"relayguard_store_errors_total{kind=\"server_error\"}", "0"},
        {"relayguard_connections_total", "4"},
        {"relayguard_connections_open", "3"},
        {"relayguard_connections_closed_total{reason=\"nul_byte\"}", "1"},
        {"relayguard_connections_closed_total{reason=\"idle_timeout\"}", "1"},
        {"relayguard_connections_closed_total{reason=\"request_timeout\"}", "0"},
        {"relayguard_build_info{version=\"" RELAYGUARD_VERSION "\"}", "1"},
    };
    for (const auto& [key, value] : want) EXPECT_EQ(sample(s, key), value) << key;
}

TEST(Metrics, CountsTimeInDegradedModeUpToNow)
{
    Metrics metrics;
    EXPECT_FALSE(metrics.health().store_degraded);
    metrics.store_outage_began(1'000'000);
    EXPECT_TRUE(metrics.health().store_degraded);
    MetricsTotals t = metrics.totals(3'500'000);
    EXPECT_TRUE(t.store_degraded);
    EXPECT_EQ(t.store_outages, 1u);
    EXPECT_DOUBLE_EQ(t.store_degraded_seconds, 2.5);

    metrics.store_outage_ended(4'000'000);
    EXPECT_FALSE(metrics.health().store_degraded);
    t = metrics.totals(10'000'000);
    EXPECT_FALSE(t.store_degraded);
    EXPECT_DOUBLE_EQ(t.store_degraded_seconds, 3.0) << "the time after the outage ended must not count";

    metrics.store_outage_began(20'000'000);
    t = metrics.totals(20'250'000);
    EXPECT_EQ(t.store_outages, 2u);
    EXPECT_DOUBLE_EQ(t.store_degraded_seconds, 3.25);

    const auto s = samples_of(metrics.render(20'250'000));
    EXPECT_EQ(sample(s, "relayguard_store_degraded"), "1");
    EXPECT_EQ(sample(s, "relayguard_store_outages_total"), "2");
    EXPECT_EQ(sample(s, "relayguard_store_degraded_seconds_total"), "3.25");
}

TEST(Metrics, AnOutageEndReportedBeforeItsStartCancelsOut)
{
    // Two workers racing at a flap: the one that saw Redis answer again reports first.
    Metrics metrics;
    metrics.store_outage_ended(5'000'000);
    metrics.store_outage_began(5'000'010);
    const MetricsTotals t = metrics.totals(9'000'000);
    EXPECT_FALSE(t.store_degraded);
    EXPECT_FALSE(metrics.health().store_degraded);
    EXPECT_DOUBLE_EQ(t.store_degraded_seconds, 0.0);
}

TEST(Metrics, CountsReloadsAndServingState)
{
    Metrics metrics;
    EXPECT_FALSE(metrics.health().serving);
    metrics.set_serving(true);
    EXPECT_TRUE(metrics.health().serving);
    metrics.reloaded(true);
    metrics.reloaded(true);
    metrics.reloaded(false);
    const auto s = samples_of(metrics.render(0));
    EXPECT_EQ(sample(s, "relayguard_config_reloads_total{result=\"ok\"}"), "2");
    EXPECT_EQ(sample(s, "relayguard_config_reloads_total{result=\"failed\"}"), "1");
}

TEST(Metrics, CountsAutomaticSuspensionsAndEvents)
{
    Metrics metrics;
    const auto before = samples_of(metrics.render(0));
    EXPECT_EQ(sample(before, "relayguard_suspensions_total{by=\"automatic\"}"), "0");
    metrics.suspended_automatically();
    metrics.suspended_automatically();
    for (int i = 0; i < 3; ++i) metrics.event_published();
    metrics.event_dropped();
    const auto s = samples_of(metrics.render(0));
    EXPECT_EQ(sample(s, "relayguard_suspensions_total{by=\"automatic\"}"), "2");
    EXPECT_EQ(sample(s, "relayguard_events_total{result=\"published\"}"), "3");
    EXPECT_EQ(sample(s, "relayguard_events_total{result=\"dropped\"}"), "1");
    const MetricsTotals t = metrics.totals(0);
    EXPECT_EQ(t.suspensions_automatic, 2u) << "got=" << t.suspensions_automatic << " want=2";
}

// The exposition format (0.0.4): HELP and TYPE once per family, before its samples; sample
// names are the family's (a histogram's with _bucket, _sum, _count); values are numbers.
TEST(RenderMetrics, WritesValidTextFormat)
{
    Metrics metrics;
    WorkerMetrics& w = metrics.add_worker();
    w.request(ProtocolState::rcpt, 80us);
    w.decision(Check::relay, "554 5.7.1 Relay access denied");
    w.store_call(1ms);
    const std::string text = metrics.render(0);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');

    const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
    const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
    const std::regex sample_line(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})? )"
                                 R"((-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?))");
    std::map<std::string, std::string> types;
    std::set<std::string> helps;
    std::string family, family_type;
    std::istringstream in(text);
    std::string line;
    int samples = 0;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_match(line, m, help)) {
            EXPECT_TRUE(helps.insert(m[1]).second) << "HELP twice: " << line;
            family = m[1];
            continue;
        }
        if (std::regex_match(line, m, type)) {
            EXPECT_EQ(m[1], family) << "TYPE not right after its HELP: " << line;
            EXPECT_TRUE(types.emplace(m[1], m[2]).second) << "TYPE twice: " << line;
            family_type = m[2];
            continue;
        }
        ASSERT_TRUE(std::regex_match(line, m, sample_line)) << "not a sample line: \"" << line << "\"";
        ++samples;
        const std::string name = m[1];
        if (family_type == "histogram") {
            EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" || name == family + "_count")
                << "got=" << name << " in histogram family " << family;
        } else {
            EXPECT_EQ(name, family) << "sample outside its family";
        }
    }
    EXPECT_GT(samples, 0);
    const std::map<std::string, std::string> want_types = {
        {"relayguard_build_info", "gauge"},
        {"relayguard_requests_total", "counter"},
        {"relayguard_decisions_total", "counter"},
        {"relayguard_shadow_decisions_total", "counter"},
        {"relayguard_request_duration_seconds", "histogram"},
        {"relayguard_store_duration_seconds", "histogram"},
        {"relayguard_store_errors_total", "counter"},
        {"relayguard_store_degraded", "gauge"},
        {"relayguard_store_outages_total", "counter"},
        {"relayguard_store_degraded_seconds_total", "counter"},
        {"relayguard_connections_open", "gauge"},
        {"relayguard_connections_total", "counter"},
        {"relayguard_connections_closed_total", "counter"},
        {"relayguard_config_reloads_total", "counter"},
        {"relayguard_suspensions_total", "counter"},
        {"relayguard_events_total", "counter"},
    };
    EXPECT_EQ(types, want_types);
}

} // namespace
} // namespace relayguard
