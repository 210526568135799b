-- On a cluster, the index's half of loading a session (KEYS[1] is the user's index; the
-- session is in another slot): refuse the session (1) if the user was revoked after it
-- began, or if it began nowhere yet (no gate has seen it, ARGV[2] = '') while a sweep is
-- running; otherwise keep it in the index (0). ARGV: 1 sid, 2 when it began (ms, or ''),
-- 3 now (ms), 4 the index's TTL at least, in s.
local revoked = redis.call('ZSCORE', KEYS[1], '!revoked')
if revoked then
  local refused
  if ARGV[2] ~= '' then
    refused = tonumber(ARGV[2]) <= tonumber(revoked)
  else
    local sweep = redis.call('ZSCORE', KEYS[1], '!sweep')
    refused = sweep ~= false and tonumber(sweep) > tonumber(ARGV[3])
  end
  if refused then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
  end
end
local born = ARGV[2]
if born == '' then born = ARGV[3] end
redis.call('ZADD', KEYS[1], 'NX', born, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[4], 'GT')
return 0
