// SPDX-License-Identifier: MIT
// limits_commands.cpp - relayguardctl limits set|get|unset|list, usage and reset.
//
// Overrides are fields of PREFIX{TAG:VALUE}:o (key_schema.hpp), written in canonical rate text
// (format_rate_spec) and read by the daemon's script on its next request. Usage is the daemon's
// own computation: the rate script with cost 0 and consume off (RedisStore::apply), so what is
// shown is exactly what the next request would see. Single-threaded.
#include <algorithm>
#include <map>
#include <set>

#include <fmt/core.h>

#include <relayguard/key_schema.hpp>
#include <relayguard/redis_store.hpp>
#include <relayguard/strings.hpp>

#include "ctl/support.hpp"

namespace relayguard::ctl {
namespace {

namespace asio = boost::asio;
using Source = OpOutcome::Source;

// The rates in effect for one key value and limit, computed from the stored overrides the way
// the rate script does: a valid override of the value, else a valid one of its parent, else
// the config's. An override that does not parse is ignored (and reported as such).
struct Effective {
    RateSpec spec;
    Source source = Source::config;
};

Effective effective_of(const LimitConfig& limit, const std::optional<std::string>& own,
                       const std::optional<std::string>& parent)
{
    if (own)
        if (auto spec = parse_rate_spec(*own)) return {std::move(*spec), Source::override_value};
    if (parent)
        if (auto spec = parse_rate_spec(*parent)) return {std::move(*spec), Source::override_parent};
    return {limit.rates, Source::config};
}

Json optional_text(const std::optional<std::string>& v) { return v ? Json(*v) : Json(); }

// stored_text - an override as shown: its text, and whether the daemon ignores it.
std::string stored_text(const std::optional<std::string>& v)
{
    if (!v) return "none";
    if (!parse_rate_spec(*v)) return fmt::format("'{}' (invalid, ignored)", show(*v));
    return show(*v);
}

// checked_limit - the limit an override command names, refused (reported, nullptr) when the
// config has no such limit or it is keyed by something else than `key`.
const LimitConfig* checked_limit(Session& s, const KeyArg& key, std::string_view name)
{
    const LimitConfig* limit = find_limit(s.config, name);
    if (!limit) {
        s.out.error(fmt::format("no limit {} in {} (limits: {})", show(name), s.config.path, limit_names(s.config)));
        return nullptr;
    }
    if (limit->key != key.key) {
        s.out.error(fmt::format("limit {} is keyed by {}, not {}: use {}", limit->name, limit_key_name(limit->key),
                                limit_key_name(key.key), key_option(limit->key)));
        return nullptr;
    }
    if (auto why = override_fits(key, *limit)) {
        s.out.error(*why);
        return nullptr;
    }
    return limit;
}

// hget - one hash field; nullopt inside: no such field. Outer nullopt: failed (reported).
asio::awaitable<std::optional<std::optional<std::string>>> hget(Session& s, const std::string& key,
                                                                 std::string_view name)
{
    auto reply = co_await call(s, args_of("HGET", key, name));
    if (!reply) co_return std::nullopt;
    if (reply->type == redis::Reply::Type::string) co_return std::optional<std::string>(reply->str);
    co_return std::optional<std::string>();
}

// hgetall - a hash as pairs (empty if it does not exist); nullopt: failed (reported).
asio::awaitable<std::optional<std::vector<std::pair<std::string, std::string>>>> hgetall(Session& s,
                                                                                         const std::string& key)
{
    auto reply = co_await call(s, args_of("HGETALL", key));
    if (!reply) co_return std::nullopt;
    co_return pairs_of(*reply);
}

// The limits of the config a key applies to: keyed by it, and named `only` if that is given.
// Reports and returns nullopt when `only` names no limit or one of another key.
std::optional<std::vector<const LimitConfig*>> limits_for(Session& s, const KeyArg& key, std::string_view only)
{
    std::vector<const LimitConfig*> out;
    if (!only.empty()) {
        const LimitConfig* limit = find_limit(s.config, only);
        if (!limit) {
            s.out.error(fmt::format("no limit {} in {} (limits: {})", show(only), s.config.path, limit_names(s.config)));
            return std::nullopt;
        }
        if (limit->key != key.key) {
            s.out.error(fmt::format("limit {} is keyed by {}, not {}: use {}", limit->name,
                                    limit_key_name(limit->key), limit_key_name(key.key), key_option(limit->key)));
            return std::nullopt;
        }
        out.push_back(limit);
        return out;
    }
    for (const auto& limit : s.config.limits)
        if (limit.key == key.key) out.push_back(&limit);
    return out;
}

// field_of_limit - whether a state hash field belongs to `limit`: every per-limit field of the
// schema is "X:LIMIT" or "X:LIMIT:PERIOD" (t: TAT, n: rate count, r: refusals), and a limit
// name never contains ':'.
bool field_of_limit(std::string_view field, std::string_view limit) noexcept
{
    const auto colon = field.find(':');
    if (colon == std::string_view::npos) return false;
    field.remove_prefix(colon + 1);
    return field.starts_with(limit) && (field.size() == limit.size() || field[limit.size()] == ':');
}

} // namespace

asio::awaitable<int> limits_set(Session& s, const KeyArg& key, std::string_view name, std::string_view rates)
{
    if (trim(rates) == "inherit") co_return co_await limits_unset(s, key, name);
    std::string why;
    auto spec = parse_rate_spec(rates, &why);
    if (!spec) {
        s.out.error(fmt::format("bad RATES '{}': {}", show(rates), why));
        co_return exit_usage;
    }
    const LimitConfig* limit = checked_limit(s, key, name);
    if (!limit) co_return exit_failure;
    const KeyValue kv = override_value(key, s.config);
    const std::string text = format_rate_spec(*spec);
    const std::string hash = override_key(s.config.store.key_prefix, key.key, kv.value);
    if (!co_await call(s, args_of("HSET", hash, limit->name, text))) co_return exit_failure;

    s.out.text(fmt::format("{}: {} = {} (override){}\n", describe_key(key.key, kv.value), limit->name, text,
                           limit->enabled ? "" : "; note: the limit is disabled in the config"));
    Json j = Json::object();
    j.set("key", limit_key_name(key.key));
    j.set("value", kv.value);
    j.set("limit", limit->name);
    j.set("override", text);
    s.out.emit(j);
    co_return exit_ok;
}

asio::awaitable<int> limits_get(Session& s, const KeyArg& key, std::string_view name)
{
    const LimitConfig* limit = checked_limit(s, key, name);
    if (!limit) co_return exit_failure;
    const KeyValue kv = override_value(key, s.config);
    const std::string& prefix = s.config.store.key_prefix;
    const std::string own_hash = override_key(prefix, key.key, kv.value);
    auto own = co_await hget(s, own_hash, limit->name);
    if (!own) co_return exit_failure;
    std::optional<std::string> parent;
    if (!kv.parent.empty()) {
        const std::string parent_hash = override_key(prefix, key.key, kv.parent);
        auto p = co_await hget(s, parent_hash, limit->name);
        if (!p) co_return exit_failure;
        parent = std::move(*p);
    }
    const Effective eff = effective_of(*limit, *own, parent);

    std::string text = fmt::format("{}, limit {} ({}):\n", describe_key(key.key, kv.value), limit->name,
                                   limit_unit_name(limit->unit));
    text += fmt::format("  override:         {}\n", stored_text(*own));
    if (!kv.parent.empty()) text += fmt::format("  domain override:  {} ({})\n", stored_text(parent), show(kv.parent));
    text += fmt::format("  config default:   {}\n", format_rate_spec(limit->rates));
    text += fmt::format("  in effect:        {}, from the {}\n", format_rate_spec(eff.spec),
                        source_text(eff.source, key.key, kv.parent));
    s.out.text(text);

    Json j = Json::object();
    j.set("key", limit_key_name(key.key));
    j.set("value", kv.value);
    j.set("limit", limit->name);
    j.set("unit", limit_unit_name(limit->unit));
    j.set("override", optional_text(*own));
    j.set("parent", kv.parent.empty() ? Json() : Json(kv.parent));
    j.set("parent_override", optional_text(parent));
    j.set("config", format_rate_spec(limit->rates));
    j.set("effective", format_rate_spec(eff.spec));
    j.set("source", source_name(eff.source));
    s.out.emit(j);
    co_return exit_ok;
}

// limits_unset - no check against the config: an override of a limit since removed or
// renamed, or of a network whose prefix no longer fits, must still be removable.
asio::awaitable<int> limits_unset(Session& s, const KeyArg& key, std::string_view name)
{
    if (!valid_limit_name(name)) {
        s.out.error(fmt::format("'{}' is not a limit name ([a-z0-9_-], at most 64 characters)", show(name)));
        co_return exit_usage;
    }
    const KeyValue kv = override_value(key, s.config);
    const std::string hash = override_key(s.config.store.key_prefix, key.key, kv.value);
    auto reply = co_await call(s, args_of("HDEL", hash, name));
    if (!reply) co_return exit_failure;
    const bool removed = reply->type == redis::Reply::Type::integer && reply->integer > 0;
    if (!removed) {
        s.out.error(fmt::format("{} has no override for {}", describe_key(key.key, kv.value), name));
        co_return exit_failure;
    }
    s.out.text(fmt::format("{}: {} override removed; it inherits again\n", describe_key(key.key, kv.value), name));
    Json j = Json::object();
    j.set("key", limit_key_name(key.key));
    j.set("value", kv.value);
    j.set("limit", name);
    j.set("override", Json());
    s.out.emit(j);
    co_return exit_ok;
}

// limits_list - with a key: every limit of that key, the rates in effect and their source,
// plus overrides stored for limits the config does not have. Without: every override stored.
asio::awaitable<int> limits_list(Session& s, const std::optional<KeyArg>& key)
{
    const std::string& prefix = s.config.store.key_prefix;
    if (!key) {
        const std::string pattern = glob_escape(prefix) + "{*}:o";
        auto keys = co_await scan_keys(s, pattern);
        if (!keys) co_return exit_failure;
        Json list = Json::array();
        std::string text;
        for (const auto& hash : *keys) {
            auto parsed = parse_override_key(prefix, hash);
            if (!parsed) continue;
            auto fields = co_await hgetall(s, hash);
            if (!fields) co_return exit_failure;
            std::sort(fields->begin(), fields->end());
            for (const auto& [limit, rates] : *fields) {
                const LimitConfig* cfg = find_limit(s.config, limit);
                std::string remark;
                if (!cfg)
                    remark = " (no such limit in the config)";
                else if (cfg->key != parsed->first)
                    remark = " (the limit is keyed by " + std::string(limit_key_name(cfg->key)) + ": never applies)";
                else if (!parse_rate_spec(rates))
                    remark = " (invalid, ignored)";
                text += fmt::format("{}: {} = {}{}\n", describe_key(parsed->first, parsed->second), show(limit),
                                    show(rates), remark);
                Json j = Json::object();
                j.set("key", limit_key_name(parsed->first));
                j.set("value", parsed->second);
                j.set("limit", limit);
                j.set("override", rates);
                j.set("in_config", cfg != nullptr && cfg->key == parsed->first);
                list.push(std::move(j));
            }
        }
        if (text.empty()) text = "no overrides stored\n";
        s.out.text(text);
        Json doc = Json::object();
        doc.set("overrides", std::move(list));
        s.out.emit(doc);
        co_return exit_ok;
    }

    // Stored overrides of every value involved (the value per limit may differ for networks).
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> stored;
    auto load = [&](const std::string& value) -> asio::awaitable<bool> {
        if (value.empty() && key->key != LimitKey::global) co_return true;
        if (stored.contains(value)) co_return true;
        const std::string hash = override_key(prefix, key->key, value);
        auto fields = co_await hgetall(s, hash);
        if (!fields) co_return false;
        stored.emplace(value, std::move(*fields));
        co_return true;
    };

    const KeyValue typed = override_value(*key, s.config);
    std::string text = describe_key(key->key, typed.value);
    if (!typed.parent.empty()) text += fmt::format(" (domain {})", show(typed.parent));
    text += ":\n";
    Json rows = Json::array();
    std::set<std::string> listed; // limit names shown for the typed value
    bool any = false;
    for (const auto& limit : s.config.limits) {
        if (limit.key != key->key) continue;
        any = true;
        std::string why;
        auto kv = counted_value(*key, limit, s.config, &why);
        Json row = Json::object();
        row.set("limit", limit.name);
        row.set("unit", limit_unit_name(limit.unit));
        row.set("enabled", limit.enabled);
        if (!kv) {
            text += fmt::format("  {:<20} {:<10} not applicable: {}\n", limit.name, limit_unit_name(limit.unit), why);
            row.set("applies", false);
            row.set("why", why);
            rows.push(std::move(row));
            continue;
        }
        if (!co_await load(kv->value) || !co_await load(kv->parent)) co_return exit_failure;
        std::optional<std::string> own;
        std::optional<std::string> parent;
        if (auto it = stored.find(kv->value); it != stored.end()) own = field(it->second, limit.name);
        if (!kv->parent.empty())
            if (auto it = stored.find(kv->parent); it != stored.end()) parent = field(it->second, limit.name);
        if (kv->value == typed.value) listed.insert(limit.name);
        const Effective eff = effective_of(limit, own, parent);
        std::string where = source_text(eff.source, key->key, kv->parent);
        if (kv->value != typed.value) where += fmt::format(" for {}", show(kv->value));
        text += fmt::format("  {:<20} {:<10} {:<24} {}{}\n", limit.name, limit_unit_name(limit.unit),
                            format_rate_spec(eff.spec), where, limit.enabled ? "" : " (limit disabled)");
        row.set("applies", true);
        row.set("value", kv->value);
        row.set("override", optional_text(own));
        row.set("parent", kv->parent.empty() ? Json() : Json(kv->parent));
        row.set("parent_override", optional_text(parent));
        row.set("config", format_rate_spec(limit.rates));
        row.set("effective", format_rate_spec(eff.spec));
        row.set("source", source_name(eff.source));
        rows.push(std::move(row));
    }
    if (!any) text += fmt::format("  no limit in {} is keyed by {}\n", s.config.path, limit_key_name(key->key));

    // Overrides of the typed value for limits it does not have (removed, renamed, other key).
    if (!co_await load(typed.value)) co_return exit_failure;
    Json other = Json::array();
    if (auto it = stored.find(typed.value); it != stored.end()) {
        auto fields = it->second;
        std::sort(fields.begin(), fields.end());
        for (const auto& [limit, rates] : fields) {
            if (listed.contains(limit)) continue;
            text += fmt::format("  {:<20} override {} is stored but no limit of the config reads it\n", show(limit),
                                show(rates));
            Json j = Json::object();
            j.set("limit", limit);
            j.set("override", rates);
            other.push(std::move(j));
        }
    }
    s.out.text(text);
    Json doc = Json::object();
    doc.set("key", limit_key_name(key->key));
    doc.set("value", typed.value);
    doc.set("parent", typed.parent.empty() ? Json() : Json(typed.parent));
    doc.set("limits", std::move(rows));
    doc.set("unused_overrides", std::move(other));
    s.out.emit(doc);
    co_return exit_ok;
}

asio::awaitable<int> usage(Session& s, const KeyArg& key, std::string_view only)
{
    auto limits = limits_for(s, key, only);
    if (!limits) co_return exit_failure;
    const std::string& prefix = s.config.store.key_prefix;

    StoreRequest request;
    request.consume = false;
    std::vector<const LimitConfig*> op_limits;
    Json skipped = Json::array();
    std::string skipped_text;
    for (const LimitConfig* limit : *limits) {
        std::string why;
        auto kv = counted_value(key, *limit, s.config, &why);
        if (!kv) {
            skipped_text += fmt::format("{}: not applicable: {}\n", limit->name, why);
            Json j = Json::object();
            j.set("limit", limit->name);
            j.set("why", why);
            skipped.push(std::move(j));
            continue;
        }
        CounterOp op;
        op.limit = limit->name;
        op.key = limit->key;
        op.value = std::move(kv->value);
        op.parent = std::move(kv->parent);
        op.defaults = limit->rates;
        op.cost = 0; // read only: remaining now, time to full now
        request.ops.push_back(std::move(op));
        op_limits.push_back(limit);
    }

    const KeyValue typed = override_value(key, s.config);
    Json doc = Json::object();
    doc.set("key", limit_key_name(key.key));
    doc.set("value", typed.value);
    Json rows = Json::array();
    std::string text;
    if (request.ops.empty() && skipped_text.empty())
        text = fmt::format("no limit in {} is keyed by {}\n", s.config.path, limit_key_name(key.key));

    if (!request.ops.empty()) {
        RedisStore store(*s.client, prefix, s.config.store.instance_ttl);
        auto result = co_await store.apply(request);
        if (!result) {
            s.out.error(fmt::format("redis {}: rate script: {}", s.config.store.redis.address, result.error().message()));
            co_return exit_failure;
        }
        for (std::size_t i = 0; i < request.ops.size(); ++i) {
            const CounterOp& op = request.ops[i];
            const LimitConfig& limit = *op_limits[i];
            const OpOutcome& outcome = result->ops[i];
            const std::string hash = state_key(prefix, op.key, op.value);
            const std::string refused_name = refused_field(op.limit);
            auto refused = co_await hget(s, hash, refused_name);
            if (!refused) co_return exit_failure;
            const std::string refused_count = refused->value_or("0");

            text += fmt::format("{} ({}, {}, {}, {}{})\n", limit.name, describe_key(op.key, op.value),
                                limit_unit_name(limit.unit), format_rate_spec(outcome.effective),
                                source_text(outcome.source, op.key, op.parent), limit.enabled ? "" : ", disabled");
            if (outcome.effective.kind == RateSpec::Kind::unlimited) text += "  unlimited: not counted\n";
            for (const auto& w : outcome.windows) {
                const std::uint64_t used = w.rate.count - std::min(w.remaining, w.rate.count);
                text += fmt::format("  {:<14} used {:<8} remaining {:<8} full in {}\n", rate_text(w.rate), used,
                                    w.remaining, format_duration_us(w.full_in_us));
            }
            text += fmt::format("  refused {} times\n", show(refused_count));

            Json row = Json::object();
            row.set("limit", limit.name);
            row.set("value", op.value);
            row.set("unit", limit_unit_name(limit.unit));
            row.set("enabled", limit.enabled);
            row.set("effective", format_rate_spec(outcome.effective));
            row.set("source", source_name(outcome.source));
            char* end = nullptr;
            const unsigned long long n = std::strtoull(refused_count.c_str(), &end, 10);
            row.set("refused", static_cast<std::uint64_t>(*end == '\0' ? n : 0));
            row.set("windows", windows_json(outcome));
            rows.push(std::move(row));
        }
    }
    text += skipped_text;
    s.out.text(text);
    doc.set("limits", std::move(rows));
    doc.set("not_applicable", std::move(skipped));
    s.out.emit(doc);
    co_return exit_ok;
}

// reset - without --limit the whole state hash of each value involved goes (every limit's
// counters of that key value); with it only that limit's fields. Instance markers stay: a
// message already counted is not counted again.
asio::awaitable<int> reset(Session& s, const KeyArg& key, std::string_view only)
{
    auto limits = limits_for(s, key, only);
    if (!limits) co_return exit_failure;
    const std::string& prefix = s.config.store.key_prefix;

    // The values to reset: the one each limit counts the key under, and the typed value itself
    // (whose counters a limit no longer in the config may have left).
    std::vector<std::string> values;
    for (const LimitConfig* limit : *limits) {
        if (auto kv = counted_value(key, *limit, s.config, nullptr)) values.push_back(kv->value);
    }
    if (only.empty()) values.push_back(override_value(key, s.config).value);
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    if (values.empty()) {
        std::string why;
        counted_value(key, *limits->front(), s.config, &why);
        s.out.error(why);
        co_return exit_failure;
    }

    Json done = Json::array();
    std::string text;
    for (const auto& value : values) {
        const std::string hash = state_key(prefix, key.key, value);
        long long removed = 0;
        if (only.empty()) {
            auto reply = co_await call(s, args_of("DEL", hash));
            if (!reply) co_return exit_failure;
            removed = reply->integer;
            if (removed) text += fmt::format("{}: counters reset\n", describe_key(key.key, value));
        } else {
            auto fields = co_await call(s, args_of("HKEYS", hash));
            if (!fields) co_return exit_failure;
            std::vector<std::string> names;
            for (auto& f : strings_of(*fields))
                if (field_of_limit(f, only)) names.push_back(std::move(f));
            if (!names.empty()) {
                std::vector<std::string_view> args{"HDEL", hash};
                for (const auto& n : names) args.push_back(n);
                auto reply = co_await call(s, std::move(args));
                if (!reply) co_return exit_failure;
                removed = reply->integer;
                text += fmt::format("{}: {} counters reset\n", describe_key(key.key, value), only);
            }
        }
        if (removed) {
            Json j = Json::object();
            j.set("key", limit_key_name(key.key));
            j.set("value", value);
            j.set("limit", only.empty() ? Json() : Json(only));
            done.push(std::move(j));
        }
    }
    Json doc = Json::object();
    doc.set("reset", std::move(done));
    if (text.empty()) {
        s.out.error(fmt::format("no counters stored for {}{}", describe_key(key.key, values.front()),
                                only.empty() ? std::string() : fmt::format(" and limit {}", only)));
        s.out.emit(doc);
        co_return exit_failure;
    }
    s.out.text(text);
    s.out.emit(doc);
    co_return exit_ok;
}

} // namespace relayguard::ctl
