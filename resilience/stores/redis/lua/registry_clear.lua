-- Operator action on a key of a limiter: lift its penalty (ARGV[1] = '0'), or forget its log
-- and meta entirely (ARGV[1] = '1': a reset). KEYS: log_i, meta_i pairs as in
-- window_acquire.lua. Returns 0.
for i = 1, #KEYS / 2 do
  if ARGV[1] == '1' then
    redis.call('DEL', KEYS[2 * i - 1], KEYS[2 * i])
  else
    redis.call('HDEL', KEYS[2 * i], 'p')
  end
end
return 0
