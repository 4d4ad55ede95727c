// SPDX-License-Identifier: MIT
// policy.cpp - the check pipeline (DESIGN.md section 2): decide(), plan_live() (what the live
// store is asked before it), and the decision log line.
//
// Pure functions of (request, snapshot): no I/O, no state; thread-safe. decide() runs for every
// recipient, so a pass allocates nothing: reasons are built only for a failure, or for every
// check when the caller asks for a trace.
// SECURITY: request values are untrusted; they are only compared, and appear in reasons and log
// lines sanitized (non-printable bytes escaped) and capped.
#include <relayguard/policy.hpp>

#include <algorithm>
#include <ctime>
#include <iterator>
#include <optional>
#include <string>

#include <relayguard/net.hpp>
#include <relayguard/strings.hpp>

#include "policy/key_values.hpp"

namespace relayguard {
namespace {

using Verdict = CheckResult::Verdict;

// Untrusted values quoted in a reason are cut after this many bytes: a reason is one log field.
constexpr std::size_t max_reason_value_bytes = 128;
// Values in a decision log line are cut after this many bytes (RFC 5321 paths fit in 256).
constexpr std::size_t max_log_value_bytes = 256;
// A reason that is not already printable is cut after this many bytes in the log line.
constexpr std::size_t max_log_reason_bytes = 512;
// Most digits of a TCP port number.
constexpr std::size_t max_port_digits = 5;
// A suspension's reason (operator text, or the ladder's) is cut after this many bytes in the
// check's reason: enough for a sentence and a ticket number.
constexpr std::size_t max_suspension_reason_bytes = 256;

struct Context {
    const Request& request;
    const Config& config;
    const Snapshot& snapshot;
    bool explain;          // build reasons for every verdict, not only for failures (a trace was asked for)
    const LiveFacts* live; // the live store's answer, or nullptr (no store, or it failed)
};

// One check's verdict as a check function returns it.
struct Eval {
    Verdict verdict = Verdict::pass;
    std::string_view reply; // fail only
    std::string reason;
};

std::string show(std::string_view untrusted) { return sanitize(untrusted, max_reason_value_bytes); }

std::string show_login(std::string_view login) { return login.empty() ? std::string("-") : show(login); }

// passed/not_applicable - a verdict whose reason is built only when explaining.
template <class ReasonFn>
Eval passed(const Context& ctx, ReasonFn&& why)
{
    return Eval{Verdict::pass, {}, ctx.explain ? std::string(why()) : std::string()};
}

template <class ReasonFn>
Eval not_applicable(const Context& ctx, ReasonFn&& why)
{
    return Eval{Verdict::not_applicable, {}, ctx.explain ? std::string(why()) : std::string()};
}

Eval failed(std::string_view reply, std::string reason) { return Eval{Verdict::fail, reply, std::move(reason)}; }

// reply_or - a check's specific reply, or its general one if the specific one is not set.
std::string_view reply_or(const std::string& specific, const std::string& general) noexcept
{
    return specific.empty() ? std::string_view(general) : std::string_view(specific);
}

// parse_port - server_port as a TCP port. Exim sends "-1" when it does not know the port.
std::optional<std::uint16_t> parse_port(std::string_view text) noexcept
{
    if (text.empty() || text.size() > max_port_digits) return std::nullopt;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 0xffff) return std::nullopt;
    return static_cast<std::uint16_t>(value);
}

bool listed_ci(const std::vector<std::string>& list, std::string_view value) noexcept
{
    return std::any_of(list.begin(), list.end(), [&](const std::string& s) { return iequals(s, value); });
}

// check_exempt - a client in exempt.networks, or a login in exempt.logins (case-insensitive),
// skips every other check at every protocol_state. Verdict pass means "exempt"; a client that
// is not exempt is not_applicable (exempt never fails, so shadow mode has no meaning for it).
Eval check_exempt(const Context& ctx)
{
    const ExemptConfig& ex = ctx.config.exempt;
    const std::string& client = ctx.request[Attr::client_address];
    if (!ex.networks.empty()) {
        if (const auto ip = parse_ip(client); ip && ex.networks.contains(*ip))
            return passed(ctx, [&] { return "client " + show(client) + " in exempt networks"; });
    }
    const std::string& login = ctx.request[Attr::sasl_username];
    if (!login.empty() && listed_ci(ex.logins, login))
        return passed(ctx, [&] { return "login " + show(login) + " is exempt"; });
    return not_applicable(ctx, [&] {
        return "client " + show_login(client) + " not in exempt networks, login " + show_login(login) +
               " not exempt";
    });
}

// format_utc - "2026-11-28 03:00:00 UTC"; a time gmtime cannot represent as "@SECONDS".
std::string format_utc(std::int64_t unix_seconds)
{
    const auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    char buf[32];
    if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        return "@" + std::to_string(unix_seconds);
    return buf;
}

// check_suspended - applies to a login; fails while the live store holds a suspension of it in
// force (the store drops one whose `until` passed). Without a store answer it passes: the
// suspension is unknown, and the other checks still run.
Eval check_suspended(const Context& ctx)
{
    const std::string& login = ctx.request[Attr::sasl_username];
    if (login.empty()) return not_applicable(ctx, [] { return "not authenticated"; });
    if (ctx.live == nullptr) return not_applicable(ctx, [] { return "no live store answer"; });
    if (!ctx.live->suspension) return passed(ctx, [&] { return "login " + show(login) + " not suspended"; });
    const Suspension& s = *ctx.live->suspension;
    std::string reason = "suspended since " + format_utc(s.since);
    reason += s.until == 0 ? " until lifted" : " until " + format_utc(s.until);
    if (!s.by.empty()) reason += " by " + show(s.by);
    if (!s.reason.empty()) reason += ": " + sanitize(s.reason, max_suspension_reason_bytes);
    return failed(ctx.config.suspended.reply, std::move(reason));
}

// check_auth_required - applies when server_port is a decimal port listed in ports, or when
// policy_context is non-empty and listed in policy_contexts (exact match); then the request must
// carry a login.
Eval check_auth_required(const Context& ctx)
{
    const AuthRequiredConfig& c = ctx.config.auth_required;
    const std::string& context = ctx.request[Attr::policy_context];
    const auto port = parse_port(ctx.request[Attr::server_port]);
    const bool by_port = port && std::find(c.ports.begin(), c.ports.end(), *port) != c.ports.end();
    const bool by_context =
        !context.empty() && std::find(c.policy_contexts.begin(), c.policy_contexts.end(), context) != c.policy_contexts.end();
    if (!by_port && !by_context) {
        return not_applicable(ctx, [&] {
            return "no login required on server_port " + show_login(ctx.request[Attr::server_port]) +
                   " with policy_context " + show_login(context);
        });
    }
    if (ctx.request.authenticated())
        return passed(ctx, [&] { return "login " + show(ctx.request[Attr::sasl_username]) + " present"; });
    if (by_port) return failed(c.reply, "login required on port " + std::to_string(*port));
    return failed(c.reply, "login required for policy_context " + show(context));
}

// check_plaintext_auth - applies to an authenticated request whose sasl_method is one of
// mechanisms (case-insensitive); it must have come over TLS (encryption_protocol set).
Eval check_plaintext_auth(const Context& ctx)
{
    const PlaintextAuthConfig& c = ctx.config.plaintext_auth;
    if (!ctx.request.authenticated()) return not_applicable(ctx, [] { return "not authenticated"; });
    const std::string& method = ctx.request[Attr::sasl_method];
    const auto mech = std::find_if(c.mechanisms.begin(), c.mechanisms.end(),
                                   [&](const std::string& m) { return iequals(m, method); });
    if (mech == c.mechanisms.end())
        return not_applicable(ctx, [&] { return "mechanism " + show_login(method) + " not checked"; });
    const std::string& tls = ctx.request[Attr::encryption_protocol];
    if (!tls.empty()) return passed(ctx, [&] { return *mech + " login over " + show(tls); });
    // The configured spelling, not the peer's: it is trusted and already upper case.
    return failed(c.reply, *mech + " login without TLS");
}

// check_relay - applies to an unauthenticated request with a recipient (not at MAIL). The
// recipient's domain must be local (config, or the live store's domains); an unqualified
// recipient (no domain) passes, because the MTA completes it with its own domain.
Eval check_relay(const Context& ctx)
{
    const RelayConfig& c = ctx.config.relay;
    if (ctx.request.authenticated()) return not_applicable(ctx, [] { return "authenticated"; });
    const std::string& rcpt = ctx.request[Attr::recipient];
    if (rcpt.empty()) return not_applicable(ctx, [] { return "no recipient"; });
    const auto domain = split_address(rcpt).domain;
    if (domain.empty()) return passed(ctx, [] { return "unqualified recipient"; });
    if (ctx.snapshot.local_domains.contains(domain))
        return passed(ctx, [&] { return "recipient domain " + show(domain) + " is local"; });
    if (ctx.live != nullptr && ctx.live->recipient_domain_local)
        return passed(ctx, [&] { return "recipient domain " + show(domain) + " is local (live store)"; });
    return failed(c.reply, "recipient domain " + show(domain) + " is not local");
}

// check_sender_ownership -
// Authenticated, null sender: fails with null_sender_reply unless allow_null_sender_authenticated.
// Authenticated, sender set: passes if the login is in any_sender_logins (case-insensitive); or,
//   with login_owns_itself, the login is an address equal to the sender, with or without the
//   sender's extension; or the owners map lists the login for the sender (maps.hpp lookup order);
//   or the live store's owners do.
// Unauthenticated: fails with unauthenticated_reply if the sender is in a local domain; an
//   unqualified sender counts as local (the MTA completes it with its own domain, as for relay).
//   The null sender passes (bounces come from anywhere). The config's local domains only: owners
//   do not matter here, and a domain only the live store lists is relayed to, not guarded.
Eval check_sender_ownership(const Context& ctx)
{
    const SenderOwnershipConfig& c = ctx.config.sender_ownership;
    const AddressConfig& rules = ctx.config.address;
    const std::string& sender = ctx.request[Attr::sender];
    const std::string& login = ctx.request[Attr::sasl_username];

    if (!ctx.request.authenticated()) {
        if (sender.empty()) return passed(ctx, [] { return "null sender"; });
        const auto domain = split_address(sender).domain;
        if (domain.empty())
            return failed(reply_or(c.unauthenticated_reply, c.reply),
                          "unauthenticated unqualified sender " + show(sender));
        if (ctx.snapshot.local_domains.contains(domain))
            return failed(reply_or(c.unauthenticated_reply, c.reply),
                          "unauthenticated sender " + show(sender) + " in local domain " + show(domain));
        return passed(ctx, [&] { return "sender domain " + show(domain) + " is not local"; });
    }

    if (sender.empty()) {
        if (c.allow_null_sender_authenticated) return passed(ctx, [] { return "null sender allowed"; });
        return failed(reply_or(c.null_sender_reply, c.reply), "null sender used by login " + show(login));
    }
    if (listed_ci(c.any_sender_logins, login))
        return passed(ctx, [&] { return "login " + show(login) + " may use any sender"; });
    if (c.login_owns_itself && login.find('@') != std::string::npos) {
        const auto self = split_address(login);
        if (same_address(self, split_address(sender), rules) ||
            same_address(self, strip_extension_parts(sender, rules), rules))
            return passed(ctx, [&] { return "sender " + show(sender) + " is login " + show(login); });
    }
    if (ctx.snapshot.owners.owners_match(sender, login, rules))
        return passed(ctx, [&] { return "sender " + show(sender) + " owned by login " + show(login); });
    if (ctx.live != nullptr && ctx.live->sender_owned)
        return passed(ctx, [&] { return "sender " + show(sender) + " owned by login " + show(login) + " (live store)"; });
    return failed(c.reply, "sender " + show(sender) + " not owned by login " + show(login));
}

// The checks after exempt, in pipeline order.
struct Step {
    Check check;
    const CheckConfig& (*settings)(const Config&);
    Eval (*run)(const Context&);
};
constexpr Step steps[] = {
    {Check::suspended, [](const Config& c) -> const CheckConfig& { return c.suspended; }, check_suspended},
    {Check::auth_required, [](const Config& c) -> const CheckConfig& { return c.auth_required; }, check_auth_required},
    {Check::plaintext_auth, [](const Config& c) -> const CheckConfig& { return c.plaintext_auth; }, check_plaintext_auth},
    {Check::relay, [](const Config& c) -> const CheckConfig& { return c.relay; }, check_relay},
    {Check::sender_ownership, [](const Config& c) -> const CheckConfig& { return c.sender_ownership; },
     check_sender_ownership},
};

// checked_state - the states that carry an envelope. Others (CONNECT, EHLO, HELO, VRFY, ETRN,
// unknown) only go through exempt.
bool checked_state(ProtocolState s) noexcept
{
    return s == ProtocolState::mail || s == ProtocolState::rcpt || s == ProtocolState::data ||
           s == ProtocolState::end_of_message;
}

bool printable(std::string_view s) noexcept
{
    return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
}

} // namespace

