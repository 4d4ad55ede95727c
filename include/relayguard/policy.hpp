// SPDX-License-Identifier: MIT
// policy.hpp - the check pipeline: a pure function of (request, snapshot) -> decision.
//
// The checks run in a fixed order (DESIGN.md section 2): exempt, suspended, auth_required,
// plaintext_auth, relay, sender_ownership. The first check that does not pass decides; a check in
// shadow mode is recorded and skipped; a pass everywhere is DUNNO. The engine does no I/O and
// keeps no state: callers may run it on any thread (what the live store said comes in as
// LiveFacts). Rate limits and the compromise ladder are later stages that run only when this one
// passes (Decision::outcome == pass or exempt).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

#include <relayguard/action.hpp>
#include <relayguard/config.hpp>
#include <relayguard/live_facts.hpp>
#include <relayguard/maps.hpp>
#include <relayguard/request.hpp>

namespace relayguard {

enum class Check : unsigned char {
    exempt,
    suspended,
    auth_required,
    plaintext_auth,
    relay,
    sender_ownership,
    rate_limits,
    compromise,
};
std::string_view check_name(Check check) noexcept;

// Everything a decision reads that does not come with the request: the config and the tables
// loaded from its files. Immutable; replaced whole on SIGHUP.
struct Snapshot {
    Config config;
    DomainSet local_domains;     // config list + domains file
    SenderLoginMap owners;       // map file
};

// load_snapshot - load_config() plus every file it names. Warnings as in load_config().
boost::system::result<std::shared_ptr<const Snapshot>, ConfigError>
load_snapshot(const std::string& config_path, std::vector<std::string>* warnings = nullptr);

// build_snapshot - the same from an already validated Config (tests, --check-config).
boost::system::result<std::shared_ptr<const Snapshot>, ConfigError> build_snapshot(Config config);

// One check's result, for the trace (relayguardctl check, debug logs).
struct CheckResult {
    enum class Verdict : unsigned char { pass, fail, skipped, not_applicable };
    Check check;
    Verdict verdict;
    bool shadow = false;      // failed, but in shadow mode
    std::string_view reply;   // what it would answer (fail only); points into the snapshot
    std::string reason;       // short English: "client 192.0.2.1 in trusted networks", ...
};

struct Decision {
    enum class Outcome : unsigned char {
        pass,   // every check passed: later stages run, then DUNNO
        exempt, // trusted client or exempt login: answer DUNNO
        refuse, // a check failed: answer `reply`
    };
    Outcome outcome = Outcome::pass;
    Check decided_by = Check::exempt; // refuse: the check that failed
    std::string_view reply = action_dunno; // the action to send; points into the snapshot
    std::string reason;               // refuse: why, for the log line
    std::vector<CheckResult> shadowed; // checks that failed in shadow mode (for their log lines)
};

// decide - run the pipeline. Checks that need what the request does not carry at its
// protocol_state (no recipient at MAIL, no login before AUTH) do not apply and pass. Only MAIL,
// RCPT, DATA and END-OF-MESSAGE requests are checked; other states pass (exempt still applies).
// `trace`, if given, is cleared and receives one CheckResult per check in pipeline order (checks
// after an exempt client or a refusal are `skipped` with reason "not reached: ...").
//
// `live`, if given, is what the live store said for plan_live()'s query: `suspended` refuses a
// login with a suspension in force (reason: "suspended since ... by ...: REASON"), relay also
// accepts a recipient domain the store lists, sender_ownership also accepts an owner the store
// lists. Without it (no store, or the store failed) those checks use the config alone and
// `suspended` passes.
Decision decide(const Request& request, const Snapshot& snapshot, std::vector<CheckResult>* trace = nullptr,
                const LiveFacts* live = nullptr);

// plan_live - what the live store must be asked before decide() for this request; nullopt when
// nothing (no login and nothing the store could change, an exempt client, a state that is not
// checked). Asks only what could change the answer: the suspension of a login (suspended check
// enabled), owners only when the config alone does not grant the sender, local domains only
// when the config alone would refuse relaying, and the compromise signals of a login (enabled,
// at RCPT: the client network, and the recipient domain if tracked; rate_refusals read).
// consume=false: read only (relayguardctl check).
std::optional<LiveQuery> plan_live(const Request& request, const Snapshot& snapshot, bool consume = true);

// The compromise ladder's verdict for one login's signal counts.
enum class Rung : unsigned char { none, warn, hold, suspend };
std::string_view rung_name(Rung rung) noexcept; // "none", "warn", "hold", "suspend"
struct LadderVerdict {
    Rung rung = Rung::none;     // the highest rung reached (shadow rungs included)
    bool shadow = false;        // that rung is in shadow mode
    Rung enforced = Rung::none; // the highest rung reached that is not in shadow mode
    Signal signal = Signal::networks; // the signal that reached `rung` (first in Signal order)
    std::uint64_t count = 0;    // its count
    std::uint64_t threshold = 0;// and the rung's threshold for it
    // "12 distinct client networks (/24, /48) within 1h, threshold 10" - for logs, events and
    // the automatic suspension's reason.
    std::string reason;
};
LadderVerdict judge_compromise(const std::array<std::uint64_t, signal_count>& counts, const CompromiseConfig& config);

// event_json - one event as a single-line JSON object, for PUBLISH and the event command:
// {"event":"hold","login":"...","rung":"hold","shadow":false,"signal":"networks","count":12,
//  "threshold":10,"window_s":3600,"reason":"...","client_address":"...","instance":"...",
//  "time":1700000000,"host":"..."}; strings JSON-escaped (control bytes \u00XX, invalid UTF-8
// bytes as \u00XX of the byte).
std::string event_json(std::string_view event, std::string_view login, const LadderVerdict& verdict,
                       std::chrono::seconds window, const Request& request, std::int64_t unix_time,
                       std::string_view host);

// format_decision_log - the one log line of a decision that is not a pass, Postfix-like:
// "QUEUEID|NOQUEUE: reject: check=relay client=192.0.2.7 login=- sender=<a@example.org>
// recipient=<x@example.net> instance=1f2.3 action=\"554 5.7.1 ...\": REASON" ("shadow reject:" in
// shadow mode; ": REASON" only if non-empty). Values sanitized (non-printable bytes escaped) and
// truncated; decide()'s reasons are printable already and are kept as they are.
std::string format_decision_log(const Request& request, Check check, std::string_view action, bool shadow,
                                std::string_view reason);

} // namespace relayguard
