-- How long a key stays paused: the longest penalty still in force, on Redis's clock. A read.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua; no ARGV
-- Returns the penalty's remaining time in us (0: none).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local longest = 0
for i = 1, #KEYS / 2 do
  local pen = tonumber(redis.call('HGET', KEYS[2 * i], 'p')) or 0
  if pen - now > longest then longest = pen - now end
end
return longest
