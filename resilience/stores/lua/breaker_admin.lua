-- Circuit breaker: operator actions (state | open | close | reset).
--
-- KEYS: state hash, failure log, probe leases (see breaker_acquire.lua)
-- ARGV: threshold, window_us, break_us, max_break_us, max_probes, success_threshold,
--       lease_us, action, duration_us (for open)
-- Returns {state, gen, wait_us, permit = '', token = '', old, stale = 0, failures}
--
-- Clock: Redis TIME only; integers formatted with %d. Every transition increments gen.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local lease = tonumber(ARGV[7])
local action = ARGV[8]
local dur = tonumber(ARGV[9])

local h = redis.call('HMGET', KEYS[1], 'st', 'ou', 'g')
local st = h[1] or 'closed'
local ou = tonumber(h[2]) or 0
local gen = tonumber(h[3]) or 0

local function fmt(x) return string.format('%d', x) end

if action == 'state' then
  if st == 'closed' then
    local n = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - window), '+inf')
    return {st, gen, 0, '', '', '', 0, n}
  end
  if st == 'open' then
    if now < ou then return {st, gen, fmt(ou - now), '', '', '', 0, 0} end
    return {'half_open', gen, 0, '', '', '', 0, 0}
  end
  return {st, gen, 0, '', '', '', 0, 0}
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
  return {'open', gen, fmt(dur), '', '', old, 0, 0}
end

-- close / reset
if st ~= 'closed' then
  old = st
end
gen = gen + 1
if action == 'reset' then
  redis.call('HSET', KEYS[1], 'st', 'closed', 'g', fmt(gen), 'tr', 0, 'pk', 0)
else
  redis.call('HSET', KEYS[1], 'st', 'closed', 'g', fmt(gen), 'pk', 0)
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[1], math.floor((window + lease) / 1000) + 3600000)
return {'closed', gen, 0, '', '', old, 0, 0}
