// SPDX-License-Identifier: MIT
// policy_test.cpp - decide(): each check, shadow mode, order, states, the captured samples;
// format_decision_log; build_snapshot/load_snapshot.
#include <relayguard/policy.hpp>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "testing/test_support.hpp"

// Heap allocations made by this process, to hold decide() to "a pass allocates nothing".
std::atomic<std::size_t> g_allocations{0};

void* operator new(std::size_t n)
{
    ++g_allocations;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept
{
    ++g_allocations;
    return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace relayguard {
namespace {

using Outcome = Decision::Outcome;
using Verdict = CheckResult::Verdict;
using Attrs = std::initializer_list<std::pair<Attr, std::string_view>>;

// A config with every check on, as a submission + MX host would have it.
Config base_config()
{
    Config c;
    c.domains.local = {"test.local", ".sub.example.com"};
    c.address.recipient_delimiter = "+";
    c.exempt.networks.add(*parse_cidr("192.0.2.0/24"));
    c.exempt.networks.add(*parse_cidr("2001:db8:1::/48"));
    c.exempt.logins = {"monitor@test.local"};
    c.auth_required.ports = {587, 465};
    c.auth_required.policy_contexts = {"submission"};
    c.plaintext_auth.mechanisms = {"PLAIN", "LOGIN"};
    c.sender_ownership.any_sender_logins = {"mailer"};
    return c;
}

std::shared_ptr<const Snapshot> snapshot_of(Config c)
{
    auto s = build_snapshot(std::move(c));
    EXPECT_TRUE(s.has_value()) << (s ? "" : s.error().message);
    return s ? *s : std::make_shared<const Snapshot>();
}

// An unauthenticated RCPT from an outside client to a local recipient: passes everything.
Request make_request(Attrs attrs = {})
{
    Request r;
    r.set(Attr::request, "smtpd_access_policy");
    r.set(Attr::protocol_state, "RCPT");
    r.set(Attr::client_address, "198.51.100.7");
    r.set(Attr::server_port, "25");
    r.set(Attr::sender, "x@example.org");
    r.set(Attr::recipient, "a@test.local");
    r.set(Attr::instance, "1f2.3");
    for (const auto& [attr, value] : attrs) r.set(attr, value);
    return r;
}

// An authenticated submission by alice@test.local over TLS on port 587.
Request make_submission(Attrs attrs = {})
{
    Request r = make_request({{Attr::server_port, "587"},
                              {Attr::sasl_method, "PLAIN"},
                              {Attr::sasl_username, "alice@test.local"},
                              {Attr::encryption_protocol, "TLSv1.3"},
                              {Attr::sender, "alice@test.local"},
                              {Attr::recipient, "bob@example.net"}});
    for (const auto& [attr, value] : attrs) r.set(attr, value);
    return r;
}

// summary - "pass", "exempt" or "refuse:<check>", then " shadow:<check>" per shadowed failure.
std::string summary(const Decision& d)
{
    std::string s;
    switch (d.outcome) {
    case Outcome::pass: s = "pass"; break;
    case Outcome::exempt: s = "exempt"; break;
    case Outcome::refuse: s = "refuse:" + std::string(check_name(d.decided_by)); break;
    }
    for (const auto& r : d.shadowed) s += " shadow:" + std::string(check_name(r.check));
    return s;
}

struct Case {
    std::string name;
    Request request;
    std::string want;        // summary()
    std::string want_reason; // refusals only; "" = not checked
};

void run_cases(const Snapshot& snap, const std::vector<Case>& cases)
{
    for (const auto& c : cases) {
        const Decision d = decide(c.request, snap);
        EXPECT_EQ(summary(d), c.want) << c.name << ": got=" << summary(d) << " want=" << c.want << " reason=" << d.reason;
        if (d.outcome != Outcome::refuse) {
            EXPECT_EQ(d.reply, action_dunno) << c.name << ": a pass answers DUNNO";
            EXPECT_EQ(d.reason, "") << c.name;
        }
        if (!c.want_reason.empty()) {
            EXPECT_EQ(d.reason, c.want_reason) << c.name << ": reason got=" << d.reason << " want=" << c.want_reason;
        }
        // The same decision with a trace: the trace must not change the outcome.
        std::vector<CheckResult> trace;
        const Decision traced = decide(c.request, snap, &trace);
        EXPECT_EQ(summary(traced), summary(d)) << c.name << ": decision changed with a trace";
        EXPECT_EQ(trace.size(), 6u) << c.name << ": one trace entry per check";
    }
}

TEST(Decide, Exempt)
{
    Config no_exempt = base_config();
    no_exempt.exempt.enabled = false;
    const auto snap = snapshot_of(base_config());
    const auto off = snapshot_of(no_exempt);
    // A request that every other check would refuse: auth_required (587), relay, sender_ownership.
    const Attrs bad = {{Attr::server_port, "587"}, {Attr::recipient, "x@example.net"}, {Attr::sender, "root@test.local"}};
    auto with = [&](Attrs extra) {
        Request r = make_request(bad);
        for (const auto& [a, v] : extra) r.set(a, v);
        return r;
    };
    run_cases(*snap, {
        {"v4 client in exempt network", with({{Attr::client_address, "192.0.2.55"}}), "exempt", ""},
        {"v4-mapped client in exempt network", with({{Attr::client_address, "::ffff:192.0.2.55"}}), "exempt", ""},
        {"v6 client in exempt network", with({{Attr::client_address, "2001:db8:1:ff::25"}}), "exempt", ""},
        {"v6 client outside", with({{Attr::client_address, "2001:db8:2::25"}}), "refuse:auth_required", ""},
        {"v4 client outside", with({{Attr::client_address, "192.0.3.1"}}), "refuse:auth_required", ""},
        {"unparsable client", with({{Attr::client_address, "unknown"}}), "refuse:auth_required", ""},
        {"exempt login, any case", with({{Attr::sasl_username, "Monitor@Test.Local"}}), "exempt", ""},
        {"other login", with({{Attr::sasl_username, "monitor@test.locals"}}), "refuse:sender_ownership", ""},
        {"exempt at CONNECT", with({{Attr::protocol_state, "CONNECT"}, {Attr::client_address, "192.0.2.1"}}),
         "exempt", ""},
    });
    run_cases(*off, {
        {"disabled: trusted client is checked", with({{Attr::client_address, "192.0.2.55"}}), "refuse:auth_required", ""},
        {"disabled: exempt login is checked", with({{Attr::sasl_username, "monitor@test.local"}}),
         "refuse:sender_ownership", ""},
    });
}

TEST(Decide, AuthRequired)
{
    const auto snap = snapshot_of(base_config());
    run_cases(*snap, {
        {"listed port, no login", make_request({{Attr::server_port, "587"}}), "refuse:auth_required",
         "login required on port 587"},
        {"other listed port, no login", make_request({{Attr::server_port, "465"}}), "refuse:auth_required",
         "login required on port 465"},
        {"listed port, login", make_submission(), "pass", ""},
        {"port 25, no login", make_request(), "pass", ""},
        {"listed policy_context, no login", make_request({{Attr::policy_context, "submission"}}),
         "refuse:auth_required", "login required for policy_context submission"},
        {"policy_context is case-sensitive", make_request({{Attr::policy_context, "Submission"}}), "pass", ""},
        {"unlisted policy_context", make_request({{Attr::policy_context, "exim"}}), "pass", ""},
        {"Exim's unknown port -1", make_request({{Attr::server_port, "-1"}}), "pass", ""},
        {"port with junk", make_request({{Attr::server_port, "587x"}}), "pass", ""},
        {"port out of range", make_request({{Attr::server_port, "66123"}}), "pass", ""},
        {"port with leading zero", make_request({{Attr::server_port, "0587"}}), "refuse:auth_required", ""},
        {"empty port", make_request({{Attr::server_port, ""}}), "pass", ""},
        {"IPv6 client on listed port", make_request({{Attr::server_port, "587"}, {Attr::client_address, "2001:db8:9::1"}}),
         "refuse:auth_required", "login required on port 587"},
    });
}

TEST(Decide, PlaintextAuth)
{
    const auto snap = snapshot_of(base_config());
    run_cases(*snap, {
        {"PLAIN over TLS", make_submission(), "pass", ""},
        {"PLAIN without TLS", make_submission({{Attr::encryption_protocol, ""}}), "refuse:plaintext_auth",
         "PLAIN login without TLS"},
        {"mechanism case-insensitive", make_submission({{Attr::sasl_method, "login"}, {Attr::encryption_protocol, ""}}),
         "refuse:plaintext_auth", "LOGIN login without TLS"},
        {"CRAM-MD5 without TLS", make_submission({{Attr::sasl_method, "CRAM-MD5"}, {Attr::encryption_protocol, ""}}),
         "pass", ""},
        {"not authenticated, no TLS", make_request({{Attr::sasl_method, "PLAIN"}}), "pass", ""},
        {"IPv6 client, PLAIN without TLS",
         make_submission({{Attr::client_address, "2001:db8:9::1"}, {Attr::encryption_protocol, ""}}),
         "refuse:plaintext_auth", "PLAIN login without TLS"},
    });
}

TEST(Decide, Relay)
{
    const auto snap = snapshot_of(base_config());
    run_cases(*snap, {
        {"local recipient", make_request(), "pass", ""},
        {"non-local recipient", make_request({{Attr::recipient, "x@example.net"}}), "refuse:relay",
         "recipient domain example.net is not local"},
        {"local domain, other case, trailing dot", make_request({{Attr::recipient, "a@TEST.Local."}}), "pass", ""},
        {"subdomain of a .parent entry", make_request({{Attr::recipient, "a@mx.sub.example.com"}}), "pass", ""},
        {"the .parent itself", make_request({{Attr::recipient, "a@sub.example.com"}}), "refuse:relay",
         "recipient domain sub.example.com is not local"},
        {"subdomain of an exact entry", make_request({{Attr::recipient, "a@x.test.local"}}), "refuse:relay", ""},
        {"unqualified recipient", make_request({{Attr::recipient, "postmaster"}}), "pass", ""},
        {"authenticated, any recipient", make_submission({{Attr::recipient, "x@example.net"}}), "pass", ""},
        {"MAIL: no recipient yet", make_request({{Attr::protocol_state, "MAIL"}, {Attr::recipient, ""}}), "pass", ""},
        {"IPv6 client, non-local", make_request({{Attr::client_address, "2001:db8:9::1"}, {Attr::recipient, "x@example.net"}}),
         "refuse:relay", "recipient domain example.net is not local"},
        {"IPv6 client, local", make_request({{Attr::client_address, "::1"}}), "pass", ""},
        {"control bytes are sanitized", make_request({{Attr::recipient, "x@ev\til.example"}}), "refuse:relay",
         "recipient domain ev\\x09il.example is not local"},
    });
}

TEST(Decide, SenderOwnership)
{
    Config cfg = base_config();
    cfg.sender_ownership.map_file = (testing::test_data_dir() / "maps" / "sender_login_maps").string();
    const auto snap = snapshot_of(cfg);
    const std::string& null_reply = snap->config.sender_ownership.null_sender_reply;
    run_cases(*snap, {
        // Authenticated.
        {"login is the sender", make_submission(), "pass", ""},
        {"login is the sender, other case", make_submission({{Attr::sender, "ALICE@test.LOCAL"}}), "pass", ""},
        {"login is the sender with an extension", make_submission({{Attr::sender, "alice+lists@test.local"}}), "pass", ""},
        {"foreign sender", make_submission({{Attr::sender, "alice@evil.example"}}), "refuse:sender_ownership",
         "sender alice@evil.example not owned by login alice@test.local"},
        {"other local sender", make_submission({{Attr::sender, "carol@test.local"}}), "refuse:sender_ownership", ""},
        {"map lists the login", make_submission({{Attr::sender, "shared@test.local"}}), "pass", ""},
        {"map lists the login for @domain",
         make_submission({{Attr::sender, "anyone@example.org"}, {Attr::sasl_username, "postmaster-login"}}), "pass", ""},
        {"full-address entry decides over @domain",
         make_submission({{Attr::sender, "ceo@example.org"}, {Attr::sasl_username, "postmaster-login"}}),
         "refuse:sender_ownership", "sender ceo@example.org not owned by login postmaster-login"},
        {"bare login owns nothing by itself", make_submission({{Attr::sender, "bob@test.local"}, {Attr::sasl_username, "bob"}}),
         "refuse:sender_ownership", ""},
        {"bare login listed in the map", make_submission({{Attr::sender, "shared@test.local"}, {Attr::sasl_username, "BOB"}}),
         "pass", ""},
        {"any-sender login", make_submission({{Attr::sender, "whoever@example.net"}, {Attr::sasl_username, "Mailer"}}),
         "pass", ""},
        {"null sender, authenticated", make_submission({{Attr::sender, ""}}), "refuse:sender_ownership",
         "null sender used by login alice@test.local"},
        // Unauthenticated.
        {"unauthenticated, foreign sender", make_request(), "pass", ""},
        {"unauthenticated, local sender", make_request({{Attr::sender, "alice@test.local"}}), "refuse:sender_ownership",
         "unauthenticated sender alice@test.local in local domain test.local"},
        {"unauthenticated, sender in a .parent subdomain", make_request({{Attr::sender, "a@x.sub.example.com"}}),
         "refuse:sender_ownership", ""},
        {"unauthenticated, unqualified sender", make_request({{Attr::sender, "root"}}), "refuse:sender_ownership",
         "unauthenticated unqualified sender root"},
        {"unauthenticated, null sender", make_request({{Attr::sender, ""}}), "pass", ""},
        {"unauthenticated IPv6, local sender", make_request({{Attr::client_address, "2001:db8:9::1"}, {Attr::sender, "a@test.local"}}),
         "refuse:sender_ownership", ""},
    });

    // Each refusal answers its own reply.
    EXPECT_EQ(decide(make_submission({{Attr::sender, ""}}), *snap).reply, null_reply);
    EXPECT_EQ(decide(make_request({{Attr::sender, "a@test.local"}}), *snap).reply,
              snap->config.sender_ownership.unauthenticated_reply);
    EXPECT_EQ(decide(make_submission({{Attr::sender, "a@evil.example"}}), *snap).reply,
              snap->config.sender_ownership.reply);
}

TEST(Decide, SenderOwnershipOptions)
{
    Config strict = base_config();
    strict.sender_ownership.login_owns_itself = false;
    Config lenient = base_config();
    lenient.sender_ownership.allow_null_sender_authenticated = true;
    Config exact = base_config();
    exact.address.local_part_case_sensitive = true;
    Config no_delimiter = base_config();
    no_delimiter.address.recipient_delimiter.clear();

    struct OptionCase {
        std::string name;
        Config config;
        Request request;
        std::string want;
    };
    const OptionCase cases[] = {
        {"login_owns_itself off", strict, make_submission(), "refuse:sender_ownership"},
        {"null sender allowed", lenient, make_submission({{Attr::sender, ""}}), "pass"},
        {"case-sensitive local part, same case", exact, make_submission(), "pass"},
        {"case-sensitive local part, other case", exact, make_submission({{Attr::sender, "Alice@test.local"}}),
         "refuse:sender_ownership"},
        {"case-sensitive local part, domain still folded", exact, make_submission({{Attr::sender, "alice@TEST.local"}}),
         "pass"},
        {"no map: the login's own address with an extension", base_config(),
         make_submission({{Attr::sender, "alice+lists@test.local"}}), "pass"},
        {"no map: another extension delimiter", base_config(), make_submission({{Attr::sender, "alice-lists@test.local"}}),
         "refuse:sender_ownership"},
        {"no delimiter: extension is a different address", no_delimiter,
         make_submission({{Attr::sender, "alice+lists@test.local"}}), "refuse:sender_ownership"},
    };
    for (const auto& c : cases) {
        const auto snap = snapshot_of(c.config);
        const auto got = summary(decide(c.request, *snap));
        EXPECT_EQ(got, c.want) << c.name << ": got=" << got << " want=" << c.want;
    }
}

TEST(Decide, ShadowFailuresAreRecordedAndAnswerDunno)
{
    Config cfg = base_config();
    cfg.relay.shadow = true;
    cfg.sender_ownership.shadow = true;
    const auto snap = snapshot_of(cfg);

    // Fails relay and sender_ownership, both in shadow mode.
    const Request r = make_request({{Attr::recipient, "x@example.net"}, {Attr::sender, "a@test.local"}});
    std::vector<CheckResult> trace;
    const Decision d = decide(r, *snap, &trace);
    EXPECT_EQ(summary(d), "pass shadow:relay shadow:sender_ownership");
    EXPECT_EQ(d.reply, action_dunno);
    ASSERT_EQ(d.shadowed.size(), 2u);
    EXPECT_TRUE(d.shadowed[0].shadow);
    EXPECT_EQ(d.shadowed[0].verdict, Verdict::fail);
    EXPECT_EQ(d.shadowed[0].reply, snap->config.relay.reply);
    EXPECT_EQ(d.shadowed[0].reason, "recipient domain example.net is not local");
    EXPECT_EQ(d.shadowed[1].reply, snap->config.sender_ownership.unauthenticated_reply);
    ASSERT_EQ(trace.size(), 6u);
    EXPECT_EQ(trace[4].check, Check::relay);
    EXPECT_EQ(trace[4].verdict, Verdict::fail);
    EXPECT_TRUE(trace[4].shadow);
    EXPECT_TRUE(trace[5].shadow);

    // A shadowed failure before a real one: the real one refuses, the shadowed one is kept.
    Config mixed = base_config();
    mixed.relay.shadow = true;
    const auto mixed_snap = snapshot_of(mixed);
    const Decision m = decide(r, *mixed_snap);
    EXPECT_EQ(summary(m), "refuse:sender_ownership shadow:relay");
    EXPECT_EQ(m.reply, mixed_snap->config.sender_ownership.unauthenticated_reply);
}

TEST(Decide, DisabledChecksAreSkipped)
{
    const Request r = make_request({{Attr::server_port, "587"}, {Attr::recipient, "x@example.net"}});
    struct DisableCase {
        std::string name;
        void (*disable)(Config&);
        std::string want;
    };
    const DisableCase cases[] = {
        {"nothing disabled", [](Config&) {}, "refuse:auth_required"},
        {"auth_required off", [](Config& c) { c.auth_required.enabled = false; }, "refuse:relay"},
        {"auth_required and relay off",
         [](Config& c) {
             c.auth_required.enabled = false;
             c.relay.enabled = false;
         },
         "pass"},
        {"disabled beats shadow",
         [](Config& c) {
             c.auth_required.enabled = false;
             c.auth_required.shadow = true;
             c.relay.enabled = false;
         },
         "pass"},
    };
    for (const auto& c : cases) {
        Config cfg = base_config();
        c.disable(cfg);
        const auto snap = snapshot_of(cfg);
        std::vector<CheckResult> trace;
        const auto got = summary(decide(r, *snap, &trace));
        EXPECT_EQ(got, c.want) << c.name << ": got=" << got << " want=" << c.want;
        for (const auto& t : trace) {
            const bool enabled = t.check == Check::exempt ? cfg.exempt.enabled
                                 : t.check == Check::auth_required ? cfg.auth_required.enabled
                                 : t.check == Check::relay ? cfg.relay.enabled
                                                           : true;
            if (!enabled) {
                EXPECT_EQ(t.verdict, Verdict::skipped) << c.name << " " << check_name(t.check);
                EXPECT_EQ(t.reason, "disabled") << c.name << " " << check_name(t.check);
            }
        }
    }
}

TEST(Decide, FirstFailureWins)
{
    // Fails every check: port 587 without a login... then authenticated variants below.
    struct OrderCase {
        std::string name;
        Request request;
        std::vector<Check> disabled;
        std::string want;
    };
    const Request unauth = make_request({{Attr::server_port, "587"}, {Attr::recipient, "x@example.net"}, {Attr::sender, "a@test.local"}});
    const Request auth = make_submission({{Attr::encryption_protocol, ""}, {Attr::sender, "a@evil.example"},
                                          {Attr::policy_context, "submission"}});
    const OrderCase cases[] = {
        {"unauth: auth_required first", unauth, {}, "refuse:auth_required"},
        {"unauth: then relay", unauth, {Check::auth_required}, "refuse:relay"},
        {"unauth: then sender_ownership", unauth, {Check::auth_required, Check::relay}, "refuse:sender_ownership"},
        {"auth: plaintext_auth first", auth, {}, "refuse:plaintext_auth"},
        {"auth: then sender_ownership", auth, {Check::plaintext_auth}, "refuse:sender_ownership"},
        {"auth: all off", auth, {Check::plaintext_auth, Check::sender_ownership}, "pass"},
    };
    for (const auto& c : cases) {
        Config cfg = base_config();
        for (Check off : c.disabled) {
            if (off == Check::auth_required) cfg.auth_required.enabled = false;
            if (off == Check::plaintext_auth) cfg.plaintext_auth.enabled = false;
            if (off == Check::relay) cfg.relay.enabled = false;
            if (off == Check::sender_ownership) cfg.sender_ownership.enabled = false;
        }
        const auto snap = snapshot_of(cfg);
        std::vector<CheckResult> trace;
        const Decision d = decide(c.request, *snap, &trace);
        EXPECT_EQ(summary(d), c.want) << c.name << ": got=" << summary(d) << " want=" << c.want;
        if (d.outcome != Outcome::refuse) continue;
        // Checks after the deciding one are not evaluated.
        bool after = false;
        for (const auto& t : trace) {
            if (after) {
                EXPECT_EQ(t.verdict, Verdict::skipped) << c.name << " " << check_name(t.check);
                EXPECT_EQ(t.reason, "not reached: refused by " + std::string(check_name(d.decided_by))) << c.name;
            }
            if (t.check == d.decided_by) after = true;
        }
    }
}

TEST(Decide, OnlyEnvelopeStatesAreChecked)
{
    const auto snap = snapshot_of(base_config());
    struct StateCase {
        std::string_view state;
        std::string want;
    };
    const StateCase cases[] = {
        {"CONNECT", "pass"}, {"EHLO", "pass"}, {"HELO", "pass"}, {"VRFY", "pass"}, {"ETRN", "pass"},
        {"BOGUS", "pass"},   {"", "pass"},     {"MAIL", "refuse:auth_required"},
        {"RCPT", "refuse:auth_required"},      {"DATA", "refuse:auth_required"},
        {"END-OF-MESSAGE", "refuse:auth_required"},
    };
    for (const auto& c : cases) {
        // Would be refused by auth_required, relay and sender_ownership at an envelope state.
        const Request r = make_request({{Attr::protocol_state, c.state}, {Attr::server_port, "587"},
                                        {Attr::recipient, "x@example.net"}, {Attr::sender, "a@test.local"}});
        std::vector<CheckResult> trace;
        const auto got = summary(decide(r, *snap, &trace));
        EXPECT_EQ(got, c.want) << "state=" << c.state << " got=" << got << " want=" << c.want;
        if (c.want == "pass") {
            ASSERT_EQ(trace.size(), 6u);
            for (std::size_t i = 1; i < trace.size(); ++i)
                EXPECT_EQ(trace[i].verdict, Verdict::not_applicable) << "state=" << c.state << " " << check_name(trace[i].check);
        }
    }
}

TEST(Decide, TraceListsEveryCheckInOrder)
{
    const auto snap = snapshot_of(base_config());
    std::vector<CheckResult> trace{CheckResult{Check::compromise, Verdict::fail}}; // replaced, not appended to
    const Decision d = decide(make_request({{Attr::recipient, "x@example.net"}}), *snap, &trace);
    EXPECT_EQ(summary(d), "refuse:relay");

    struct Want {
        Check check;
        Verdict verdict;
        std::string reason;
    };
    const Want want[] = {
        {Check::exempt, Verdict::not_applicable, "client 198.51.100.7 not in exempt networks, login - not exempt"},
        {Check::suspended, Verdict::not_applicable, "not authenticated"},
        {Check::auth_required, Verdict::not_applicable, "no login required on server_port 25 with policy_context -"},
        {Check::plaintext_auth, Verdict::not_applicable, "not authenticated"},
        {Check::relay, Verdict::fail, "recipient domain example.net is not local"},
        {Check::sender_ownership, Verdict::skipped, "not reached: refused by relay"},
    };
    ASSERT_EQ(trace.size(), std::size(want));
    for (std::size_t i = 0; i < trace.size(); ++i) {
        EXPECT_EQ(trace[i].check, want[i].check) << "entry " << i;
        EXPECT_EQ(trace[i].verdict, want[i].verdict) << "entry " << i << " " << check_name(trace[i].check);
        EXPECT_EQ(trace[i].reason, want[i].reason) << "entry " << i << " got=" << trace[i].reason << " want=" << want[i].reason;
    }
    EXPECT_EQ(trace[4].reply, snap->config.relay.reply);

    // A pass explains every check too.
    decide(make_submission(), *snap, &trace);
    ASSERT_EQ(trace.size(), 6u);
    EXPECT_EQ(trace[1].reason, "no live store answer");
    EXPECT_EQ(trace[2].reason, "login alice@test.local present");
    EXPECT_EQ(trace[3].reason, "PLAIN login over TLSv1.3");
    EXPECT_EQ(trace[4].reason, "authenticated");
    EXPECT_EQ(trace[5].reason, "sender alice@test.local is login alice@test.local");

    // An exempt client: the rest is not reached.
    decide(make_request({{Attr::client_address, "192.0.2.9"}}), *snap, &trace);
    ASSERT_EQ(trace.size(), 6u);
    EXPECT_EQ(trace[0].verdict, Verdict::pass);
    EXPECT_EQ(trace[0].reason, "client 192.0.2.9 in exempt networks");
    EXPECT_EQ(trace[1].reason, "not reached: exempt");
    EXPECT_EQ(trace[5].reason, "not reached: exempt");
}

// --- The live store's facts: suspensions, owners, local domains. ---

// 2026-11-28 03:00:00 UTC and a day later.
constexpr std::int64_t suspended_since = 1795834800;
constexpr std::int64_t suspended_until = 1795921200;

LiveFacts suspended_by(std::string by, std::int64_t until, std::string reason)
{
    LiveFacts f;
    f.suspension = Suspension{std::move(reason), suspended_since, until, std::move(by)};
    return f;
}

struct LiveCase {
    std::string name;
    Request request;
    std::optional<LiveFacts> live; // nullopt: no store answer
    std::string want;              // summary()
    std::string want_reason;       // the deciding (or shadowed) check's reason; "" = not checked
};

void run_live_cases(const Snapshot& snap, const std::vector<LiveCase>& cases)
{
    for (const auto& c : cases) {
        const LiveFacts* live = c.live ? &*c.live : nullptr;
        const Decision d = decide(c.request, snap, nullptr, live);
        EXPECT_EQ(summary(d), c.want) << c.name << ": got=" << summary(d) << " want=" << c.want << " reason=" << d.reason;
        if (!c.want_reason.empty()) {
            const std::string got = d.outcome == Outcome::refuse ? d.reason
                                    : d.shadowed.empty()         ? std::string("(none)")
                                                                 : d.shadowed.front().reason;
            EXPECT_EQ(got, c.want_reason) << c.name << ": reason got=" << got << " want=" << c.want_reason;
        }
        std::vector<CheckResult> trace;
        const Decision traced = decide(c.request, snap, &trace, live);
        EXPECT_EQ(summary(traced), summary(d)) << c.name << ": decision changed with a trace";
        ASSERT_EQ(trace.size(), 6u) << c.name;
        EXPECT_EQ(trace[1].check, Check::suspended) << c.name << ": suspended comes right after exempt";
    }
}

TEST(Decide, SuspendedRefusesASuspendedLogin)
{
    const auto snap = snapshot_of(base_config());
    const LiveFacts clean;
    run_live_cases(*snap, {
        {"until lifted, by an operator", make_submission(), suspended_by("operator root", 0, "phished, ticket 4711"),
         "refuse:suspended",
         "suspended since 2026-11-28 03:00:00 UTC until lifted by operator root: phished, ticket 4711"},
        {"for a day, by the ladder", make_submission(),
         suspended_by("automatic", suspended_until, "12 distinct client networks (/24, /48) within 1h, threshold 10"),
         "refuse:suspended",
         "suspended since 2026-11-28 03:00:00 UTC until 2026-11-29 03:00:00 UTC by automatic: 12 distinct client "
         "networks (/24, /48) within 1h, threshold 10"},
        {"no reason, nobody", make_submission(), suspended_by("", 0, ""), "refuse:suspended",
         "suspended since 2026-11-28 03:00:00 UTC until lifted"},
        {"reason with control bytes is printable", make_submission(), suspended_by("operator \x1b]0;x", 0, "a\nb\x7f"),
         "refuse:suspended", "suspended since 2026-11-28 03:00:00 UTC until lifted by operator \\x1b]0;x: a\\x0ab\\x7f"},
        {"before plaintext_auth and sender_ownership",
         make_submission({{Attr::encryption_protocol, ""}, {Attr::sender, "x@evil.example"}}),
         suspended_by("operator root", 0, "r"), "refuse:suspended", ""},
        {"at MAIL", make_submission({{Attr::protocol_state, "MAIL"}, {Attr::recipient, ""}}),
         suspended_by("operator root", 0, "r"), "refuse:suspended", ""},
        {"at END-OF-MESSAGE", make_submission({{Attr::protocol_state, "END-OF-MESSAGE"}}),
         suspended_by("operator root", 0, "r"), "refuse:suspended", ""},
        {"not at CONNECT", make_submission({{Attr::protocol_state, "CONNECT"}}), suspended_by("operator root", 0, "r"),
         "pass", ""},
        {"not suspended", make_submission(), clean, "pass", ""},
        {"no store answer", make_submission(), std::nullopt, "pass", ""},
        {"no login", make_request(), suspended_by("operator root", 0, "r"), "pass", ""},
        {"exempt login", make_submission({{Attr::sasl_username, "monitor@test.local"}}),
         suspended_by("operator root", 0, "r"), "exempt", ""},
        {"exempt client", make_submission({{Attr::client_address, "192.0.2.1"}}), suspended_by("operator root", 0, "r"),
         "exempt", ""},
    });
    const LiveFacts s = suspended_by("operator root", 0, "r");
    EXPECT_EQ(decide(make_submission(), *snap, nullptr, &s).reply, snap->config.suspended.reply);
    EXPECT_EQ(snap->config.suspended.reply, default_suspended_reply);

    // The trace says why the check passed or did not apply.
    struct TraceCase {
        std::string name;
        Request request;
        const LiveFacts* live;
        Verdict want;
        std::string want_reason;
    };
    const TraceCase traces[] = {
        {"no store", make_submission(), nullptr, Verdict::not_applicable, "no live store answer"},
        {"no login", make_request(), &s, Verdict::not_applicable, "not authenticated"},
        {"clean", make_submission(), &clean, Verdict::pass, "login alice@test.local not suspended"},
        {"suspended", make_submission(), &s, Verdict::fail,
         "suspended since 2026-11-28 03:00:00 UTC until lifted by operator root: r"},
    };
    for (const auto& t : traces) {
        std::vector<CheckResult> trace;
        decide(t.request, *snap, &trace, t.live);
        ASSERT_EQ(trace.size(), 6u) << t.name;
        EXPECT_EQ(trace[1].verdict, t.want) << t.name;
        EXPECT_EQ(trace[1].reason, t.want_reason) << t.name << " got=" << trace[1].reason << " want=" << t.want_reason;
    }
}

TEST(Decide, SuspendedInShadowModeOrDisabled)
{
    Config shadow = base_config();
    shadow.suspended.shadow = true;
    Config off = base_config();
    off.suspended.enabled = false;
    const LiveFacts s = suspended_by("operator root", 0, "r");
    run_live_cases(*snapshot_of(shadow), {
        {"shadow: recorded, answered DUNNO", make_submission(), s, "pass shadow:suspended",
         "suspended since 2026-11-28 03:00:00 UTC until lifted by operator root: r"},
        {"shadow: a later check still refuses", make_submission({{Attr::sender, "x@evil.example"}}), s,
         "refuse:sender_ownership shadow:suspended", ""},
    });
    run_live_cases(*snapshot_of(off), {
        {"disabled", make_submission(), s, "pass", ""},
    });
    std::vector<CheckResult> trace;
    decide(make_submission(), *snapshot_of(off), &trace, &s);
    ASSERT_EQ(trace.size(), 6u);
    EXPECT_EQ(trace[1].verdict, Verdict::skipped);
    EXPECT_EQ(trace[1].reason, "disabled");
}

TEST(Decide, RelayAcceptsADomainTheLiveStoreLists)
{
    const auto snap = snapshot_of(base_config());
    LiveFacts local;
    local.recipient_domain_local = true;
    const LiveFacts not_local;
    const Request outside = make_request({{Attr::recipient, "x@example.net"}});
    run_live_cases(*snap, {
        {"listed by the store", outside, local, "pass", ""},
        {"not listed by the store", outside, not_local, "refuse:relay", "recipient domain example.net is not local"},
        {"no store answer", outside, std::nullopt, "refuse:relay", "recipient domain example.net is not local"},
        {"local by config anyway", make_request(), not_local, "pass", ""},
        // Owners do not matter to an unauthenticated client: a local sender domain known only
        // from the store is not guarded by sender_ownership.
        {"store domain as the unauthenticated sender's", make_request({{Attr::sender, "ceo@example.net"}}), local, "pass", ""},
    });
    std::vector<CheckResult> trace;
    decide(outside, *snap, &trace, &local);
    ASSERT_EQ(trace.size(), 6u);
    EXPECT_EQ(trace[4].check, Check::relay);
    EXPECT_EQ(trace[4].reason, "recipient domain example.net is local (live store)");
}

TEST(Decide, SenderOwnershipAcceptsAnOwnerTheLiveStoreLists)
{
    const auto snap = snapshot_of(base_config());
    LiveFacts owned;
    owned.sender_owned = true;
    const LiveFacts not_owned;
    const Request foreign = make_submission({{Attr::sender, "sales@test.local"}});
    run_live_cases(*snap, {
        {"owner listed by the store", foreign, owned, "pass", ""},
        {"not listed by the store", foreign, not_owned, "refuse:sender_ownership",
         "sender sales@test.local not owned by login alice@test.local"},
        {"no store answer", foreign, std::nullopt, "refuse:sender_ownership", ""},
        {"the null sender is not an owner question", make_submission({{Attr::sender, ""}}), owned, "refuse:sender_ownership",
         "null sender used by login alice@test.local"},
        {"unauthenticated local sender stays refused", make_request({{Attr::sender, "sales@test.local"}}), owned,
         "refuse:sender_ownership", "unauthenticated sender sales@test.local in local domain test.local"},
    });
    std::vector<CheckResult> trace;
    decide(foreign, *snap, &trace, &owned);
    ASSERT_EQ(trace.size(), 6u);
    EXPECT_EQ(trace[5].reason, "sender sales@test.local owned by login alice@test.local (live store)");
}

TEST(Decide, ReplyPointsIntoTheSnapshot)
{
    Config cfg = base_config();
    cfg.relay.reply = "554 5.7.1 <x> you shall not relay";
    const auto snap = snapshot_of(cfg);
    const Decision d = decide(make_request({{Attr::recipient, "x@example.net"}}), *snap);
    EXPECT_EQ(d.reply, "554 5.7.1 <x> you shall not relay");
    EXPECT_EQ(d.reply.data(), snap->config.relay.reply.data()) << "reply must be a view of the snapshot's string";
}

TEST(Decide, PassAllocatesNothing)
{
    Config cfg = base_config();
    cfg.sender_ownership.map_file = (testing::test_data_dir() / "maps" / "sender_login_maps").string();
    const auto snap = snapshot_of(cfg);
    // Long enough that std::string's small-string buffer would not hold the domains.
    const std::string local_rcpt = "someone.with.a.long.name@a.subdomain.sub.example.com";
    const Request requests[] = {
        make_request({{Attr::recipient, local_rcpt}}),                                 // relay via .parent
        make_request({{Attr::client_address, "2001:db8:1:2::3"}}),                     // exempt, IPv6
        make_submission(),                                                            // login owns itself
        make_submission({{Attr::sender, "alice+some-long-extension@test.local"}}),    // ... with an extension
        make_submission({{Attr::sender, "shared@test.local"}, {Attr::sasl_username, "carol"}}), // map
    };
    LiveFacts clean; // a store answer that changes nothing
    clean.counts = {3, 2, 1};
    for (const auto& r : requests) {
        const std::size_t before = g_allocations.load();
        const Decision d = decide(r, *snap);
        const Decision with_live = decide(r, *snap, nullptr, &clean);
        const std::size_t used = g_allocations.load() - before;
        EXPECT_NE(d.outcome, Outcome::refuse) << summary(d) << " " << d.reason;
        EXPECT_EQ(summary(with_live), summary(d));
        EXPECT_EQ(used, 0u) << "decide() allocated " << used << " times for a " << summary(d) << " of sender "
                            << r[Attr::sender];
    }
    // A refusal may allocate (its reason), and the counter does see allocations.
    const std::size_t before = g_allocations.load();
    const Decision refused = decide(make_request({{Attr::recipient, "x@a.long.enough.example.net"}}), *snap);
    EXPECT_EQ(refused.outcome, Outcome::refuse);
    EXPECT_GT(g_allocations.load() - before, 0u);
}

// --- The captured samples. ---

// read_sample - the requests of one .policy file (a blank line ends each; split at the first '=').
std::vector<Request> read_sample(const std::filesystem::path& file)
{
    std::vector<Request> out;
    const std::string text = testing::read_file(file);
    Request current;
    bool any = false;
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string_view line(text.data() + pos, nl - pos);
        pos = nl + 1;
        if (line.empty()) {
            if (any) out.push_back(current);
            current.clear();
            any = false;
            continue;
        }
        const auto eq = line.find('=');
        if (eq == std::string_view::npos) {
            ADD_FAILURE() << file << ": line without '=': " << line;
            continue;
        }
        if (auto attr = attr_from_name(line.substr(0, eq))) current.set(*attr, line.substr(eq + 1));
        any = true;
    }
    if (any) out.push_back(current);
    return out;
}

// The samples' setup: test.local is the local domain, Postfix's submission services listen on
// 10587 (and 10589 with policy_context=submission), logins are addresses in test.local.
// plaintext_auth runs in shadow mode so that non-TLS sessions show it without being refused.
Config sample_config()
{
    Config c;
    c.domains.local = {"test.local"};
    c.auth_required.ports = {10587};
    c.auth_required.policy_contexts = {"submission"};
    c.plaintext_auth.mechanisms = {"PLAIN", "LOGIN"};
    c.plaintext_auth.shadow = true;
    return c;
}

struct SampleCase {
    std::string file;             // under samples/
    std::vector<std::string> want; // summary() per request, in order
};

void run_samples(const Snapshot& snap, const std::vector<SampleCase>& cases)
{
    for (const auto& c : cases) {
        const auto requests = read_sample(testing::samples_dir() / c.file);
        ASSERT_EQ(requests.size(), c.want.size()) << c.file << ": requests got=" << requests.size()
                                                 << " want=" << c.want.size();
        for (std::size_t i = 0; i < requests.size(); ++i) {
            const Decision d = decide(requests[i], snap);
            EXPECT_EQ(summary(d), c.want[i]) << c.file << " request " << i + 1 << " ("
                                             << requests[i][Attr::protocol_state] << "): got=" << summary(d)
                                             << " want=" << c.want[i] << " reason=" << d.reason;
        }
    }
}

TEST(DecideSamples, EverySampleHasAnExpectation)
{
    // Keeps the table below complete when samples are added.
    std::vector<std::string> files;
    for (const auto& f : testing::sample_files())
        files.push_back(std::filesystem::relative(f, testing::samples_dir()).string());
    EXPECT_EQ(files.size(), 21u) << "a sample was added or removed: update DecideSamples";
}

TEST(DecideSamples, PostfixSamplesWithTheSampleConfig)
{
    const auto snap = snapshot_of(sample_config());
    const std::string auth_shadow = "pass shadow:plaintext_auth";
    run_samples(*snap, {
        {"postfix-3.7/auth_cram_md5.policy", {"pass", "pass"}},
        {"postfix-3.7/auth_login.policy", {auth_shadow, auth_shadow}},
        {"postfix-3.7/auth_plain.policy", {auth_shadow, auth_shadow}},
        {"postfix-3.7/auth_sender_not_owned.policy", {"refuse:sender_ownership shadow:plaintext_auth"}},
        {"postfix-3.7/end_of_message.policy", {"pass", "pass"}},
        {"postfix-3.7/end_of_message_multi.policy", {"pass", "pass", "pass"}},
        {"postfix-3.7/ipv6_client.policy", {"pass", "pass"}},
        {"postfix-3.7/multi_recipient_authenticated.policy", {auth_shadow, auth_shadow, auth_shadow, auth_shadow}},
        {"postfix-3.7/multi_recipient_unauthenticated.policy", {"pass", "pass", "pass", "pass", "pass", "pass"}},
        {"postfix-3.7/null_sender_authenticated.policy",
         {"refuse:sender_ownership shadow:plaintext_auth", "refuse:sender_ownership shadow:plaintext_auth"}},
        {"postfix-3.7/null_sender_unauthenticated.policy", {"pass", "pass"}},
        {"postfix-3.7/plaintext_auth_plain.policy", {auth_shadow, auth_shadow}},
        {"postfix-3.7/policy_context_submission.policy", {auth_shadow, auth_shadow}},
        {"postfix-3.7/rcpt_unauthenticated.policy", {"pass"}},
        {"postfix-3.7/rejected_middle_recipient.policy", {"pass", "pass", "pass", "pass"}},
        {"postfix-3.7/rejected_middle_recipient_bdat.policy", {"pass", "pass", "pass", "pass"}},
        {"postfix-3.7/size_at_rcpt.policy", {"pass", "pass"}},
        {"postfix-3.7/tls_auth_plain.policy", {"pass", "pass"}},
        {"postfix-3.7/tls_client_cert.policy", {"pass", "pass"}},
        {"postfix-3.7/tls_client_cert_untrusted.policy", {"pass", "pass"}},
    });

    const auto not_owned = read_sample(testing::samples_dir() / "postfix-3.7/auth_sender_not_owned.policy");
    ASSERT_EQ(not_owned.size(), 1u);
    const Decision d = decide(not_owned[0], *snap);
    EXPECT_EQ(d.reason, "sender alice@evil.example not owned by login alice@test.local");
    EXPECT_EQ(d.reply, snap->config.sender_ownership.reply);
    const Decision null_sender =
        decide(read_sample(testing::samples_dir() / "postfix-3.7/null_sender_authenticated.policy").at(0), *snap);
    EXPECT_EQ(null_sender.reply, snap->config.sender_ownership.null_sender_reply);
}

TEST(DecideSamples, EximSampleWithTheSampleConfig)
{
    const auto snap = snapshot_of(sample_config());
    const std::string p = "pass", ps = "pass shadow:plaintext_auth";
    run_samples(*snap, {
        {"exim-4.96/readsocket_rcpt_and_data.policy",
         {p, p, p, p, p, p, p, p,                            // unauthenticated RCPTs to test.local, DATA-stage EOM
          p, p,                                              // second transaction
          ps, ps,                                            // PLAIN without TLS
          "refuse:sender_ownership shadow:plaintext_auth",   // alice@test.local as alice@evil.example
          ps,                                                // port 10125: not a submission port here
          p, p, p, p,                                        // unauthenticated
          ps, ps, ps,                                        // PLAIN
          ps, ps, ps,                                        // LOGIN
          p, p, p,                                           // CRAM-MD5 is not a plaintext mechanism
          ps, ps, ps, ps, ps, ps, p, p, p}},
    });
}

TEST(DecideSamples, RelayRefusesWhenTheRecipientDomainIsNotLocal)
{
    Config cfg = sample_config();
    cfg.domains.local = {"example.com"}; // test.local is someone else's domain now
    const auto snap = snapshot_of(cfg);
    const auto requests = read_sample(testing::samples_dir() / "postfix-3.7/rcpt_unauthenticated.policy");
    ASSERT_EQ(requests.size(), 1u);
    const Decision d = decide(requests[0], *snap);
    EXPECT_EQ(summary(d), "refuse:relay");
    EXPECT_EQ(d.reason, "recipient domain test.local is not local");
    EXPECT_EQ(d.reply, snap->config.relay.reply);
}

TEST(DecideSamples, PlaintextAuthEnforced)
{
    Config cfg = sample_config();
    cfg.plaintext_auth.shadow = false;
    const auto snap = snapshot_of(cfg);
    run_samples(*snap, {
        {"postfix-3.7/plaintext_auth_plain.policy", {"refuse:plaintext_auth", "refuse:plaintext_auth"}},
        {"postfix-3.7/tls_auth_plain.policy", {"pass", "pass"}},
        {"postfix-3.7/auth_cram_md5.policy", {"pass", "pass"}},
    });
    const auto plain = read_sample(testing::samples_dir() / "postfix-3.7/plaintext_auth_plain.policy");
    const Decision d = decide(plain.at(0), *snap);
    EXPECT_EQ(d.reason, "PLAIN login without TLS");
    EXPECT_EQ(d.reply, snap->config.plaintext_auth.reply);
}

TEST(DecideSamples, AuthRequiredAndExemptOnSamples)
{
    Config cfg = sample_config();
    cfg.auth_required.ports = {10025};
    cfg.auth_required.policy_contexts = {"exim"};
    const auto snap = snapshot_of(cfg);
    run_samples(*snap, {
        {"postfix-3.7/rcpt_unauthenticated.policy", {"refuse:auth_required"}},
        {"postfix-3.7/ipv6_client.policy", {"refuse:auth_required", "refuse:auth_required"}},
    });
    const auto exim = read_sample(testing::samples_dir() / "exim-4.96/readsocket_rcpt_and_data.policy");
    const Decision d = decide(exim.at(0), *snap);
    EXPECT_EQ(summary(d), "refuse:auth_required");
    EXPECT_EQ(d.reason, "login required for policy_context exim");

    // The IPv6 loopback client, exempted by network.
    cfg.exempt.networks.add(*parse_cidr("::1/128"));
    const auto exempt_snap = snapshot_of(cfg);
    run_samples(*exempt_snap, {
        {"postfix-3.7/ipv6_client.policy", {"exempt", "exempt"}},
        {"postfix-3.7/rcpt_unauthenticated.policy", {"refuse:auth_required"}}, // 127.0.0.1 is not ::1
    });
}

// --- format_decision_log ---

TEST(FormatDecisionLog, PostfixLikeLine)
{
    const Request r = make_request({{Attr::client_address, "192.0.2.7"},
                                    {Attr::sender, "a@example.org"},
                                    {Attr::recipient, "x@example.net"}});
    EXPECT_EQ(format_decision_log(r, Check::relay, "554 5.7.1 Relay access denied", false,
                                  "recipient domain example.net is not local"),
              "NOQUEUE: reject: check=relay client=192.0.2.7 login=- sender=<a@example.org> recipient=<x@example.net> "
              "instance=1f2.3 action=\"554 5.7.1 Relay access denied\": recipient domain example.net is not local");
}

TEST(FormatDecisionLog, ShadowQueueIdLoginAndNullSender)
{
    const Request r = make_submission({{Attr::queue_id, "F0CD1A72034"}, {Attr::sender, ""}, {Attr::instance, ""}});
    EXPECT_EQ(format_decision_log(r, Check::sender_ownership, "553 5.7.1 No bounces", true, ""),
              "F0CD1A72034: shadow reject: check=sender_ownership client=198.51.100.7 login=alice@test.local "
              "sender=<> recipient=<bob@example.net> instance=- action=\"553 5.7.1 No bounces\"");
}

TEST(FormatDecisionLog, SanitizesAndCapsValues)
{
    const std::string long_rcpt = std::string(300, 'r') + "@example.net";
    const Request r = make_request({{Attr::sender, "a\x01\"b\\@example.org"},
                                    {Attr::recipient, long_rcpt},
                                    {Attr::sasl_username, "bob\x7f"}});
    const std::string line = format_decision_log(r, Check::relay, "554 5.7.1 \"no\"", false, "why\x1b[31m");
    EXPECT_EQ(line.find('\x01'), std::string::npos);
    EXPECT_EQ(line.find('\x1b'), std::string::npos);
    EXPECT_EQ(line.find('\x7f'), std::string::npos);
    EXPECT_NE(line.find("sender=<a\\x01\\x22b\\x5c@example.org>"), std::string::npos) << line;
    EXPECT_NE(line.find("login=bob\\x7f "), std::string::npos) << line;
    EXPECT_NE(line.find("action=\"554 5.7.1 \\x22no\\x22\""), std::string::npos) << line;
    EXPECT_NE(line.find("recipient=<" + std::string(256, 'r') + "...>"), std::string::npos) << "recipient must be capped";
    EXPECT_TRUE(line.ends_with(": why\\x1b[31m")) << line;
}

TEST(FormatDecisionLog, ReasonFromDecideIsNotEscapedTwice)
{
    const auto snap = snapshot_of(base_config());
    const Request r = make_request({{Attr::recipient, "x@ev\"il.example"}});
    const Decision d = decide(r, *snap);
    ASSERT_EQ(d.reason, "recipient domain ev\\x22il.example is not local");
    const std::string line = format_decision_log(r, d.decided_by, d.reply, false, d.reason);
    EXPECT_TRUE(line.ends_with(": recipient domain ev\\x22il.example is not local")) << line;
}

TEST(CheckName, NamesEveryCheck)
{
    const std::pair<Check, std::string_view> cases[] = {
        {Check::exempt, "exempt"},
        {Check::suspended, "suspended"},
        {Check::auth_required, "auth_required"},
        {Check::plaintext_auth, "plaintext_auth"},
        {Check::relay, "relay"},
        {Check::sender_ownership, "sender_ownership"},
        {Check::rate_limits, "rate_limits"},
        {Check::compromise, "compromise"},
    };
    for (const auto& [check, want] : cases) EXPECT_EQ(check_name(check), want);
}

// --- Snapshots ---

TEST(BuildSnapshot, MergesConfigDomainsWithTheDomainFile)
{
    Config cfg;
    cfg.domains.local = {"config.example"};
    cfg.domains.file = (testing::test_data_dir() / "maps" / "local_domains").string();
    cfg.sender_ownership.map_file = (testing::test_data_dir() / "maps" / "sender_login_maps").string();
    auto snap = build_snapshot(cfg);
    ASSERT_TRUE(snap.has_value()) << snap.error().message;
    EXPECT_TRUE((*snap)->local_domains.contains("config.example"));
    EXPECT_TRUE((*snap)->local_domains.contains("test.local"));
    EXPECT_TRUE((*snap)->local_domains.contains("x.sub.example.net"));
    EXPECT_EQ((*snap)->owners.size(), 6u);
    EXPECT_TRUE((*snap)->owners.owners_match("shared@test.local", "carol", cfg.address));
}

TEST(BuildSnapshot, MapFileErrorsNameTheMapFile)
{
    struct ErrCase {
        std::string name;
        void (*set)(Config&);
        std::string want_file;
        unsigned want_line;
    };
    static const std::string maps = (testing::test_data_dir() / "maps").string();
    const ErrCase cases[] = {
        {"bad domains file", [](Config& c) { c.domains.file = maps + "/domains_with_at"; }, maps + "/domains_with_at", 3},
        {"bad map file", [](Config& c) { c.sender_ownership.map_file = maps + "/sender_login_bare_key"; },
         maps + "/sender_login_bare_key", 2},
        {"missing map file", [](Config& c) { c.sender_ownership.map_file = maps + "/missing"; }, maps + "/missing", 0},
    };
    for (const auto& c : cases) {
        Config cfg;
        c.set(cfg);
        auto snap = build_snapshot(cfg);
        ASSERT_FALSE(snap.has_value()) << c.name << ": got=a snapshot want=error";
        EXPECT_EQ(snap.error().file, c.want_file) << c.name;
        EXPECT_EQ(snap.error().line, c.want_line) << c.name;
    }
}

TEST(LoadSnapshot, ReadsConfigAndItsFiles)
{
    testing::TempDir dir;
    const std::string maps = (testing::test_data_dir() / "maps").string();
    testing::write_file(dir / "relayguard.toml",
                        "[server]\nlisten = [\"inet:127.0.0.1:10033\"]\n"
                        "[domains]\nlocal = [\"config.example\"]\nfile = \"" + maps + "/local_domains\"\n"
                        "[checks.sender_ownership]\nmap_file = \"" + maps + "/sender_login_maps\"\n");
    auto snap = load_snapshot((dir / "relayguard.toml").string());
    ASSERT_TRUE(snap.has_value()) << snap.error().to_string();
    EXPECT_TRUE((*snap)->local_domains.contains("config.example"));
    EXPECT_TRUE((*snap)->local_domains.contains("relay.example.org"));
    EXPECT_EQ((*snap)->owners.size(), 6u);
    // The snapshot decides as configured.
    const Decision d = decide(make_request({{Attr::recipient, "x@elsewhere.example"}}), **snap);
    EXPECT_EQ(summary(d), "refuse:relay");
}

TEST(LoadSnapshot, PropagatesErrors)
{
    testing::TempDir dir;
    const std::string maps = (testing::test_data_dir() / "maps").string();
    testing::write_file(dir / "bad_map.toml", "[server]\nlisten = [\"inet:127.0.0.1:10033\"]\n"
                                              "[checks.sender_ownership]\nmap_file = \"" +
                                                  maps + "/sender_login_no_login\"\n");
    auto bad_map = load_snapshot((dir / "bad_map.toml").string());
    ASSERT_FALSE(bad_map.has_value());
    EXPECT_EQ(bad_map.error().to_string(),
              maps + "/sender_login_no_login:3: key \"nobody@test.local\" has no login");

    auto missing = load_snapshot((dir / "missing.toml").string());
    ASSERT_FALSE(missing.has_value());
    EXPECT_EQ(missing.error().file, (dir / "missing.toml").string());
}

} // namespace
} // namespace relayguard
