-- Replace the record KEYS[1] with ARGV[2], keeping its TTL, only if it still is ARGV[1]:
-- 1 done, 0 another writer changed it (read again), -1 it is gone.
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
