// SPDX-License-Identifier: MIT
// admin_commands.cpp - relayguardctl suspend|unsuspend|suspended, owners and domains.
//
// The Redis side of suspensions, sender owners and local domains, exactly as key_schema.hpp
// lays them out: a suspension is a hash that expires by itself at "until" plus an entry in the
// {suspended} index (written together in MULTI/EXEC); owners and domains are plain sets, read
// by the daemon on its next request. Times come from Redis (TIME), the clock the daemons share.
// Single-threaded.
#include <algorithm>
#include <chrono>
#include <cstdint>

#include <fmt/core.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/live_store.hpp>
#include <relayguard/maps.hpp>

#include "ctl/support.hpp"
#include "ratelimit/live_buckets.hpp"
#include "policy/key_values.hpp"

namespace relayguard::ctl {
namespace {

namespace asio = boost::asio;

constexpr std::int64_t micros_per_second = 1'000'000;

bool has_control(std::string_view s) noexcept
{
    return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

bool has_space_or_comma(std::string_view s) noexcept
{
    return std::any_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == ',' || c == '\t'; });
}

// login_error - why `login` cannot be a login here (a usage error), or nullopt.
std::optional<std::string> login_error(std::string_view login)
{
    if (login.empty()) return std::string("empty login");
    if (has_control(login)) return fmt::format("login '{}' contains a control character", show(login));
    if (has_space_or_comma(login)) return fmt::format("login '{}' contains a space or comma", show(login));
    return std::nullopt;
}

// owner_key - an owners key as stored: "@domain" or an address, lower case (key_schema.hpp).
// nullopt and *why when it is neither.
std::optional<std::string> owner_key(std::string_view text, std::string* why)
{
    const auto at = text.rfind('@');
    if (text.empty() || at == std::string_view::npos || at + 1 == text.size() || has_control(text) ||
        has_space_or_comma(text)) {
        *why = fmt::format("'{}' is not an address or @domain", show(text));
        return std::nullopt;
    }
    if (at == 0) {
        const std::string domain = domain_key_value(text.substr(1));
        if (domain.empty()) {
            *why = fmt::format("'{}' has an empty domain", show(text));
            return std::nullopt;
        }
        return "@" + domain;
    }
    // Lower case whole: the schema's rule, whatever local_part_case_sensitive says.
    AddressConfig folded;
    folded.local_part_case_sensitive = false;
    return normalize_address(text, folded);
}

std::optional<std::string> domain_error(std::string_view text)
{
    if (text.empty() || domain_key_value(text).empty()) return std::string("empty domain");
    if (has_control(text) || has_space_or_comma(text) || text.find('@') != std::string_view::npos)
        return fmt::format("'{}' is not a domain", show(text));
    if (text == ".") return std::string("'.' is not a domain");
    return std::nullopt;
}

struct Suspension {
    std::string login;
    std::string reason;
    std::int64_t since = 0;
    std::int64_t until = 0; // 0: until lifted
    std::string by;
};

std::int64_t to_int(const std::optional<std::string>& text)
{
    if (!text) return 0;
    char* end = nullptr;
    const long long v = std::strtoll(text->c_str(), &end, 10);
    return *end == '\0' ? v : 0;
}

Suspension suspension_of(std::string login, const std::vector<std::pair<std::string, std::string>>& fields)
{
    Suspension out;
    out.login = std::move(login);
    out.reason = field(fields, "reason").value_or("");
    out.since = to_int(field(fields, "since"));
    out.until = to_int(field(fields, "until"));
    out.by = field(fields, "by").value_or("");
    return out;
}

Json suspension_json(const Suspension& x)
{
    Json j = Json::object();
    j.set("login", x.login);
    j.set("suspended", true);
    j.set("reason", x.reason);
    j.set("since", x.since);
    j.set("until", x.until);
    j.set("by", x.by);
    return j;
}

std::string until_text(std::int64_t until, std::int64_t now_s)
{
    if (until == 0) return "until lifted";
    return fmt::format("until {} (in {})", format_unix_time(until),
                       format_duration_us((until - now_s) * micros_per_second));
}

// exec_ok - an EXEC reply without an error inside (nil: the transaction was aborted).
bool exec_ok(Session& s, const redis::Reply& reply)
{
    if (reply.type != redis::Reply::Type::array) {
        s.out.error(fmt::format("redis {}: exec: transaction not executed", s.config.store.redis.address));
        return false;
    }
    for (const auto& e : reply.elements)
        if (e.is_error()) {
            s.out.error(fmt::format("redis {}: exec: {}", s.config.store.redis.address, show(e.str)));
            return false;
        }
    return true;
}

// transaction - MULTI, `commands`, EXEC; the EXEC reply, or nullopt after a reported failure.
// A failure in between DISCARDs, so the connection is not left inside MULTI.
asio::awaitable<std::optional<redis::Reply>> transaction(Session& s,
                                                         const std::vector<std::vector<std::string>>& commands)
{
    if (!co_await call(s, args_of("MULTI"))) co_return std::nullopt;
    for (const auto& command : commands) {
        std::vector<std::string_view> args(command.begin(), command.end());
        if (!co_await call(s, std::move(args))) {
            co_await s.client->command(args_of("DISCARD"));
            co_return std::nullopt;
        }
    }
    auto reply = co_await call(s, args_of("EXEC"));
    if (!reply || !exec_ok(s, *reply)) co_return std::nullopt;
    co_return reply;
}

} // namespace

