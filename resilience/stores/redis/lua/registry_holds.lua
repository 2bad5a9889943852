-- Operator holds in force. KEYS: holds hash (name -> end, us). No ARGV. A read.
-- Returns {name_1, left_us_1, ...} for the holds not yet ended (Redis TIME).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = string.format('%d', left)
  end
end
return out
