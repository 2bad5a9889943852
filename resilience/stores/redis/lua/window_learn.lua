-- Cap a key's limit at what the upstream reported, for every process (window_acquire.lua reads
-- it from the meta: l = the learned limit, u = until when, in us on Redis's clock).
-- KEYS: log_i, meta_i pairs as in window_acquire.lua; ARGV: limit, duration_us (0: clear)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local dur = tonumber(ARGV[2])
local ttl = math.floor(dur / 1000) + 1000
for i = 1, #KEYS / 2 do
  local m = KEYS[2 * i]
  if dur > 0 then
    redis.call('HSET', m, 'l', ARGV[1], 'u', now + dur)
    if redis.call('PTTL', m) < ttl then redis.call('PEXPIRE', m, ttl) end
  else
    redis.call('HDEL', m, 'l', 'u')
  end
end
return 0
