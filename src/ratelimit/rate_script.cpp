// SPDX-License-Identifier: MIT
// rate_script.cpp - the Lua script RedisStore runs: the whole store semantics in one step.
//
// Redis runs a script atomically, so reading the clock, the overrides and the TATs, deciding,
// and writing are one indivisible step for every host of a fleet. The script mirrors gcra(),
// rescale_tat() and parse_rate_spec() (limits.cpp) and EmbeddedStore::apply_now();
// store_conformance_test runs both stores on one table of scenarios. Needs Redis >= 7.0
// (PEXPIRE NX/GT); Lua 5.1 numbers are doubles, every integer stays below 2^53 (rate_math.hpp).
#include <relayguard/redis_store.hpp>

#include <string>

#include "ratelimit/rate_math.hpp"

namespace relayguard {
namespace {

// Redis CPU per request is what caps a whole fleet (DESIGN.md §3), so the script is built
// around one hash per entity ("entity": one state hash, i.e. one key value). redis_store.cpp
// groups the ops by entity and precomputes every name it can; the script then makes, per
// entity, one HMGET of its overrides (all its limits), one HMGET of its parent's overrides
// (only for ops without their own), one HMGET of the state fields, and when consuming one HSET
// and one PEXPIRE; plus TIME and, for messages, SMISMEMBER (SADD + EXPIRE once per message).
// A typical RCPT request (3 ops x 2 windows on 2 entities: login with a parent domain, client
// network) makes 11.2 calls on average against 13.4 before, and almost no Lua garbage: no
// table per op or window, no string built on the hot path, no closure but parse().
// Measured with tests/bench/redis_script_bench.cpp (Redis 7.0.15, this 2-core machine under
// the load of other builds; INFO commandstats usec_per_call of EVALSHA, median of 3 runs of
// 20,000 requests each, the reference run alternately in the same process):
//   this script                                     @NEW@
//   the previous one (13.4 calls, ~50 Lua tables)   @OLD@
//   DESIGN.md's 10-call reference                   @REF@
//
// KEYS: per entity e, KEYS[2e-1] its state hash and KEYS[2e] its override hash; then the parent
//       override hashes; last, only if some op counts once per instance, the instance set.
// ARGV: consume (0/1), instance TTL (s), entities E, ops N, instance members M; the M members;
//       then per entity: its op count K, its field count F, the K limit names (in op order:
//       the fields of its override hash), the F state fields of the config's rates (per window
//       "t:LIMIT:PERIOD" then "n:LIMIT:PERIOD"), then per op: its index in the request, cost,
//       shadow (0/1), member (1-based among the M, 0 none), parent override hash (index into
//       KEYS, 0 none), rates R (-1: unlimited), R pairs count, period (s). Numbers, not rate
//       text: parsing text in the script would cost Redis ~10 µs of CPU per op.
// Reply, ops in the script's (entity) order, which redis_store.cpp maps back: allowed, refused
//       op (0-based, -1 none), its retry-after (µs), number of ops; per op: allowed, already
//       counted, source (0 config, 1 value override, 2 parent override), effective rates as
//       canonical text ("" when they are the config's), retry-after (µs), number of windows;
//       per window: remaining, full-in (µs).
// State hash TTL: HMGET cannot tell whether the hash exists when none of the fields read does;
// then PEXPIRE NX (a new hash: no TTL yet) and, if that found a TTL, PEXPIRE GT: an existing
// TTL covers the TATs of limits this request does not touch and must never be cut short.
// Why not fewer: an override hash is its own key (key_schema.hpp: relayguardctl writes it), so
// reading it costs a call; TIME is the fleet's one clock; the TTL must follow the newest TAT.
constexpr std::string_view script_template = R"lua(
local MAX_COUNT = @MAX_COUNT@
local MAX_PERIOD = @MAX_PERIOD@
local MAX_INC = @MAX_INC@
local MAX_TIME = 9007199254740992
local BAD = 'ERR relayguard rate script: bad arguments'
local K, A = KEYS, ARGV
local tonumber, call, unpack, fmt = tonumber, redis.call, unpack, string.format

local nent, nops, nm = tonumber(A[3]), tonumber(A[4]), tonumber(A[5])
if not nent or not nops or not nm then return redis.error_reply(BAD) end
local np = #K - 2 * nent - (nm > 0 and 1 or 0) -- parent override hashes
if np < 0 then return redis.error_reply(BAD) end
local consume = A[1] == '1'
local detail = not consume

-- parse: parse_rate_spec() of limits.cpp, for overrides; nil when invalid (then ignored). Flat
-- per rate: count, period, TAT field, count field; .text the canonical text (format_rate_spec).
local function parse(text, limit)
  local t = string.match(text, '^%s*(.-)%s*$')
  if t == 'unlimited' then return {unlimited = true, text = 'unlimited'} end
  local rates
  if t == '0' then
    rates = {{0, 1}}
  else
    if t == '' or string.find(t, '^,') or string.find(t, ',$') or string.find(t, ',%s*,') then
      return nil
    end
    local units, seen = {[''] = 1, s = 1, m = 60, h = 3600, d = 86400, w = 604800}, {}
    rates = {}
    for tok in string.gmatch(t, '[^,%s]+') do
      local c, p, u = string.match(tok, '^(%d+)/(%d+)([smhdw]?)$')
      if not c or #c > 19 or #p > 19 then return nil end
      c = tonumber(c)
      p = tonumber(p) * units[u]
      if c > MAX_COUNT or p == 0 or p > MAX_PERIOD or seen[p] then return nil end
      seen[p] = true
      rates[#rates + 1] = {c, p}
    end
    table.sort(rates, function(x, y) return x[2] < y[2] end)
  end
  local spec, parts = {}, {}
  for q = 1, #rates do
    local c, p = rates[q][1], rates[q][2]
    local ps = string.format('%.0f', p)
    spec[4 * q - 3], spec[4 * q - 2] = c, p
    spec[4 * q - 1], spec[4 * q] = 't:' .. limit .. ':' .. ps, 'n:' .. limit .. ':' .. ps
    parts[q] = string.format('%.0f/%ss', c, ps)
  end
  if #rates == 1 and rates[1][1] == 0 and rates[1][2] == 1 then
    spec.text = '0'
  else
    spec.text = table.concat(parts, ',')
  end
  return spec
end

-- resolve: the overrides of entity e's k ops (limit names at A[la..], records at A[ra..]):
-- nil when none applies, else specs[j] op j's parsed override and specs[k + j] its source.
local function resolve(e, k, la, ra)
  local specs, pk, pn = nil, 0, 0
  local ov = call('HMGET', K[nent + e], unpack(A, la, la + k - 1))
  local r = ra
  for j = 1, k do
    local nrates = tonumber(A[r + 4])
    if not nrates then return nil, true end
    local v = ov[j]
    local spec = v and parse(v, A[la + j - 1])
    if spec then
      specs = specs or {}
      specs[j], specs[k + j] = spec, 1
    elseif A[r + 3] ~= '0' then
      local p = tonumber(A[r + 3])
      if pk == 0 or pk == p then
        pk, pn = p, pn + 1
      else
        -- Another parent than its entity's first (rate_stage never asks for that): its own read.
        v = call('HGET', K[p], A[la + j - 1])
        spec = v and parse(v, A[la + j - 1])
        if spec then
          specs = specs or {}
          specs[j], specs[k + j] = spec, 2
        end
      end
    end
    if nrates > 0 then r = r + 5 + 2 * nrates else r = r + 5 end
  end
  if pn == 0 then return specs end
  -- One read of the parent's overrides. When every op inherits, the names are A's as they are.
  local names, pos, pv = nil, nil, nil
  if pn < k then
    names, pos = {}, {}
    r = ra
    for j = 1, k do
      local nrates = tonumber(A[r + 4])
      if not (specs and specs[j]) and tonumber(A[r + 3]) == pk then
        names[#names + 1], pos[#pos + 1] = A[la + j - 1], j
      end
      if nrates > 0 then r = r + 5 + 2 * nrates else r = r + 5 end
    end
    pv = call('HMGET', K[pk], unpack(names))
  else
    pv = call('HMGET', K[pk], unpack(A, la, la + k - 1))
  end
  for q = 1, pn do
    local j = pos and pos[q] or q
    local v = pv[q]
    local spec = v and parse(v, A[la + j - 1])
    if spec then
      specs = specs or {}
      specs[j], specs[k + j] = spec, 2
    end
  end
  return specs
end

local tm = call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
if now > MAX_TIME then now = MAX_TIME end

-- Few key values have overrides: one EXISTS over every override hash says whether to read any.
local overrides = call('EXISTS', unpack(K, nent + 1, 2 * nent + np)) > 0

-- Instance members already counted (read for every once op; "unlimited" ones ignore it).
local seen
if nm > 0 then seen = call('SMISMEMBER', K[#K], unpack(A, 6, 5 + nm)) end

-- Tables are sized by their constructors: growing one costs Redis more than a window's GCRA.
-- The reply: its header (layout in rate_script.cpp), completed at the end; ends at the first nil.
local out, n, h
if detail then
  out, n, h = {0, -1, 0, nops, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 0
else
  out, n, h = {2, 1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 4, 1
end
local allowed, bi, bshadow, bretry, btag = true, nil, false, 0, 0
-- HSET arguments of every hash to write, back to back (TATs as text: '%d' is cheaper than the
-- %.17g Redis would format a number with, and the same digits below 2^53).
local W, nw = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0
-- Per hash to write: key, its first and last in W, last TAT, TTL to set (0 none: the TTL
-- already covers a TAT read that is at least as late; 1 PEXPIRE GT; 2 maybe a new hash).
local E, ne = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0
local refusals, nr = nil, 0 -- per refused op: state key, limit
local expiries, nx = nil, 0 -- per new hash with refusals: key, its refused ops' longest period
local adds, na = nil, 0     -- instance members to add
local a, i = 6 + nm, 0      -- A cursor; ops so far, in script order
for e = 1, nent do
  local skey = K[e]
  local k, nf = tonumber(A[a]), tonumber(A[a + 1])
  if not k or not nf then return redis.error_reply(BAD) end
  local la = a + 2  -- limit names
  local fa = la + k -- state fields of the config's rates
  local ra = fa + nf -- op records

  -- Effective rates: the value's override, else the parent's, else the config's.
  local specs
  if overrides then
    local bad
    specs, bad = resolve(e, k, la, ra)
    if bad then return redis.error_reply(BAD) end
  end

  -- The state fields of the effective rates (per window: TAT, count), read in one call.
  local fl, fo, nq = A, fa - 1, nf
  local r
  if specs then
    fl, fo, nq = {}, 0, 0
    r = ra
    local fp = fa
    for j = 1, k do
      local nrates, s = tonumber(A[r + 4]), specs[j]
      if s then
        for x = 3, #s, 4 do
          fl[nq + 1], fl[nq + 2] = s[x], s[x + 1]
          nq = nq + 2
        end
      else
        for x = fp, fp + 2 * nrates - 1 do
          nq = nq + 1
          fl[nq] = A[x]
        end
      end
      if nrates > 0 then
        fp = fp + 2 * nrates
        r = r + 5 + 2 * nrates
      else
        r = r + 5
      end
    end
  end
  local cur, existed = nil, false
  if nq > 0 then
    cur = call('HMGET', skey, unpack(fl, fo + 1, fo + nq))
    for q = 1, nq do
      if cur[q] then
        existed = true
        break
      end
    end
  end

  -- Evaluate the ops against one clock reading. An allowed op's writes go into W; a later op
  -- of the same limit on this hash sees them (cur is the working copy).
  local w0, last, w, latest, copied = nw, 0, 0, 0, false
  r = ra
  for j = 1, k do
    i = i + 1
    local cost, nrates = tonumber(A[r + 1]), tonumber(A[r + 4])
    if not cost or not nrates then return redis.error_reply(BAD) end
    local s = specs and specs[j]
    local nwin, unlimited, src = nrates, nrates < 0, 0
    if s then
      nwin, unlimited, src = #s / 4, s.unlimited, specs[k + j]
    elseif unlimited then
      nwin = 0
    end
    local mi = A[r + 2]
    local already = mi ~= '0' and not unlimited and seen ~= nil and seen[tonumber(mi)] == 1
    if already then cost = 0 end
    local base, h0, olast = n, nw, 0
    if detail then
      out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5], out[n + 6] =
        1, already and 1 or 0, src, s and s.text or '', 0, nwin
      n = n + 6
    else
      out[n + 1] = already and src * 4 + 2 or src * 4
      n = n + 1
      if s then
        out[n + 1] = s.text
        n = n + 1
      end
    end
    local refused, retry = false, 0
    for x = 0, nwin - 1 do
      local c, p, ct -- count, period (s), count as the config's text
      if s then
        c, p = s[4 * x + 1], s[4 * x + 2]
      else
        ct = A[r + 5 + 2 * x]
        c, p = tonumber(ct), tonumber(A[r + 6 + 2 * x])
        if not c or not p or p <= 0 then return redis.error_reply(BAD) end
      end
      w = w + 1
      local tat = tonumber(cur[2 * w - 1]) or 0
      if tat > latest then latest = tat end
      if tat < 0 then tat = 0 elseif tat > MAX_TIME then tat = MAX_TIME end
      -- The TAT counts time at the rate it was written with: carry the units used over to a
      -- changed rate (rescale_tat()). Mostly the stored count is the config's text as it is.
      local wt = cur[2 * w]
      local same = wt == ct
      if not same and wt then
        local was = tonumber(wt)
        same = was == c
        if was and not same and c > 0 and tat > now then
          local d = (tat - now) * was / c
          tat = now + (d - d % 1)
          if tat > MAX_TIME then tat = MAX_TIME end
        end
      end
      -- gcra() of limits.cpp: the same double operations in the same order (v - v % 1 is
      -- floor(v), exactly, without a call).
      local period_us = p * 1000000
      local tat_eff = tat
      if now > tat then tat_eff = now end
      local ok, new_tat, x_tat, ra_us = false, tat_eff, tat_eff, period_us
      if c > 0 then
        local inc = 0
        if cost > 0 then
          inc = cost * period_us / c
          inc = inc - inc % 1
          if inc >= MAX_INC then inc = MAX_INC end
        end
        new_tat = tat_eff + inc
        ok = cost == 0 or new_tat - now <= period_us
        if ok then x_tat, ra_us = new_tat, 0 else ra_us = new_tat - period_us - now end
      end
      if detail then
        local rem = 0
        if c > 0 then
          rem = (now + period_us - x_tat) * c / period_us
          rem = rem - rem % 1
          if rem < 0 then rem = 0 elseif rem > c then rem = c end
        end
        out[n + 1], out[n + 2] = rem, x_tat - now
        n = n + 2
      else
        out[n + 1] = x_tat - now
        n = n + 1
      end
      if not ok then
        refused = true
        if ra_us > retry then retry = ra_us end
      elseif cost > 0 then
        W[nw + 1], W[nw + 2] = fl[fo + 2 * w - 1], fmt('%d', new_tat)
        nw = nw + 2
        if new_tat > olast then olast = new_tat end
        if not same then
          W[nw + 1], W[nw + 2] = fl[fo + 2 * w], ct or c
          nw = nw + 2
        end
      end
    end

    if refused and not already then
      nw = h0
      if detail then
        out[base + 1], out[base + 5] = 0, retry
      else
        out[base + 1] = out[base + 1] + 1
        out[n + 1] = retry
        n = n + 1
      end
      -- The verdict reports the longest refusal, enforcing first, earliest in the request
      -- (tag: 2 x the op's index in the request + shadow).
      local tag = tonumber(A[r])
      local shadow = tag % 2 == 1
      if not shadow then allowed = false end
      if not bi or (bshadow ~= shadow and bshadow)
         or (bshadow == shadow and (retry > bretry or (retry == bretry and tag < btag))) then
        bi, bshadow, bretry, btag = i, shadow, retry, tag
      end
      refusals = refusals or {}
      refusals[nr + 1], refusals[nr + 2] = skey, A[la + j - 1]
      nr = nr + 2
      if not existed then
        local longest = 0
        for x = 0, nwin - 1 do
          local p
          if s then p = s[4 * x + 2] else p = tonumber(A[r + 6 + 2 * x]) end
          if p > longest then longest = p end
        end
        expiries = expiries or {}
        if nx > 0 and expiries[nx - 1] == skey then
          if longest > expiries[nx] then expiries[nx] = longest end
        else
          expiries[nx + 1], expiries[nx + 2] = skey, longest
          nx = nx + 2
        end
      end
    else
      if olast > last then last = olast end
      if nw > h0 then
        -- The same limit again later on this hash (not from rate_stage): it sees these values.
        local limit = A[la + j - 1]
        for j2 = j + 1, k do
          if A[la + j2 - 1] == limit then
            for y = h0 + 1, nw, 2 do
              for z = 2 * w + 1, nq do
                if fl[fo + z] == W[y] then
                  cur[z], copied = W[y + 1], true
                end
              end
            end
            break
          end
        end
      end
      if mi ~= '0' and not unlimited and not already then
        adds = adds or {}
        na = na + 1
        adds[na] = A[5 + tonumber(mi)]
      end
    end
    if nrates > 0 then r = r + 5 + 2 * nrates else r = r + 5 end
  end
  if nw > w0 then
    -- Every TAT this script wrote is covered by the hash's TTL (set with it, only extended since).
    local ttl = 2
    if existed then
      ttl = 1
      if last <= latest and not copied then ttl = 0 end
    end
    E[ne + 1], E[ne + 2], E[ne + 3], E[ne + 4], E[ne + 5] = skey, w0 + 1, nw, last, ttl
    ne = ne + 5
  end
  a = r
end
if a ~= #A + 1 or i ~= nops then return redis.error_reply(BAD) end

if consume then
  if allowed then
    for y = 1, ne, 5 do
      local key = E[y]
      call('HSET', key, unpack(W, E[y + 1], E[y + 2]))
      -- Live until the last TAT has passed; only ever extend an existing TTL (see above).
      local ttl = E[y + 4]
      if ttl > 0 then
        local ms = math.ceil((E[y + 3] - now) / 1000)
        if ms < 1 then ms = 1 end
        if ttl == 1 or call('PEXPIRE', key, ms, 'NX') == 0 then call('PEXPIRE', key, ms, 'GT') end
      end
    end
    if na > 0 then
      call('SADD', K[#K], unpack(adds))
      call('EXPIRE', K[#K], A[2])
    end
  else
    -- Count the refusal, change nothing else; a new hash lives for its refused ops' longest
    -- window (NX: one that has a TTL keeps it).
    for y = 1, nr, 2 do call('HINCRBY', refusals[y], 'r:' .. refusals[y + 1], 1) end
    for y = 1, nx, 2 do call('PEXPIRE', expiries[y], expiries[y + 1] * 1000, 'NX') end
  end
end

out[1 + h] = allowed and 1 or 0
if bi then out[2 + h], out[3 + h] = bi - 1, bretry end
out[n + 1] = nil
return out
)lua";


// replace - every "@NAME@" in `text` by `value`.
void replace(std::string& text, std::string_view name, const std::string& value)
{
    for (auto pos = text.find(name); pos != std::string::npos; pos = text.find(name, pos + value.size()))
        text.replace(pos, name.size(), value);
}

std::string script_body()
{
    std::string body(script_template);
    replace(body, "@MAX_COUNT@", std::to_string(detail::max_rate_count));
    replace(body, "@MAX_PERIOD@", std::to_string(detail::max_rate_period.count()));
    replace(body, "@MAX_INC@", std::to_string(detail::max_increment_us));
    return body;
}

} // namespace

const redis::Script& rate_script()
{
    static const redis::Script script(script_body());
    return script;
}

} // namespace relayguard
