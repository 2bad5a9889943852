-- Circuit breaker: may a call run? (allow / deny / probe), one atomic decision.
--
-- KEYS[1] state hash: st (closed|open|half_open), ou (open_until, us), g (generation),
--                     tr (consecutive trips), pk (successful probes this half-open)
-- KEYS[2] failure log (zset: score = time in us, member unique)   [not touched here]
-- KEYS[3] probe leases (zset: score = lease expiry in us, member = probe token)
-- ARGV: threshold, window_us, break_us, max_break_us, max_probes, success_threshold,
--       lease_us, token (fleet-unique, used if a probe is granted), events channel
-- Returns {state, gen, wait_us, permit, token, old, stale = 0, failures = 0, unknown}
--   unknown: a state value no script writes, found in the hash and read as closed ('' if none)
--
-- Clock: Redis TIME only; integers formatted with %d. Every transition increments gen.
-- A missing hash (never written, or lost with a restart) reads as closed, generation 0:
-- every write of the hash sets g >= 1, so a process can tell a lost state from a close.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local max_probes = tonumber(ARGV[5])
local lease = tonumber(ARGV[7])

-- Tell every process (SUBSCRIBE ARGV[9]) that this breaker changed: "<tag> <gen> <state>",
-- the tag being the hash tag of the state key. PUBLISH takes no key (Cluster-safe here).
local function publish(state, g)
  redis.call('PUBLISH', ARGV[9], string.match(KEYS[1], '{([^}]*)}') .. ' ' ..
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

if st == 'closed' then
  return {st, gen, 0, 'allow', '', '', 0, 0, unknown}
end

local old = ''
if st == 'open' then
  if now < ou then
    return {st, gen, string.format('%d', ou - now), 'deny', '', '', 0, 0, ''}
  end
  -- The break has ended: this caller moves the breaker to half-open (once, fleet-wide).
  gen = gen + 1
  st = 'half_open'
  old = 'open'
  redis.call('HSET', KEYS[1], 'st', st, 'g', string.format('%d', gen), 'pk', 0)
  redis.call('DEL', KEYS[3])
  redis.call('PEXPIRE', KEYS[1], math.floor((window + lease) / 1000) + 3600000)
  publish(st, gen)
end

-- Half-open: expired leases are crashed or hung probers; their permits return.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[3]) < max_probes then
  redis.call('ZADD', KEYS[3], string.format('%d', now + lease), ARGV[8])
  redis.call('PEXPIRE', KEYS[3], math.floor(lease / 1000) + 1000)
  redis.call('PEXPIRE', KEYS[1], math.floor((window + lease) / 1000) + 3600000)
  return {st, gen, 0, 'probe', ARGV[8], old, 0, 0, ''}
end
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local wait = tonumber(first[2]) - now
if wait < 1 then wait = 1 end
return {st, gen, string.format('%d', wait), 'deny', '', old, 0, 0, ''}
