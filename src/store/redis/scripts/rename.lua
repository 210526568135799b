-- RENAME a session to a new id and move it in its user's index (KEYS[3], optional).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
if KEYS[3] then
  local score = redis.call('ZSCORE', KEYS[3], ARGV[1]) or ARGV[3]
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[3], score, ARGV[2])
  local t = redis.call('TTL', KEYS[2])
  if t > 0 then
    redis.call('EXPIRE', KEYS[3], t, 'NX')
    redis.call('EXPIRE', KEYS[3], t, 'GT')
  end
end
return 1
