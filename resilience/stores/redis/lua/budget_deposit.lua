-- Retry budget: count `count` requests in the current 1-second bucket (see budget_withdraw.lua).
-- KEYS[1] = the budget's hash; ARGV: count, window_s. Returns the bucket's request count.
local t = redis.call('TIME')
local now = tonumber(t[1])
local win = tonumber(ARGV[2])
local cur = now % (win + 1)
local h = KEYS[1]
local r = 0
local q = 0
if tonumber(redis.call('HGET', h, 't' .. cur)) == now then
  r = tonumber(redis.call('HGET', h, 'r' .. cur)) or 0
  q = tonumber(redis.call('HGET', h, 'q' .. cur)) or 0
end
r = r + tonumber(ARGV[1])
redis.call('HSET', h, 't' .. cur, string.format('%d', now),
  'r' .. cur, string.format('%d', r), 'q' .. cur, string.format('%d', q))
redis.call('PEXPIRE', h, (win + 2) * 1000)
return r
