// SPDX-License-Identifier: MIT
// config.cpp - TOML file -> validated Config (see config.hpp).
//
// Walks the document in file order against a fixed schema: each table lists its keys with a
// reader for each, and anything else is an error. Rules that span keys run after the walk.
// The first error ends the load. Runs at start and on reload only, never on the request path,
// so toml++'s parse exception is caught here. Thread-safe (no shared state).
// SECURITY: store.redis.password_file is read here; no message ever quotes a password.
#include <relayguard/config.hpp>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include <toml++/toml.h>

#include <relayguard/action.hpp>
#include <relayguard/live_facts.hpp>
#include <relayguard/strings.hpp>

#include "config/config_values.hpp"

namespace relayguard {

std::string ConfigError::to_string() const
{
    std::string out = file;
    if (line > 0) out += (out.empty() ? "line " : ":") + std::to_string(line);
    for (const std::string* part : {&key, &message}) {
        if (part->empty()) continue;
        if (!out.empty()) out += ": ";
        out += *part;
    }
    return out;
}

namespace {

using namespace config_detail;
using namespace std::chrono_literals;

// SMTPD_POLICY_README / postconf(5): smtpd_policy_service_max_idle defaults to 300s. An idle
// timeout below it closes connections that Postfix still means to reuse.
constexpr std::chrono::milliseconds postfix_policy_max_idle = 300s;
// postconf(5): smtpd_policy_service_timeout defaults to 100s; past it Postfix gives up and
// applies smtpd_policy_service_default_action.
constexpr std::chrono::milliseconds postfix_policy_timeout = 100s;

// Ranges of the integer settings; see contrib/relayguard.toml for why each exists.
constexpr std::int64_t max_threads = 256;
constexpr std::int64_t max_max_connections = 1'000'000;
constexpr std::int64_t min_line_bytes = 256;
constexpr std::int64_t max_line_bytes = 1'048'576;
constexpr std::int64_t max_request_bytes = 16'777'216;
constexpr std::int64_t min_attributes = 16;
constexpr std::int64_t max_attributes = 100'000;
// [[limit]] prefix lengths: at most the bits of an address.
constexpr std::int64_t max_prefix_v4 = 32;
constexpr std::int64_t max_prefix_v6 = 128;
// redis.conf: "databases 16" is the default, numbered from 0.
constexpr std::int64_t max_redis_database = 15;
// store.key_prefix starts every Redis key; keys are copied into every command and log line.
constexpr std::size_t max_key_prefix_bytes = 64;
// store.redis.timeout bounds each command a policy answer waits on: past 10s Postfix's own
// timeouts come close, and below 1ms a healthy Redis cannot answer.
constexpr std::chrono::milliseconds min_redis_timeout = 1ms;
constexpr std::chrono::milliseconds max_redis_timeout = 10s;
constexpr std::chrono::milliseconds max_redis_connect_timeout = 1min;
// store.instance_ttl: how long a transaction's "message already counted" marker lives. Postfix
// waits up to smtpd_timeout (300s) per command, so under a minute could forget a transaction in
// progress; past a day the markers only use memory.
// store.redis.password_file: longest first line read. Bounds the read of a file that is not a
// password file at all (/dev/zero has no line end); Redis passwords are far shorter.
constexpr std::size_t max_password_bytes = 4096;
constexpr std::chrono::milliseconds min_instance_ttl = 1min;
constexpr std::chrono::milliseconds max_instance_ttl = 24h;
// compromise.window: its quarter is the length of a signal bucket (live_facts.hpp); under a
// minute the ladder would only see bursts, and the longest duration is the file's max_duration.
constexpr std::chrono::milliseconds min_compromise_window = 1min;
// compromise.suspend_duration: an automatic suspension of under a second ends before anyone sees it.
constexpr std::chrono::milliseconds min_suspend_duration = 1s;
// Ladder thresholds: no login reaches a million distinct networks or domains within a window;
// a larger number is a typo, not a setting.
constexpr std::int64_t max_ladder_threshold = 1'000'000;
// events.queue: events waiting for the event command (config.hpp); past 100000 a stuck command
// would hold more memory than a policy daemon should.
constexpr std::int64_t max_event_queue = 100'000;

std::string quoted(std::string_view text) { return "\"" + sanitize(text) + "\""; }

unsigned line_of(const toml::node& node) { return node.source().begin.line; }
unsigned line_of(const toml::key& key) { return key.source().begin.line; }

// type_name - how a TOML value's type reads in "expected X, got Y".
std::string type_name(const toml::node& node)
{
    switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array:
        return node.as_array()->is_array_of_tables() ? "an array of tables" : "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
    }
    return "nothing";
}

// display_key - a key as it would be written in TOML: bare if it can be, else quoted.
std::string display_key(std::string_view name)
{
    const bool bare = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
    return bare ? std::string(name) : quoted(name);
}

std::string join(const std::string& parent, std::string_view name)
{
    return parent.empty() ? display_key(name) : parent + "." + display_key(name);
}

std::string element_key(const std::string& key, std::size_t index) { return key + "[" + std::to_string(index) + "]"; }

bool has_control_character(std::string_view text)
{
    return std::any_of(text.begin(), text.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

// is_zero_duration - "0", or zero in any unit the config writes durations in ("0s", "00m").
bool is_zero_duration(std::string_view text)
{
    const auto digits = text.find_first_not_of('0');
    if (text.empty() || digits == 0) return false;
    const std::string_view unit = digits == std::string_view::npos ? std::string_view{} : text.substr(digits);
    return unit.empty() || unit == "ms" || unit == "s" || unit == "m" || unit == "h" || unit == "d";
}

// format_duration - the largest unit that divides it exactly, as the config writes it.
std::string format_duration(std::chrono::milliseconds d)
{
    const std::pair<std::int64_t, std::string_view> units[] = {
        {24 * 3600 * 1000, "d"}, {3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}, {1, "ms"}};
    for (const auto& [ms, name] : units)
        if (d.count() % ms == 0) return std::to_string(d.count() / ms) + std::string(name);
    return std::to_string(d.count()) + "ms";
}

// seconds - as Postfix's documentation writes its time limits ("300s").
std::string seconds(std::chrono::milliseconds d)
{
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + "s";
}

std::string format_mode(unsigned mode)
{
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", mode);
    return buf;
}

// The schema walker. Each read_* function returns false after recording the first error.
class Loader {
public:
    explicit Loader(const std::string& path) : path_(path) { config_.path = path; }

    // load - the validated Config, or the first error. Warnings are appended to `warnings`
    // (if given) only on success: next to an error they would only distract from it.
    boost::system::result<Config, ConfigError> load(const toml::table& root, std::vector<std::string>* warnings);

private:
    using Reader = std::function<bool(const toml::node&, const std::string& key)>;
    struct Field {
        std::string_view name;
        Reader read;
    };
    using StringVisitor = std::function<bool(const std::string& value, const toml::node& at, const std::string& key)>;

    bool fail(unsigned line, const std::string& key, std::string message)
    {
        if (!error_) error_ = ConfigError{path_, line, key, std::move(message)};
        return false;
    }
    bool fail(const toml::node& at, const std::string& key, std::string message)
    {
        return fail(line_of(at), key, std::move(message));
    }
    void warn(unsigned line, const std::string& key, std::string message)
    {
        warnings_.push_back(ConfigError{path_, line, key, std::move(message)}.to_string());
    }

    // line_of_key - where `key` was written, or 0 if the file does not set it.
    unsigned line_of_key(const std::string& key) const
    {
        const auto it = lines_.find(key);
        return it == lines_.end() ? 0 : it->second;
    }
    bool seen(const std::string& key) const { return lines_.contains(key); }

    bool read_table(const toml::node& node, const std::string& key, const std::vector<Field>& fields);
    bool read_strings(const toml::node& node, const std::string& key, const StringVisitor& visit);
    bool read_integers(const toml::node& node, const std::string& key, std::int64_t lo, std::int64_t hi,
                       const std::function<void(std::int64_t, const toml::node&, const std::string&)>& visit);
    bool get_string(const toml::node& node, const std::string& key, std::string& out);
    bool get_integer(const toml::node& node, const std::string& key, std::int64_t lo, std::int64_t hi,
                     std::int64_t& out);

    // Reader factories: each returned Reader checks one value and stores it in `out`.
    Reader boolean(bool& out);
    template <class T>
    Reader integer(T& out, std::int64_t lo, std::int64_t hi);
    Reader duration(std::chrono::milliseconds& out);
    Reader duration(std::chrono::milliseconds& out, std::chrono::milliseconds lo, std::chrono::milliseconds hi);
    Reader whole_seconds(std::chrono::seconds& out, std::chrono::milliseconds lo, std::chrono::milliseconds hi,
                         bool allow_zero);
    Reader text(std::string& out);
    Reader account_name(std::string& out);
    Reader absolute_path(std::string& out);
    Reader reply(std::string& out);
    Reader plain_strings(std::vector<std::string>& out, std::string_view what);
    template <class E>
    Reader choice(E& out, std::vector<std::pair<std::string_view, E>> options);
    std::vector<Field> check_fields(CheckConfig& check);

    bool read_server(const toml::node& node, const std::string& key);
    bool read_listen(const toml::node& node, const std::string& key);
    bool read_protocol(const toml::node& node, const std::string& key);
    bool read_log(const toml::node& node, const std::string& key);
    bool read_address(const toml::node& node, const std::string& key);
    bool read_domains(const toml::node& node, const std::string& key);
    bool read_checks(const toml::node& node, const std::string& key);
    bool read_exempt(const toml::node& node, const std::string& key);
    bool read_auth_required(const toml::node& node, const std::string& key);
    bool read_plaintext_auth(const toml::node& node, const std::string& key);
    bool read_sender_ownership(const toml::node& node, const std::string& key);
    bool read_rate_limits(const toml::node& node, const std::string& key);
    bool read_limits(const toml::node& node, const std::string& key);
    bool read_limit(const toml::node& node, const std::string& key, LimitConfig& limit);
    bool check_limit(const toml::node& node, const std::string& key, const LimitConfig& limit);
    bool read_store(const toml::node& node, const std::string& key);
    bool read_store_redis(const toml::node& node, const std::string& key);
    bool check_store_redis();
    bool read_metrics(const toml::node& node, const std::string& key);
    bool read_compromise(const toml::node& node, const std::string& key);
    bool read_rung(const toml::node& node, const std::string& key, LadderRung& rung);
    bool read_events(const toml::node& node, const std::string& key);

    bool check_config();
    bool check_ladder();
    void warn_limits();
    void warn_store();
    void warn_compromise();
    void warn_duplicate(std::unordered_map<std::string, unsigned>& first, const std::string& value,
                        const toml::node& at, const std::string& key);

    std::string path_;
    Config config_;
    std::optional<ConfigError> error_;
    std::vector<std::string> warnings_;
    std::unordered_map<std::string, unsigned> lines_; // dotted key -> line, for every key in the file
    std::vector<unsigned> network_lines_;             // line of each checks.exempt.networks entry
    std::string password_file_;                       // store.redis.password_file, read after the walk
    std::unordered_map<std::string, unsigned> limit_names_; // limit name -> line
};

boost::system::result<Config, ConfigError> Loader::load(const toml::table& root, std::vector<std::string>* warnings)
{
    const bool ok = read_table(root, "",
                               {
                                   {"server", [this](auto& n, auto& k) { return read_server(n, k); }},
                                   {"protocol", [this](auto& n, auto& k) { return read_protocol(n, k); }},
                                   {"log", [this](auto& n, auto& k) { return read_log(n, k); }},
                                   {"address", [this](auto& n, auto& k) { return read_address(n, k); }},
                                   {"domains", [this](auto& n, auto& k) { return read_domains(n, k); }},
                                   {"checks", [this](auto& n, auto& k) { return read_checks(n, k); }},
                                   {"rate_limits", [this](auto& n, auto& k) { return read_rate_limits(n, k); }},
                                   {"limit", [this](auto& n, auto& k) { return read_limits(n, k); }},
                                   {"store", [this](auto& n, auto& k) { return read_store(n, k); }},
                                   {"metrics", [this](auto& n, auto& k) { return read_metrics(n, k); }},
                                   {"compromise", [this](auto& n, auto& k) { return read_compromise(n, k); }},
                                   {"events", [this](auto& n, auto& k) { return read_events(n, k); }},
                               });
    if (!ok || !check_config()) {
        assert(error_); // every path that returns false went through fail()
        return *error_;
    }
    if (warnings) warnings->insert(warnings->end(), warnings_.begin(), warnings_.end());
    return std::move(config_);
}

// read_table - dispatch each key of a table, in the order the file has them, to its reader.
bool Loader::read_table(const toml::node& node, const std::string& key, const std::vector<Field>& fields)
{
    const toml::table* table = node.as_table();
    if (!table) return fail(node, key, "expected a table, got " + type_name(node));

    // toml++ keeps a table's keys sorted by name; sort them back into file order so that the
    // first error reported is the first one in the file.
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (auto&& [k, v] : *table) entries.emplace_back(&k, &v);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        const auto& pa = a.first->source().begin;
        const auto& pb = b.first->source().begin;
        return std::pair(pa.line, pa.column) < std::pair(pb.line, pb.column);
    });

    std::vector<std::string_view> names;
    for (const auto& f : fields) names.push_back(f.name);

    for (const auto& [k, v] : entries) {
        const std::string child = join(key, k->str());
        lines_.emplace(child, line_of(*k));
        // Captured by name, not as `k`: lambdas capturing structured bindings need clang >= 16.
        const std::string_view name = k->str();
        const auto field = std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.name == name; });
        if (field == fields.end()) {
            std::string message = "unknown key";
            if (const auto near = closest_name(k->str(), names))
                message += " (did you mean \"" + std::string(*near) + "\"?)";
            return fail(line_of(*k), child, std::move(message));
        }
        if (!field->read(*v, child)) return false;
    }
    return true;
}

