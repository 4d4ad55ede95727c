// SPDX-License-Identifier: MIT
// embedded_store.cpp - EmbeddedStore: rate state in process memory, for a single host.
//
// Owns a Redis-like keyspace (state hashes and instance sets with expiry) in 16 shards, each
// under its own mutex, and the overrides under a shared_mutex. Thread-safe; apply() never waits
// on anything but those locks. Same semantics as the Redis script (rate_script.cpp), checked by
// store_conformance_test. SECURITY: key values are untrusted; tables use a keyed hash (SipHash)
// and memory is bounded by expiry plus an incremental sweep on every apply().
#include <relayguard/counter_store.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <optional>
#include <atomic>
#include <cassert>
#include <limits>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include <boost/container/small_vector.hpp>

#include <relayguard/key_schema.hpp>
#include <relayguard/redis_store.hpp>

#include "ratelimit/siphash.hpp"

namespace relayguard {
namespace {

// Shards of the keyspace: enough that 4-8 worker threads rarely meet on one mutex, few enough
// that a request's handful of keys locks few of them.
constexpr std::size_t shard_count = 16;

// apply()'s working lists: a request's ops, keys and shards fit in 8 without an allocation.
template <class T>
using small_vector = boost::container::small_vector<T, 8>;

// The incremental sweep: hash buckets of one shard's state table and instance table that an
// apply() looks through for expired entries. Each bucket costs a cache miss or two (the walk
// was 8 % of the daemon's CPU at 16 buckets per apply), so the walk is paid for by growth:
// every entry an apply() creates buys sweep_buckets_per_new_entry buckets, which reclaims dead
// entries faster than new ones arrive (the tables stay within a small factor of their live
// entries), and every apply() sweeps sweep_buckets_per_apply more, so that steady traffic on
// existing keys also clears what an earlier burst left behind.
constexpr std::size_t sweep_buckets_per_apply = 1;
constexpr std::size_t sweep_buckets_per_new_entry = 2;
// A shard whose walks keep finding nothing expired skips up to 2^6 - 1 = 63 turns between walks.
constexpr std::uint32_t sweep_max_backoff = 6;

constexpr std::int64_t micros_per_ms = 1000;
constexpr std::int64_t micros_per_second = 1'000'000;

class SystemClock final : public Clock {
public:
    std::int64_t now_us() const noexcept override
    {
        return std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
    }
};

struct KeyHash {
    detail::SipKey key;
    // Deliberately not noexcept: libstdc++ then caches each node's hash, so rehashing and the
    // incremental sweep's bucket walk do not run SipHash again for every node they pass.
    std::size_t operator()(const std::string& s) const
    {
        return static_cast<std::size_t>(detail::siphash24(key, s));
    }
};

// One hash field: "t:LIMIT:PERIOD" -> TAT (µs), "n:LIMIT:PERIOD" -> the rate's count it was
// written with, or "r:LIMIT" -> refused attempts (key_schema.hpp, as in Redis). A field that is
// not live is absent; it keeps its name for the next write of that field (see StateEntry).
struct Field {
    std::string name;
    std::int64_t value = 0;
    bool live = true;
};

// FieldName - a field's name as its parts, compared with stored names without building the
// string (an apply() looks up a dozen fields); the string is made only for a new field.
class FieldName {
public:
    static FieldName tat(std::string_view limit, std::chrono::seconds period) { return {'t', limit, period}; }
    static FieldName count(std::string_view limit, std::chrono::seconds period) { return {'n', limit, period}; }
    static FieldName refused(std::string_view limit) { return {'r', limit}; }

