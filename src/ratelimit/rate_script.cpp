// SPDX-License-Identifier: MIT
// rate_script.cpp - the Lua script RedisStore runs: the whole store semantics in one step.
//
// Redis runs a script atomically, so reading the clock, the overrides and the TATs, deciding,
// and writing are one indivisible step for every host of a fleet. The script mirrors gcra(),
// rescale_tat() and parse_rate_spec() (limits.cpp) and EmbeddedStore::apply_now();
// store_conformance_test runs both stores on one table of scenarios. Needs Redis >= 7.0 (PEXPIRE
// NX/GT, SMISMEMBER) and its cmsgpack library; Lua numbers are doubles: all below 2^53.
#include <relayguard/redis_store.hpp>

#include <string>

#include "ratelimit/rate_math.hpp"

namespace relayguard {
namespace {

// Redis is single-threaded: its CPU per request caps a whole fleet (DESIGN.md §3). Measured
// with tests/bench/redis_script_bench.cpp: Redis 7.0.15, a typical RCPT request (3 ops x 2
// windows on 2 entities: the login, whose ops inherit from "@example.com", and the client's
// /24; 5 recipients per message), INFO commandstats usec_per_call of EVALSHA, median of 3
// runs of 20,000 requests, DESIGN.md's 10-call reference script run alternately in the same
// process (this 2-core machine, shared with other builds; idle figures are lower):
//                                   usec_per_call  (reference)  redis.call()s  Redis instructions
//   this script                          53             (34)          8.6           203k
//   the one before (same bench)         106             (34)         13.4           469k
//   ditto, every login with its own override (--scenario override): 90 against 131.
// (Instructions: redis-server under callgrind over a bench run, per request; reference 152k.)
// What it took, in the order it paid: one hash read and written per entity, not per op (ops
// grouped by state hash in redis_store.cpp); one EXISTS over every override hash instead of an
// HGET per op and parent (overrides are rare; only when one exists are they read, one HMGET per
// hash); all arguments in one msgpack string (each ARGV element cost ~0.1 µs, and a tonumber()
// each number); no table per op or window and tables sized by their constructors (this Redis
// spends ~50 machine instructions per Lua instruction; growing a table costs more than a
// window's GCRA); the increments and names computed in C++; a short reply without what C++ can
// derive (remaining, window counts); PEXPIRE skipped when the TTL already covers every new TAT.
// Left: TIME (the fleet's clock), SMISMEMBER (messages), the count fields ("n:", read with the
// TATs) and the override hashes being keys of their own (key_schema.hpp).
//
// KEYS: the E state hashes (one per key value), their E override hashes, the parents' override
//       hashes, and, if some op counts once per instance, the instance set.
// ARGV: one msgpack string of integers and strings: consume (0/1), instance TTL (s, text),
//       E, ops N, instance members M; the M members; per entity: its op count K, its field
//       count F, its ops' K limit names (the override hash fields), the F state fields of the
//       config's rates (per window "t:LIMIT:PERIOD", "n:LIMIT:PERIOD"), then per op: tag (2 x
//       its index in the request + shadow), cost, member (1-based, 0 none), parent override
//       hash (KEYS index, 0 none), windows R (-1: unlimited), per window: the count as text,
//       the period (µs) and the TAT increment of this cost (gcra(); count 0: period + 1).
//       ARGV[2]: the caller's deadline, µs since the epoch as text ("0": none); Redis TIME past
//       it: the status reply EXPIRED and nothing read or written (redis_store.cpp: a timeout).
// Reply, ops in the script's (entity) order, which redis_store.cpp maps back. consume == false
//       (relayguardctl), detailed: allowed, refused op (0-based, -1 none), its retry-after (µs),
//       number of ops; per op: allowed, already counted, source (0 config, 1 value override, 2
//       parent override), effective rates' canonical text ("" for the config's), retry-after,
//       number of windows; per window: remaining, full-in (µs). consume == true, short: 2 (none
//       refused) or 3, allowed, refused op, retry-after; per op: source x 4 + already x 2 +
//       refused, the rates' text if not the config's, per window full-in, retry-after if refused.
// State hash TTL: HMGET cannot tell whether a hash exists when none of the fields read does;
// then PEXPIRE NX (a new hash) and, if it had a TTL, PEXPIRE GT: an existing TTL covers the TATs
// of limits this request does not touch and must never be cut short.
constexpr std::string_view script_template = R"lua(
local MAX_COUNT = @MAX_COUNT@
local MAX_PERIOD = @MAX_PERIOD@
local MAX_INC = @MAX_INC@
local MAX_TIME = 9007199254740992
local BAD = 'ERR relayguard rate script: bad arguments'
local K = KEYS
local tonumber, call, unpack, fmt = tonumber, redis.call, unpack, string.format

-- Every argument comes in one msgpack string: one C call decodes it, numbers as numbers, into
-- a table sized once. (A malformed one fails the script with the decoder's error.)
if #ARGV ~= 2 then return redis.error_reply(BAD) end

-- (Arithmetic converts a numeric string once; tonumber() would parse it twice.)
local tm = call('TIME')
local now = tm[1] * 1000000 + tm[2]
-- Run after the caller's deadline (queued behind a slow command): it has answered without us
-- and must not be counted now. Checked before anything is decoded, read or written.
local deadline = ARGV[2] + 0
if deadline > 0 and now > deadline then return redis.status_reply('EXPIRED') end
if now > MAX_TIME then now = MAX_TIME end

local D = {cmsgpack.unpack(ARGV[1])}
local nent, nops, nm = D[3], D[4], D[5]
local np = #K - 2 * nent - (nm > 0 and 1 or 0) -- parent override hashes
if np < 0 then return redis.error_reply(BAD) end
local detail = D[1] == 0

-- Few key values have overrides: one EXISTS over every override hash says whether to read any.
-- The code that reads them is made (closures, upvalues) only then.
local resolve
if nent + np > 0 and call('EXISTS', unpack(K, nent + 1, 2 * nent + np)) > 0 then
  -- parse: parse_rate_spec() of limits.cpp, for an override; nil when invalid (then ignored).
  -- Returns a rate record laid out as the config's in D (per window: count as text, period in
  -- µs, increment for `cost` as in gcra()) with .n windows, .f the state fields (TAT, count per
  -- window), .text the canonical text (format_rate_spec()), .unlimited. A domain's override
  -- sends every login of the domain here: no more string formatting than the text needs.
  local units = {[''] = 1, s = 1, m = 60, h = 3600, d = 86400, w = 604800}
  local function parse(text, limit, cost)
    local t = string.match(text, '^%s*(.-)%s*$')
    if t == 'unlimited' then return {n = 0, f = {}, text = 'unlimited', unlimited = true} end
    local rates, sorted = {}, true -- per rate: count as canonical text, count, period (s)
    if t == '0' then
      rates[1] = {'0', 0, 1}
    else
      if t == '' or string.find(t, '^,') or string.find(t, ',$') or string.find(t, ',%s*,') then
        return nil
      end
      for tok in string.gmatch(t, '[^,%s]+') do
        local cs, ps, u = string.match(tok, '^(%d+)/(%d+)([smhdw]?)$')
        if not cs or #cs > 19 or #ps > 19 then return nil end
        local c, p = cs + 0, ps * units[u]
        if c > MAX_COUNT or p == 0 or p > MAX_PERIOD then return nil end
        for y = 1, #rates do
          if rates[y][3] == p then return nil end
        end
        if #cs > 1 and string.byte(cs) == 48 then cs = fmt('%.0f', c) end -- a leading zero
        if #rates > 0 and rates[#rates][3] > p then sorted = false end
        rates[#rates + 1] = {cs, c, p}
      end
      if not sorted then table.sort(rates, function(x, y) return x[3] < y[3] end) end
    end
    local rec, f, parts = {n = #rates}, {}, {}
    for q = 1, #rates do
      local cs, c, p = rates[q][1], rates[q][2], rates[q][3]
      local pu, ps = p * 1000000, fmt('%d', p)
      local inc = 0
      if c == 0 then
        inc = pu + 1
      elseif cost > 0 then
        inc = cost * pu / c
        inc = inc - inc % 1
        if inc >= MAX_INC then inc = MAX_INC end
      end
      rec[3 * q - 2], rec[3 * q - 1], rec[3 * q] = cs, pu, inc
      f[2 * q - 1], f[2 * q] = 't:' .. limit .. ':' .. ps, 'n:' .. limit .. ':' .. ps
      parts[q] = cs .. '/' .. ps .. 's'
    end
    rec.f = f
    if #rates == 1 and rates[1][2] == 0 and rates[1][3] == 1 then
      rec.text = '0'
    else
      rec.text = table.concat(parts, ',')
    end
    return rec
  end

  -- resolve: the overrides of entity e's k ops (limit names at D[la..], records at D[ra..]):
  -- nil when none applies, else specs[j] op j's parsed override and specs[k + j] its source.
  resolve = function(e, k, la, ra)
    local specs, pk, pn, at = nil, 0, 0, {}
    local ov = call('HMGET', K[nent + e], unpack(D, la, la + k - 1))
    local r = ra
    for j = 1, k do
      at[j] = r
      local v = ov[j]
      local spec = v and parse(v, D[la + j - 1], D[r + 1])
      if spec then
        specs = specs or {}
        specs[j], specs[k + j] = spec, 1
      elseif D[r + 3] > 0 then
        local p = D[r + 3]
        if pk == 0 or pk == p then
          pk, pn = p, pn + 1
        else
          -- Another parent than its entity's first (rate_stage never asks for that): its own read.
          v = call('HGET', K[p], D[la + j - 1])
          spec = v and parse(v, D[la + j - 1], D[r + 1])
          if spec then
            specs = specs or {}
            specs[j], specs[k + j] = spec, 2
          end
        end
      end
      if D[r + 4] > 0 then r = r + 5 + 3 * D[r + 4] else r = r + 5 end
    end
    if pn == 0 then return specs end
    -- One read of the parent's overrides. When every op inherits, the names are D's as they are.
    local names, pos, pv = nil, nil, nil
    if pn < k then
      names, pos = {}, {}
      for j = 1, k do
        if not (specs and specs[j]) and D[at[j] + 3] == pk then
          names[#names + 1], pos[#pos + 1] = D[la + j - 1], j
        end
      end
      pv = call('HMGET', K[pk], unpack(names))
    else
      pv = call('HMGET', K[pk], unpack(D, la, la + k - 1))
    end
    for q = 1, pn do
      local j = pos and pos[q] or q
      local v = pv[q]
      local spec = v and parse(v, D[la + j - 1], D[at[j] + 1])
      if spec then
        specs = specs or {}
        specs[j], specs[k + j] = spec, 2
      end
    end
    return specs
  end
end

-- Instance members already counted (read for every once op; "unlimited" ones ignore it).
local seen
if nm > 0 then seen = call('SMISMEMBER', K[#K], unpack(D, 6, 5 + nm)) end

-- Tables are sized by their constructors (nils: one instruction): growing one costs Redis
-- more than a window's GCRA. The reply (layout in rate_script.cpp): the detailed one's header
-- is completed at the end, the short one's only if some op was refused.
local out, n
if detail then
  out, n = {0, -1, 0, nops, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 4
else
  out, n = {2, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 1
end
local allowed, bi, bshadow, bretry, btag = true, nil, false, 0, 0
-- HSET arguments of every hash to write, back to back (TATs as text: '%d' is cheaper than the
-- %.17g Redis would format a number with, and the same digits below 2^53).
local W, nw = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 0
-- Per hash to write: key, its first and last in W, last TAT, TTL to set (0 none: the TTL
-- already covers a TAT read that is at least as late; 1 PEXPIRE GT; 2 maybe a new hash).
local E, ne = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 0
local refusals, nr = nil, 0 -- per refused op: state key, limit
local expiries, nx = nil, 0 -- per new hash with refusals: key, its refused ops' longest period (µs)
local adds, na = nil, 0     -- instance members to add
local a, i = 6 + nm, 0      -- D cursor; ops so far, in script order
for e = 1, nent do
  local skey = K[e]
  local k, nf = D[a], D[a + 1]
  local la = a + 2  -- limit names
  local fa = la + k -- state fields of the config's rates
  local ra = fa + nf -- op records

  -- Effective rates: the value's override, else the parent's, else the config's.
  local specs
  if resolve then specs = resolve(e, k, la, ra) end

  -- The state fields of the effective rates (per window: TAT, count), read in one call.
  local fl, fo, nq = D, fa - 1, nf
  if specs then
    fl, fo, nq = {}, 0, 0
    local r, fp = ra, fa
    for j = 1, k do
      local nrates, s = D[r + 4], specs[j]
      if s then
        local f = s.f
        for x = 1, #f do
          nq = nq + 1
          fl[nq] = f[x]
        end
      else
        for x = fp, fp + 2 * nrates - 1 do
          nq = nq + 1
          fl[nq] = D[x]
        end
      end
      if nrates > 0 then
        fp = fp + 2 * nrates
        r = r + 5 + 3 * nrates
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
  -- of the same limit on this hash sees them (cur is the working copy). cur[w - 1], cur[w]:
  -- the window's TAT and count; R[q ..]: its rate record.
  local w0, last, w, latest, copied = nw, 0, 0, 0, false
  local r = ra
  for j = 1, k do
    i = i + 1
    local cost, mi, nrates = D[r + 1], D[r + 2], D[r + 4]
    local R, q, src, nwin, unlimited = D, r + 5, 0, nrates, nrates < 0
    local s = specs and specs[j]
    if s then
      R, q, src, nwin, unlimited = s, 1, specs[k + j], s.n, s.unlimited
    elseif unlimited then
      nwin = 0
    end
    local already = mi > 0 and not unlimited and seen[mi] == 1
    local free = already or cost == 0
    local base, h0, olast, q0 = n, nw, 0, q
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
    for _ = 1, nwin do
      w = w + 2
      local tat, ct, fresh = cur[w - 1], R[q], false
      if cur[w] == ct then
        -- Written by this script with this very rate: a number (0 if gone).
        tat = tat and tat + 0 or 0
        if tat > latest then latest = tat end
      else
        -- Anything else (a text that is not a number reads as no TAT). The TAT counts time at
        -- the rate it was written with: carry the units used over to a changed rate
        -- (rescale_tat()); store the new count with the TAT.
        tat = tonumber(tat) or 0
        if tat > latest then latest = tat end
        if tat < 0 then tat = 0 elseif tat > MAX_TIME then tat = MAX_TIME end
        local was, c = tonumber(cur[w]), tonumber(ct)
        if was and was ~= c and c > 0 and tat > now then
          local d = (tat - now) * was / c
          tat = now + (d - d % 1)
          if tat > MAX_TIME then tat = MAX_TIME end
        end
        fresh = was ~= c
      end
      -- gcra() of limits.cpp, the same double operations in the same order; the increment
      -- came computed (count 0: one that never fits); v - v % 1 is floor(v), without a call.
      if tat < now then tat = now elseif tat > MAX_TIME then tat = MAX_TIME end
      local pu, x = R[q + 1], tat
      if free then
        if ct == '0' and not already then -- a count of 0 refuses even a read
          refused = true
          if pu > retry then retry = pu end
        end
      else
        x = tat + R[q + 2]
        if x - now <= pu then
          W[nw + 1], W[nw + 2] = fl[fo + w - 1], fmt('%d', x)
          nw = nw + 2
          if x > olast then olast = x end
          if fresh then
            W[nw + 1], W[nw + 2] = fl[fo + w], ct
            nw = nw + 2
          end
        else
          refused = true
          local ra_us = x - pu - now
          if ct == '0' then ra_us = pu end
          if ra_us > retry then retry = ra_us end
          x = tat
        end
      end
      if detail then
        local c, rem = tonumber(ct), 0
        if c > 0 then
          rem = (now + pu - x) * c / pu
          rem = rem - rem % 1
          if rem < 0 then rem = 0 elseif rem > c then rem = c end
        end
        out[n + 1], out[n + 2] = rem, x - now
        n = n + 2
      else
        out[n + 1] = x - now
        n = n + 1
      end
      q = q + 3
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
      local tag = D[r]
      local shadow = tag % 2 == 1
      if not shadow then allowed = false end
      if not bi or (bshadow ~= shadow and bshadow)
         or (bshadow == shadow and (retry > bretry or (retry == bretry and tag < btag))) then
        bi, bshadow, bretry, btag = i, shadow, retry, tag
      end
      refusals = refusals or {}
      refusals[nr + 1], refusals[nr + 2] = skey, D[la + j - 1]
      nr = nr + 2
      if not existed then
        local longest = 0 -- µs
        for y = q0 + 1, q0 + 3 * nwin - 2, 3 do
          if R[y] > longest then longest = R[y] end
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
        local limit = D[la + j - 1]
        for j2 = j + 1, k do
          if D[la + j2 - 1] == limit then
            for y = h0 + 1, nw, 2 do
              for z = w + 1, nq do
                if fl[fo + z] == W[y] then
                  cur[z], copied = W[y + 1], true
                end
              end
            end
            break
          end
        end
      end
      if mi > 0 and not unlimited and not already then
        adds = adds or {}
        na = na + 1
        adds[na] = D[5 + mi]
      end
    end
    if nrates > 0 then r = r + 5 + 3 * nrates else r = r + 5 end
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
if a ~= #D + 1 or i ~= nops then return redis.error_reply(BAD) end

if not detail then
  if allowed then
    for y = 1, ne, 5 do
      local key = E[y]
      call('HSET', key, unpack(W, E[y + 1], E[y + 2]))
      -- Live until the last TAT has passed; only ever extend an existing TTL (see above).
      local ttl = E[y + 4]
      if ttl > 0 then
        local ms = math.ceil((E[y + 3] - now) / 1000)
        if ms < 1 then ms = 1 end
        ms = fmt('%d', ms) -- Redis would format a number with %.17g
        if ttl == 1 or call('PEXPIRE', key, ms, 'NX') == 0 then call('PEXPIRE', key, ms, 'GT') end
      end
    end
    if na > 0 then
      call('SADD', K[#K], unpack(adds))
      call('EXPIRE', K[#K], D[2])
    end
  else
    -- Count the refusal, change nothing else; a new hash lives for its refused ops' longest
    -- window (NX: one that has a TTL keeps it).
    for y = 1, nr, 2 do call('HINCRBY', refusals[y], 'r:' .. refusals[y + 1], 1) end
    for y = 1, nx, 2 do call('PEXPIRE', expiries[y], expiries[y + 1] / 1000, 'NX') end
  end
end

if detail then
  out[1] = allowed and 1 or 0
  if bi then out[2], out[3] = bi - 1, bretry end
elseif bi then
  -- Something was refused: the short reply's header is 3, allowed, refused op, retry.
  local o = {3, allowed and 1 or 0, bi - 1, bretry}
  for y = 2, n do o[y + 3] = out[y] end
  out, n = o, n + 3
end
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