bool Loader::get_string(const toml::node& node, const std::string& key, std::string& out)
{
    const auto* value = node.as_string();
    if (!value) return fail(node, key, "expected a string, got " + type_name(node));
    if (has_control_character(value->get())) return fail(node, key, "control characters are not allowed");
    out = value->get();
    return true;
}

bool Loader::get_integer(const toml::node& node, const std::string& key, std::int64_t lo, std::int64_t hi,
                         std::int64_t& out)
{
    const auto* value = node.as_integer();
    if (!value) return fail(node, key, "expected an integer, got " + type_name(node));
    const std::int64_t v = value->get();
    if (v < lo || v > hi)
        return fail(node, key,
                    "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(v));
    out = v;
    return true;
}

// read_strings - an array of strings, each checked by get_string() and then passed to `visit`.
bool Loader::read_strings(const toml::node& node, const std::string& key, const StringVisitor& visit)
{
    const toml::array* array = node.as_array();
    if (!array) return fail(node, key, "expected an array of strings, got " + type_name(node));
    for (std::size_t i = 0; i < array->size(); ++i) {
        const toml::node& element = (*array)[i];
        const std::string ek = element_key(key, i);
        std::string value;
        if (!get_string(element, ek, value) || !visit(value, element, ek)) return false;
    }
    return true;
}

// read_integers - an array of integers in [lo, hi], each passed to `visit`.
bool Loader::read_integers(const toml::node& node, const std::string& key, std::int64_t lo, std::int64_t hi,
                           const std::function<void(std::int64_t, const toml::node&, const std::string&)>& visit)
{
    const toml::array* array = node.as_array();
    if (!array) return fail(node, key, "expected an array of integers, got " + type_name(node));
    for (std::size_t i = 0; i < array->size(); ++i) {
        const toml::node& element = (*array)[i];
        const std::string ek = element_key(key, i);
        std::int64_t value = 0;
        if (!get_integer(element, ek, lo, hi, value)) return false;
        visit(value, element, ek);
    }
    return true;
}

Loader::Reader Loader::boolean(bool& out)
{
    return [this, &out](const toml::node& node, const std::string& key) {
        const auto* value = node.as_boolean();
        if (!value) return fail(node, key, "expected a boolean, got " + type_name(node));
        out = value->get();
        return true;
    };
}

template <class T>
Loader::Reader Loader::integer(T& out, std::int64_t lo, std::int64_t hi)
{
    return [this, &out, lo, hi](const toml::node& node, const std::string& key) {
        std::int64_t value = 0;
        if (!get_integer(node, key, lo, hi, value)) return false;
        out = static_cast<T>(value);
        return true;
    };
}

Loader::Reader Loader::duration(std::chrono::milliseconds& out)
{
    return [this, &out](const toml::node& node, const std::string& key) {
        if (!node.is_string() && (node.is_integer() || node.is_floating_point()))
            return fail(node, key, "expected a string, got " + type_name(node) + " (write durations with a unit, e.g. \"10s\")");
        std::string text;
        if (!get_string(node, key, text)) return false;
        if (auto reason = parse_duration(text, out)) return fail(node, key, "invalid duration " + quoted(text) + ": " + *reason);
        return true;
    };
}

Loader::Reader Loader::text(std::string& out)
{
    return [this, &out](const toml::node& node, const std::string& key) { return get_string(node, key, out); };
}

// duration - a duration that must also lie in [lo, hi].
Loader::Reader Loader::duration(std::chrono::milliseconds& out, std::chrono::milliseconds lo, std::chrono::milliseconds hi)
{
    return [this, &out, lo, hi, read = duration(out)](const toml::node& node, const std::string& key) {
        const std::chrono::milliseconds before = out;
        if (!read(node, key)) return false;
        if (out >= lo && out <= hi) return true;
        const std::chrono::milliseconds got = out;
        out = before;
        return fail(node, key, "must be between " + format_duration(lo) + " and " + format_duration(hi) + ", got " +
                                   format_duration(got));
    };
}

// whole_seconds - a duration in [lo, hi] that is a whole number of seconds; with allow_zero
// also zero ("0", "0s", ...), which a setting uses for "never ends".
Loader::Reader Loader::whole_seconds(std::chrono::seconds& out, std::chrono::milliseconds lo, std::chrono::milliseconds hi,
                                     bool allow_zero)
{
    return [this, &out, lo, hi, allow_zero](const toml::node& node, const std::string& key) {
        if (const auto* value = node.as_string(); allow_zero && value && is_zero_duration(value->get())) {
            out = std::chrono::seconds{0};
            return true;
        }
        std::chrono::milliseconds d = out;
        if (!duration(d, lo, hi)(node, key)) return false;
        if (d % std::chrono::seconds{1} != std::chrono::milliseconds::zero())
            return fail(node, key, "must be a whole number of seconds, got " + format_duration(d));
        out = std::chrono::duration_cast<std::chrono::seconds>(d);
        return true;
    };
}

Loader::Reader Loader::account_name(std::string& out)
{
    return [this, &out](const toml::node& node, const std::string& key) {
        std::string text;
        if (!get_string(node, key, text)) return false;
        if (auto reason = check_account_name(text)) return fail(node, key, "invalid name " + quoted(text) + ": " + *reason);
        out = std::move(text);
        return true;
    };
}

Loader::Reader Loader::absolute_path(std::string& out)
{
    return [this, &out](const toml::node& node, const std::string& key) {
        std::string text;
        if (!get_string(node, key, text)) return false;
        // The daemon may change directory (or be started from anywhere by systemd), so a relative
        // path would mean different files at start and on reload.
        if (!text.empty() && !text.starts_with("/"))
            return fail(node, key, "must be an absolute path, got " + quoted(text));
        out = std::move(text);
        return true;
    };
}

Loader::Reader Loader::reply(std::string& out)
{
    return [this, &out](const toml::node& node, const std::string& key) {
        std::string text;
        if (!get_string(node, key, text)) return false;
        if (auto reason = validate_action(text)) return fail(node, key, "invalid reply " + quoted(text) + ": " + *reason);
        if (text == action_dunno) warn(line_of(node), key, "DUNNO lets everything through: the check never refuses");
        out = std::move(text);
        return true;
    };
}

Loader::Reader Loader::plain_strings(std::vector<std::string>& out, std::string_view what)
{
    return [this, &out, what](const toml::node& node, const std::string& key) {
        out.clear();
        std::unordered_map<std::string, unsigned> first;
        return read_strings(node, key, [&](const std::string& value, const toml::node& at, const std::string& ek) {
            if (value.empty()) return fail(at, ek, "an empty " + std::string(what) + " is not allowed");
            warn_duplicate(first, value, at, ek);
            out.push_back(value);
            return true;
        });
    };
}

// choice - one of a fixed set of names, each standing for a value of E.
template <class E>
Loader::Reader Loader::choice(E& out, std::vector<std::pair<std::string_view, E>> options)
{
    return [this, &out, options = std::move(options)](const toml::node& node, const std::string& key) {
        std::string text;
        if (!get_string(node, key, text)) return false;
        std::vector<std::string_view> names;
        for (const auto& [name, value] : options) {
            if (name == text) {
                out = value;
                return true;
            }
            names.push_back(name);
        }
        std::string message = names.size() == 2 ? "expected \"" + std::string(names[0]) + "\" or \"" + std::string(names[1]) + "\""
                                                : std::string("expected one of");
        if (names.size() != 2)
            for (std::size_t i = 0; i < names.size(); ++i) message += (i ? ", \"" : " \"") + std::string(names[i]) + "\"";
        message += ", got " + quoted(text);
        auto near = closest_name(text, names);
        // "rcpt" is four edits from "RCPT", but plainly meant it.
        if (!near)
            for (const auto name : names)
                if (iequals(name, text)) near = name;
        if (near) message += " (did you mean \"" + std::string(*near) + "\"?)";
        return fail(node, key, std::move(message));
    };
}

// warn_duplicate - a warning if `value` was already in the list `first` records.
void Loader::warn_duplicate(std::unordered_map<std::string, unsigned>& first, const std::string& value,
                            const toml::node& at, const std::string& key)
{
    const auto [it, inserted] = first.emplace(value, line_of(at));
    if (!inserted) warn(line_of(at), key, quoted(value) + " is listed twice (first at line " + std::to_string(it->second) + ")");
}

std::vector<Loader::Field> Loader::check_fields(CheckConfig& check)
{
    return {
        {"enabled", boolean(check.enabled)},
        {"shadow", boolean(check.shadow)},
        {"reply", reply(check.reply)},
    };
}

bool Loader::read_server(const toml::node& node, const std::string& key)
{
    auto& s = config_.server;
    return read_table(node, key,
                      {
                          {"listen", [this](auto& n, auto& k) { return read_listen(n, k); }},
                          {"threads", integer(s.threads, 0, max_threads)},
                          {"max_connections", integer(s.max_connections, 1, max_max_connections)},
                          {"idle_timeout", duration(s.idle_timeout)},
                          {"request_timeout", duration(s.request_timeout)},
                          {"shutdown_timeout", duration(s.shutdown_timeout)},
                          {"socket_mode",
                           [this, &s](const toml::node& n, const std::string& k) {
                               if (n.is_integer())
                                   return fail(n, k, "expected a string, got an integer (write the mode in quotes, e.g. \"0660\")");
                               std::string text;
                               if (!get_string(n, k, text)) return false;
                               if (auto reason = parse_socket_mode(text, s.socket_mode))
                                   return fail(n, k, "invalid socket mode " + quoted(text) + ": " + *reason);
                               return true;
                           }},
                          {"socket_owner", account_name(s.socket_owner)},
                          {"socket_group", account_name(s.socket_group)},
                          {"user", account_name(s.user)},
                          {"group", account_name(s.group)},
                          {"allow_root", boolean(s.allow_root)},
                      });
}

// read_listen - server.listen: parsed endpoints, no duplicates, no port bound twice.
bool Loader::read_listen(const toml::node& node, const std::string& key)
{
    auto& listen = config_.server.listen;
    listen.clear();
    std::unordered_map<std::string, unsigned> first; // endpoint_identity -> line
    std::unordered_map<std::uint16_t, std::pair<bool, unsigned>> by_port; // inet port -> (has "*", a line)
    const bool ok = read_strings(node, key, [&](const std::string& text, const toml::node& at, const std::string& ek) {
        Endpoint ep;
        if (auto reason = parse_endpoint(text, ep)) return fail(at, ek, "invalid listener " + quoted(text) + ": " + *reason);
        // Port 0 asks the kernel for a free port, so two of them never collide.
        const bool any_port = ep.kind == Endpoint::Kind::inet && ep.port == 0;
        if (!any_port) {
            const auto [it, inserted] = first.emplace(endpoint_identity(ep), line_of(at));
            if (!inserted)
                return fail(at, ek, "duplicate listener " + quoted(text) + " (first at line " + std::to_string(it->second) + ")");
        }
        if (ep.kind == Endpoint::Kind::inet && !any_port) {
            // "*" binds every address, so the port cannot also be bound on one address.
            const bool star = ep.host == "*";
            const auto [it, inserted] = by_port.emplace(ep.port, std::pair(star, line_of(at)));
            if (!inserted && (star || it->second.first))
                return fail(at, ek, "listener " + quoted(text) + " overlaps the one at line " + std::to_string(it->second.second) +
                                        ": * already covers every address on port " + std::to_string(ep.port));
        }
        listen.push_back(std::move(ep));
        return true;
    });
    if (ok && listen.empty()) return fail(node, key, "at least one listener is required");
    return ok;
}

// read_protocol - the parser limits; a request must have room for one whole line.
bool Loader::read_protocol(const toml::node& node, const std::string& key)
{
    auto& p = config_.protocol;
    if (!read_table(node, key,
                    {
                        {"max_line_bytes", integer(p.max_line_bytes, min_line_bytes, max_line_bytes)},
                        {"max_request_bytes", integer(p.max_request_bytes, min_line_bytes, max_request_bytes)},
                        {"max_attributes", integer(p.max_attributes, min_attributes, max_attributes)},
                    }))
        return false;
    if (p.max_request_bytes >= p.max_line_bytes) return true;
    // A request holds at least one line; blame whichever of the two the file sets.
    const std::string request_key = key + ".max_request_bytes";
    const std::string line_key = key + ".max_line_bytes";
    if (seen(request_key))
        return fail(line_of_key(request_key), request_key,
                    "must be at least " + line_key + " (" + std::to_string(p.max_line_bytes) + "), got " +
                        std::to_string(p.max_request_bytes));
    return fail(line_of_key(line_key), line_key,
                "must be at most " + request_key + " (" + std::to_string(p.max_request_bytes) + "), got " +
                    std::to_string(p.max_line_bytes));
}

bool Loader::read_log(const toml::node& node, const std::string& key)
{
    using Target = LogConfig::Target;
    using Level = LogConfig::Level;
    return read_table(node, key,
                      {
                          {"target", choice(config_.log.target, {{"stderr", Target::stderr_}, {"syslog", Target::syslog}})},
                          {"level", choice(config_.log.level, {{"debug", Level::debug},
                                                               {"info", Level::info},
                                                               {"warning", Level::warning},
                                                               {"error", Level::error}})},
                      });
}

bool Loader::read_address(const toml::node& node, const std::string& key)
{
    auto& a = config_.address;
    return read_table(node, key,
                      {
                          {"local_part_case_sensitive", boolean(a.local_part_case_sensitive)},
                          {"recipient_delimiter",
                           [this, &a](const toml::node& n, const std::string& k) {
                               std::string text;
                               if (!get_string(n, k, text)) return false;
                               if (auto reason = check_delimiter(text))
                                   return fail(n, k, "invalid recipient delimiter " + quoted(text) + ": " + *reason);
                               a.recipient_delimiter = std::move(text);
                               return true;
                           }},
                      });
}

bool Loader::read_domains(const toml::node& node, const std::string& key)
{
    auto& d = config_.domains;
    return read_table(node, key,
                      {
                          {"local",
                           [this, &d](const toml::node& n, const std::string& k) {
                               d.local.clear();
                               std::unordered_map<std::string, unsigned> first;
                               return read_strings(n, k, [&](const std::string& text, const toml::node& at, const std::string& ek) {
                                   std::string domain;
                                   if (auto reason = normalize_domain_entry(text, domain))
                                       return fail(at, ek, quoted(text) + " is not a domain name: " + *reason);
                                   warn_duplicate(first, domain, at, ek);
                                   d.local.push_back(std::move(domain));
                                   return true;
                               });
                           }},
                          {"file", absolute_path(d.file)},
                      });
}

bool Loader::read_checks(const toml::node& node, const std::string& key)
{
    return read_table(node, key,
                      {
                          {"exempt", [this](auto& n, auto& k) { return read_exempt(n, k); }},
                          {"auth_required", [this](auto& n, auto& k) { return read_auth_required(n, k); }},
                          {"plaintext_auth", [this](auto& n, auto& k) { return read_plaintext_auth(n, k); }},
                          {"suspended", [this](auto& n, auto& k) { return read_table(n, k, check_fields(config_.suspended)); }},
                          {"relay", [this](auto& n, auto& k) { return read_table(n, k, check_fields(config_.relay)); }},
                          {"sender_ownership", [this](auto& n, auto& k) { return read_sender_ownership(n, k); }},
                      });
}

// read_exempt - trusted networks (warning about host bits) and exempt logins.
bool Loader::read_exempt(const toml::node& node, const std::string& key)
{
    auto& e = config_.exempt;
    return read_table(node, key,
                      {
                          {"enabled", boolean(e.enabled)},
                          {"networks",
                           [this, &e](const toml::node& n, const std::string& k) {
                               e.networks = NetworkSet{};
                               network_lines_.clear();
                               std::unordered_map<std::string, unsigned> first;
                               return read_strings(n, k, [&](const std::string& text, const toml::node& at, const std::string& ek) {
                                   bool host_bits = false;
                                   const auto net = parse_cidr(text, &host_bits);
                                   if (!net)
                                       return fail(at, ek, quoted(text) + " is not an IP address or network (expected e.g. \"192.0.2.0/24\" or \"2001:db8::/32\")");
                                   if (host_bits)
                                       warn(line_of(at), ek, quoted(text) + " has host bits set; it is read as " + net->to_string());
                                   warn_duplicate(first, net->to_string(), at, ek);
                                   e.networks.add(*net);
                                   network_lines_.push_back(line_of(at));
                                   return true;
                               });
                           }},
                          {"logins", plain_strings(e.logins, "login")},
                      });
}

bool Loader::read_auth_required(const toml::node& node, const std::string& key)
{
    auto& a = config_.auth_required;
    auto fields = check_fields(a);
    fields.push_back({"ports", [this, &a](const toml::node& n, const std::string& k) {
                          a.ports.clear();
                          std::unordered_map<std::string, unsigned> first;
                          return read_integers(n, k, 1, 65535, [&](std::int64_t port, const toml::node& at, const std::string& ek) {
                              warn_duplicate(first, std::to_string(port), at, ek);
                              a.ports.push_back(static_cast<std::uint16_t>(port));
                          });
                      }});
    fields.push_back({"policy_contexts", plain_strings(a.policy_contexts, "policy context")});
    return read_table(node, key, fields);
}

bool Loader::read_plaintext_auth(const toml::node& node, const std::string& key)
{
    auto& p = config_.plaintext_auth;
    auto fields = check_fields(p);
    fields.push_back({"mechanisms", [this, &p](const toml::node& n, const std::string& k) {
                          p.mechanisms.clear();
                          std::unordered_map<std::string, unsigned> first;
                          return read_strings(n, k, [&](const std::string& text, const toml::node& at, const std::string& ek) {
                              std::string mechanism;
                              if (auto reason = normalize_mechanism(text, mechanism))
                                  return fail(at, ek, "invalid SASL mechanism " + quoted(text) + ": " + *reason);
                              warn_duplicate(first, mechanism, at, ek);
                              p.mechanisms.push_back(std::move(mechanism));
                              return true;
                          });
                      }});
    return read_table(node, key, fields);
}

bool Loader::read_sender_ownership(const toml::node& node, const std::string& key)
{
    auto& s = config_.sender_ownership;
    auto fields = check_fields(s);
    fields.push_back({"unauthenticated_reply", reply(s.unauthenticated_reply)});
    fields.push_back({"null_sender_reply", reply(s.null_sender_reply)});
    fields.push_back({"login_owns_itself", boolean(s.login_owns_itself)});
    fields.push_back({"allow_null_sender_authenticated", boolean(s.allow_null_sender_authenticated)});
    fields.push_back({"map_file", absolute_path(s.map_file)});
    fields.push_back({"any_sender_logins", plain_strings(s.any_sender_logins, "login")});
    return read_table(node, key, fields);
}

// read_rate_limits - the check's switch, and the protocol states the MTA calls relayguard at.
bool Loader::read_rate_limits(const toml::node& node, const std::string& key)
{
    auto& r = config_.rate_limits;
    return read_table(node, key,
                      {
                          {"enabled", boolean(r.enabled)},
                          {"hooked_at",
                           [this, &r](const toml::node& n, const std::string& k) {
                               r.hooked_at.clear();
                               std::unordered_map<std::string, unsigned> first;
                               const bool ok = read_strings(n, k, [&](const std::string& text, const toml::node& at, const std::string& ek) {
                                   ProtocolState state = ProtocolState::unknown;
                                   if (!choice(state, {{"MAIL", ProtocolState::mail},
                                                       {"RCPT", ProtocolState::rcpt},
                                                       {"DATA", ProtocolState::data},
                                                       {"END-OF-MESSAGE", ProtocolState::end_of_message}})(at, ek))
                                       return false;
                                   warn_duplicate(first, text, at, ek);
                                   r.hooked_at.push_back(state);
                                   return true;
                               });
                               if (ok && r.hooked_at.empty())
                                   return fail(n, k, "must list where the MTA calls relayguard: one or more of \"MAIL\", \"RCPT\", \"DATA\", "
                                                     "\"END-OF-MESSAGE\"");
                               return ok;
                           }},
                      });
}

// read_limits - [[limit]], in file order.
bool Loader::read_limits(const toml::node& node, const std::string& key)
{
    const toml::array* array = node.as_array();
    if (!array || (!array->empty() && !array->is_array_of_tables()))
        return fail(node, key, "expected an array of tables ([[limit]]), got " + type_name(node));
    for (std::size_t i = 0; i < array->size(); ++i) {
        const toml::node& element = (*array)[i];
        LimitConfig limit;
        if (!read_limit(element, element_key(key, i), limit)) return false;
        config_.limits.push_back(std::move(limit));
    }
    return true;
}

// read_limit - one [[limit]] table, then the rules that span its keys (check_limit).
bool Loader::read_limit(const toml::node& node, const std::string& key, LimitConfig& l)
{
    std::vector<std::pair<std::string_view, LimitKey>> keys;
    for (const auto k : {LimitKey::sasl_username, LimitKey::sender, LimitKey::sender_domain, LimitKey::client_address,
                         LimitKey::recipient_domain, LimitKey::global})
        keys.emplace_back(limit_key_name(k), k);
    std::vector<std::pair<std::string_view, LimitUnit>> units;
    for (const auto u : {LimitUnit::messages, LimitUnit::recipients, LimitUnit::bytes}) units.emplace_back(limit_unit_name(u), u);

    if (!read_table(node, key,
                    {
                        {"name",
                         [this, &l](const toml::node& n, const std::string& k) {
                             std::string name;
                             if (!get_string(n, k, name)) return false;
                             if (auto reason = check_limit_name(name))
                                 return fail(n, k, "invalid limit name " + quoted(name) + ": " + *reason);
                             const auto [it, inserted] = limit_names_.emplace(name, line_of(n));
                             if (!inserted)
                                 return fail(n, k, "duplicate limit name " + quoted(name) + " (first at line " + std::to_string(it->second) + ")");
                             l.name = std::move(name);
                             return true;
                         }},
                        {"key", choice(l.key, std::move(keys))},
                        {"unit", choice(l.unit, std::move(units))},
                        {"rates",
                         [this, &l](const toml::node& n, const std::string& k) {
                             if (n.is_integer() || n.is_floating_point())
                                 return fail(n, k, "expected a string, got " + type_name(n) +
                                                       " (write rates in quotes, e.g. \"100/1m, 1000/1h\")");
                             std::string text;
                             if (!get_string(n, k, text)) return false;
                             std::string why;
                             auto spec = parse_rate_spec(text, &why);
                             if (!spec) return fail(n, k, "invalid rates " + quoted(text) + ": " + why);
                             if (spec->kind == RateSpec::Kind::unlimited)
                                 return fail(n, k, "\"unlimited\" is not a limit: remove the limit or set enabled = false "
                                                   "(an override can make one key value unlimited)");
                             l.rates = std::move(*spec);
                             return true;
                         }},
                        {"scope", choice(l.scope, {{"any", LimitScope::any},
                                                   {"authenticated", LimitScope::authenticated},
                                                   {"unauthenticated", LimitScope::unauthenticated}})},
                        {"enabled", boolean(l.enabled)},
                        {"shadow", boolean(l.shadow)},
                        {"applies_to_exempt", boolean(l.applies_to_exempt)},
                        {"prefix_v4", integer(l.prefix_v4, 0, max_prefix_v4)},
                        {"prefix_v6", integer(l.prefix_v6, 0, max_prefix_v6)},
                        {"reply", text(l.reply)}, // checked in check_limit, which knows the name
                    }))
        return false;
    return check_limit(node, key, l);
}

// check_limit - what a limit needs as a whole: the keys it must set, prefix lengths only where
// they mean something, a scope it can apply in, a reply that is an action once filled in.
bool Loader::check_limit(const toml::node& node, const std::string& key, const LimitConfig& l)
{
    // No defaults for these: a limit that does not say what it counts is a mistake, not a wish.
    const std::pair<const char*, const char*> required[] = {{"name", "name = \"login_messages\""},
                                                            {"key", "key = \"sasl_username\""},
                                                            {"unit", "unit = \"messages\""},
                                                            {"rates", "rates = \"100/1m, 1000/1h\""}};
    for (const auto& [name, example] : required) {
        const std::string k = key + "." + name;
        if (!seen(k)) return fail(node, k, std::string("missing: every [[limit]] needs it, e.g. ") + example);
    }
    if (l.key != LimitKey::client_address)
        for (const char* name : {"prefix_v4", "prefix_v6"}) {
            const std::string k = key + "." + name;
            if (seen(k))
                return fail(line_of_key(k), k,
                            "only a limit with key = \"client_address\" has a prefix length, this one has key = \"" +
                                std::string(limit_key_name(l.key)) + "\"");
        }
    if (l.key == LimitKey::sasl_username && l.scope == LimitScope::unauthenticated) {
        const std::string k = key + ".scope";
        return fail(line_of_key(k), k,
                    "\"unauthenticated\" never applies to a limit keyed by sasl_username: unauthenticated requests "
                    "have no login");
    }
    const std::string reply_key = key + ".reply";
    if (auto reason = check_limit_reply(l.reply, l.name))
        return fail(line_of_key(reply_key), reply_key, "invalid reply " + quoted(l.reply) + ": " + *reason);
    if (l.reply == action_dunno)
        warn(line_of_key(reply_key), reply_key, "DUNNO lets everything through: the limit never refuses");
    return true;
}

// read_store - where rate-limit state lives and what a failure of it does.
bool Loader::read_store(const toml::node& node, const std::string& key)
{
    using Type = StoreConfig::Type;
    using OnError = StoreConfig::OnError;
    auto& st = config_.store;
    return read_table(node, key,
                      {
                          {"type", choice(st.type, {{"embedded", Type::embedded}, {"redis", Type::redis}})},
                          {"on_error", choice(st.on_error, {{"dunno", OnError::dunno}, {"defer", OnError::defer}, {"local", OnError::local}})},
                          {"defer_reply",
                           [this, &st](const toml::node& n, const std::string& k) {
                               std::string reply;
                               if (!get_string(n, k, reply)) return false;
                               if (auto reason = validate_action(reply))
                                   return fail(n, k, "invalid reply " + quoted(reply) + ": " + *reason);
                               // A store outage is ours, not the sender's: the mail must be retried, not bounced.
                               if (!reply.starts_with('4') && !reply.starts_with("DEFER"))
                                   return fail(n, k, "invalid reply " + quoted(reply) +
                                                         ": must be a temporary failure (a 4xx code, DEFER, DEFER_IF_PERMIT or "
                                                         "DEFER_IF_REJECT): a store outage must not bounce mail");
                               st.defer_reply = std::move(reply);
                               return true;
                           }},
                          {"key_prefix",
                           [this, &st](const toml::node& n, const std::string& k) {
                               std::string prefix;
                               if (!get_string(n, k, prefix)) return false;
                               if (prefix.empty() || prefix.size() > max_key_prefix_bytes)
                                   return fail(n, k, "must be 1 to " + std::to_string(max_key_prefix_bytes) +
                                                         " characters long, got " + std::to_string(prefix.size()));
                               // key_schema.hpp: the Redis Cluster hash tag {...} of each key is relayguard's.
                               if (prefix.find_first_of("{}") != std::string::npos)
                                   return fail(n, k, "invalid key prefix " + quoted(prefix) +
                                                         ": '{' and '}' are not allowed (relayguard sets each key's Redis Cluster hash tag itself)");
                               st.key_prefix = std::move(prefix);
                               return true;
                           }},
                          {"instance_ttl",
                           [this, &st](const toml::node& n, const std::string& k) {
                               std::chrono::milliseconds ttl = st.instance_ttl;
                               if (!duration(ttl, min_instance_ttl, max_instance_ttl)(n, k)) return false;
                               if (ttl % std::chrono::seconds{1} != std::chrono::milliseconds::zero())
                                   return fail(n, k, "must be a whole number of seconds, got " + format_duration(ttl));
                               st.instance_ttl = std::chrono::duration_cast<std::chrono::seconds>(ttl);
                               return true;
                           }},
                          {"redis", [this](auto& n, auto& k) { return read_store_redis(n, k); }},
                      }) &&
           check_store_redis();
}

// read_store_redis - how to reach Redis; the password file is read by check_store_redis().
bool Loader::read_store_redis(const toml::node& node, const std::string& key)
{
    auto& r = config_.store.redis;
    return read_table(node, key,
                      {
                          {"address",
                           [this, &r](const toml::node& n, const std::string& k) {
                               std::string address;
                               if (!get_string(n, k, address)) return false;
                               if (auto reason = check_redis_address(address))
                                   return fail(n, k, "invalid address " + quoted(address) + ": " + *reason);
                               r.address = std::move(address);
                               return true;
                           }},
                          {"username", text(r.username)},
                          {"password", text(r.password)},
                          {"password_file", absolute_path(password_file_)},
                          {"database", integer(r.database, 0, max_redis_database)},
                          {"timeout", duration(r.command_timeout, min_redis_timeout, max_redis_timeout)},
                          {"connect_timeout", duration(r.connect_timeout, min_redis_timeout, max_redis_connect_timeout)},
                          {"tls_ca_file", absolute_path(r.tls_ca_file)},
                          {"tls_cert_file", absolute_path(r.tls_cert_file)},
                          {"tls_key_file", absolute_path(r.tls_key_file)},
                          {"tls_server_name", text(r.tls_server_name)},
                          {"tls_verify", boolean(r.tls_verify)},
                      });
}

// check_store_redis - the rules between store.redis keys; reads password_file.
bool Loader::check_store_redis()
{
    auto& r = config_.store.redis;
    const std::string file_key = "store.redis.password_file";
    if (!password_file_.empty()) {
        if (!r.password.empty())
            return fail(line_of_key(file_key), file_key, "cannot be used together with store.redis.password: set one of them");
        const std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(password_file_.c_str(), "rb"), &std::fclose);
        if (!file) return fail(line_of_key(file_key), file_key, "cannot open " + quoted(password_file_) + ": " + std::strerror(errno));
        // The first line is the password; a file written with `echo` ends in a newline that is
        // not part of it.
        std::string line;
        int c = 0;
        while (line.size() <= max_password_bytes && (c = std::fgetc(file.get())) != EOF && c != '\n')
            line.push_back(static_cast<char>(c));
        if (std::ferror(file.get()))
            return fail(line_of_key(file_key), file_key, "cannot read " + quoted(password_file_) + ": " + std::strerror(errno));
        if (line.size() > max_password_bytes)
            return fail(line_of_key(file_key), file_key,
                        "the first line of " + quoted(password_file_) + " is longer than " + std::to_string(max_password_bytes) +
                            " bytes: is it a password file?");
        if (line.ends_with('\r')) line.pop_back();
        if (line.empty()) return fail(line_of_key(file_key), file_key, "the first line of " + quoted(password_file_) + " is empty");
        if (has_control_character(line))
            return fail(line_of_key(file_key), file_key, "the first line of " + quoted(password_file_) + " has control characters");
        r.password = std::move(line);
    }
    if (!r.username.empty() && r.password.empty())
        return fail(line_of_key("store.redis.username"), "store.redis.username",
                    "needs a password (store.redis.password or password_file): Redis AUTH takes a user name only with one");
    if (r.tls_cert_file.empty() != r.tls_key_file.empty()) {
        const bool cert = !r.tls_cert_file.empty();
        const std::string k = cert ? "store.redis.tls_cert_file" : "store.redis.tls_key_file";
        return fail(line_of_key(k), k,
                    cert ? "needs store.redis.tls_key_file: a client certificate is used with its private key"
                         : "needs store.redis.tls_cert_file: a private key is used with its client certificate");
    }
    return true;
}