    bool operator==(const FieldName&) const = default;
    bool matches(std::string_view name) const noexcept
    {
        const std::size_t size = 2 + limit_.size() + (digits_size_ == 0 ? 0 : 1 + digits_size_);
        if (name.size() != size || name[0] != kind_ || name[1] != ':') return false;
        if (name.substr(2, limit_.size()) != limit_) return false;
        if (digits_size_ == 0) return true;
        return name[2 + limit_.size()] == ':' &&
               name.substr(3 + limit_.size()) == std::string_view(digits_.data(), digits_size_);
    }
    // str - the name as key_schema.hpp spells it (tat_field, rate_count_field, refused_field).
    std::string str() const
    {
        std::string out;
        out.reserve(3 + limit_.size() + digits_size_);
        out += kind_;
        out += ':';
        out += limit_;
        if (digits_size_ != 0) {
            out += ':';
            out.append(digits_.data(), digits_size_);
        }
        return out;
    }

private:
    FieldName(char kind, std::string_view limit) : kind_(kind), limit_(limit) {}
    FieldName(char kind, std::string_view limit, std::chrono::seconds period) : kind_(kind), limit_(limit)
    {
        const auto r = std::to_chars(digits_.data(), digits_.data() + digits_.size(), period.count());
        digits_size_ = static_cast<std::uint8_t>(r.ptr - digits_.data());
    }

    char kind_;
    std::string_view limit_; // the op's limit name: valid for the apply() that made this
    std::array<char, 20> digits_{};
    std::uint8_t digits_size_ = 0; // 0: no period ("r:LIMIT")
};

// A state hash (key_schema.hpp): a handful of fields, so a vector beats a map.
//
// With limits far above a key's traffic (the usual case) a hash outlives its last TAT by a
// millisecond or so, and the key's next request finds it expired. Such an entry is reset and
// used again rather than erased and made anew: in Redis terms it is gone all the same (no live
// field, an expired deadline), but its node, key, field vector and field names are kept, which
// was a dozen allocations and frees per request. The incremental sweep still erases entries
// that stay expired.
struct StateEntry {
    std::vector<Field> fields;
    std::int64_t deadline_us = 0; // expired once now is past it (Redis: key TTL)

    const Field* find(const FieldName& name) const noexcept
    {
        for (const auto& f : fields)
            if (f.live && name.matches(f.name)) return &f;
        return nullptr;
    }

    // get - the field, made live (value 0) if it was absent.
    Field& get(const FieldName& name)
    {
        for (auto& f : fields) {
            if (!name.matches(f.name)) continue;
            if (!f.live) {
                f.value = 0;
                f.live = true;
            }
            return f;
        }
        return fields.emplace_back(Field{name.str(), 0, true});
    }

    // reset - the entry as a key that does not exist: every field absent, already expired.
    void reset() noexcept
    {
        // Names of fields a changed config no longer writes would pile up: start afresh then.
        if (fields.size() > reset_keeps_fields) fields.clear();
        for (auto& f : fields) f.live = false;
        deadline_us = 0;
    }

    static constexpr std::size_t reset_keeps_fields = 32;
};

// An instance set: "LIMIT|TAG:VALUE" members already counted for one SMTP transaction.
struct InstanceEntry {
    std::vector<std::string> members;
    std::int64_t deadline_us = 0;

    bool contains(std::string_view member) const noexcept
    {
        return std::find(members.begin(), members.end(), member) != members.end();
    }

    // reset - the set as a key that does not exist (reused like a StateEntry).
    void reset() noexcept
    {
        members.clear();
        deadline_us = 0;
    }
};

using StateMap = std::unordered_map<std::string, StateEntry, KeyHash>;
using InstanceMap = std::unordered_map<std::string, InstanceEntry, KeyHash>;
using LimitOverrides = std::map<std::string, RateSpec, std::less<>>;

// Like Redis: a key whose deadline has passed is gone.
constexpr bool expired(std::int64_t deadline_us, std::int64_t now) noexcept { return now > deadline_us; }

struct alignas(64) Shard {
    explicit Shard(const KeyHash& hash) : states(0, hash), instances(0, hash) {}