asio::awaitable<int> suspend(Session& s, std::string_view login_text, std::string_view reason,
                             std::optional<std::chrono::seconds> duration, std::string_view by)
{
    if (auto why = login_error(login_text)) {
        s.out.error(*why);
        co_return exit_usage;
    }
    if (login_text.starts_with('@')) {
        s.out.error("suspend takes a login, not a domain");
        co_return exit_usage;
    }
    if (reason.empty() || reason.size() > max_reason_bytes || has_control(reason)) {
        s.out.error(fmt::format("--reason: give one line of text, at most {} bytes", max_reason_bytes));
        co_return exit_usage;
    }
    const std::string login = login_key_value(login_text);
    const std::string& prefix = s.config.store.key_prefix;
    auto now = co_await redis_time_us(s);
    if (!now) co_return exit_failure;

    Suspension x;
    x.login = login;
    x.reason = std::string(reason);
    x.since = *now / micros_per_second;
    // Rounded up to whole seconds: the suspension lasts at least the duration asked for.
    if (duration)
        x.until = (*now + duration->count() * micros_per_second + micros_per_second - 1) / micros_per_second;
    x.by = operator_name(by);

    const std::string key = suspension_key(prefix, login);
    std::vector<std::vector<std::string>> commands;
    // DEL first: a new suspension replaces an old one whole, TTL included.
    const std::string since = std::to_string(x.since);
    const std::string until = std::to_string(x.until);
    commands.push_back(strings_of_args("DEL", key));
    commands.push_back(strings_of_args("HSET", key, "reason", x.reason, "since", since, "until", until, "by", x.by));
    if (x.until != 0) commands.push_back(strings_of_args("EXPIREAT", key, until));
    commands.push_back(strings_of_args("ZADD", suspended_index_key(prefix), since, login));
    if (!co_await transaction(s, commands)) co_return exit_failure;

    s.out.text(fmt::format("login {} suspended {} by {}: {}\n", show(login), until_text(x.until, x.since),
                           show(x.by), show(x.reason)));
    s.out.emit(suspension_json(x));
    co_return exit_ok;
}

namespace {

// ladder_state_keys - DEL of every key the compromise ladder keeps for `login`: its signal
// buckets (the window's four, the one in progress and one ahead, for a clock a little apart
// from the daemons') and its event markers.
std::vector<std::string> ladder_state_keys(const std::string& prefix, const std::string& login,
                                           std::chrono::seconds window)
{
    std::vector<std::string> del{"DEL"};
    const std::int64_t length = detail::bucket_length(window);
    const std::int64_t now = detail::bucket_index(system_clock().now_us(), length);
    for (Signal signal : {Signal::networks, Signal::recipient_domains, Signal::rate_refusals}) {
        for (std::int64_t b = now - static_cast<std::int64_t>(signal_buckets); b <= now + 1; ++b)
            del.push_back(signal_key(prefix, login, signal_name(signal), b));
    }
    for (std::string_view what : {"warn", "hold", "suspend", "shadow_warn", "shadow_hold", "shadow_suspend"})
        del.push_back(event_key(prefix, login, what));
    return del;
}

} // namespace

