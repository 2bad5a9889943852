-- Finagle-style retry budget: count `deposits` requests, then grant one retry if it fits.
--
-- KEYS[1] = the budget's hash. For bucket i = second % (window_s + 1):
--   t<i> = the second (Redis TIME) the bucket holds, r<i> = requests, q<i> = granted retries.
--   A bucket counts while now - window_s <= t<i> <= now (between window_s and window_s + 1 s).
-- ARGV: deposits, ratio_ppm, reserve, window_s
-- Grants when (retries + 1) * 1e6 <= ratio_ppm * requests + reserve * 1e6 (integer arithmetic,
-- exact in a Lua double below 2^53).
-- Returns {allowed (0/1), requests, retries} in the window after the decision.
local t = redis.call('TIME')
local now = tonumber(t[1])
local deposits = tonumber(ARGV[1])
local ratio = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3])
local win = tonumber(ARGV[4])
local n = win + 1
local h = KEYS[1]
local cur = now % n

local flat = redis.call('HGETALL', h)
local f = {}
for i = 1, #flat, 2 do f[flat[i]] = tonumber(flat[i + 1]) end

local r_cur, q_cur = 0, 0
if f['t' .. cur] == now then
  r_cur = f['r' .. cur] or 0
  q_cur = f['q' .. cur] or 0
end
local req, ret = 0, 0
for i = 0, n - 1 do
  if i ~= cur then
    local s = f['t' .. i]
    if s and s >= now - win and s <= now then
      req = req + (f['r' .. i] or 0)
      ret = ret + (f['q' .. i] or 0)
    end
  end
end

r_cur = r_cur + deposits
req = req + r_cur
local allowed = 0
if (ret + q_cur + 1) * 1000000 <= ratio * req + reserve * 1000000 then
  allowed = 1
  q_cur = q_cur + 1
end
ret = ret + q_cur
redis.call('HSET', h, 't' .. cur, string.format('%d', now),
  'r' .. cur, string.format('%d', r_cur), 'q' .. cur, string.format('%d', q_cur))
redis.call('PEXPIRE', h, (win + 2) * 1000)
return {allowed, req, ret}
