// SPDX-License-Identifier: MIT
// check_command.cpp - relayguardctl check: what the daemon would answer, without side effects.
//
// The same steps as a daemon session (server/session.cpp answer_one): plan_live() and one live
// store query, decide() with a trace and those facts, then plan_rate_limits() and one store
// call, judge_rate_limits(), and the compromise ladder's rung; the one difference is consume =
// false, under which the live query only reads (no PFADD) and the rate script computes
// everything and writes nothing (no TAT, no refusal count, no instance marker). SECURITY: the input is parsed by the
// daemon's bounded parser with the config's limits; a request it refuses is reported, as the
// daemon would close the connection.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include <fmt/core.h>

#include <relayguard/action.hpp>
#include <relayguard/live_store.hpp>
#include <relayguard/rate_stage.hpp>
#include <relayguard/redis_store.hpp>
#include <relayguard/request_parser.hpp>
#include <relayguard/strings.hpp>

#include "ctl/support.hpp"

namespace relayguard::ctl {
namespace {

namespace asio = boost::asio;
using Verdict = CheckResult::Verdict;

// Most requests checked from one input: a captured conversation has a handful.
constexpr std::size_t max_check_requests = 1000;
// Raw input quoted when the parser refuses it.
constexpr std::size_t error_sample_bytes = 64;

std::string_view verdict_name(Verdict v) noexcept
{
    switch (v) {
    case Verdict::pass: return "pass";
    case Verdict::fail: return "fail";
    case Verdict::skipped: return "skipped";
    case Verdict::not_applicable: return "not_applicable";
    }
    return "unknown";
}

// A row of the printed pipeline: decide()'s trace plus the rate_limits stage.
struct Row {
    std::string check;
    Verdict verdict;
    bool shadow = false;
    std::string reply;
    std::string reason;
};

// parse_requests - every complete request of `input`. A last request without its closing
// empty line (a hand-written file) is ended as if it had one. nullopt after a reported error.
std::optional<std::vector<Request>> parse_requests(Session& s, const Config& config, std::string_view input)
{
    RequestParser parser(config.protocol);
    parser.feed(input);
    std::vector<Request> out;
    Request request;
    for (int endings = 0;;) {
        const auto status = parser.next(request);
        if (status == RequestParser::Status::request) {
            out.push_back(request);
            if (out.size() > max_check_requests) {
                s.out.error(fmt::format("more than {} requests in the input", max_check_requests));
                return std::nullopt;
            }
            continue;
        }
        if (status == RequestParser::Status::error) {
            s.out.error(fmt::format("request {}: {} (sample \"{}\"); the daemon would close the connection "
                                    "without a reply",
                                    out.size() + 1, parser.error().message(),
                                    sanitize(parser.sample(error_sample_bytes), error_sample_bytes)));
            return std::nullopt;
        }
        // need_more: at the end of the input, end a last line and then the request (two tries).
        if (parser.idle() || endings == 2) break;
        parser.feed("\n");
        ++endings;
    }
    if (!parser.idle()) {
        s.out.error(fmt::format("request {}: incomplete", out.size() + 1));
        return std::nullopt;
    }
    if (out.empty()) {
        s.out.error("no policy request in the input");
        return std::nullopt;
    }
    return out;
}

std::string value_or_dash(const std::string& v) { return v.empty() ? std::string("-") : show(v); }

} // namespace

std::optional<std::string> read_check_input(const std::string& path, std::string* error)
{
    std::FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
    if (!f) {
        *error = fmt::format("cannot open {}: {}", path, std::strerror(errno));
        return std::nullopt;
    }
    std::string text;
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        text.append(buf, n);
        if (text.size() > max_check_input_bytes) {
            *error = fmt::format("{}: more than {} bytes", path == "-" ? "standard input" : path, max_check_input_bytes);
            if (f != stdin) std::fclose(f);
            return std::nullopt;
        }
    }
    const bool failed = std::ferror(f);
    if (f != stdin) std::fclose(f);
    if (failed) {
        *error = fmt::format("cannot read {}", path == "-" ? "standard input" : path);
        return std::nullopt;
    }
    return text;
}

