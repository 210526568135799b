-- Move session ARGV[1] to ARGV[2] in a user's index (KEYS[1]), keeping its score, the index
-- living at least ARGV[3] seconds. A session that is no longer in the index has ended since it
-- was loaded (logged out, revoked, or the oldest past the user's cap): 0, and the new id does
-- not join. 1: moved.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[3], 'GT')
return 1
