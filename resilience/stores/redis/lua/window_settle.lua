-- Re-weigh one request's entry (reserve, then settle to the actual cost), in every log.
-- KEYS: log_i, meta_i pairs as in window_acquire.lua
-- ARGV: nonce, then for each limit i: window_us_i, cost_i (the entry's current weight),
--       actual_i (its new weight; 0 removes it: a refund), then the window-events channel
-- Returns the number of logs that re-weighed the entry. A log whose entry now weighs less is
-- announced on the channel (the message: its key), so that the waiters of other processes
-- move their reservations up (window_advance.lua). PUBLISH takes no key (Cluster-safe).
--
-- The member carries the weight ("<nonce>" for 1, "<nonce>:<w>" otherwise) and the meta's x is
-- the sum of (w - 1) over the members: a settle swaps the member for the one of the new weight
-- at the same score (the entry keeps its slot time) and moves x by the difference, so x stays
-- exact through any sequence of re-weighings. Only the member of weight cost_i is touched: a
-- settle that lost a race with another settle of the same entry (the member now carries
-- another weight), or comes after a release, changes nothing. An entry that left its window
-- (score <= now - window) is left as it is: it no longer counts, and window_acquire trims it.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local done = 0
for i = 1, #KEYS / 2 do
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local actual = tonumber(ARGV[3 * i + 1])
  local old = ARGV[1]
  if cost ~= 1 then old = old .. ':' .. cost end
  local at = redis.call('ZSCORE', z, old)
  if at and tonumber(at) > now - window and actual ~= cost then
    if actual > 0 then
      local new = ARGV[1]
      if actual ~= 1 then new = new .. ':' .. actual end
      redis.call('ZADD', z, at, new) -- before the ZREM: the log never empties (its TTL stays)
    end
    redis.call('ZREM', z, old)
    -- A removed entry of weight 1 leaves x as it is; any other change moves it.
    local dx = math.max(actual - 1, 0) - (cost - 1)
    if dx ~= 0 then redis.call('HINCRBY', m, 'x', dx) end
    if actual < cost and ARGV[#KEYS / 2 * 3 + 2] then
      redis.call('PUBLISH', ARGV[#KEYS / 2 * 3 + 2], z)
    end
    done = done + 1
  elseif at and tonumber(at) > now - window then
    done = done + 1 -- already of that weight
  end
end
return done