asio::awaitable<int> check(Session& s, const Snapshot& snapshot, std::string_view input)
{
    const Config& config = snapshot.config;
    auto requests = parse_requests(s, config, input);
    if (!requests) co_return exit_failure;

    // The daemon's counters in an embedded store live in its memory: a fresh store shows each
    // limit as the daemon sees a key value it has not counted yet.
    std::unique_ptr<CounterStore> store;
    if (s.client) {
        store = std::make_unique<RedisStore>(*s.client, config.store.key_prefix, config.store.instance_ttl);
    } else {
        store = std::make_unique<EmbeddedStore>();
        s.out.note("store.type is \"embedded\": the daemon's counters live in its own memory; quotas are shown as "
                   "for a key value with nothing counted yet");
    }

    Json doc = Json::object();
    doc.set("store", s.client ? "redis" : "embedded");
    Json results = Json::array();
    std::string text;
    for (std::size_t n = 0; n < requests->size(); ++n) {
        const Request& request = (*requests)[n];
        // What the daemon would ask the live store, read only. The embedded live store is the
        // daemon's memory: nothing to ask here.
        std::optional<LiveFacts> facts;
        const std::optional<LiveQuery> query = plan_live(request, snapshot, /*consume=*/false);
        if (query && s.client) {
            RedisLiveStore live(*s.client, config.store.key_prefix);
            auto answer = co_await live.query(*query);
            if (!answer) {
                s.out.error(fmt::format("request {}: live store redis {}: {}", n + 1, config.store.redis.address,
                                        answer.error().message()));
                co_return exit_failure;
            }
            facts = std::move(*answer);
        }
        std::vector<CheckResult> trace;
        const Decision decision = decide(request, snapshot, &trace, facts ? &*facts : nullptr);
        std::vector<Row> rows;
        for (const auto& t : trace)
            rows.push_back({std::string(check_name(t.check)), t.verdict, t.shadow, std::string(t.reply), t.reason});

        std::string_view reply = decision.reply;
        std::string rate_reply;
        std::optional<Check> decided_by;
        if (decision.outcome == Decision::Outcome::refuse) decided_by = decision.decided_by;

        std::optional<RatePlan> plan = plan_rate_limits(request, snapshot, decision, /*consume=*/false);
        StoreResult result;
        if (decision.outcome == Decision::Outcome::refuse) {
            rows.push_back({"rate_limits", Verdict::skipped, false, {},
                            fmt::format("not reached: refused by {}", check_name(decision.decided_by))});
        } else if (!plan) {
            if (!config.rate_limits.enabled)
                rows.push_back({"rate_limits", Verdict::skipped, false, {}, "disabled"});
            else
                rows.push_back({"rate_limits", Verdict::not_applicable, false, {}, "no limit applies to this request"});
        } else {
            auto answer = co_await store->apply(plan->request);
            if (!answer) {
                s.out.error(fmt::format("request {}: rate-limit store redis {}: {}", n + 1, config.store.redis.address,
                                        answer.error().message()));
                co_return exit_failure;
            }
            result = std::move(*answer);
            const RateVerdict verdict = judge_rate_limits(*plan, result);
            for (const auto& sh : verdict.shadowed)
                rows.push_back({"rate_limits", Verdict::fail, true, sh.reply, sh.reason});
            if (verdict.refuse) {
                rows.push_back({"rate_limits", Verdict::fail, false, verdict.reply, verdict.reason});
                rate_reply = verdict.reply;
                reply = rate_reply;
                decided_by = Check::rate_limits;
            } else {
                rows.push_back({"rate_limits", Verdict::pass, false, {},
                                fmt::format("{} limit{} with room", plan->request.ops.size(),
                                            plan->request.ops.size() == 1 ? "" : "s")});
            }
        }

        // Human text.
        text += fmt::format("request {}: {} client={} login={} sender=<{}> recipient=<{}> instance={}\n", n + 1,
                            value_or_dash(request[Attr::protocol_state]), value_or_dash(request[Attr::client_address]),
                            value_or_dash(request[Attr::sasl_username]), show(request[Attr::sender]),
                            show(request[Attr::recipient]), value_or_dash(request[Attr::instance]));
        text += "  checks:\n";
        Json checks = Json::array();
        for (const auto& r : rows) {
            std::string verdict(verdict_name(r.verdict));
            if (r.shadow) verdict += " (shadow)";
            text += fmt::format("    {:<17} {:<16} {}{}\n", r.check, verdict, r.reason,
                                r.reply.empty() ? std::string() : fmt::format(" -> {}", r.reply));
            Json c = Json::object();
            c.set("check", r.check);
            c.set("verdict", verdict_name(r.verdict));
            c.set("shadow", r.shadow);
            c.set("reason", r.reason);
            c.set("reply", r.reply.empty() ? Json() : Json(r.reply));
            checks.push(std::move(c));
        }

        Json limits = Json::array();
        if (plan) {
            // The store reports what an allowed request would leave, and what is left now otherwise.
            text += "  limits (remaining after this request, if it had been counted):\n";
            for (std::size_t i = 0; i < plan->request.ops.size(); ++i) {
                const CounterOp& op = plan->request.ops[i];
                const LimitConfig& limit = *plan->limits[i];
                const OpOutcome& outcome = result.ops[i];
                std::string state = outcome.allowed                ? std::string("room")
                                    : outcome.retry_after_us == 0 ? std::string("blocked (rate 0)")
                                                                  : fmt::format("full, retry in {}",
                                                                                format_duration_us(outcome.retry_after_us));
                if (outcome.already_counted) state += ", message already counted";
                if (op.shadow) state += ", shadow";
                text += fmt::format("    {} ({}, {}, this request {}, {}, {}): {}\n", limit.name,
                                    describe_key(op.key, op.value), limit_unit_name(limit.unit), op.cost,
                                    format_rate_spec(outcome.effective), source_text(outcome.source, op.key, op.parent),
                                    state);
                if (outcome.effective.kind == RateSpec::Kind::unlimited) text += "      unlimited: not counted\n";
                for (const auto& w : outcome.windows)
                    text += fmt::format("      {:<14} remaining {:<8} full in {}\n", rate_text(w.rate), w.remaining,
                                        format_duration_us(w.full_in_us));
                Json l = Json::object();
                l.set("limit", limit.name);
                l.set("key", limit_key_name(op.key));
                l.set("value", op.value);
                l.set("unit", limit_unit_name(limit.unit));
                l.set("cost", op.cost);
                l.set("shadow", op.shadow);
                l.set("allowed", outcome.allowed);
                l.set("already_counted", outcome.already_counted);
                l.set("source", source_name(outcome.source));
                l.set("effective", format_rate_spec(outcome.effective));
                l.set("retry_after_ms", (outcome.retry_after_us + 999) / 1000);
                l.set("windows", windows_json(outcome));
                limits.push(std::move(l));
            }
        }
        // The live store's facts and the compromise ladder (the login's counts as of now; the
        // request itself is not added).
        Json live = Json();
        if (query) {
            live = Json::object();
            if (!facts) {
                text += "  live store: embedded (the daemon's memory): not consulted\n";
            } else {
                live.set("login", query->login);
                if (query->suspension) {
                    const auto& sus = facts->suspension;
                    text += fmt::format("  suspended: {}\n",
                                        sus ? fmt::format("yes, by {}: {}", show(sus->by), show(sus->reason)) : "no");
                    live.set("suspended", sus.has_value());
                }
                if (!query->owner_keys.empty()) {
                    text += fmt::format("  sender owners (relayguardctl owners): {}\n",
                                        facts->sender_owned ? "login listed" : "login not listed");
                    live.set("sender_owned", facts->sender_owned);
                }
                if (!query->domain_candidates.empty()) {
                    text += fmt::format("  local domains (relayguardctl domains): recipient domain {}\n",
                                        facts->recipient_domain_local ? "listed" : "not listed");
                    live.set("recipient_domain_local", facts->recipient_domain_local);
                }
                if (!query->track.empty()) {
                    const LadderVerdict ladder = judge_compromise(facts->counts, config.compromise);
                    Json counts = Json::object();
                    std::string counts_text;
                    for (const auto& t : query->track) {
                        const auto v = facts->counts[static_cast<std::size_t>(t.signal)];
                        counts.set(std::string(signal_name(t.signal)), v);
                        counts_text += fmt::format("{}{} {}", counts_text.empty() ? "" : ", ", signal_name(t.signal), v);
                    }
                    text += fmt::format("  compromise (within {}s): {}; rung {}{}{}\n", config.compromise.window.count(),
                                        counts_text, rung_name(ladder.rung), ladder.shadow ? " (shadow)" : "",
                                        ladder.reason.empty() ? "" : ": " + ladder.reason);
                    Json c = Json::object();
                    c.set("counts", std::move(counts));
                    c.set("rung", rung_name(ladder.rung));
                    c.set("shadow", ladder.shadow);
                    c.set("enforced", rung_name(ladder.enforced));
                    c.set("reason", ladder.reason);
                    live.set("compromise", std::move(c));
                }
            }
        }
        text += fmt::format("  reply: action={}\n", reply);
        if (n + 1 < requests->size()) text += "\n";

        Json j = Json::object();
        j.set("protocol_state", request[Attr::protocol_state]);
        j.set("client_address", request[Attr::client_address]);
        j.set("sasl_username", request[Attr::sasl_username]);
        j.set("sender", request[Attr::sender]);
        j.set("recipient", request[Attr::recipient]);
        j.set("instance", request[Attr::instance]);
        j.set("checks", std::move(checks));
        j.set("limits", std::move(limits));
        j.set("live", std::move(live));
        j.set("decided_by", decided_by ? Json(check_name(*decided_by)) : Json());
        j.set("reply", reply);
        results.push(std::move(j));
    }
    s.out.text(text);
    doc.set("requests", std::move(results));
    s.out.emit(doc);
    co_return exit_ok;
}

} // namespace relayguard::ctl