// read_metrics - metrics.listen: one inet endpoint (HTTP), or "" for none.
bool Loader::read_metrics(const toml::node& node, const std::string& key)
{
    auto& m = config_.metrics;
    return read_table(node, key,
                      {
                          {"listen",
                           [this, &m](const toml::node& n, const std::string& k) {
                               std::string text;
                               if (!get_string(n, k, text)) return false;
                               m.listen.reset();
                               if (text.empty()) return true;
                               Endpoint ep;
                               if (auto reason = parse_endpoint(text, ep))
                                   return fail(n, k, "invalid listener " + quoted(text) + ": " + *reason);
                               if (ep.kind != Endpoint::Kind::inet)
                                   return fail(n, k, "invalid listener " + quoted(text) +
                                                         ": the metrics endpoint is HTTP over TCP, expected \"inet:HOST:PORT\", e.g. "
                                                         "\"inet:127.0.0.1:9733\"");
                               m.listen = std::move(ep);
                               return true;
                           }},
                      });
}

// read_compromise - the compromise ladder: how signals are counted, and its three rungs.
bool Loader::read_compromise(const toml::node& node, const std::string& key)
{
    auto& c = config_.compromise;
    return read_table(node, key,
                      {
                          {"enabled", boolean(c.enabled)},
                          {"window", whole_seconds(c.window, min_compromise_window, max_duration, false)},
                          {"ipv4_prefix", integer(c.ipv4_prefix, 1, max_prefix_v4)},
                          {"ipv6_prefix", integer(c.ipv6_prefix, 1, max_prefix_v6)},
                          {"track_recipient_domains", boolean(c.track_recipient_domains)},
                          {"hold_reply",
                           [this, &c](const toml::node& n, const std::string& k) {
                               std::string text;
                               if (!get_string(n, k, text)) return false;
                               if (auto reason = validate_action(text)) return fail(n, k, "invalid reply " + quoted(text) + ": " + *reason);
                               // access(5): HOLD keeps the mail in the hold queue until the operator
                               // releases (postsuper -H) or deletes it; any other action decides now.
                               if (text != "HOLD" && !text.starts_with("HOLD "))
                                   warn(line_of(n), k,
                                        quoted(text) + " is not a HOLD action: mail of a login on the hold rung will not wait in "
                                                       "the hold queue for review");
                               c.hold_reply = std::move(text);
                               return true;
                           }},
                          {"suspend_duration", whole_seconds(c.suspend_duration, min_suspend_duration, max_duration, true)},
                          {"applies_to_exempt", boolean(c.applies_to_exempt)},
                          {"warn", [this, &c](auto& n, auto& k) { return read_rung(n, k, c.warn); }},
                          {"hold", [this, &c](auto& n, auto& k) { return read_rung(n, k, c.hold); }},
                          {"suspend", [this, &c](auto& n, auto& k) { return read_rung(n, k, c.suspend); }},
                      });
}