std::string_view check_name(Check check) noexcept
{
    switch (check) {
    case Check::exempt: return "exempt";
    case Check::suspended: return "suspended";
    case Check::auth_required: return "auth_required";
    case Check::plaintext_auth: return "plaintext_auth";
    case Check::relay: return "relay";
    case Check::sender_ownership: return "sender_ownership";
    case Check::rate_limits: return "rate_limits";
    case Check::compromise: return "compromise";
    }
    return "unknown";
}

// decide - exempt first (every state); then, at MAIL/RCPT/DATA/END-OF-MESSAGE only,
// suspended, auth_required, plaintext_auth, relay, sender_ownership. A disabled check is skipped;
// a check failing in shadow mode is recorded in Decision::shadowed and the pipeline goes on; the
// first other failure refuses with that check's reply. The trace holds one entry per check: checks
// after an exempt client or a refusal are "skipped" with a reason saying why.
Decision decide(const Request& request, const Snapshot& snapshot, std::vector<CheckResult>* trace, const LiveFacts* live)
{
    Decision d;
    const Config& cfg = snapshot.config;
    const Context ctx{request, cfg, snapshot, trace != nullptr, live};

    auto record = [&](Check check, Eval& e, bool shadow) {
        if (trace) trace->push_back(CheckResult{check, e.verdict, shadow, e.reply, std::move(e.reason)});
    };
    // rest - the same verdict, for the trace, for every step from `first` on.
    auto rest = [&](std::size_t first, Verdict verdict, std::string_view why) {
        if (!trace) return;
        for (std::size_t i = first; i < std::size(steps); ++i)
            trace->push_back(CheckResult{steps[i].check, verdict, false, {}, std::string(why)});
    };
    if (trace) {
        trace->clear();
        trace->reserve(1 + std::size(steps));
    }

    // Exempt.
    if (!cfg.exempt.enabled) {
        Eval off{Verdict::skipped, {}, ctx.explain ? "disabled" : ""};
        record(Check::exempt, off, false);
    } else {
        Eval e = check_exempt(ctx);
        const bool exempt = e.verdict == Verdict::pass;
        record(Check::exempt, e, false);
        if (exempt) {
            d.outcome = Decision::Outcome::exempt;
            rest(0, Verdict::skipped, "not reached: exempt");
            return d;
        }
    }

    // Only requests that carry an envelope are checked.
    if (!checked_state(request.protocol_state())) {
        if (trace) rest(0, Verdict::not_applicable, "protocol_state " + show_login(request[Attr::protocol_state]) + " not checked");
        return d;
    }

    for (std::size_t i = 0; i < std::size(steps); ++i) {
        const Step& step = steps[i];
        const CheckConfig& settings = step.settings(cfg);
        if (!settings.enabled) {
            Eval off{Verdict::skipped, {}, ctx.explain ? "disabled" : ""};
            record(step.check, off, false);
            continue;
        }
        Eval e = step.run(ctx);
        if (e.verdict != Verdict::fail) {
            record(step.check, e, false);
            continue;
        }
        if (settings.shadow) {
            CheckResult r{step.check, Verdict::fail, true, e.reply, std::move(e.reason)};
            if (trace) trace->push_back(r);
            d.shadowed.push_back(std::move(r));
            continue;
        }
        d.outcome = Decision::Outcome::refuse;
        d.decided_by = step.check;
        d.reply = e.reply;
        d.reason = e.reason;
        record(step.check, e, false);
        if (trace) rest(i + 1, Verdict::skipped, "not reached: refused by " + std::string(check_name(step.check)));
        return d;
    }
    return d;
}