    std::mutex mutex;
    StateMap states;
    InstanceMap instances;
    std::size_t state_cursor = 0; // next bucket for the incremental sweep
    std::size_t instance_cursor = 0;
    std::uint32_t sweep_backoff = 0; // walks in a row that found nothing expired (capped)
    std::uint32_t sweep_skip = 0;    // turns to skip before the next walk
};

// sweep_buckets - drop expired entries from up to `budget` buckets of `map`, from `*cursor` on;
// adds the entries looked at to `*seen`.
template <class Map>
std::size_t sweep_buckets(Map& map, std::size_t* cursor, std::size_t budget, std::int64_t now, std::size_t* seen)
{
    if (map.empty()) return 0;
    std::size_t dropped = 0;
    small_vector<const std::string*> dead;
    for (std::size_t k = 0; k < budget; ++k) {
        if (*cursor >= map.bucket_count()) *cursor = 0;
        dead.clear();
        for (auto it = map.begin(*cursor); it != map.end(*cursor); ++it) {
            ++*seen;
            if (expired(it->second.deadline_us, now)) dead.push_back(&it->first);
        }
        for (const std::string* key : dead) {
            // By iterator: erase(key) would destroy the string it is still comparing with.
            map.erase(map.find(*key));
            ++dropped;
        }
        ++*cursor;
    }
    return dropped;
}

// ceil_ms - Redis PEXPIRE's argument for a TAT `d` µs ahead: whole ms, at least 1.
constexpr std::int64_t ceil_ms(std::int64_t d) noexcept
{
    return d <= 0 ? 1 : (d + micros_per_ms - 1) / micros_per_ms;
}

} // namespace

const Clock& system_clock() noexcept
{
    static const SystemClock clock;
    return clock;
}

struct EmbeddedStore::Impl {
    explicit Impl(const Clock& c) : clock(c), hash{detail::random_sip_key()}, overrides(0, hash)
    {
        shards.reserve(shard_count);
        for (std::size_t i = 0; i < shard_count; ++i) shards.push_back(std::make_unique<Shard>(hash));
    }

    // shard_of - the top bits of the hash pick the shard; the table inside uses it modulo a prime.
    std::size_t shard_of(const std::string& key) const noexcept
    {
        return static_cast<std::size_t>(detail::siphash24(hash.key, key) >> 32) % shard_count;
    }

    // resolve - effective rates of one op: value override, else parent override, else config.
    // Caller holds overrides_mutex (shared).
    void resolve(const CounterOp& op, OpOutcome& out) const
    {
        const auto lookup = [&](const std::string& value) -> const RateSpec* {
            const auto it = overrides.find(state_key("", op.key, value));
            if (it == overrides.end()) return nullptr;
            const auto f = it->second.find(op.limit);
            return f == it->second.end() ? nullptr : &f->second;
        };
        if (!overrides.empty()) {
            if (const RateSpec* spec = lookup(op.value)) {
                out.source = OpOutcome::Source::override_value;
                out.effective = *spec;
                return;
            }
            if (!op.parent.empty()) {
                if (const RateSpec* spec = lookup(op.parent)) {
                    out.source = OpOutcome::Source::override_parent;
                    out.effective = *spec;
                    return;
                }
            }
        }
        out.source = OpOutcome::Source::config;
        out.effective = op.defaults;
    }

    // sweep_some - the incremental sweep: `budget` buckets of the next shard, round robin. A
    // walk that finds live entries and nothing expired backs that shard off (it skips its next 1, 3, 7, ... up
    // to sweep_max_skip turns): a table of live entries, the normal state under steady load,
    // is not walked for nothing, while the first dead entry found puts it back to every turn.
    void sweep_some(std::int64_t now, std::size_t budget)
    {
        Shard& shard = *shards[next_sweep.fetch_add(1, std::memory_order_relaxed) % shard_count];
        const std::lock_guard lock(shard.mutex);
        if (shard.sweep_skip > 0) {
            --shard.sweep_skip;
            return;
        }
        std::size_t seen = 0;
        const std::size_t dropped = sweep_buckets(shard.states, &shard.state_cursor, budget, now, &seen) +
                                    sweep_buckets(shard.instances, &shard.instance_cursor, budget, now, &seen);
        // Empty buckets say nothing either way; only live entries and no dead one back off.
        if (dropped != 0) {
            shard.sweep_backoff = 0;
        } else if (seen != 0 && shard.sweep_backoff < sweep_max_backoff) {
            ++shard.sweep_backoff;
        }
        shard.sweep_skip = (std::uint32_t{1} << shard.sweep_backoff) - 1;
    }

