-- Audit log: the newest ARGV[1] entries, newest first. KEYS: audit list. A read.
local n = tonumber(ARGV[1])
if n <= 0 then return {} end
return redis.call('LRANGE', KEYS[1], 0, n - 1)