// read_rung - one rung of the ladder: a threshold per signal (0: not this signal) and shadow.
bool Loader::read_rung(const toml::node& node, const std::string& key, LadderRung& rung)
{
    return read_table(node, key,
                      {
                          {"networks", integer(rung.networks, 0, max_ladder_threshold)},
                          {"recipient_domains", integer(rung.recipient_domains, 0, max_ladder_threshold)},
                          {"rate_refusals", integer(rung.rate_refusals, 0, max_ladder_threshold)},
                          {"shadow", boolean(rung.shadow)},
                      });
}

// read_events - where ladder events go besides the log.
bool Loader::read_events(const toml::node& node, const std::string& key)
{
    auto& e = config_.events;
    return read_table(node, key,
                      {
                          {"channel", text(e.channel)},
                          {"command", text(e.command)},
                          {"command_timeout", duration(e.command_timeout)},
                          {"queue", integer(e.queue, 1, max_event_queue)},
                      });
}

// The rungs in ladder order, with their names in the file.
struct RungRef {
    const char* name;
    const LadderRung* rung;
};
// The signals of a rung, with their names in the file.
struct SignalRef {
    const char* name;
    std::uint64_t LadderRung::*threshold;
};
constexpr SignalRef ladder_signals[] = {{"networks", &LadderRung::networks},
                                        {"recipient_domains", &LadderRung::recipient_domains},
                                        {"rate_refusals", &LadderRung::rate_refusals}};