    const Clock& clock;
    KeyHash hash;
    std::vector<std::unique_ptr<Shard>> shards;
    std::atomic<std::size_t> next_sweep{0};

    mutable std::shared_mutex overrides_mutex;
    // state_key("", key, value) -> limit -> spec
    std::unordered_map<std::string, LimitOverrides, KeyHash> overrides;
};

EmbeddedStore::EmbeddedStore(const Clock& clock) : impl_(std::make_unique<Impl>(clock)) {}

EmbeddedStore::~EmbeddedStore() = default;

boost::asio::awaitable<boost::system::result<StoreResult, std::error_code>>
EmbeddedStore::apply(const StoreRequest& request)
{
    co_return apply_now(request);
}

// apply_now - the store semantics of counter_store.hpp, step for step like the Redis script.
StoreResult EmbeddedStore::apply_now(const StoreRequest& request)
{
    Impl& s = *impl_;
    const std::int64_t now = s.clock.now_us();
    const auto& ops = request.ops;
    const std::size_t n = ops.size();
    constexpr std::size_t none = static_cast<std::size_t>(-1);
    constexpr std::int64_t none_tat = std::numeric_limits<std::int64_t>::min();

    StoreResult result;
    result.ops.resize(n);

    // Overrides first, under their own lock: a set_override() that returns before this point
    // applies to this request.
    {
        const std::shared_lock lock(s.overrides_mutex);
        for (std::size_t i = 0; i < n; ++i) s.resolve(ops[i], result.ops[i]);
    }

    // Plan: which state keys (groups; several ops may share one) and which shards.
    struct Group {
        std::string key;
        Shard* shard = nullptr;
        StateEntry* entry = nullptr;
        bool existed = false;
    };
    // A request has a handful of ops on one or two keys: these live on the stack.
    small_vector<Group> groups;
    small_vector<std::size_t> group_of(n, none);
    small_vector<std::string> members(n); // non-empty: counted once per instance
    small_vector<std::size_t> shard_ids;
    for (std::size_t i = 0; i < n; ++i) {
        if (result.ops[i].effective.kind == RateSpec::Kind::unlimited) continue; // no state touched
        if (ops[i].once_per_instance && !request.instance.empty())
            members[i] = instance_member(ops[i].limit, ops[i].key, ops[i].value);
        if (result.ops[i].effective.rates.empty()) continue;
        std::string key = state_key("", ops[i].key, ops[i].value);
        std::size_t g = 0;
        while (g < groups.size() && groups[g].key != key) ++g;
        if (g == groups.size()) {
            const std::size_t id = s.shard_of(key);
            groups.push_back(Group{std::move(key), s.shards[id].get()});
            shard_ids.push_back(id);
        }
        group_of[i] = g;
    }
    const bool any_once = std::any_of(members.begin(), members.end(), [](const auto& m) { return !m.empty(); });
    std::string ikey;
    Shard* ishard = nullptr;
    if (any_once) {
        ikey = instance_key("", request.instance);
        const std::size_t id = s.shard_of(ikey);
        ishard = s.shards[id].get();
        shard_ids.push_back(id);
    }

    // Lock every shard involved in index order, so two requests never wait on each other in a
    // cycle. Held until the writes are done: check and consume are one atomic step.
    std::sort(shard_ids.begin(), shard_ids.end());
    shard_ids.erase(std::unique(shard_ids.begin(), shard_ids.end()), shard_ids.end());
    small_vector<std::unique_lock<std::mutex>> locks;
    for (const std::size_t id : shard_ids) locks.emplace_back(s.shards[id]->mutex);

    // Load. An expired entry is gone, as in Redis: it is reset to an absent key and reused
    // (StateEntry), existed stays false.
    for (auto& group : groups) {
        const auto it = group.shard->states.find(group.key);
        if (it == group.shard->states.end()) continue;
        group.entry = &it->second;
        if (expired(it->second.deadline_us, now))
            it->second.reset();
        else
            group.existed = true;
    }
    InstanceEntry* instance = nullptr;
    if (any_once) {
        const auto it = ishard->instances.find(ikey);
        if (it != ishard->instances.end()) {
            instance = &it->second;
            if (expired(instance->deadline_us, now)) instance->reset();
        }
    }

    // Evaluate every op against one clock reading. New TATs of allowed ops are pending writes
    // that later ops on the same field see, so one request never double-books a window.
    struct Pending {
        std::size_t group;
        FieldName field;
        std::int64_t tat; // or, is_count, the count of a window's rate
        bool is_count = false;
    };
    boost::container::small_vector<Pending, 16> pending;
    const auto value_of = [&](std::size_t g, const FieldName& field) -> std::optional<std::int64_t> {
        for (auto it = pending.rbegin(); it != pending.rend(); ++it)
            if (it->group == g && it->field == field) return it->tat;
        if (const StateEntry* e = groups[g].entry)
            if (const Field* f = e->find(field)) return f->value;
        return std::nullopt;
    };
    for (std::size_t i = 0; i < n; ++i) {
        const CounterOp& op = ops[i];
        OpOutcome& out = result.ops[i];
        if (out.effective.kind == RateSpec::Kind::unlimited) continue;
        out.already_counted = !members[i].empty() && instance != nullptr && instance->contains(members[i]);
        // Already counted: nothing consumed; the windows still report what is left.
        const std::uint64_t cost = out.already_counted ? 0 : op.cost;
        const std::size_t mark = pending.size();
        bool refused = false;
        std::int64_t retry = 0;
        out.windows.reserve(out.effective.rates.size());
        for (const Rate& rate : out.effective.rates) {
            const FieldName field = FieldName::tat(op.limit, rate.period);
            const FieldName count_field = FieldName::count(op.limit, rate.period);
            std::int64_t tat = value_of(group_of[i], field).value_or(0);
            // The TAT counts time at the rate it was written with; a changed rate (an override
            // set or lifted) carries the units used over (rescale_tat, as the Redis script does).
            const std::optional<std::int64_t> was = value_of(group_of[i], count_field);
            if (was) tat = rescale_tat(tat, now, static_cast<std::uint64_t>(*was), rate.count);
            const GcraResult g = gcra(tat, now, rate, cost);
            const std::int64_t x = g.allowed ? g.new_tat : std::max(tat, now);
            out.windows.push_back(WindowUsage{rate, g.remaining, std::max<std::int64_t>(x - now, 0)});
            if (!g.allowed) {
                refused = true;
                retry = std::max(retry, g.retry_after);
            } else if (cost > 0) {
                pending.push_back(Pending{group_of[i], field, g.new_tat});
                if (!was || static_cast<std::uint64_t>(*was) != rate.count)
                    pending.push_back(Pending{group_of[i], count_field, static_cast<std::int64_t>(rate.count),
                                              /*is_count=*/true});
            }
        }
        if (refused && !out.already_counted) {
            pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(mark), pending.end()); // a refused op takes nothing, not even its windows with room
            out.allowed = false;
            out.retry_after_us = retry;
        }
    }

