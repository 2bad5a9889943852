-- Concurrency limit: extend a permit's lease (or hold it again if the store lost it).
--
-- KEYS[1] holders (zset: member = token, score = lease expiry in us)
-- ARGV: lease_us, token
-- Returns 1 if the permit was held (lease not yet expired), 0 if it is held again now: the
-- call it stands for is running, so it counts again, even above max_in_flight.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[1])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or '0')
redis.call('ZADD', KEYS[1], string.format('%d', now + lease), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.floor(lease / 1000) + 1000)
if old > now then return 1 end
return 0
