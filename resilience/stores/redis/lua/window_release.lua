-- Remove one request's entries (a reservation whose caller was cancelled) from every log.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua; ARGV: nonce, then cost_i per limit
-- Returns the number of logs the entry was removed from. Idempotent.
local removed = 0
for i = 1, #KEYS / 2 do
  local w = tonumber(ARGV[i + 1])
  local member = ARGV[1]
  if w > 1 then member = member .. ':' .. w end
  if redis.call('ZREM', KEYS[2 * i - 1], member) == 1 then
    if w > 1 then redis.call('HINCRBY', KEYS[2 * i], 'x', 1 - w) end
    removed = removed + 1
  end
end
return removed