asio::awaitable<int> unsuspend(Session& s, std::string_view login_text)
{
    if (auto why = login_error(login_text)) {
        s.out.error(*why);
        co_return exit_usage;
    }
    const std::string login = login_key_value(login_text);
    const std::string& prefix = s.config.store.key_prefix;
    std::vector<std::vector<std::string>> commands;
    commands.push_back(strings_of_args("DEL", suspension_key(prefix, login)));
    commands.push_back(strings_of_args("ZREM", suspended_index_key(prefix), login));
    // The compromise ladder starts afresh: without this, the counts that suspended the login
    // (still inside their window) would suspend it again at its next request after the password
    // change, and the "already reported" markers would keep that second time silent.
    commands.push_back(ladder_state_keys(prefix, login, s.config.compromise.window));
    auto reply = co_await transaction(s, commands);
    if (!reply) co_return exit_failure;
    const bool was = !reply->elements.empty() && reply->elements[0].integer > 0;
    if (!was) {
        s.out.error(fmt::format("login {} is not suspended", show(login)));
        co_return exit_failure;
    }
    s.out.text(fmt::format("login {} unsuspended\n", show(login)));
    Json j = Json::object();
    j.set("login", login);
    j.set("suspended", false);
    s.out.emit(j);
    co_return exit_ok;
}

// suspended - the index, each entry checked against its hash: an entry whose hash has expired
// (a suspension with --for that ran out) is stale and removed from the index on the way.
asio::awaitable<int> suspended(Session& s, const std::optional<std::string>& login_text)
{
    const std::string& prefix = s.config.store.key_prefix;
    auto now = co_await redis_time_us(s);
    if (!now) co_return exit_failure;
    const std::int64_t now_s = *now / micros_per_second;

    if (login_text) {
        if (auto why = login_error(*login_text)) {
            s.out.error(*why);
            co_return exit_usage;
        }
        const std::string login = login_key_value(*login_text);
        const std::string key = suspension_key(prefix, login);
        auto reply = co_await call(s, args_of("HGETALL", key));
        if (!reply) co_return exit_failure;
        const auto fields = pairs_of(*reply);
        if (fields.empty()) {
            s.out.text(fmt::format("login {} is not suspended\n", show(login)));
            Json j = Json::object();
            j.set("login", login);
            j.set("suspended", false);
            s.out.emit(j);
            co_return exit_failure;
        }
        const Suspension x = suspension_of(login, fields);
        s.out.text(fmt::format("login {} suspended since {} {} by {}: {}\n", show(x.login), format_unix_time(x.since),
                               until_text(x.until, now_s), show(x.by), show(x.reason)));
        s.out.emit(suspension_json(x));
        co_return exit_ok;
    }

    const std::string index = suspended_index_key(prefix);
    auto reply = co_await call(s, args_of("ZRANGE", index, "0", "-1"));
    if (!reply) co_return exit_failure;
    std::vector<Suspension> list;
    for (auto& login : strings_of(*reply)) {
        const std::string key = suspension_key(prefix, login);
        auto fields = co_await call(s, args_of("HGETALL", key));
        if (!fields) co_return exit_failure;
        auto pairs = pairs_of(*fields);
        if (pairs.empty()) {
            if (!co_await call(s, args_of("ZREM", index, login))) co_return exit_failure;
            continue;
        }
        list.push_back(suspension_of(std::move(login), pairs));
    }

    std::string text;
    Json array = Json::array();
    for (const auto& x : list) {
        text += fmt::format("{}\n  since {}, {}\n  by {}: {}\n", show(x.login), format_unix_time(x.since),
                            until_text(x.until, now_s), show(x.by), show(x.reason));
        array.push(suspension_json(x));
    }
    if (list.empty()) text = "no login is suspended\n";
    s.out.text(text);
    Json doc = Json::object();
    doc.set("suspended", std::move(array));
    s.out.emit(doc);
    co_return exit_ok;
}

asio::awaitable<int> owners_change(Session& s, bool add, std::string_view key_text,
                                   const std::vector<std::string>& login_texts)
{
    std::string why;
    const auto key = owner_key(key_text, &why);
    if (!key) {
        s.out.error(why);
        co_return exit_usage;
    }
    std::vector<std::string> logins;
    for (const auto& text : login_texts) {
        if (auto error = login_error(text)) {
            s.out.error(*error);
            co_return exit_usage;
        }
        logins.push_back(login_key_value(text));
    }
    const std::string set = owners_key(s.config.store.key_prefix, *key);
    std::vector<std::string_view> args{add ? "SADD" : "SREM", set};
    for (const auto& login : logins) args.push_back(login);
    auto reply = co_await call(s, std::move(args));
    if (!reply) co_return exit_failure;
    const long long changed = reply->integer;

    Json j = Json::object();
    j.set("owner_of", *key);
    j.set(add ? "added" : "removed", changed);
    if (!add && changed == 0) {
        s.out.error(fmt::format("none of these logins owns {}", show(*key)));
        s.out.emit(j);
        co_return exit_failure;
    }
    s.out.text(fmt::format("{}: {} {} of {} login{}\n", show(*key), add ? "added" : "removed", changed, logins.size(),
                           logins.size() == 1 ? "" : "s"));
    s.out.emit(j);
    co_return exit_ok;
}