// check_ladder - a higher rung must not trigger on a signal before a lower one does: that
// would skip the lower rung's warning or hold for that signal.
bool Loader::check_ladder()
{
    const auto& c = config_.compromise;
    const RungRef rungs[] = {{"warn", &c.warn}, {"hold", &c.hold}, {"suspend", &c.suspend}};
    for (std::size_t hi = 1; hi < std::size(rungs); ++hi)
        for (std::size_t lo = 0; lo < hi; ++lo)
            for (const auto& sig : ladder_signals) {
                const std::uint64_t low = rungs[lo].rung->*sig.threshold;
                const std::uint64_t high = rungs[hi].rung->*sig.threshold;
                if (low == 0 || high == 0 || high >= low) continue;
                const std::string k = std::string("compromise.") + rungs[hi].name + "." + sig.name;
                return fail(line_of_key(k), k,
                            "must be 0 or at least compromise." + std::string(rungs[lo].name) + "." + sig.name + " (" +
                                std::to_string(low) + "), got " + std::to_string(high) + ": a higher rung cannot trigger before a "
                                "lower one");
            }
    return true;
}

// warn_compromise - ladder settings that can never trigger or are never enforced.
void Loader::warn_compromise()
{
    const auto& c = config_.compromise;
    const RungRef rungs[] = {{"warn", &c.warn}, {"hold", &c.hold}, {"suspend", &c.suspend}};
    if (c.enabled && !c.warn.any() && !c.hold.any() && !c.suspend.any())
        warn(line_of_key("compromise"), "compromise",
             "enabled, but no rung has a threshold (compromise.warn, compromise.hold, compromise.suspend): nothing is ever "
             "reported");
    for (const auto& r : rungs)
        for (const auto& sig : ladder_signals) {
            const std::uint64_t threshold = r.rung->*sig.threshold;
            if (threshold == 0) continue;
            const std::string k = std::string("compromise.") + r.name + "." + sig.name;
            if (sig.threshold == &LadderRung::recipient_domains && !c.track_recipient_domains)
                warn(line_of_key(k), k,
                     "has no effect: compromise.track_recipient_domains is false, so recipient domains are not counted");
            else if (sig.threshold == &LadderRung::rate_refusals && !config_.rate_limits.enabled)
                warn(line_of_key(k), k, "has no effect: rate_limits.enabled is false, so there are no refusals to count");
            else if (threshold > embedded_signal_cap && config_.store.type == StoreConfig::Type::embedded)
                warn(line_of_key(k), k,
                     std::to_string(threshold) + " is never reached with store.type = \"embedded\": its counts stop at " +
                         std::to_string(embedded_signal_cap) + " (lower the threshold, or use the Redis store)");
        }
    if (c.enabled && c.suspend.any() && !config_.suspended.enabled)
        warn(line_of_key("compromise.suspend"), "compromise.suspend",
             "suspensions are written but never enforced: checks.suspended is disabled");
}

