-- Registry: every entry. KEYS: entries hash, times hash. No ARGV.
-- Returns {field_1, settings_1, age_us_1, ...} (age: since the last registration, Redis TIME).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local seen = tonumber(redis.call('HGET', KEYS[2], all[i])) or now
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
  out[#out + 1] = string.format('%d', math.max(now - seen, 0))
end
return out