    // The verdict: refused iff an enforcing op is; report the refusal that lasts longest,
    // preferring an enforcing op over a shadow one.
    for (std::size_t i = 0; i < n; ++i) {
        if (result.ops[i].allowed) continue;
        if (!ops[i].shadow) result.allowed = false;
        if (!result.refused_op) {
            result.refused_op = i;
            continue;
        }
        const std::size_t b = *result.refused_op;
        const bool better = ops[b].shadow != ops[i].shadow
                                ? ops[b].shadow
                                : result.ops[i].retry_after_us > result.ops[b].retry_after_us;
        if (better) result.refused_op = i;
    }
    if (result.refused_op) result.retry_after_us = result.ops[*result.refused_op].retry_after_us;

    std::size_t created = 0; // entries this apply adds to the tables
    if (request.consume) {
        const auto entry_of = [&](Group& group) -> StateEntry& {
            if (group.entry == nullptr) {
                group.entry = &group.shard->states[group.key];
                ++created;
            }
            return *group.entry;
        };
        if (result.allowed) {
            small_vector<std::int64_t> last(groups.size(), none_tat);
            for (const auto& p : pending) {
                entry_of(groups[p.group]).get(p.field).value = p.tat;
                if (!p.is_count) last[p.group] = std::max(last[p.group], p.tat);
            }
            // A state hash lives until its last TAT has passed: from then on it is worth
            // nothing, a fresh key behaves the same. Only ever extend an existing hash's life
            // (Redis: PEXPIRE GT): it already covers the TATs of limits this request did not touch.
            for (std::size_t g = 0; g < groups.size(); ++g) {
                if (last[g] == none_tat) continue;
                const std::int64_t deadline = now + ceil_ms(last[g] - now) * micros_per_ms;
                StateEntry& e = *groups[g].entry;
                e.deadline_us = groups[g].existed ? std::max(e.deadline_us, deadline) : deadline;
            }
            bool added = false;
            for (std::size_t i = 0; i < n; ++i) {
                if (members[i].empty() || !result.ops[i].allowed || result.ops[i].already_counted) continue;
                if (instance == nullptr) {
                    instance = &ishard->instances[ikey];
                    ++created;
                }
                if (!instance->contains(members[i])) instance->members.push_back(members[i]);
                added = true;
            }
            if (added) instance->deadline_us = now + std::int64_t{default_instance_ttl.count()} * micros_per_second;
        } else {
            // Count the refusal; nothing else changes. A hash created by this gets the life of
            // the op's longest window, so an idle blocked key still goes away.
            small_vector<std::int64_t> new_ttl(groups.size(), 0);
            for (std::size_t i = 0; i < n; ++i) {
                if (result.ops[i].allowed) continue;
                Group& group = groups[group_of[i]];
                entry_of(group).get(FieldName::refused(ops[i].limit)).value += 1;
                if (!group.existed) {
                    for (const Rate& rate : result.ops[i].effective.rates)
                        new_ttl[group_of[i]] = std::max(new_ttl[group_of[i]], rate.period.count() * micros_per_second);
                }
            }
            for (std::size_t g = 0; g < groups.size(); ++g)
                if (new_ttl[g] > 0) groups[g].entry->deadline_us = now + new_ttl[g];
        }
    }

