-- Circuit breaker: record the outcome of a call admitted in generation ARGV[9].
--
-- KEYS: state hash, failure log, probe leases (see breaker_acquire.lua)
-- ARGV: threshold, window_us, break_us, max_break_us, max_probes, success_threshold,
--       lease_us, outcome (ok|fail|ignore|restore), gen, probe token ('' if none), hint_us,
--       member (fleet-unique id of this failure), events channel
-- Returns {state, gen, wait_us, permit = '', token = '', old, stale (0/1), failures, unknown}
--   unknown: a state value no script writes, found in the hash and read as closed ('' if none)
--
-- Clock: Redis TIME only; integers formatted with %d. Every transition increments gen.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local threshold = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local brk = tonumber(ARGV[3])
local maxb = tonumber(ARGV[4])
local succ = tonumber(ARGV[6])
local lease = tonumber(ARGV[7])
local outcome = ARGV[8]
local cgen = tonumber(ARGV[9])
local token = ARGV[10]
local hint = tonumber(ARGV[11])

-- Tell every process (SUBSCRIBE ARGV[13]) that this breaker changed: "<tag> <gen> <state>",
-- the tag being the hash tag of the state key. PUBLISH takes no key (Cluster-safe here).
local function publish(state, g)
  redis.call('PUBLISH', ARGV[13], string.match(KEYS[1], '{([^}]*)}') .. ' ' ..
    string.format('%d', g) .. ' ' .. state)
end

local h = redis.call('HMGET', KEYS[1], 'st', 'ou', 'g', 'tr', 'pk', 'q')
local st = h[1] or 'closed'
local ou = tonumber(h[2]) or 0
local gen = tonumber(h[3]) or 0
local tr = tonumber(h[4]) or 0
local pk = tonumber(h[5]) or 0
local quiet = tonumber(h[6]) or 0
local unknown = ''
if st ~= 'closed' and st ~= 'open' and st ~= 'half_open' then
  unknown = st
  st = 'closed'
end

local function fmt(x) return string.format('%d', x) end

local function touch(open_until)
  local rem = open_until - now
  if rem < 0 then rem = 0 end
  redis.call('PEXPIRE', KEYS[1], math.floor((rem + window + lease) / 1000) + 3600000)
end

local function open_for(until_)
  redis.call('HSET', KEYS[1], 'st', 'open', 'ou', fmt(until_), 'g', fmt(gen), 'tr', tr,
    'pk', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  touch(until_)
  publish('open', gen)
end

-- Open for the break of trip number `trips` (doubling up to max_break), at least the hint.
local function trip(from, trips)
  local b = brk
  if maxb > brk and trips > 1 then
    b = brk * (2 ^ (trips - 1))
    if b > maxb then b = maxb end
  end
  if hint > b then b = hint end
  local until_ = now + math.floor(b)
  gen = gen + 1
  tr = trips
  open_for(until_)
  return {'open', gen, fmt(until_ - now), '', '', from, 0, 0, unknown}
end

if outcome == 'restore' then
  -- Not a call's outcome: a process re-seeds an open state (generation cgen, hint_us left)
  -- that the store has lost. Applied only over a state older than cgen that is not a
  -- written close (a missing hash reads as generation 0); never shortens an open break.
  if gen < cgen and (gen == 0 or st ~= 'closed') then
    local until_ = now + hint
    if st == 'open' and ou > until_ then until_ = ou end
    gen = cgen
    if tr < 1 then tr = 1 end
    open_for(until_)
    return {'open', gen, fmt(until_ - now), '', '', '', 0, 0, unknown}
  end
  local wait = 0
  if st == 'open' and ou > now then wait = ou - now end
  return {st, gen, fmt(wait), '', '', '', 1, 0, unknown}
end

if st == 'half_open' then
  if token == '' or redis.call('ZREM', KEYS[3], token) == 0 then
    return {st, gen, 0, '', '', '', 1, 0, ''}
  end
  if outcome == 'fail' then
    return trip('half_open', tr + 1)
  end
  if outcome == 'ok' then
    pk = pk + 1
    if pk >= succ then
      gen = gen + 1
      redis.call('HSET', KEYS[1], 'st', 'closed', 'g', fmt(gen), 'tr', 0, 'pk', 0)
      redis.call('DEL', KEYS[2], KEYS[3])
      touch(0)
      publish('closed', gen)
      return {'closed', gen, 0, '', '', 'half_open', 0, 0, ''}
    end
    redis.call('HSET', KEYS[1], 'pk', pk)
    touch(0)
  end
  return {st, gen, 0, '', '', '', 0, 0, ''}
end

if st == 'open' then
  -- Outcomes while open are stale; an upstream Retry-After still keeps it open that long.
  if outcome == 'fail' and hint > 0 and now + hint > ou then
    ou = now + hint
    redis.call('HSET', KEYS[1], 'ou', fmt(ou))
    touch(ou)
  end
  local wait = ou - now
  if wait < 0 then wait = 0 end
  return {st, gen, fmt(wait), '', '', '', 1, 0, ''}
end

-- Closed.
if cgen ~= gen or token ~= '' then
  return {st, gen, 0, '', '', '', 1, 0, unknown}
end
if outcome ~= 'fail' then
  return {st, gen, 0, '', '', '', 0, 0, unknown}
end
if hint > 0 then
  -- One upstream event counts once: a failure that asks for a wait while an earlier one's
  -- wait is still running was sent before the fleet knew (the burst already in flight when
  -- a quota ran out). Only the first counts; each counted one starts a new quiet period.
  if now < quiet then
    return {st, gen, 0, '', '', '', 1, 0, unknown}
  end
  redis.call('HSET', KEYS[1], 'q', fmt(now + hint))
  touch(0)
end
redis.call('ZADD', KEYS[2], fmt(now), ARGV[12])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now - window))
local n = redis.call('ZCARD', KEYS[2])
if n >= threshold then
  return trip('closed', tr + 1)
end
redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) + 1000)
return {st, gen, 0, '', '', '', 0, n, unknown}
