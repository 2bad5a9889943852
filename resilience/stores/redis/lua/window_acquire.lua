-- Exact sliding log with reservations, for one or more limits checked and charged together.
--
-- KEYS: for each limit i, KEYS[2i-1] = log (zset: score = slot time in us, member = token)
--                         KEYS[2i]   = meta (hash: x = extra weight of the log's entries,
--                                            the sum of (cost - 1) over them,
--                                            p = penalty end in us,
--                                            e = when both keys expire, in us,
--                                            l = a learned limit, in force until u (us))
-- ARGV: max_wait_us (< 0: no reservation), nonce,
--       then for each limit i: limit_i, window_us_i, cost_i
-- Returns, admitted now: the integer `remaining` (the hot path: the cheapest reply to build and
-- to parse); otherwise the string "allowed remaining wait_us" (allowed: 0/1; one bulk reply,
-- not an array): a refusal, or an admission into a reserved slot `wait_us` ahead.
--
-- Clock: Redis TIME only. Times are integer microseconds (exact in Lua's doubles); they are
-- passed to redis.call as numbers, which Redis converts without losing digits (unlike Lua's
-- own tostring and `..`, which print 14 significant digits). A log member is the request's nonce, "<nonce>:<cost>" when the cost
-- is above 1: unique per request, and it carries the entry's weight, so a cost is one entry,
-- never `cost` entries. The weight of the log is ZCARD + x.
-- Invariant: every entry sits at a time `at` such that the log's entries in any half-open
-- interval (t - window, t] containing `at` weigh at most `limit` in total. A rejected request
-- writes nothing.
-- Exactness: Lua numbers are doubles, exact up to 2^53. Limits and costs are at most 2^40
-- (the limiter's MAX_LIMIT), and a log never weighs more than 2^52 (2^52 = 4503599627370496,
-- admitted plus reserved entries): a request that would take it beyond is refused like one
-- whose slot lies beyond max_wait, so every sum below is exact.
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

local function weight(member)
  return tonumber(string.match(member, ':(%d+)$')) or 1
end

local function extra(members)
  local s = 0
  for j = 1, #members do s = s + weight(members[j]) - 1 end
  return s
end

local at = now
local remaining = math.huge
local over = false
local xs, ends = {}, {}
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[3 * i])
  local window = tonumber(ARGV[3 * i + 1])
  local cost = tonumber(ARGV[3 * i + 2])
  local meta = redis.call('HMGET', m, 'x', 'p', 'e', 'l', 'u')
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
      x = x - extra(old)
    end
    n = redis.call('ZCARD', z)
    -- Heal a stale x: an empty log weighs nothing (it expired before its meta, which may
    -- carry a longer penalty); a negative x can only come from edits by hand: recount.
    if n == 0 then x = 0 elseif x < 0 then x = extra(redis.call('ZRANGE', z, 0, -1)) end
    if x ~= tonumber(meta[1]) then redis.call('HSET', m, 'x', x) end
  else
    n = redis.call('ZCOUNT', z, horizon + 1, '+inf')
  end
  xs[i] = x
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
        acc = acc + weight(entries[j])
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

-- Expiry: both keys must outlive the new entry's window (+ 1 s slack). They are extended in
-- steps (to 2 s past it), recorded in the meta's `e`, so PEXPIRE (and the lazy trim) runs
-- about once a second per key, not on every call; expiry only ever extends (a reservation
-- placed earlier may outlive this entry; the meta may carry a longer penalty).
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i + 1])
  local cost = tonumber(ARGV[3 * i + 2])
  if cost == 1 then
    redis.call('ZADD', z, at, ARGV[2])
  else
    redis.call('ZADD', z, at, ARGV[2] .. ':' .. cost)
    redis.call('HINCRBY', m, 'x', cost - 1)
  end
  local renew = at + window + 1000000 > ends[i]
  if xs[i] == 0 and (renew or string.byte(ARGV[2], -1) == 48) then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
  end
  if renew then
    local e = at + window + 2000000
    local ttl = math.floor((e - now) / 1000)
    redis.call('HSET', m, 'e', e)
    redis.call('PEXPIRE', z, ttl)
    if redis.call('PTTL', m) < ttl then redis.call('PEXPIRE', m, ttl) end
  end
end
if wait == 0 then return math.max(remaining, 0) end -- admitted now: an integer reply
return string.format('1 %d %d', math.max(remaining, 0), wait)
