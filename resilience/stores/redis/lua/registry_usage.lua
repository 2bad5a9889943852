-- Operator read: per limit, the units of a key's log that count now.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua; ARGV: window_us_i per limit
-- Returns {units_1, ...}: the weight of the entries at > now - window_us (reservations ahead
-- included). A read. Clock: Redis TIME.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS / 2 do
  local members = redis.call('ZRANGEBYSCORE', KEYS[2 * i - 1],
    '(' .. string.format('%d', now - tonumber(ARGV[i])), '+inf')
  local s = 0
  for j = 1, #members do
    if members[j] == '#' then -- the open merged slot: its weight is in the meta
      s = s + (tonumber(redis.call('HGET', KEYS[2 * i], 'c')) or 1)
    else
      s = s + (tonumber(string.match(members[j], ':(%d+)$')) or 1)
    end
  end
  out[i] = s
end
return out
