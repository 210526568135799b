-- Revoke a user (KEYS[1], their index): from ARGV[1] (now, ms) on, no session of theirs
-- that began at or before it is served. The index's session ids are returned for the caller
-- to delete; the index is left holding only the marker '!revoked' (scored now) and '!sweep'
-- (scored ARGV[2], the deadline of the sweep for sessions the index did not know), and lives
-- ARGV[3] seconds (the longest a session lives), or longer if it already did.
local ids = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(id, 1, 1) ~= '!' then table.insert(ids, id) end
end
local ttl = redis.call('TTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[1], '!revoked', ARGV[2], '!sweep')
local life = tonumber(ARGV[3])
if ttl > life then life = ttl end
redis.call('EXPIRE', KEYS[1], life)
return ids