// check_config - rules that span keys, after every key has been read.
bool Loader::check_config()
{
    const auto& s = config_.server;
    if (!seen("server.listen"))
        return fail(line_of_key("server"), "server.listen",
                    "missing: at least one listener is required, e.g. listen = [\"inet:127.0.0.1:10033\"]");
    if (const auto& m = config_.metrics.listen; m && m->port != 0) {
        // The same port as a policy listener: one of the two binds would fail at start.
        for (const Endpoint& ep : s.listen) {
            if (ep.kind != Endpoint::Kind::inet || ep.port != m->port) continue;
            if (endpoint_identity(ep) == endpoint_identity(*m) || ep.host == "*" || m->host == "*")
                return fail(line_of_key("metrics.listen"), "metrics.listen",
                            "invalid listener " + quoted(m->text) + ": port " + std::to_string(m->port) +
                                " is already bound by server.listen " + quoted(ep.text));
        }
    }

    if (!check_ladder()) return false;

    // Sanity check. Warnings only from here on.
    const unsigned cores = std::thread::hardware_concurrency(); // 0: unknown
    if (cores > 0 && s.threads > cores)
        warn(line_of_key("server.threads"), "server.threads",
             std::to_string(s.threads) + " threads on " + std::to_string(cores) +
                 " CPU cores: threads beyond the core count only add context switches");
    if (s.idle_timeout < postfix_policy_max_idle)
        warn(line_of_key("server.idle_timeout"), "server.idle_timeout",
             format_duration(s.idle_timeout) + " is shorter than Postfix's smtpd_policy_service_max_idle (" +
                 seconds(postfix_policy_max_idle) + "): relayguard will close connections that Postfix still means to reuse");
    if (s.request_timeout >= postfix_policy_timeout)
        warn(line_of_key("server.request_timeout"), "server.request_timeout",
             format_duration(s.request_timeout) + " is not shorter than Postfix's smtpd_policy_service_timeout (" +
                 seconds(postfix_policy_timeout) + "): Postfix gives up before relayguard does");
    // Running on as root needs allow_root (config.hpp); the command line may allow it too, so
    // this is only a warning.
    if (s.user == "root" && !s.allow_root)
        warn(line_of_key("server.user"), "server.user",
             "\"root\" keeps every privilege after the listeners are bound: name an unprivileged user, or set "
             "server.allow_root = true if running as root is meant");
    if (!s.group.empty() && s.user.empty())
        warn(line_of_key("server.group"), "server.group",
             "has no effect without server.user: relayguard changes its identity only when a user is set");
    const bool any_unix = std::any_of(s.listen.begin(), s.listen.end(),
                                      [](const Endpoint& ep) { return ep.kind == Endpoint::Kind::unix_socket; });
    // Only values other than the default: the example config spells out the defaults.
    const std::pair<const char*, bool> socket_settings[] = {{"server.socket_mode", s.socket_mode != default_socket_mode},
                                                            {"server.socket_owner", !s.socket_owner.empty()},
                                                            {"server.socket_group", !s.socket_group.empty()}};
    for (const auto& [name, changed] : socket_settings)
        if (!any_unix && changed) warn(line_of_key(name), name, "has no effect: there is no unix: listener");
    if (any_unix && (s.socket_mode & 0222) == 0)
        warn(line_of_key("server.socket_mode"), "server.socket_mode",
             format_mode(s.socket_mode) + " lets no one write to the socket, which connecting to it requires");

    const auto& e = config_.exempt;
    if (e.enabled) {
        const auto& nets = e.networks.networks();
        for (std::size_t i = 0; i < nets.size(); ++i)
            if (nets[i].prefix == 0)
                warn(network_lines_[i], element_key("checks.exempt.networks", i),
                     std::string("every ") + (nets[i].network.is_v4() ? "IPv4" : "IPv6") + " client is trusted (" +
                         nets[i].to_string() + "): relayguard will let anyone relay");
    } else {
        for (const char* name : {"checks.exempt.networks", "checks.exempt.logins"})
            if (seen(name)) warn(line_of_key(name), name, "ignored: checks.exempt is disabled");
    }

    const auto& a = config_.auth_required;
    if (a.enabled && a.ports.empty() && a.policy_contexts.empty())
        warn(line_of_key("checks.auth_required"), "checks.auth_required",
             "enabled, but neither ports nor policy_contexts are set: the check never applies");
    const auto& p = config_.plaintext_auth;
    if (p.enabled && p.mechanisms.empty())
        warn(line_of_key("checks.plaintext_auth"), "checks.plaintext_auth",
             "enabled, but no mechanisms are set: the check never applies");
    const auto& d = config_.domains;
    if (config_.relay.enabled && d.local.empty() && d.file.empty())
        warn(line_of_key("checks.relay"), "checks.relay",
             "enabled, but there are no local domains (domains.local, domains.file): every unauthenticated recipient will be refused");
    const auto& o = config_.sender_ownership;
    if (o.enabled && !o.login_owns_itself && o.map_file.empty() && o.any_sender_logins.empty())
        warn(line_of_key("checks.sender_ownership"), "checks.sender_ownership",
             "enabled, but no login owns any sender (login_owns_itself is false, no map_file, no any_sender_logins): "
             "every authenticated sender will be refused");

    const std::pair<const char*, const CheckConfig*> checks[] = {
        {"checks.suspended", &config_.suspended}, {"checks.auth_required", &a}, {"checks.plaintext_auth", &p},
        {"checks.relay", &config_.relay},         {"checks.sender_ownership", &o}};
    for (const auto& [name, check] : checks) {
        const std::string shadow_key = std::string(name) + ".shadow";
        if (check->shadow && !check->enabled)
            warn(line_of_key(shadow_key), shadow_key, "has no effect while the check is disabled");
    }
    warn_limits();
    warn_store();
    warn_compromise();
    return true;
}

