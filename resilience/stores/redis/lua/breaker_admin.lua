-- Circuit breaker: operator actions (state | open | close | reset).
--
-- KEYS: state hash, failure log, probe leases (see breaker_acquire.lua)
-- ARGV: threshold, window_us, break_us, max_break_us, max_probes, success_threshold,
--       lease_us, action, duration_us (for open), events channel
-- Returns {state, gen, wait_us, permit = '', token = '', old, stale = 0, failures, unknown}
--   unknown: a state value no script writes, found in the hash and read as closed ('' if none)
--
-- Clock: Redis TIME only; integers formatted with %d. Every transition increments gen.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local lease = tonumber(ARGV[7])
local action = ARGV[8]
local dur = tonumber(ARGV[9])

-- Tell every process (SUBSCRIBE ARGV[10]) that an operator changed this breaker:
-- "<tag> <gen> *", the tag being the hash tag of the state key. '*' makes every process re-read
-- (an open breaker re-opened keeps its generation but gets a new deadline). PUBLISH takes no
-- key, so it is Cluster-safe here.
local function publish(state, g)
  redis.call('PUBLISH', ARGV[10], string.match(KEYS[1], '{([^}]*)}') .. ' ' ..
    string.format('%d', g) .. ' ' .. state)
end

local h = redis.call('HMGET', KEYS[1], 'st', 'ou', 'g')
local st = h[1] or 'closed'
local ou = tonumber(h[2]) or 0
local gen = tonumber(h[3]) or 0
local unknown = ''
if st ~= 'closed' and st ~= 'open' and st ~= 'half_open' then
  unknown = st
  st = 'closed'
end

local function fmt(x) return string.format('%d', x) end

if action == 'state' then
  if st == 'closed' then
    local n = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - window), '+inf')
    return {st, gen, 0, '', '', '', 0, n, unknown}
  end
  if st == 'open' then
    if now < ou then return {st, gen, fmt(ou - now), '', '', '', 0, 0, ''} end
    return {'half_open', gen, 0, '', '', '', 0, 0, ''}
  end
  return {st, gen, 0, '', '', '', 0, 0, ''}
end

local old = ''
if action == 'open' then
  if st ~= 'open' then
    old = st
    gen = gen + 1
  end
  ou = now + dur
  redis.call('HSET', KEYS[1], 'st', 'open', 'ou', fmt(ou), 'g', fmt(gen), 'pk', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('PEXPIRE', KEYS[1], math.floor((dur + window + lease) / 1000) + 3600000)
  publish('*', gen)
  return {'open', gen, fmt(dur), '', '', old, 0, 0, unknown}
end

-- close / reset
if st ~= 'closed' then
  old = st
end
gen = gen + 1
if action == 'reset' then
  redis.call('HSET', KEYS[1], 'st', 'closed', 'g', fmt(gen), 'tr', 0, 'pk', 0)
  redis.call('HDEL', KEYS[1], 'q')
else
  redis.call('HSET', KEYS[1], 'st', 'closed', 'g', fmt(gen), 'pk', 0)
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[1], math.floor((window + lease) / 1000) + 3600000)
publish('*', gen)
return {'closed', gen, 0, '', '', old, 0, 0, unknown}
