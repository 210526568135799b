-- Move session ARGV[1] to ARGV[2] in a user's index (KEYS[1]), keeping its score (ARGV[3]
-- when it had none), the index living at least ARGV[4] seconds.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1]) or ARGV[3]
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[4], 'GT')
return 1
