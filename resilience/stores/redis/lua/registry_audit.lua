-- Audit log: append ARGV[1] (newest first), keep ARGV[2] entries; the list expires ARGV[3] ms
-- after the last entry. KEYS: audit list. Returns 0.
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 0
