// SPDX-License-Identifier: MIT
// support.cpp - Redis calls, key values, text formatting and output for the ctl commands.
//
// Single-threaded (relayguardctl's main thread). Key values go through the daemon's own
// normalization (policy/key_values.hpp), so that what an operator types lands on the keys the
// daemon reads.
#include "ctl/support.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include <fmt/core.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/net.hpp>
#include <relayguard/strings.hpp>

#include "policy/key_values.hpp"

namespace relayguard::ctl {
namespace {

// Keys asked of each SCAN step: few round trips, and Redis stays responsive to the daemons.
constexpr std::string_view scan_count = "1000";
// Most keys one listing collects: far beyond any real set of overrides or owner maps; only
// bounds what a confused or hostile Redis can make us hold.
constexpr std::size_t max_scan_keys = 1'000'000;
// Most bytes of one untrusted value in human output.
constexpr std::size_t max_shown_bytes = 512;
// Longest limit name (the config's rule).
constexpr std::size_t max_limit_name_bytes = 64;
// Most characters a login, address or domain argument may have: far beyond RFC 5321's 256-byte
// path, short of anything that is not a mistake.
constexpr std::size_t max_key_arg_bytes = 1024;

constexpr std::int64_t micros_per_second = 1'000'000;

// Captures what the redis::Client logs (it logs to spdlog) instead of printing it: the
// operator gets one clear line from connect_error(), not the client's retry log.
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    std::string last_warning() const
    {
        std::lock_guard lock(last_mutex_);
        return last_;
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override
    {
        if (msg.level < spdlog::level::warn) return;
        std::lock_guard lock(last_mutex_);
        last_.assign(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}

private:
    mutable std::mutex last_mutex_;
    std::string last_;
};

std::shared_ptr<CaptureSink>& capture_sink()
{
    static std::shared_ptr<CaptureSink> sink;
    return sink;
}

std::string command_name(const std::vector<std::string_view>& args)
{
    return args.empty() ? std::string() : ascii_lower(args.front());
}

constexpr bool safe_key_byte(unsigned char c) noexcept
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '@' ||
           c == '.' || c == '_' || c == '+' || c == '/' || c == ':' || c == '-';
}

int hex_value(char c) noexcept
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1; // escape_key_value() writes upper case only
}

bool has_control(std::string_view s) noexcept
{
    return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// client_network - the network of a --client argument (validated already).
Cidr client_network(std::string_view text)
{
    auto net = parse_cidr(text);
    return net ? *net : Cidr{};
}

} // namespace

// ---- output ----

void Output::text(std::string_view s) const
{
    if (json_) return;
    std::fwrite(s.data(), 1, s.size(), out_);
}

void Output::emit(const Json& value) const
{
    if (!json_) return;
    std::string line = value.dump();
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), out_);
}

void Output::error(std::string_view message) const { fmt::print(err_, "relayguardctl: {}\n", message); }

void Output::note(std::string_view message) const
{
    if (!json_) fmt::print(err_, "note: {}\n", message);
}

// ---- logging ----

void capture_logs()
{
    auto sink = std::make_shared<CaptureSink>();
    capture_sink() = sink;
    auto logger = std::make_shared<spdlog::logger>("relayguardctl", sink);
    logger->set_level(spdlog::level::warn);
    spdlog::set_default_logger(std::move(logger));
}

std::string connect_error()
{
    const auto& sink = capture_sink();
    if (!sink) return {};
    std::string text = sink->last_warning();
    // "redis LABEL: cannot connect: REASON; retrying" -> REASON
    constexpr std::string_view marker = "cannot connect: ";
    if (auto at = text.find(marker); at != std::string::npos) text.erase(0, at + marker.size());
    if (text.ends_with("; retrying")) text.resize(text.size() - std::string_view("; retrying").size());
    return text;
}

std::string operator_name(std::string_view by)
{
    if (!by.empty()) return "operator " + std::string(by);
    if (const char* sudo = std::getenv("SUDO_USER"); sudo && *sudo) return fmt::format("operator {}", sudo);
    if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_name) return fmt::format("operator {}", pw->pw_name);
    return fmt::format("operator uid {}", ::getuid());
}

std::optional<std::chrono::seconds> parse_duration(std::string_view text) noexcept
{
    // Nine digits: more than any suspension needs, and no overflow once multiplied by a week.
    constexpr std::size_t max_digits = 9;
    std::size_t digits = 0;
    std::int64_t n = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
        n = n * 10 + (text[digits] - '0');
        if (++digits > max_digits) return std::nullopt;
    }
    if (digits == 0) return std::nullopt;
    const std::string_view unit = text.substr(digits);
    std::int64_t scale = 0;
    if (unit.empty() || unit == "s") scale = 1;
    else if (unit == "m") scale = 60;
    else if (unit == "h") scale = 3600;
    else if (unit == "d") scale = 86400;
    else if (unit == "w") scale = 7 * 86400;
    else return std::nullopt;
    return std::chrono::seconds(n * scale);
}

