-- Exact sliding log with reservations, for one or more limits checked and charged together.
--
-- KEYS: for each limit i, KEYS[2i-1] = log (zset: score = slot time in us, member = token)
--                         KEYS[2i]   = meta (hash: x = extra weight of the log's entries,
--                                            the sum of (cost - 1) over them,
--                                            p = penalty end in us,
--                                            e = when both keys expire, in us,
--                                            l = a learned limit, in force until u (us),
--                                            s, c = the open merged slot: its entry's time
--                                            (the slot's last us) and weight,
--                                            k = merging reservations joined up to k (us))
-- ARGV: max_wait_us (< 0: no reservation), nonce ("m<nonce>" from a merging caller),
--       then for each limit i: limit_i, window_us_i, cost_i,
--       then, only when the caller merges: for each limit i its slot width in us (0: none),
--       the grace in us and the live entries from which a log merges (see "Merging" below)
-- Returns, admitted now: the integer `remaining` (the hot path: the cheapest reply to build and
-- to parse); otherwise the string "allowed remaining wait_us" (allowed: 0/1; one bulk reply,
-- not an array): a refusal, or an admission into a reserved slot `wait_us` ahead.
--
-- Clock: Redis TIME only. Times are integer microseconds (exact in Lua's doubles); they are
-- passed to redis.call as numbers, which Redis converts without losing digits (unlike Lua's
-- own tostring and `..`, which print 14 significant digits). A log member is the request's
-- nonce, "<nonce>:<cost>" when the cost is above 1: unique per request, and it carries the
-- entry's weight, so a cost is one entry, never `cost` entries. The weight of the log is
-- ZCARD + x (the open merged slot '#' counts 1 in ZCARD, its c - 1 in x).
-- Invariant: when an entry is placed at a time `at`, the log's entries in any half-open
-- interval (t - window, t] containing `at` weigh at most `limit` in total, and no entry sits
-- before the time its units are used (merging and joining a slot only move entries later),
-- so on the real use times no interval of `window` holds more than `limit`. A rejected
-- request writes nothing.
-- Exactness: Lua numbers are doubles, exact up to 2^53. Limits and costs are at most 2^40
-- (the limiter's MAX_LIMIT), and a log never weighs more than 2^52 (2^52 = 4503599627370496,
-- admitted plus reserved entries): a request that would take it beyond is refused like one
-- whose slot lies beyond max_wait, so every sum below is exact.
--
-- Merging (stores/base.py, merge_slot_us): once a log holds MERGE_FROM live entries, a request
-- admitted now under a limit with a slot width (a merging caller's: the ARGV tail) adds its
-- weight to the entry of the current slot, which sits at the slot's last us
-- (never before any admission it holds: exactness is kept, a unit frees up to a slot late).
-- The open slot's entry is the member '#', its weight the meta's c (x includes its c - 1);
-- when a new slot opens the old one joins the closed entry of its time "#<time>:<weight>",
-- an ordinary weighted entry, so a log holds at most window / slot merged entries. A merging
-- caller's reservation keeps its own entry "m<nonce>[:<w>]" (its waiter may release it or
-- move it up) until it has been due for the grace; then a merging admission's commit joins
-- it to the closed entry of its slot (compact, below). Tokens are [0-9a-z]: no release,
-- settle or advance ever names a merged entry.
--
-- Cost (this runs on every decision): while every entry weighs 1 (x = 0, the requests-per-
-- window case) a decision is TIME, HMGET, ZCOUNT of the live entries and ZADD. Entries that
-- left the window are trimmed by every 16th admission of a process (its nonce's counter ends
-- in 0) and whenever the expiry is renewed (about once a second per key), so a busy log
-- keeps a few dozen dead entries at most, an idle one at most a second's worth. A log with
-- heavier entries is trimmed on every decision (x must lose the weight of what leaves).

local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local max_wait = tonumber(ARGV[1])
local nlimits = #KEYS / 2
local merging = #ARGV > 2 + 3 * nlimits

local function weight(member, c)
  if member == '#' then return c end -- the open merged slot (its weight is in the meta)
  return tonumber(string.match(member, ':(%d+)$')) or 1
end

local function extra(members, c)
  local s = 0
  for j = 1, #members do s = s + weight(members[j], c) - 1 end
  return s
end

local at = now
local remaining = math.huge
local over = false
local xs, ends = {}, {}
local opens, cs, cks, ns -- merging only: per limit, the open slot's time and weight, the
-- cursor, the live entries
if merging then opens, cs, cks, ns = {}, {}, {}, {} end
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[3 * i])
  local window = tonumber(ARGV[3 * i + 1])
  local cost = tonumber(ARGV[3 * i + 2])
  local meta
  if merging then
    meta = redis.call('HMGET', m, 'x', 'p', 'e', 'l', 'u', 'c', 's', 'k')
    opens[i], cs[i], cks[i] = meta[7], tonumber(meta[6]) or 1, tonumber(meta[8]) or 0
  else
    meta = redis.call('HMGET', m, 'x', 'p', 'e', 'l', 'u', 'c')
  end
  local c = tonumber(meta[6]) or 1
  if meta[4] and (tonumber(meta[5]) or 0) > now then -- a learned limit (window_learn.lua)
    local l = tonumber(meta[4])
    if l < limit then limit = math.max(l, cost) end
  end
  local x = tonumber(meta[1]) or 0
  ends[i] = tonumber(meta[3]) or 0
  local horizon = now - window -- live entries: score > horizon (scores are integer us)
  local n
  if x ~= 0 then
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', horizon)
    if #old > 0 then
      redis.call('ZREMRANGEBYSCORE', z, '-inf', horizon)
      x = x - extra(old, c)
    end
    n = redis.call('ZCARD', z)
    -- Heal a stale x: an empty log weighs nothing (it expired before its meta, which may
    -- carry a longer penalty); a negative x can only come from edits by hand: recount.
    if n == 0 then x = 0 elseif x < 0 then x = extra(redis.call('ZRANGE', z, 0, -1), c) end
    if x ~= tonumber(meta[1]) then redis.call('HSET', m, 'x', x) end
  else
    n = redis.call('ZCOUNT', z, horizon + 1, '+inf')
  end
  xs[i] = x
  if merging then ns[i] = n end
  -- A log without live entries may have lost its key since `e` was set (a release or a trim
  -- removed its last entry, and Redis deletes an empty zset): set its expiry again below.
  if n == 0 then ends[i] = 0 end
  local total = n + x
  local a = now
  if total + cost > limit then
    if total + cost > 4503599627370496 then over = true end
    -- The request fits once `need` of the oldest live weight has left the window.
    local need = total + cost - limit
    a = now + window -- if the log cannot say (cost above limit): one window, conservatively
    if x == 0 then
      local e = redis.call('ZRANGEBYSCORE', z, horizon + 1, '+inf', 'WITHSCORES',
        'LIMIT', need - 1, 1)
      if e[2] then a = e[2] + window end
    else
      -- The log is trimmed: its first entries are the oldest live ones, each weighing >= 1.
      local entries = redis.call('ZRANGE', z, 0, need - 1, 'WITHSCORES')
      local acc = 0
      for j = 1, #entries, 2 do
        acc = acc + weight(entries[j], c)
        if acc >= need then a = entries[j + 1] + window; break end
      end
    end
  end
  local pen = tonumber(meta[2]) or 0
  if pen > a then a = pen end
  if a > at then at = a end
  local free = limit - total
  if total + cost <= limit then free = free - cost end
  if free < remaining then remaining = free end
end

local wait = at - now
if wait > 0 and (max_wait < 0 or wait > max_wait or over) then
  return string.format('0 %d %d', math.max(remaining, 0), wait)
end

-- Merge the due reservations of merging callers (members "m<nonce>[:<w>]", due at least
-- `grace` us ago: their waiters have woken and checked for a pause, so no release or advance
-- names them any more) into the merged entries of their slots. A cursor (the meta's k: done up
-- to that time) keeps each entry from being looked at twice, and the work runs at most once
-- per slot of time (a lookup and the cursor's update), not on every decision.
-- (Defined only when a log of this call merges: the others do not pay for the closures.)
local grace, add_closed, compact = 0, nil, nil
local merges = false
if merging then
  for i = 1, nlimits do
    if ns[i] >= tonumber(ARGV[#ARGV]) and tonumber(ARGV[2 + 3 * nlimits + i]) > 0 then
      merges = true
    end
  end
end
if merges then
grace = tonumber(ARGV[#ARGV - 1])

-- Add weight w to the closed merged entry at time e ("#<e>:<w>", created if there is none);
-- returns the change of the log's extra weight x.
add_closed = function(z, e, w)
  local dx = w - 1 -- a new entry: its own extra weight
  for _, mem in ipairs(redis.call('ZRANGEBYSCORE', z, e, e)) do
    if string.byte(mem, 1) == 35 and mem ~= '#' then -- '#<e>:<w>': it grows by w
      redis.call('ZREM', z, mem)
      w = w + weight(mem, 0)
      dx = dx + 1
      break
    end
  end
  redis.call('ZADD', z, e, string.format('#%d:%d', e, w))
  return dx
end

compact = function(z, m, i, slot, horizon)
  local upto = now - grace
  if upto - cks[i] < slot then return end
  local from = math.max(cks[i], horizon)
  local due = {} -- (a window shorter than the grace: due reservations leave it unmerged)
  if upto > from then
    due = redis.call('ZRANGEBYSCORE', z, string.format('(%d', from), upto, 'WITHSCORES')
  end
  local sums, order, dx = {}, {}, 0
  for j = 1, #due, 2 do
    local mem = due[j]
    if string.byte(mem, 1) == 109 then -- 'm'
      local at_j = tonumber(due[j + 1])
      local w = weight(mem, cs[i])
      local e = at_j - at_j % slot + slot - 1
      if not sums[e] then sums[e] = 0; order[#order + 1] = e end
      sums[e] = sums[e] + w
      redis.call('ZREM', z, mem)
      dx = dx - (w - 1)
    end
  end
  for _, e in ipairs(order) do
    local w = sums[e]
    if tonumber(opens[i]) == e then -- the open slot
      redis.call('HINCRBY', m, 'c', w)
      cs[i] = cs[i] + w
      dx = dx + w
    else
      dx = dx + add_closed(z, e, w)
    end
  end
  if dx ~= 0 then redis.call('HINCRBY', m, 'x', dx) end
  redis.call('HSET', m, 'k', upto)
end
end

-- Expiry: both keys must outlive the new entry's window (+ 1 s slack). They are extended in
-- steps (to 2 s past it), recorded in the meta's `e`, so PEXPIRE (and the lazy trim) runs
-- about once a second per key, not on every call; expiry only ever extends (a reservation
-- placed earlier may outlive this entry; the meta may carry a longer penalty).
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i + 1])
  local cost = tonumber(ARGV[3 * i + 2])
  local slot = 0
  -- (A log merges once it holds MERGE_FROM live entries: a smaller one keeps an entry per
  -- admission, which costs a busy script less and is released exactly.)
  if merging and ns[i] >= tonumber(ARGV[#ARGV]) then slot = tonumber(ARGV[2 + 3 * nlimits + i]) end
  local rec = at -- when the entry counts from
  if slot > 0 then compact(z, m, i, slot, now - window) end
  if slot > 0 and wait == 0 then
    rec = now - now % slot + slot - 1
    if tonumber(opens[i]) == rec then -- this slot's entry is open: it gains `cost`
      redis.call('HINCRBY', m, 'c', cost)
      redis.call('HINCRBY', m, 'x', cost)
    else -- close the previous slot's entry (if it is still in the log), open this one
      local dx = cost - 1
      local prev = redis.call('ZSCORE', z, '#')
      if prev then -- its weight (c - 1 of it already in x) joins the closed entry of its
        -- time, unless it left the window (the ZADD below moves the member: it is dropped)
        if tonumber(prev) > now - window then dx = dx + add_closed(z, tonumber(prev), cs[i]) end
        dx = dx - (cs[i] - 1)
      end
      redis.call('ZADD', z, rec, '#')
      redis.call('HSET', m, 's', rec, 'c', cost)
      if dx ~= 0 then redis.call('HINCRBY', m, 'x', dx) end
      opens[i] = rec
    end
  else
    -- An entry of its own. A merging caller's admission for now drops the "m": only its
    -- reservations join their slots later (window_release.lua tries both names).
    local member = ARGV[2]
    if merging and wait == 0 then member = string.sub(member, 2) end
    if cost ~= 1 then member = member .. ':' .. cost end
    redis.call('ZADD', z, at, member)
    if cost ~= 1 then redis.call('HINCRBY', m, 'x', cost - 1) end
  end
  local renew = rec + window + 1000000 > ends[i]
  if xs[i] == 0 and (renew or string.byte(ARGV[2], -1) == 48) then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
  end
  if renew then
    local e = rec + window + 2000000
    local ttl = math.floor((e - now) / 1000)
    redis.call('HSET', m, 'e', e)
    redis.call('PEXPIRE', z, ttl)
    if redis.call('PTTL', m) < ttl then redis.call('PEXPIRE', m, ttl) end
  end
end
if wait == 0 then return math.max(remaining, 0) end -- admitted now: an integer reply
return string.format('1 %d %d', math.max(remaining, 0), wait)