// warn_limits - limits that cannot count where the MTA calls relayguard (the most common
// mistake with policy-server rate limits: the check is hooked in at RCPT only, so a per-message
// byte limit never sees a message size), and limits that are switched off.
void Loader::warn_limits()
{
    const auto& r = config_.rate_limits;
    if (!r.enabled) {
        if (!config_.limits.empty())
            warn(line_of_key("rate_limits.enabled"), "rate_limits.enabled",
                 "false, so none of the " + std::to_string(config_.limits.size()) +
                     " [[limit]] entries is enforced (remove them, or set enabled = true)");
        return;
    }
    const auto hooked = [&r](ProtocolState state) {
        return std::find(r.hooked_at.begin(), r.hooked_at.end(), state) != r.hooked_at.end();
    };
    // What it takes to have relayguard called at RCPT or at the end of the message.
    const std::string rcpt_fix = "add check_policy_service to smtpd_recipient_restrictions (Postfix) or call relayguard "
                                 "from acl_smtp_rcpt (Exim), and add \"RCPT\" to rate_limits.hooked_at";
    const std::string eom_fix = "add check_policy_service to smtpd_end_of_data_restrictions (Postfix) or call "
                                "relayguard from acl_smtp_data (Exim), and add \"END-OF-MESSAGE\" to rate_limits.hooked_at";

    for (std::size_t i = 0; i < config_.limits.size(); ++i) {
        const LimitConfig& l = config_.limits[i];
        const std::string key = element_key("limit", i);
        const std::string name = "limit " + quoted(l.name);
        if (!l.enabled) {
            if (l.shadow) warn(line_of_key(key + ".shadow"), key + ".shadow", "has no effect while the limit is disabled");
            continue;
        }
        const unsigned unit_line = line_of_key(key + ".unit");
        if (l.unit == LimitUnit::bytes && !hooked(ProtocolState::end_of_message))
            warn(unit_line, key + ".unit",
                 name + " counts bytes, which are only known at END-OF-MESSAGE, but rate_limits.hooked_at does not list it: " + eom_fix);
        else if (l.unit == LimitUnit::recipients && !hooked(ProtocolState::rcpt))
            warn(unit_line, key + ".unit",
                 name + " counts recipients, which are only known at RCPT, but rate_limits.hooked_at does not list it: " + rcpt_fix);
        if (l.key == LimitKey::recipient_domain) {
            const unsigned key_line = line_of_key(key + ".key");
            if (l.unit != LimitUnit::recipients && !hooked(ProtocolState::rcpt))
                warn(key_line, key + ".key",
                     name + " is keyed by recipient_domain, which is only known at RCPT, but rate_limits.hooked_at does not "
                            "list it: " + rcpt_fix);
            // SMTPD_POLICY_README: at END-OF-MESSAGE `recipient` is set only when there is exactly one.
            if (l.unit == LimitUnit::bytes)
                warn(key_line, key + ".key",
                     name + " counts bytes per recipient_domain, but at END-OF-MESSAGE the MTA names the recipient only "
                            "of a message that has exactly one: messages to several recipients are not counted");
        }
    }
}

