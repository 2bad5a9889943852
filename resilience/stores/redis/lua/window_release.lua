-- Remove one request's entries (a reservation whose caller was cancelled) from every log.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua; ARGV: nonce, then cost_i per limit
-- Returns the number of logs the entry was removed from. Idempotent.
-- A merging caller's token is "m<nonce>": its reservation's entry carries it, its admission
-- for now (when not merged into a slot) the bare nonce; both names are tried.
local removed = 0
for i = 1, #KEYS / 2 do
  local w = tonumber(ARGV[i + 1])
  local suffix = ''
  if w > 1 then suffix = ':' .. w end
  local z = KEYS[2 * i - 1]
  local gone = redis.call('ZREM', z, ARGV[1] .. suffix)
  if gone == 0 and string.byte(ARGV[1], 1) == 109 then
    gone = redis.call('ZREM', z, string.sub(ARGV[1], 2) .. suffix)
  end
  if gone == 1 then
    if w > 1 then redis.call('HINCRBY', KEYS[2 * i], 'x', 1 - w) end
    removed = removed + 1
  end
end
return removed
