// SPDX-License-Identifier: MIT
// config.cpp - TOML file -> validated Config (see config.hpp).
//
// Walks the document in file order against a fixed schema: each table lists its keys with a
// reader for each, and anything else is an error. Rules that span keys run after the walk.
// The first error ends the load. Runs at start and on reload only, never on the request path,
// so toml++'s parse exception is caught here. Thread-safe (no shared state).
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

    bool check_config();
    void warn_duplicate(std::unordered_map<std::string, unsigned>& first, const std::string& value,
                        const toml::node& at, const std::string& key);

    std::string path_;
    Config config_;
    std::optional<ConfigError> error_;
    std::vector<std::string> warnings_;
    std::unordered_map<std::string, unsigned> lines_; // dotted key -> line, for every key in the file
    std::vector<unsigned> network_lines_;             // line of each checks.exempt.networks entry
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
        const auto field = std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.name == k->str(); });
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
        if (const auto near = closest_name(text, names)) message += " (did you mean \"" + std::string(*near) + "\"?)";
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

// check_config - rules that span keys, after every key has been read.
bool Loader::check_config()
{
    const auto& s = config_.server;
    if (!seen("server.listen"))
        return fail(line_of_key("server"), "server.listen",
                    "missing: at least one listener is required, e.g. listen = [\"inet:127.0.0.1:10033\"]");

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
        {"checks.auth_required", &a}, {"checks.plaintext_auth", &p}, {"checks.relay", &config_.relay}, {"checks.sender_ownership", &o}};
    for (const auto& [name, check] : checks) {
        const std::string shadow_key = std::string(name) + ".shadow";
        if (check->shadow && !check->enabled)
            warn(line_of_key(shadow_key), shadow_key, "has no effect while the check is disabled");
    }
    return true;
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
