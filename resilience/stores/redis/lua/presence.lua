-- Presence: "these deciders share this quota", for the fair share of the local fallback.
--
-- KEYS: one presence zset per limit name (all under the same {hash tag}):
--       member = decider id, score = Redis TIME (us) of its last announcement
-- ARGV: member, ttl_us
-- Returns {count_1, rank_1, ..., count_n, rank_n}: per key, the live members (the announcer
-- included) and the announcer's rank among them in the order of their ids (from 0). Every
-- member that sees the same set computes ranks 0..count-1, one each: the fair shares it
-- derives add up to the quota.
--
-- Clock: Redis TIME only. Members older than ttl_us are trimmed on every call; the key
-- expires ttl_us after the last announcement (PEXPIRE, ms). The rank costs one pass over the
-- members (one per process sharing the quota), in the same round trip.

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
  local members = redis.call('ZRANGE', z, 0, -1)
  local rank = 0
  for _, m in ipairs(members) do
    if m < member then
      rank = rank + 1
    end
  end
  out[2 * i - 1] = #members
  out[2 * i] = rank
end
return out
