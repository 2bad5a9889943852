-- Operator read: per limit, the limit learned from the upstream in force for a key (0: none).
-- KEYS: log_i, meta_i pairs as in window_acquire.lua (l = learned limit, u = until, in us).
-- A read. Clock: Redis TIME.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS / 2 do
  local meta = redis.call('HMGET', KEYS[2 * i], 'l', 'u')
  if meta[1] and (tonumber(meta[2]) or 0) > now then
    out[i] = tonumber(meta[1])
  else
    out[i] = 0
  end
end
return out