namespace {

// owner_keys_of - the owners keys of a sender in Postfix's smtpd_sender_login_maps lookup order:
// the address, the address without its extension, "@domain". Lower case whole, as key_schema.hpp
// stores them (relayguardctl owners), whatever local_part_case_sensitive says.
std::vector<std::string> owner_keys_of(std::string_view sender, const AddressConfig& rules)
{
    AddressConfig folded = rules;
    folded.local_part_case_sensitive = false;
    std::vector<std::string> keys;
    keys.reserve(3);
    keys.push_back(normalize_address(sender, folded));
    std::string stripped = normalize_address(strip_extension(sender, rules), folded);
    if (stripped != keys.front()) keys.push_back(std::move(stripped));
    if (const auto domain = split_address(sender).domain; !domain.empty()) keys.push_back("@" + domain_key_value(domain));
    return keys;
}

// domain_candidates_of - a recipient domain and each of its parents written ".parent", the
// entries of a domains list that would make it local (DomainSet's matching rule).
std::vector<std::string> domain_candidates_of(std::string_view domain)
{
    const std::string name = domain_key_value(domain);
    std::vector<std::string> out;
    if (name.empty()) return out;
    out.push_back(name);
    for (auto dot = name.find('.', 1); dot != std::string::npos; dot = name.find('.', dot + 1))
        if (dot + 1 < name.size()) out.push_back(name.substr(dot));
    return out;
}

// network_element - the client network a compromise signal counts: the address masked to the
// configured prefix, or "" (count read, nothing added) when Postfix sent no address ("unknown").
std::string network_element(std::string_view client, const CompromiseConfig& config)
{
    const auto ip = parse_ip(client);
    if (!ip) return {};
    return client_key_value(*ip, ip->is_v4() ? config.ipv4_prefix : config.ipv6_prefix);
}

bool any_refusal_threshold(const CompromiseConfig& c) noexcept
{
    return c.warn.rate_refusals != 0 || c.hold.rate_refusals != 0 || c.suspend.rate_refusals != 0;
}

} // namespace

