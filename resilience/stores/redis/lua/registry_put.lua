-- Registry: record a policy (kind, name) with its settings, and the keys it saw now.
-- KEYS: entries hash, times hash, keys zset (all under the {reg} hash tag)
-- ARGV: field ("<kind>:<name>"), settings (JSON text), ttl_ms, max_keys, then the keys seen
-- Returns 0. Clock: Redis TIME. Each key is scored by when it was last seen; the zset keeps
-- the max_keys most recent. Every registry key expires ttl_ms after the last registration.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if #ARGV >= 5 then
  for i = 5, #ARGV do redis.call('ZADD', KEYS[3], now, ARGV[i]) end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ttl) end
return 0
