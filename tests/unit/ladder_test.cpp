// SPDX-License-Identifier: MIT
// ladder_test.cpp - the compromise ladder (judge_compromise, rung_name), the live store query of
// a request (plan_live), and the JSON of a ladder event (event_json).
//
// Named ladder_test, not compromise_test: tests/integration/compromise_test.cpp exists too, and
// every test is an executable named after its file.
#include <relayguard/policy.hpp>

#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace relayguard {
namespace {

using namespace std::chrono_literals;
using Counts = std::array<std::uint64_t, signal_count>;
using Attrs = std::initializer_list<std::pair<Attr, std::string_view>>;

// --- judge_compromise ---

// warn/hold/suspend: networks 4/8/16, recipient domains 10/20/- , refusals 3/6/10 within 1h.
CompromiseConfig ladder()
{
    CompromiseConfig c;
    c.enabled = true;
    c.window = 1h;
    c.track_recipient_domains = true;
    c.warn = {4, 10, 3, false};
    c.hold = {8, 20, 6, false};
    c.suspend = {16, 0, 10, false};
    return c;
}

struct JudgeCase {
    std::string name;
    void (*adjust)(CompromiseConfig&);
    Counts counts;
    Rung want_rung;
    bool want_shadow;
    Rung want_enforced;
    Signal want_signal;
    std::uint64_t want_count;
    std::uint64_t want_threshold;
    std::string want_reason;
};

void as_is(CompromiseConfig&) {}

TEST(JudgeCompromise, PicksTheHighestRungAnySignalReaches)
{
    constexpr auto max = std::numeric_limits<std::uint64_t>::max();
    const std::string nets = " distinct client networks (/24, /48) within 1h, threshold ";
    const JudgeCase cases[] = {
        {"nothing counted", as_is, {0, 0, 0}, Rung::none, false, Rung::none, Signal::networks, 0, 0, ""},
        {"just below every warn threshold", as_is, {3, 9, 2}, Rung::none, false, Rung::none, Signal::networks, 0, 0, ""},
        {"networks reach warn", as_is, {4, 0, 0}, Rung::warn, false, Rung::warn, Signal::networks, 4, 4, "4" + nets + "4"},
        {"recipient domains reach warn", as_is, {0, 10, 0}, Rung::warn, false, Rung::warn, Signal::recipient_domains, 10, 10,
         "10 distinct recipient domains within 1h, threshold 10"},
        {"refusals reach warn", as_is, {0, 0, 5}, Rung::warn, false, Rung::warn, Signal::rate_refusals, 5, 3,
         "5 rate-limit refusals within 1h, threshold 3"},
        {"networks reach hold", as_is, {8, 0, 0}, Rung::hold, false, Rung::hold, Signal::networks, 8, 8, "8" + nets + "8"},
        {"the signal that reaches the rung is named, not the first counted", as_is, {5, 25, 0}, Rung::hold, false,
         Rung::hold, Signal::recipient_domains, 25, 20, "25 distinct recipient domains within 1h, threshold 20"},
        {"two signals reach hold: the first in Signal order", as_is, {9, 21, 7}, Rung::hold, false, Rung::hold,
         Signal::networks, 9, 8, "9" + nets + "8"},
        {"suspend", as_is, {16, 100, 100}, Rung::suspend, false, Rung::suspend, Signal::networks, 16, 16, "16" + nets + "16"},
        {"a zero threshold leaves the signal out of the rung", as_is, {0, max, 0}, Rung::hold, false, Rung::hold,
         Signal::recipient_domains, max, 20,
         std::to_string(max) + " distinct recipient domains within 1h, threshold 20"},
        {"refusals reach suspend", as_is, {0, 0, 10}, Rung::suspend, false, Rung::suspend, Signal::rate_refusals, 10, 10,
         "10 rate-limit refusals within 1h, threshold 10"},
        {"one of a kind reads singular",
         [](CompromiseConfig& c) {
             c.warn = {1, 0, 1, false};
             c.hold = {};
             c.suspend = {};
         },
         {1, 0, 0}, Rung::warn, false, Rung::warn, Signal::networks, 1, 1,
         "1 distinct client network (/24, /48) within 1h, threshold 1"},
        {"one refusal reads singular",
         [](CompromiseConfig& c) {
             c.warn = {0, 0, 1, false};
             c.hold = {};
             c.suspend = {};
         },
         {0, 0, 1}, Rung::warn, false, Rung::warn, Signal::rate_refusals, 1, 1, "1 rate-limit refusal within 1h, threshold 1"},
        {"a rung without thresholds never triggers",
         [](CompromiseConfig& c) { c.warn = {}; }, {7, 19, 5}, Rung::none, false, Rung::none, Signal::networks, 0, 0, ""},
        {"no thresholds at all", [](CompromiseConfig& c) { c.warn = c.hold = c.suspend = {}; }, {max, max, max}, Rung::none,
         false, Rung::none, Signal::networks, 0, 0, ""},
        {"disabled", [](CompromiseConfig& c) { c.enabled = false; }, {max, max, max}, Rung::none, false, Rung::none,
         Signal::networks, 0, 0, ""},
        // Shadow rungs: reported as reached, not enforced.
        {"shadow hold: enforced falls back to warn", [](CompromiseConfig& c) { c.hold.shadow = true; }, {8, 0, 0}, Rung::hold,
         true, Rung::warn, Signal::networks, 8, 8, "8" + nets + "8"},
        {"shadow suspend and hold: enforced warn",
         [](CompromiseConfig& c) { c.hold.shadow = c.suspend.shadow = true; }, {20, 0, 0}, Rung::suspend, true, Rung::warn,
         Signal::networks, 20, 16, "20" + nets + "16"},
        {"shadow suspend over an enforced hold", [](CompromiseConfig& c) { c.suspend.shadow = true; }, {16, 0, 0},
         Rung::suspend, true, Rung::hold, Signal::networks, 16, 16, "16" + nets + "16"},
        {"every rung in shadow mode", [](CompromiseConfig& c) { c.warn.shadow = c.hold.shadow = c.suspend.shadow = true; },
         {16, 0, 0}, Rung::suspend, true, Rung::none, Signal::networks, 16, 16, "16" + nets + "16"},
        {"shadow warn below an enforced hold", [](CompromiseConfig& c) { c.warn.shadow = true; }, {8, 0, 0}, Rung::hold, false,
         Rung::hold, Signal::networks, 8, 8, "8" + nets + "8"},
        // The reason's window and prefixes come from the config.
        {"30m window, other prefixes",
         [](CompromiseConfig& c) {
             c.window = 30min;
             c.ipv4_prefix = 16;
             c.ipv6_prefix = 64;
         },
         {4, 0, 0}, Rung::warn, false, Rung::warn, Signal::networks, 4, 4,
         "4 distinct client networks (/16, /64) within 30m, threshold 4"},
        {"90s window", [](CompromiseConfig& c) { c.window = 90s; }, {0, 0, 3}, Rung::warn, false, Rung::warn,
         Signal::rate_refusals, 3, 3, "3 rate-limit refusals within 90s, threshold 3"},
        {"90m window", [](CompromiseConfig& c) { c.window = 5400s; }, {0, 0, 3}, Rung::warn, false, Rung::warn,
         Signal::rate_refusals, 3, 3, "3 rate-limit refusals within 90m, threshold 3"},
        {"2d window", [](CompromiseConfig& c) { c.window = 48h; }, {0, 0, 3}, Rung::warn, false, Rung::warn,
         Signal::rate_refusals, 3, 3, "3 rate-limit refusals within 2d, threshold 3"},
    };
    for (const auto& c : cases) {
        CompromiseConfig config = ladder();
        c.adjust(config);
        const LadderVerdict v = judge_compromise(c.counts, config);
        EXPECT_EQ(rung_name(v.rung), rung_name(c.want_rung)) << c.name << ": rung";
        EXPECT_EQ(v.shadow, c.want_shadow) << c.name << ": shadow";
        EXPECT_EQ(rung_name(v.enforced), rung_name(c.want_enforced)) << c.name << ": enforced";
        EXPECT_EQ(v.reason, c.want_reason) << c.name << ": reason got=" << v.reason << " want=" << c.want_reason;
        if (c.want_rung == Rung::none) continue;
        EXPECT_EQ(signal_name(v.signal), signal_name(c.want_signal)) << c.name << ": signal";
        EXPECT_EQ(v.count, c.want_count) << c.name << ": count got=" << v.count << " want=" << c.want_count;
        EXPECT_EQ(v.threshold, c.want_threshold) << c.name << ": threshold got=" << v.threshold << " want=" << c.want_threshold;
    }
}

TEST(JudgeCompromise, RungNames)
{
    const std::pair<Rung, std::string_view> cases[] = {
        {Rung::none, "none"}, {Rung::warn, "warn"}, {Rung::hold, "hold"}, {Rung::suspend, "suspend"}};
    for (const auto& [rung, want] : cases) EXPECT_EQ(rung_name(rung), want);
}

// --- plan_live ---

// A submission + MX host: every check on, the ladder counting networks.
Config plan_config()
{
    Config c;
    c.domains.local = {"test.local", ".sub.example.com"};
    c.address.recipient_delimiter = "+";
    c.exempt.networks.add(*parse_cidr("192.0.2.0/24"));
    c.exempt.logins = {"monitor@test.local"};
    c.auth_required.ports = {587};
    c.sender_ownership.any_sender_logins = {"mailer"};
    c.compromise.enabled = true;
    c.compromise.warn.networks = 4;
    return c;
}

std::shared_ptr<const Snapshot> snapshot_of(Config c)
{
    auto s = build_snapshot(std::move(c));
    EXPECT_TRUE(s.has_value()) << (s ? "" : s.error().message);
    return s ? *s : std::make_shared<const Snapshot>();
}

// An authenticated RCPT by alice@test.local as herself, to an outside recipient.
Request submission(Attrs attrs = {})
{
    Request r;
    r.set(Attr::request, "smtpd_access_policy");
    r.set(Attr::protocol_state, "RCPT");
    r.set(Attr::client_address, "198.51.100.7");
    r.set(Attr::server_port, "587");
    r.set(Attr::sasl_method, "PLAIN");
    r.set(Attr::sasl_username, "alice@test.local");
    r.set(Attr::encryption_protocol, "TLSv1.3");
    r.set(Attr::sender, "alice@test.local");
    r.set(Attr::recipient, "bob@Example.NET");
    r.set(Attr::instance, "1f2.3");
    for (const auto& [attr, value] : attrs) r.set(attr, value);
    return r;
}

// An unauthenticated RCPT from outside to a local recipient.
Request inbound(Attrs attrs = {})
{
    Request r = submission({{Attr::server_port, "25"},
                            {Attr::sasl_method, ""},
                            {Attr::sasl_username, ""},
                            {Attr::sender, "x@example.org"},
                            {Attr::recipient, "a@test.local"}});
    for (const auto& [attr, value] : attrs) r.set(attr, value);
    return r;
}

std::string joined(const std::vector<std::string>& values)
{
    std::string out;
    for (const auto& v : values) out += (out.empty() ? "" : ",") + v;
    return out;
}

// describe - a query in one line: "login=L suspension owners=[..] domains=[..]
// track=[networks:E,...] window=Ns read-only", parts left out when empty; "nothing" for nullopt.
std::string describe(const std::optional<LiveQuery>& q)
{
    if (!q) return "nothing";
    std::string out = "login=" + (q->login.empty() ? std::string("-") : q->login);
    if (q->suspension) out += " suspension";
    if (!q->owner_keys.empty()) out += " owners=[" + joined(q->owner_keys) + "]";
    if (!q->domain_candidates.empty()) out += " domains=[" + joined(q->domain_candidates) + "]";
    if (!q->track.empty()) {
        std::vector<std::string> track;
        for (const auto& t : q->track) track.push_back(std::string(signal_name(t.signal)) + ":" + t.element);
        out += " track=[" + joined(track) + "] window=" + std::to_string(q->window.count()) + "s";
    }
    if (!q->consume) out += " read-only";
    return out;
}

struct PlanCase {
    std::string name;
    void (*adjust)(Config&);
    Request request;
    std::string want; // describe()
    bool consume = true;
};

void same(Config&) {}

TEST(PlanLive, AsksOnlyWhatCouldChangeTheAnswer)
{
    const std::string alice = "login=alice@test.local suspension";
    const std::string net = " track=[networks:198.51.100.0/24] window=3600s";
    const PlanCase cases[] = {
        // Suspension and the client network of a login at RCPT.
        {"own sender at RCPT", same, submission(), alice + net},
        {"login folded to lower case", same, submission({{Attr::sasl_username, "Alice@Test.LOCAL"}}), alice + net},
        {"IPv6 client network", same, submission({{Attr::client_address, "2001:DB8:9:8::1"}}),
         alice + " track=[networks:2001:db8:9::/48] window=3600s"},
        {"configured prefixes", [](Config& c) { c.compromise.ipv4_prefix = 16; }, submission(),
         alice + " track=[networks:198.51.0.0/16] window=3600s"},
        {"no client address: the count is read, nothing added", same, submission({{Attr::client_address, "unknown"}}),
         alice + " track=[networks:] window=3600s"},
        {"recipient domains when tracked", [](Config& c) { c.compromise.track_recipient_domains = true; },
         submission({{Attr::recipient, "bob@Example.NET."}}),
         alice + " track=[networks:198.51.100.0/24,recipient_domains:example.net] window=3600s"},
        {"refusals when a rung counts them",
         [](Config& c) {
             c.compromise.hold.rate_refusals = 5;
             c.compromise.window = 30min;
         },
         submission(), alice + " track=[networks:198.51.100.0/24,rate_refusals:] window=1800s"},
        {"read only", same, submission(), alice + net + " read-only", false},
        {"signals only at RCPT", same, submission({{Attr::protocol_state, "MAIL"}, {Attr::recipient, ""}}), alice},
        {"signals not at END-OF-MESSAGE", same, submission({{Attr::protocol_state, "END-OF-MESSAGE"}}), alice},
        {"ladder disabled", [](Config& c) { c.compromise.enabled = false; }, submission(), alice},
        {"suspended check disabled", [](Config& c) { c.suspended.enabled = false; }, submission(),
         "login=alice@test.local" + net},
        {"nothing to ask", [](Config& c) { c.suspended.enabled = c.compromise.enabled = false; }, submission(), "nothing"},
        {"no envelope at CONNECT", same, submission({{Attr::protocol_state, "CONNECT"}}), "nothing"},
        // Owners: only where the config alone refuses the sender.
        {"sender the config does not grant", same, submission({{Attr::sender, "Sales@Test.Local"}}),
         alice + " owners=[sales@test.local,@test.local]" + net},
        {"owner keys in lookup order", same, submission({{Attr::sender, "Sales+Q4@Test.Local"}}),
         alice + " owners=[sales+q4@test.local,sales@test.local,@test.local]" + net},
        {"owner keys lower case even with case-sensitive local parts",
         [](Config& c) { c.address.local_part_case_sensitive = true; }, submission({{Attr::sender, "Sales@test.local"}}),
         alice + " owners=[sales@test.local,@test.local]" + net},
        {"any-sender login", same, submission({{Attr::sasl_username, "mailer"}, {Attr::sender, "x@example.org"}}),
         "login=mailer suspension" + net},
        {"null sender: owners do not matter", same, submission({{Attr::sender, ""}}), alice + net},
        {"unqualified sender: no key to look up", same, submission({{Attr::sender, "root"}}), alice + net},
        {"sender_ownership disabled", [](Config& c) { c.sender_ownership.enabled = false; },
         submission({{Attr::sender, "sales@test.local"}}), alice + net},
        // Local domains: only where the config alone refuses relaying.
        {"local recipient", same, inbound(), "nothing"},
        {"outside recipient", same, inbound({{Attr::recipient, "x@MX.Example.NET."}}),
         "login=- domains=[mx.example.net,.example.net,.net]"},
        {"recipient under a .parent entry", same, inbound({{Attr::recipient, "x@a.sub.example.com"}}), "nothing"},
        {"unqualified recipient", same, inbound({{Attr::recipient, "postmaster"}}), "nothing"},
        {"relay disabled", [](Config& c) { c.relay.enabled = false; }, inbound({{Attr::recipient, "x@example.net"}}),
         "nothing"},
        {"unauthenticated local sender: no owner question", same, inbound({{Attr::sender, "ceo@test.local"}}), "nothing"},
        // Exempt clients and logins.
        {"exempt client", same, submission({{Attr::client_address, "192.0.2.8"}}), "nothing"},
        {"exempt login", same, submission({{Attr::sasl_username, "monitor@test.local"}}), "nothing"},
        {"exempt client tracked with applies_to_exempt", [](Config& c) { c.compromise.applies_to_exempt = true; },
         submission({{Attr::client_address, "192.0.2.8"}, {Attr::sender, "sales@test.local"}}),
         "login=alice@test.local track=[networks:192.0.2.0/24] window=3600s"},
        {"exempt unauthenticated client", [](Config& c) { c.compromise.applies_to_exempt = true; },
         inbound({{Attr::client_address, "192.0.2.8"}, {Attr::recipient, "x@example.net"}}), "nothing"},
        {"exempt disabled", [](Config& c) { c.exempt.enabled = false; },
         submission({{Attr::client_address, "192.0.2.8"}}), alice + " track=[networks:192.0.2.0/24] window=3600s"},
    };
    for (const auto& c : cases) {
        Config config = plan_config();
        c.adjust(config);
        const auto snap = snapshot_of(std::move(config));
        const std::string got = describe(plan_live(c.request, *snap, c.consume));
        EXPECT_EQ(got, c.want) << c.name << ": got=" << got << " want=" << c.want;
    }
}

TEST(PlanLive, ConsumeFollowsTheArgument)
{
    const auto snap = snapshot_of(plan_config());
    const auto consuming = plan_live(submission(), *snap);
    const auto reading = plan_live(submission(), *snap, false);
    ASSERT_TRUE(consuming && reading);
    EXPECT_TRUE(consuming->consume);
    EXPECT_FALSE(reading->consume);
    EXPECT_EQ(consuming->window, std::chrono::seconds{3600});
}

// --- event_json ---

Request event_request(Attrs attrs = {})
{
    Request r = submission();
    r.set(Attr::client_address, "198.51.100.7");
    r.set(Attr::instance, "4a1.66.1");
    for (const auto& [attr, value] : attrs) r.set(attr, value);
    return r;
}

TEST(EventJson, OneLineWithEveryField)
{
    const CompromiseConfig config = ladder();
    const LadderVerdict v = judge_compromise({12, 0, 0}, config);
    ASSERT_EQ(v.rung, Rung::hold);
    const std::string json = event_json("hold", "alice@test.local", v, config.window, event_request(), 1700000000, "mx1");
    EXPECT_EQ(json,
              "{\"event\":\"hold\",\"login\":\"alice@test.local\",\"rung\":\"hold\",\"shadow\":false,\"signal\":\"networks\","
              "\"count\":12,\"threshold\":8,\"window_s\":3600,\"reason\":\"12 distinct client networks (/24, /48) within 1h, "
              "threshold 8\",\"client_address\":\"198.51.100.7\",\"instance\":\"4a1.66.1\",\"time\":1700000000,"
              "\"host\":\"mx1\"}");

    // Read back field by field, as a consumer grepping the event would.
    CompromiseConfig shadowed = config;
    shadowed.suspend.shadow = true;
    const LadderVerdict s = judge_compromise({0, 0, 11}, shadowed);
    const std::string back = event_json("suspend", "bob", s, 30min, event_request({{Attr::instance, ""}}), 5, "");
    const std::string fields[] = {
        "{\"event\":\"suspend\",", "\"login\":\"bob\"", "\"rung\":\"suspend\"", "\"shadow\":true",
        "\"signal\":\"rate_refusals\"", "\"count\":11", "\"threshold\":10", "\"window_s\":1800",
        "\"reason\":\"11 rate-limit refusals within 1h, threshold 10\"", "\"instance\":\"\"", "\"time\":5",
        "\"host\":\"\"}",
    };
    for (const auto& f : fields) EXPECT_NE(back.find(f), std::string::npos) << "missing " << f << " in " << back;
    EXPECT_EQ(back.find('\n'), std::string::npos);
}

TEST(EventJson, EscapesControlBytesAndInvalidUtf8)
{
    struct Case {
        std::string name;
        std::string login;
        std::string want; // the login's JSON string, quotes included
    };
    const Case cases[] = {
        {"quote and backslash", "a\"b\\c", "\"a\\\"b\\\\c\""},
        {"control bytes", std::string("a\x01\n\t\x1b[31m\x7f", 10), "\"a\\u0001\\u000a\\u0009\\u001b[31m\\u007f\""},
        {"NUL", std::string("a\0b", 3), "\"a\\u0000b\""},
        {"valid UTF-8 kept", "j\xc3\xbcrgen\xe2\x82\xac\xf0\x9f\x98\x80", "\"j\xc3\xbcrgen\xe2\x82\xac\xf0\x9f\x98\x80\""},
        {"lone continuation byte", "a\x80z", "\"a\\u0080z\""},
        {"invalid byte", "\xff", "\"\\u00ff\""},
        {"truncated sequence", "a\xe2\x82", "\"a\\u00e2\\u0082\""},
        {"truncated before ASCII", "\xc3z", "\"\\u00c3z\""},
        {"overlong slash", "\xc0\xaf", "\"\\u00c0\\u00af\""},
        {"overlong three bytes", "\xe0\x80\xaf", "\"\\u00e0\\u0080\\u00af\""},
        {"UTF-16 surrogate", "\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\""},
        {"past U+10FFFF", "\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\""},
        {"largest code point kept", "\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\""},
    };
    const LadderVerdict v = judge_compromise({4, 0, 0}, ladder());
    for (const auto& c : cases) {
        const std::string json = event_json("warn", c.login, v, 1h, event_request(), 0, "h");
        const std::string want = "\"login\":" + c.want + ",\"rung\"";
        EXPECT_NE(json.find(want), std::string::npos) << c.name << ": got=" << json << " want=..." << want << "...";
        for (char ch : json) {
            const auto u = static_cast<unsigned char>(ch);
            EXPECT_FALSE(u < 0x20 || u == 0x7f) << c.name << ": raw control byte " << unsigned(u) << " in " << json;
        }
    }
    // The request's values are escaped the same way.
    const std::string json =
        event_json("warn", "x", v, 1h, event_request({{Attr::client_address, "\xff\""}, {Attr::instance, "\n"}}), 0, "h\x01");
    EXPECT_NE(json.find("\"client_address\":\"\\u00ff\\\"\",\"instance\":\"\\u000a\""), std::string::npos) << json;
    EXPECT_NE(json.find("\"host\":\"h\\u0001\"}"), std::string::npos) << json;
}

} // namespace
} // namespace relayguard
