-- Presence: "these deciders share this quota", for the fair share of the local fallback.
--
-- KEYS: one presence zset per limit name (all under the same {hash tag}):
--       member = decider id, score = Redis TIME (us) of its last announcement
-- ARGV: member, ttl_us
-- Returns {live_count_1, ..., live_count_n} (the announcer included)
--
-- Clock: Redis TIME only. Members older than ttl_us are trimmed on every call; the key
-- expires ttl_us after the last announcement (PEXPIRE, ms).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local member = ARGV[1]
local ttl = tonumber(ARGV[2])
local ttl_ms = math.floor(ttl / 1000) + 1
local out = {}
for i = 1, #KEYS do
  local z = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', z, '-inf', string.format('%d', now - ttl))
  redis.call('ZADD', z, string.format('%d', now), member)
  redis.call('PEXPIRE', z, ttl_ms)
  out[i] = redis.call('ZCARD', z)
end
return out