// plan_live - see policy.hpp. Owners and domains are asked only where the config alone refuses
// (decide() with the same request and no live facts would fail that check), so a config that
// already grants a request costs no store lookups for them.
std::optional<LiveQuery> plan_live(const Request& request, const Snapshot& snapshot, bool consume)
{
    const Config& cfg = snapshot.config;
    if (!checked_state(request.protocol_state())) return std::nullopt;
    const Context ctx{request, cfg, snapshot, false, nullptr};
    const bool exempt = cfg.exempt.enabled && check_exempt(ctx).verdict == Verdict::pass;
    const std::string& login = request[Attr::sasl_username];
    const CompromiseConfig& cc = cfg.compromise;
    const bool track = cc.enabled && !login.empty() && request.protocol_state() == ProtocolState::rcpt &&
                       (!exempt || cc.applies_to_exempt);
    if (exempt && !track) return std::nullopt;

    LiveQuery q;
    q.consume = consume;
    if (!login.empty()) q.login = login_key_value(login);
    if (!exempt) {
        q.suspension = cfg.suspended.enabled && !login.empty();
        // An unqualified sender has no key relayguardctl could have stored owners under.
        const std::string& sender = request[Attr::sender];
        if (cfg.sender_ownership.enabled && !login.empty() && sender.find('@') != std::string::npos &&
            check_sender_ownership(ctx).verdict == Verdict::fail)
            q.owner_keys = owner_keys_of(sender, cfg.address);
        if (cfg.relay.enabled && login.empty() && check_relay(ctx).verdict == Verdict::fail)
            q.domain_candidates = domain_candidates_of(split_address(request[Attr::recipient]).domain);
    }
    if (track) {
        q.window = cc.window;
        q.track.push_back({Signal::networks, network_element(request[Attr::client_address], cc)});
        if (cc.track_recipient_domains)
            q.track.push_back({Signal::recipient_domains, domain_key_value(split_address(request[Attr::recipient]).domain)});
        if (any_refusal_threshold(cc)) q.track.push_back({Signal::rate_refusals, {}});
    }
    if (q.empty()) return std::nullopt;
    return q;
}

