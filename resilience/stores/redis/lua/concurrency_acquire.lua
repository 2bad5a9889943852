-- Concurrency limit: take a permit if it is this caller's turn, else queue (or refuse).
--
-- KEYS[1] holders (zset: member = token, score = lease expiry in us)
-- KEYS[2] queue   (zset: member = ticket, score = arrival number)
-- KEYS[3] waiter leases (zset: member = ticket, score = lease expiry in us)
-- KEYS[4] arrival counter (string, INCR)
-- ARGV: max_in_flight, lease_us, ticket (fleet-unique), queue ('1': may wait, '0': refuse),
--       events channel, tag
-- Returns {granted (0|1), token ('' when refused), in_flight, waiting, wait_us}
--
-- Clock: Redis TIME only. Expired holders and waiters are forgotten first (a crashed holder's
-- permit comes back within one lease). With free = max_in_flight - holders, the waiters at
-- ranks 0 .. free-1 may take a permit: nobody overtakes a waiter. Every key expires one lease
-- (plus a second) after its last write: no entry outlives its lease anyway.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local ticket = ARGV[3]
local ttl_ms = math.floor(lease / 1000) + 1000
local ns = string.format('%d', now)

local freed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ns)
local late = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ns)
for i = 1, #late, 1000 do
  local chunk = {unpack(late, i, math.min(i + 999, #late))}
  redis.call('ZREM', KEYS[2], unpack(chunk))
  redis.call('ZREM', KEYS[3], unpack(chunk))
end
freed = freed + #late

-- Tell the waiters whose turn it now is (all but `skip`): "<tag> <ticket> ..." or "<tag> *".
local function notify(skip)
  local free = max - redis.call('ZCARD', KEYS[1])
  if free <= 0 then return end
  local waiting = redis.call('ZCARD', KEYS[2])
  if waiting == 0 then return end
  local msg
  if free > 32 and waiting > 32 then
    msg = ARGV[6] .. ' *'
  else
    local ts = redis.call('ZRANGE', KEYS[2], 0, math.min(free, 32) - 1)
    local parts = {}
    for _, w in ipairs(ts) do
      if w ~= skip then parts[#parts + 1] = w end
    end
    if #parts == 0 then return end
    msg = ARGV[6] .. ' ' .. table.concat(parts, ' ')
  end
  redis.call('PUBLISH', ARGV[5], msg)
end

local function expire_all()
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl_ms) end
end

local function wait_us()
  local soonest = now + lease
  local h = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if h[2] then soonest = math.min(soonest, tonumber(h[2])) end
  local w = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if w[2] then soonest = math.min(soonest, tonumber(w[2])) end
  return math.max(math.min(soonest - now, math.floor(lease / 3)), 1)
end

local lease_end = string.format('%d', now + lease)
if redis.call('ZSCORE', KEYS[1], ticket) then  -- already granted (a repeated call): renew
  redis.call('ZADD', KEYS[1], lease_end, ticket)
  expire_all()
  return {1, ticket, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), 0}
end

local holders = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], ticket)
local queued = rank ~= false
if not queued then rank = redis.call('ZCARD', KEYS[2]) end

if rank < max - holders then
  if queued then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZREM', KEYS[3], ticket)
  end
  redis.call('ZADD', KEYS[1], lease_end, ticket)
  if freed > 0 then notify(ticket) end
  expire_all()
  return {1, ticket, holders + 1, redis.call('ZCARD', KEYS[2]), 0}
end

if ARGV[4] ~= '1' then
  if queued then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZREM', KEYS[3], ticket)
  end
  return {0, '', holders, redis.call('ZCARD', KEYS[2]), wait_us()}
end

if not queued then  -- a new or forgotten ticket joins at the tail
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ticket)
end
redis.call('ZADD', KEYS[3], lease_end, ticket)
if freed > 0 then notify(ticket) end
expire_all()
return {0, ticket, holders, redis.call('ZCARD', KEYS[2]), wait_us()}
