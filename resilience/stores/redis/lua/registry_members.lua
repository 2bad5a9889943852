-- Operator read: per presence zset (see presence.lua), the members that announced within the
-- last ARGV[1] us (Redis TIME). KEYS: presence zsets (one hash tag). Announces no one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('ZRANGEBYSCORE', KEYS[i],
    '(' .. string.format('%d', now - tonumber(ARGV[1])), '+inf')
end
return out
