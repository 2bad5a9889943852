-- Block a key: admit nothing until now + duration (Redis clock). Penalties only extend.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua; ARGV: duration_us
-- Returns the penalty's remaining time in us.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local ttl = math.floor(tonumber(ARGV[1]) / 1000) + 1000
local longest = 0
for i = 1, #KEYS / 2 do
  local m = KEYS[2 * i]
  local pen = tonumber(redis.call('HGET', m, 'p')) or 0
  if untl > pen then
    redis.call('HSET', m, 'p', string.format('%d', untl))
    pen = untl
  end
  if redis.call('PTTL', m) < ttl then redis.call('PEXPIRE', m, ttl) end
  if pen - now > longest then longest = pen - now end
end
return longest