// ---- redis ----

boost::asio::awaitable<std::optional<redis::Reply>> call(Session& s, std::vector<std::string_view> args)
{
    const std::string name = command_name(args);
    auto reply = co_await s.client->command(std::move(args));
    if (!reply) {
        s.out.error(fmt::format("redis {}: {}: {}", s.config.store.redis.address, name, reply.error().message()));
        co_return std::nullopt;
    }
    if (reply->is_error()) {
        s.out.error(fmt::format("redis {}: {}: {}", s.config.store.redis.address, name, show(reply->str)));
        co_return std::nullopt;
    }
    co_return std::move(*reply);
}

boost::asio::awaitable<std::optional<std::vector<std::string>>> scan_keys(Session& s, const std::string& pattern)
{
    std::vector<std::string> keys;
    std::string cursor = "0";
    do {
        auto reply = co_await call(s, args_of("SCAN", cursor, "MATCH", pattern, "COUNT", scan_count));
        if (!reply) co_return std::nullopt;
        if (reply->type != redis::Reply::Type::array || reply->elements.size() != 2 ||
            reply->elements[0].type != redis::Reply::Type::string) {
            s.out.error(fmt::format("redis {}: scan: unexpected reply", s.config.store.redis.address));
            co_return std::nullopt;
        }
        cursor = reply->elements[0].str;
        for (auto& key : strings_of(reply->elements[1])) keys.push_back(std::move(key));
        if (keys.size() > max_scan_keys) {
            s.out.error(fmt::format("more than {} keys match {}; giving up", max_scan_keys, show(pattern)));
            co_return std::nullopt;
        }
    } while (cursor != "0");
    // SCAN may return a key more than once (the table can be rehashed between steps).
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    co_return keys;
}

boost::asio::awaitable<std::optional<std::int64_t>> redis_time_us(Session& s)
{
    auto reply = co_await call(s, args_of("TIME"));
    if (!reply) co_return std::nullopt;
    const auto parts = strings_of(*reply);
    if (parts.size() == 2) {
        char* end1 = nullptr;
        char* end2 = nullptr;
        const long long sec = std::strtoll(parts[0].c_str(), &end1, 10);
        const long long usec = std::strtoll(parts[1].c_str(), &end2, 10);
        if (*end1 == '\0' && *end2 == '\0' && !parts[0].empty() && !parts[1].empty())
            co_return static_cast<std::int64_t>(sec) * micros_per_second + usec;
    }
    s.out.error(fmt::format("redis {}: time: unexpected reply", s.config.store.redis.address));
    co_return std::nullopt;
}

std::vector<std::string> strings_of(const redis::Reply& reply)
{
    std::vector<std::string> out;
    if (reply.type != redis::Reply::Type::array) return out;
    out.reserve(reply.elements.size());
    for (const auto& e : reply.elements)
        if (e.type == redis::Reply::Type::string) out.push_back(e.str);
    return out;
}

std::vector<std::pair<std::string, std::string>> pairs_of(const redis::Reply& reply)
{
    std::vector<std::pair<std::string, std::string>> out;
    if (reply.type != redis::Reply::Type::array) return out;
    const auto& e = reply.elements;
    for (std::size_t i = 0; i + 1 < e.size(); i += 2) {
        if (e[i].type != redis::Reply::Type::string || e[i + 1].type != redis::Reply::Type::string) continue;
        out.emplace_back(e[i].str, e[i + 1].str);
    }
    return out;
}

std::optional<std::string> field(const std::vector<std::pair<std::string, std::string>>& pairs, std::string_view name)
{
    for (const auto& [k, v] : pairs)
        if (k == name) return v;
    return std::nullopt;
}

// ---- key names ----

std::string glob_escape(std::string_view text)
{
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
        out += c;
    }
    return out;
}

