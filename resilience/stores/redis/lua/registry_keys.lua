-- Registry: the keys each entry saw, most recent first.
-- KEYS: one keys zset per entry (under the {reg} hash tag); ARGV: max keys per entry
-- Returns one array of keys per KEYS[i].
local out = {}
local n = tonumber(ARGV[1])
for i = 1, #KEYS do
  out[i] = redis.call('ZREVRANGE', KEYS[i], 0, n - 1)
end
return out
