-- Operator read: a concurrency limit's permits and queued waiters whose lease has not expired.
-- KEYS[1] holders, KEYS[2] waiter leases (zsets scored by lease expiry in us, as in
-- concurrency_acquire.lua). Returns {in_flight, waiting}. A read. Clock: Redis TIME.
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'),
        redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')}