// warn_store - store settings that do nothing where they are.
void Loader::warn_store()
{
    const auto& st = config_.store;
    if (seen("store.defer_reply") && st.defer_reply != default_store_defer_reply && st.on_error != StoreConfig::OnError::defer)
        warn(line_of_key("store.defer_reply"), "store.defer_reply", "has no effect unless store.on_error = \"defer\"");
    if (st.type == StoreConfig::Type::embedded) {
        if (seen("store.redis"))
            warn(line_of_key("store.redis"), "store.redis",
                 "ignored: store.type is \"embedded\" (set store.type = \"redis\" to keep the counters in Redis)");
        return;
    }
    const auto& r = st.redis;
    if (!r.address.starts_with("tls:")) {
        for (const char* name : {"store.redis.tls_ca_file", "store.redis.tls_cert_file", "store.redis.tls_key_file",
                                 "store.redis.tls_server_name", "store.redis.tls_verify"})
            if (seen(name)) warn(line_of_key(name), name, "has no effect: store.redis.address is not a tls: address");
    } else if (!r.tls_verify) {
        warn(line_of_key("store.redis.tls_verify"), "store.redis.tls_verify",
             "false: the Redis server's certificate is not checked, so anyone on the network path can pose as it "
             "(only for tests)");
    }
}

} // namespace

boost::system::result<Config, ConfigError> parse_config(std::string_view text, const std::string& path,
                                                       std::vector<std::string>* warnings)
{
    toml::table root;
    try {
        root = toml::parse(text, std::string_view(path));
    } catch (const toml::parse_error& e) {
        std::string message(e.description());
        if (!message.empty() && message[0] >= 'A' && message[0] <= 'Z') message[0] = static_cast<char>(message[0] - 'A' + 'a');
        return ConfigError{path, e.source().begin.line, "", "invalid TOML: " + message};
    }

    return Loader(path).load(root, warnings);
}

boost::system::result<Config, ConfigError> load_config(const std::string& path, std::vector<std::string>* warnings)
{
    const std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) return ConfigError{path, 0, "", std::string("cannot open: ") + std::strerror(errno)};
    std::string text;
    char buf[8192];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0) text.append(buf, n);
    // fopen() succeeds on a directory; the read is what fails (EISDIR).
    if (std::ferror(file.get())) return ConfigError{path, 0, "", std::string("cannot read: ") + std::strerror(errno)};
    return parse_config(text, path, warnings);
}

} // namespace relayguard
