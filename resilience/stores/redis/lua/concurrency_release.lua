-- Concurrency limit: return a permit, or take a waiter out of the queue. Idempotent.
--
-- KEYS[1] holders, KEYS[2] queue, KEYS[3] waiter leases (as in concurrency_acquire.lua)
-- ARGV: max_in_flight, token, events channel, tag
-- Returns 1 if something was removed, else 0. When something was, the waiters whose turn it
-- now is are told on the channel: "<tag> <ticket> ..." (or "<tag> *" beyond 32 of them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max = tonumber(ARGV[1])
local token = ARGV[2]
local removed = redis.call('ZREM', KEYS[1], token)
removed = removed + redis.call('ZREM', KEYS[2], token)
redis.call('ZREM', KEYS[3], token)
if removed == 0 then return 0 end

local ns = string.format('%d', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ns)
local late = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ns)
for i = 1, #late, 1000 do
  local chunk = {unpack(late, i, math.min(i + 999, #late))}
  redis.call('ZREM', KEYS[2], unpack(chunk))
  redis.call('ZREM', KEYS[3], unpack(chunk))
end

local free = max - redis.call('ZCARD', KEYS[1])
local waiting = redis.call('ZCARD', KEYS[2])
if free <= 0 or waiting == 0 then return 1 end
local msg
if free > 32 and waiting > 32 then
  msg = ARGV[4] .. ' *'
else
  local ts = redis.call('ZRANGE', KEYS[2], 0, math.min(free, 32) - 1)
  msg = ARGV[4] .. ' ' .. table.concat(ts, ' ')
end
redis.call('PUBLISH', ARGV[3], msg)
return 1