std::optional<std::string> unescape_key_value(std::string_view escaped)
{
    std::string out;
    out.reserve(escaped.size());
    for (std::size_t i = 0; i < escaped.size(); ++i) {
        const char c = escaped[i];
        if (c != '%') {
            if (!safe_key_byte(static_cast<unsigned char>(c))) return std::nullopt;
            out += c;
            continue;
        }
        if (i + 2 >= escaped.size()) return std::nullopt;
        const int hi = hex_value(escaped[i + 1]);
        const int lo = hex_value(escaped[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

std::optional<std::pair<LimitKey, std::string>> parse_override_key(std::string_view prefix, std::string_view key)
{
    if (!key.starts_with(prefix)) return std::nullopt;
    key.remove_prefix(prefix.size());
    if (!key.starts_with('{') || !key.ends_with("}:o")) return std::nullopt;
    key = key.substr(1, key.size() - 4);
    const auto colon = key.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string_view tag = key.substr(0, colon);
    for (LimitKey k : {LimitKey::sasl_username, LimitKey::sender, LimitKey::sender_domain, LimitKey::client_address,
                       LimitKey::recipient_domain, LimitKey::global}) {
        if (key_tag(k) != tag) continue;
        auto value = unescape_key_value(key.substr(colon + 1));
        if (!value) return std::nullopt;
        return std::make_pair(k, std::move(*value));
    }
    return std::nullopt;
}

std::optional<std::string> parse_owners_key(std::string_view prefix, std::string_view key)
{
    if (!key.starts_with(prefix)) return std::nullopt;
    key.remove_prefix(prefix.size());
    constexpr std::string_view open = "{own:";
    if (!key.starts_with(open) || !key.ends_with('}')) return std::nullopt;
    return unescape_key_value(key.substr(open.size(), key.size() - open.size() - 1));
}

// ---- key values ----

std::optional<std::string> validate_key_arg(const KeyArg& key)
{
    const std::string_view option = key_option(key.key);
    if (key.key == LimitKey::global) return std::nullopt;
    const std::string_view text = key.text;
    if (text.empty()) return fmt::format("{} needs a value", option);
    if (text.size() > max_key_arg_bytes) return fmt::format("{}: value longer than {} bytes", option, max_key_arg_bytes);
    if (has_control(text)) return fmt::format("{}: value contains a control character", option);
    switch (key.key) {
    case LimitKey::sasl_username: return std::nullopt;
    case LimitKey::sender:
        if (text == "<>") return fmt::format("{}: the null sender <> is never counted", option);
        return std::nullopt;
    case LimitKey::sender_domain:
    case LimitKey::recipient_domain:
        if (text.find('@') != std::string_view::npos)
            return fmt::format("{}: give a domain (example.com), not an address", option);
        if (domain_key_value(text).empty()) return fmt::format("{}: empty domain", option);
        return std::nullopt;
    case LimitKey::client_address:
        if (!parse_cidr(text))
            return fmt::format("{}: '{}' is not an IP address or network (192.0.2.7, 192.0.2.0/24, 2001:db8::/64)",
                               option, show(text));
        return std::nullopt;
    case LimitKey::global: return std::nullopt;
    }
    return std::nullopt;
}

KeyValue override_value(const KeyArg& key, const Config& config)
{
    KeyValue kv;
    switch (key.key) {
    case LimitKey::sasl_username:
        kv.value = login_key_value(key.text);
        kv.parent = parent_key_value(kv.value);
        break;
    case LimitKey::sender:
        kv.value = sender_key_value(key.text, config.address);
        kv.parent = parent_key_value(kv.value);
        break;
    case LimitKey::sender_domain:
    case LimitKey::recipient_domain: kv.value = domain_key_value(key.text); break;
    case LimitKey::client_address: kv.value = client_network(key.text).to_string(); break;
    case LimitKey::global: break;
    }
    // "@example.com" names the domain level itself: it has no parent of its own.
    if (kv.parent == kv.value) kv.parent.clear();
    return kv;
}

std::optional<KeyValue> counted_value(const KeyArg& key, const LimitConfig& limit, const Config& config,
                                      std::string* why)
{
    if (key.key != LimitKey::client_address) return override_value(key, config);
    const Cidr net = client_network(key.text);
    const unsigned prefix = net.network.is_v4() ? limit.prefix_v4 : limit.prefix_v6;
    if (net.prefix < prefix) {
        if (why)
            *why = fmt::format("{} is wider than the /{} networks limit {} counts", net.to_string(), prefix, limit.name);
        return std::nullopt;
    }
    return KeyValue{client_key_value(net.network, prefix), {}};
}

std::optional<std::string> override_fits(const KeyArg& key, const LimitConfig& limit)
{
    if (key.key != LimitKey::client_address) return std::nullopt;
    const Cidr net = client_network(key.text);
    const bool v4 = net.network.is_v4();
    const unsigned prefix = v4 ? limit.prefix_v4 : limit.prefix_v6;
    if (net.prefix == prefix) return std::nullopt;
    const std::string wanted = client_key_value(net.network, prefix);
    if (net.prefix > prefix)
        return fmt::format("limit {} counts {} clients per /{} network, so an override of {} would never apply; "
                           "use --client {}",
                           limit.name, v4 ? "IPv4" : "IPv6", prefix, net.to_string(), wanted);
    return fmt::format("limit {} counts {} clients per /{} network, so an override of {} would never apply; "
                       "set one per /{} network (e.g. --client {})",
                       limit.name, v4 ? "IPv4" : "IPv6", prefix, net.to_string(), prefix, wanted);
}

const LimitConfig* find_limit(const Config& config, std::string_view name) noexcept
{
    for (const auto& limit : config.limits)
        if (limit.name == name) return &limit;
    return nullptr;
}

std::string limit_names(const Config& config)
{
    std::string out;
    for (const auto& limit : config.limits) {
        if (!out.empty()) out += ", ";
        out += limit.name;
    }
    return out.empty() ? std::string("none") : out;
}

bool valid_limit_name(std::string_view name) noexcept
{
    if (name.empty() || name.size() > max_limit_name_bytes) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

std::string_view key_noun(LimitKey key) noexcept
{
    switch (key) {
    case LimitKey::sasl_username: return "login";
    case LimitKey::sender: return "sender";
    case LimitKey::sender_domain: return "sender domain";
    case LimitKey::client_address: return "network";
    case LimitKey::recipient_domain: return "recipient domain";
    case LimitKey::global: return "global";
    }
    return "key";
}

std::string_view key_option(LimitKey key) noexcept
{
    switch (key) {
    case LimitKey::sasl_username: return "--login";
    case LimitKey::sender: return "--sender";
    case LimitKey::sender_domain: return "--sender-domain";
    case LimitKey::client_address: return "--client";
    case LimitKey::recipient_domain: return "--recipient-domain";
    case LimitKey::global: return "--global";
    }
    return "--key";
}

std::string describe_key(LimitKey key, std::string_view value)
{
    if (key == LimitKey::global) return "global";
    return fmt::format("{} {}", key_noun(key), show(value));
}

// ---- text ----

std::string show(std::string_view untrusted)
{
    static constexpr char hex[] = "0123456789abcdef";
    const bool cut = untrusted.size() > max_shown_bytes;
    if (cut) untrusted = untrusted.substr(0, max_shown_bytes);
    std::string out;
    out.reserve(untrusted.size());
    for (const unsigned char c : untrusted) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
    if (cut) out += "...";
    return out;
}

std::string format_duration_us(std::int64_t us)
{
    if (us <= 0) return "0s";
    if (us < 10 * micros_per_second) {
        // Tenths, rounded up: "full in 0.1s" rather than a misleading "0s".
        const std::int64_t tenths = (us + micros_per_second / 10 - 1) / (micros_per_second / 10);
        if (tenths % 10 == 0) return fmt::format("{}s", tenths / 10);
        return fmt::format("{}.{}s", tenths / 10, tenths % 10);
    }
    std::int64_t s = (us + micros_per_second - 1) / micros_per_second;
    const std::int64_t d = s / 86400;
    s %= 86400;
    const std::int64_t h = s / 3600;
    s %= 3600;
    const std::int64_t m = s / 60;
    s %= 60;
    std::string out;
    if (d) out += fmt::format("{}d", d);
    if (h) out += fmt::format("{}h", h);
    if (m && !d) out += fmt::format("{}m", m);
    if (s && !d && !h) out += fmt::format("{}s", s);
    return out.empty() ? std::string("0s") : out;
}

std::string format_unix_time(std::int64_t seconds)
{
    const std::time_t t = static_cast<std::time_t>(seconds);
    std::tm tm{};
    if (!::gmtime_r(&t, &tm)) return std::to_string(seconds);
    char buf[64];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return n ? std::string(buf, n) : std::to_string(seconds);
}

std::string rate_text(const Rate& rate) { return fmt::format("{}/{}s", rate.count, rate.period.count()); }

std::string_view source_name(OpOutcome::Source source) noexcept
{
    switch (source) {
    case OpOutcome::Source::config: return "config";
    case OpOutcome::Source::override_value: return "override";
    case OpOutcome::Source::override_parent: return "parent_override";
    }
    return "config";
}

std::string source_text(OpOutcome::Source source, LimitKey key, std::string_view parent)
{
    switch (source) {
    case OpOutcome::Source::config: return "config default";
    case OpOutcome::Source::override_value: return fmt::format("{} override", key_noun(key));
    case OpOutcome::Source::override_parent: return fmt::format("domain override ({})", show(parent));
    }
    return "config default";
}

Json windows_json(const OpOutcome& outcome)
{
    Json windows = Json::array();
    for (const auto& w : outcome.windows) {
        Json j = Json::object();
        j.set("rate", rate_text(w.rate));
        j.set("count", w.rate.count);
        j.set("period_s", static_cast<std::int64_t>(w.rate.period.count()));
        j.set("used", w.rate.count - std::min(w.remaining, w.rate.count));
        j.set("remaining", w.remaining);
        j.set("full_in_ms", (w.full_in_us + 999) / 1000);
        windows.push(std::move(j));
    }
    return windows;
}

} // namespace relayguard::ctl
