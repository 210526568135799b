-- Add session ARGV[1] to a user's index (KEYS[1]), scored ARGV[2] (when it began), the
-- index living at least ARGV[3] seconds.
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[3], 'GT')
return 1
