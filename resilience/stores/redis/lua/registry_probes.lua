-- Operator read: probe permits of a breaker whose lease has not expired.
-- KEYS: the breaker's probe leases (zset scored by lease expiry, see breaker_acquire.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now), '+inf')
