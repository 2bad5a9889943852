-- Exact sliding log with reservations, for one or more limits checked and charged together.
--
-- KEYS: for each limit i, KEYS[2i-1] = log (zset: score = slot time in us, member = token)
--                         KEYS[2i]   = meta (hash: w = total weight in the log,
--                                            p = penalty end in us,
--                                            e = when both keys expire, in us)
-- ARGV: max_wait_us (< 0: no reservation), nonce,
--       "limit_1 window_us_1 cost_1 limit_2 window_us_2 cost_2 ..." (one string: fewer
--       arguments to encode and parse on the client's hot path)
-- Returns the string "allowed remaining wait_us" (allowed: 0/1; one bulk reply, not an array)
--
-- Clock: Redis TIME only. A log member is "<nonce>:<cost_i>": unique per request, and it
-- carries the entry's weight so a cost is one entry, never `cost` entries.
-- Invariant: every entry sits at a time `at` such that the log's entries in any half-open
-- interval (t - window, t] containing `at` weigh at most `limit` in total. A rejected request
-- writes nothing.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_wait = tonumber(ARGV[1])
local nlimits = #KEYS / 2
local spec = {}
for v in string.gmatch(ARGV[3], '%S+') do spec[#spec + 1] = tonumber(v) end

local function weight(member)
  return tonumber(string.match(member, ':(%d+)$')) or 1
end

local function recount(z)
  local all = redis.call('ZRANGE', z, 0, -1)
  local s = 0
  for j = 1, #all do s = s + weight(all[j]) end
  return s
end

local at = now
local remaining = -1
local windows = {}
local costs = {}
local totals = {}
local ends = {}
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = spec[3 * i - 2]
  local window = spec[3 * i - 1]
  local cost = spec[3 * i]
  windows[i] = window
  costs[i] = cost
  local meta = redis.call('HMGET', m, 'w', 'p', 'e')
  local total = tonumber(meta[1]) or 0
  local pen = tonumber(meta[2]) or 0
  ends[i] = tonumber(meta[3]) or 0
  local horizon = string.format('%d', now - window)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', horizon)
  if #old > 0 then
    for j = 1, #old do total = total - weight(old[j]) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', horizon)
    if total < 0 then total = recount(z) end
    redis.call('HSET', m, 'w', total)
  end
  local a = now
  if total + cost > limit then
    -- The request fits once enough of the oldest weight has left the window.
    local need = total + cost - limit
    local entries = redis.call('ZRANGE', z, 0, need - 1, 'WITHSCORES')
    local acc = 0
    local found = false
    for j = 1, #entries, 2 do
      acc = acc + weight(entries[j])
      if acc >= need then
        a = tonumber(entries[j + 1]) + window
        found = true
        break
      end
    end
    if not found then
      -- The stored total disagreed with the log (cannot happen unless edited by hand): heal.
      total = recount(z)
      redis.call('HSET', m, 'w', total)
      if total + cost > limit then
        local all = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
        need = total + cost - limit
        acc = 0
        for j = 1, #all, 2 do
          acc = acc + weight(all[j])
          if acc >= need then a = tonumber(all[j + 1]) + window; break end
        end
      end
    end
  end
  totals[i] = total
  if pen > a then a = pen end
  if a > at then at = a end
  local free = limit - total
  if total + cost <= limit then free = free - cost end
  if remaining < 0 or free < remaining then remaining = free end
end

local wait = at - now
if wait > 0 and (max_wait < 0 or wait > max_wait) then
  return string.format('0 %d %d', remaining, wait)
end

-- Expiry: both keys must outlive the new entry's window (+ 1 s slack). They are extended in
-- steps (to 2 s past it), recorded in the meta's `e`, so PEXPIRE runs about once a second
-- per key, not on every call; expiry only ever extends (a reservation placed earlier may
-- outlive this entry; the meta may carry a longer penalty).
local at_s = string.format('%d', at)
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZADD', z, at_s, ARGV[2] .. ':' .. costs[i])
  if totals[i] == 0 or at + windows[i] + 1000000 > ends[i] then
    local e = at + windows[i] + 2000000
    local ttl = math.floor((e - now) / 1000)
    redis.call('HSET', m, 'w', totals[i] + costs[i], 'e', string.format('%d', e))
    redis.call('PEXPIRE', z, ttl)
    if redis.call('PTTL', m) < ttl then redis.call('PEXPIRE', m, ttl) end
  else
    redis.call('HINCRBY', m, 'w', costs[i])
  end
end
return string.format('1 %d %d', remaining, wait)
