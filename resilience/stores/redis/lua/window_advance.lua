-- Move one request's reserved entry to an earlier slot if it now fits there (a settle or a
-- refund freed units): the slot window_acquire.lua would give the request now, with the entry
-- itself left out of the logs, and not before the key's penalty; never a later one.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua
-- ARGV: nonce, then for each limit i: limit_i, window_us_i, cost_i (the entry's weight)
-- Returns the entry's wait from now in us (0: due), or -1 when a log lacks the entry.
--
-- Placement as in window_acquire.lua (see its notes on exactness and on the x bookkeeping): a
-- weighted log (x ~= 0) is trimmed first, then the request fits once `need` of the oldest live
-- weight has left the window. The member is taken out and put back under the same name, so x
-- does not change; a log the removal emptied gets its TTL back.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local nlimits = #KEYS / 2

local function weight(member, c)
  if member == '#' then return c end -- the open merged slot (see window_acquire.lua)
  return tonumber(string.match(member, ':(%d+)$')) or 1
end

local members, old = {}, nil
for i = 1, nlimits do
  local cost = tonumber(ARGV[3 * i + 1])
  members[i] = ARGV[1]
  if cost ~= 1 then members[i] = members[i] .. ':' .. cost end
  local s = redis.call('ZSCORE', KEYS[2 * i - 1], members[i])
  if not s then return -1 end
  s = tonumber(s)
  if old == nil or s > old then old = s end
end
if old <= now then return 0 end

local at = now
local ttls = {}
for i = 1, nlimits do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[3 * i - 1])
  local window = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local horizon = now - window
  ttls[i] = redis.call('PTTL', z)
  local meta = redis.call('HMGET', m, 'x', 'p', 'l', 'u', 'c')
  local x = tonumber(meta[1]) or 0
  local c = tonumber(meta[5]) or 1
  if meta[3] and (tonumber(meta[4]) or 0) > now then -- a learned limit (window_learn.lua)
    local l = tonumber(meta[3])
    if l < limit then limit = math.max(l, cost) end
  end
  if x ~= 0 then
    local dead = redis.call('ZRANGEBYSCORE', z, '-inf', horizon)
    if #dead > 0 then
      redis.call('ZREMRANGEBYSCORE', z, '-inf', horizon)
      for j = 1, #dead do x = x - weight(dead[j], c) + 1 end
      redis.call('HSET', m, 'x', x)
    end
  end
  redis.call('ZREM', z, members[i])
  local xo = x - (cost - 1) -- the log's extra weight without the entry
  local n
  if xo ~= 0 then n = redis.call('ZCARD', z) else n = redis.call('ZCOUNT', z, horizon + 1, '+inf') end
  local total = n + xo
  local a = now
  if total + cost > limit then
    local need = total + cost - limit
    a = now + window
    if xo == 0 then
      local e = redis.call('ZRANGEBYSCORE', z, horizon + 1, '+inf', 'WITHSCORES',
        'LIMIT', need - 1, 1)
      if e[2] then a = e[2] + window end
    else
      local entries = redis.call('ZRANGE', z, 0, need - 1, 'WITHSCORES')
      local acc = 0
      for j = 1, #entries, 2 do
        acc = acc + weight(entries[j], c)
        if acc >= need then a = entries[j + 1] + window; break end
      end
    end
  end
  local pen = tonumber(meta[2]) or 0
  if pen > a then a = pen end
  if a > at then at = a end
end
if at > old then at = old end
for i = 1, nlimits do
  local z = KEYS[2 * i - 1]
  redis.call('ZADD', z, at, members[i])
  if ttls[i] > 0 and redis.call('PTTL', z) < 0 then redis.call('PEXPIRE', z, ttls[i]) end
end
return at - now