    locks.clear();
    s.sweep_some(now, sweep_buckets_per_apply + created * sweep_buckets_per_new_entry);
    return result;
}

void EmbeddedStore::set_override(LimitKey key, const std::string& value, const std::string& limit,
                                 std::optional<RateSpec> spec)
{
    Impl& s = *impl_;
    std::string okey = state_key("", key, value);
    const std::unique_lock lock(s.overrides_mutex);
    if (spec) {
        s.overrides[std::move(okey)].insert_or_assign(limit, std::move(*spec));
        return;
    }
    const auto it = s.overrides.find(okey);
    if (it == s.overrides.end()) return;
    it->second.erase(limit);
    if (it->second.empty()) s.overrides.erase(it);
}

std::size_t EmbeddedStore::sweep()
{
    Impl& s = *impl_;
    const std::int64_t now = s.clock.now_us();
    std::size_t dropped = 0;
    for (auto& shard : s.shards) {
        const std::lock_guard lock(shard->mutex);
        dropped += std::erase_if(shard->states, [now](const auto& kv) { return expired(kv.second.deadline_us, now); });
        dropped +=
            std::erase_if(shard->instances, [now](const auto& kv) { return expired(kv.second.deadline_us, now); });
    }
    return dropped;
}

std::size_t EmbeddedStore::entries() const
{
    std::size_t total = 0;
    for (const auto& shard : impl_->shards) {
        const std::lock_guard lock(shard->mutex);
        total += shard->states.size() + shard->instances.size();
    }
    return total;
}

} // namespace relayguard