std::string format_decision_log(const Request& request, Check check, std::string_view action, bool shadow,
                                std::string_view reason)
{
    auto value = [](std::string_view v, std::string_view if_empty) {
        return v.empty() ? std::string(if_empty) : sanitize(v, max_log_value_bytes);
    };
    std::string out;
    out.reserve(256 + reason.size());
    // Postfix smtpd's reject lines: "QUEUEID: reject: ..." or "NOQUEUE: reject: ...".
    out += value(request[Attr::queue_id], "NOQUEUE");
    out += shadow ? ": shadow reject: check=" : ": reject: check=";
    out += check_name(check);
    out += " client=";
    out += value(request[Attr::client_address], "-");
    out += " login=";
    out += value(request[Attr::sasl_username], "-");
    out += " sender=<";
    out += sanitize(request[Attr::sender], max_log_value_bytes);
    out += "> recipient=<";
    out += sanitize(request[Attr::recipient], max_log_value_bytes);
    out += "> instance=";
    out += value(request[Attr::instance], "-");
    out += " action=\"";
    out += sanitize(action, max_action_bytes);
    out += '"';
    if (!reason.empty()) {
        out += ": ";
        // decide()'s reasons are printable already (their untrusted parts were sanitized), and
        // sanitizing twice would escape the escapes; anything else is sanitized here.
        if (printable(reason))
            out += reason;
        else
            out += sanitize(reason, max_log_reason_bytes);
    }
    return out;
}

} // namespace relayguard
