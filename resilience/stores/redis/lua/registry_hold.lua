-- Operator hold: pause every key of limiter ARGV[1] until now + ARGV[2] us (0: lift it).
-- KEYS: holds hash (name -> end, us); ARGV: name, duration_us, events channel
-- Returns the time left of the hold in force, us. A hold is replaced, not extended.
-- PUBLISH "hold" on the channel (no key: Cluster-safe): every process re-reads the holds.
-- Clock: Redis TIME. Ended holds are dropped here; the hash expires with its longest hold.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local dur = tonumber(ARGV[2])
if dur > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + dur))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local longest = 0
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left <= 0 then
    redis.call('HDEL', KEYS[1], all[i])
  elseif left > longest then
    longest = left
  end
end
if longest > 0 then
  redis.call('PEXPIRE', KEYS[1], math.floor(longest / 1000) + 1000)
end
redis.call('PUBLISH', ARGV[3], 'hold')
if dur > 0 then return dur end
return 0