asio::awaitable<int> owners_list(Session& s, const std::optional<std::string>& key_text)
{
    const std::string& prefix = s.config.store.key_prefix;
    std::vector<std::pair<std::string, std::string>> sets; // (address or @domain, Redis key)
    if (key_text) {
        std::string why;
        const auto key = owner_key(*key_text, &why);
        if (!key) {
            s.out.error(why);
            co_return exit_usage;
        }
        sets.emplace_back(*key, owners_key(prefix, *key));
    } else {
        const std::string pattern = glob_escape(prefix) + "{own:*}";
        auto keys = co_await scan_keys(s, pattern);
        if (!keys) co_return exit_failure;
        for (const auto& k : *keys)
            if (auto owned = parse_owners_key(prefix, k)) sets.emplace_back(std::move(*owned), k);
        std::sort(sets.begin(), sets.end());
    }

    std::string text;
    Json array = Json::array();
    for (const auto& [owned, redis_key] : sets) {
        auto reply = co_await call(s, args_of("SMEMBERS", redis_key));
        if (!reply) co_return exit_failure;
        auto logins = strings_of(*reply);
        if (logins.empty()) continue;
        std::sort(logins.begin(), logins.end());
        std::string joined;
        Json list = Json::array();
        for (const auto& login : logins) {
            if (!joined.empty()) joined += ", ";
            joined += show(login);
            list.push(login);
        }
        text += fmt::format("{}  {}\n", show(owned), joined);
        Json j = Json::object();
        j.set("owner_of", owned);
        j.set("logins", std::move(list));
        array.push(std::move(j));
    }
    Json doc = Json::object();
    doc.set("owners", std::move(array));
    if (text.empty()) {
        if (key_text) {
            s.out.error(fmt::format("no owners of {} in redis", show(sets.front().first)));
            s.out.emit(doc);
            co_return exit_failure;
        }
        text = "no owners stored\n";
    }
    s.out.text(text);
    s.out.emit(doc);
    co_return exit_ok;
}

asio::awaitable<int> domains_change(Session& s, bool add, const std::vector<std::string>& domain_texts)
{
    std::vector<std::string> domains;
    for (const auto& text : domain_texts) {
        if (auto why = domain_error(text)) {
            s.out.error(*why);
            co_return exit_usage;
        }
        domains.push_back(domain_key_value(text));
    }
    const std::string set = domains_key(s.config.store.key_prefix);
    std::vector<std::string_view> args{add ? "SADD" : "SREM", set};
    for (const auto& d : domains) args.push_back(d);
    auto reply = co_await call(s, std::move(args));
    if (!reply) co_return exit_failure;
    const long long changed = reply->integer;
    Json j = Json::object();
    j.set(add ? "added" : "removed", changed);
    if (!add && changed == 0) {
        s.out.error("none of these domains is a local domain in redis");
        s.out.emit(j);
        co_return exit_failure;
    }
    s.out.text(fmt::format("{} {} of {} domain{}\n", add ? "added" : "removed", changed, domains.size(),
                           domains.size() == 1 ? "" : "s"));
    s.out.emit(j);
    co_return exit_ok;
}

asio::awaitable<int> domains_list(Session& s)
{
    const std::string set = domains_key(s.config.store.key_prefix);
    auto reply = co_await call(s, args_of("SMEMBERS", set));
    if (!reply) co_return exit_failure;
    auto domains = strings_of(*reply);
    std::sort(domains.begin(), domains.end());
    std::string text;
    Json array = Json::array();
    for (const auto& d : domains) {
        text += show(d) + "\n";
        array.push(d);
    }
    if (domains.empty()) text = "no local domains stored in redis\n";
    s.out.text(text);
    Json doc = Json::object();
    doc.set("domains", std::move(array));
    s.out.emit(doc);
    co_return exit_ok;
}

} // namespace relayguard::ctl
