-- SET a new session (KEYS[1]) and add it to its user's index (KEYS[2]) under the user's cap
-- (`session.max_per_user`), on one server (or the sentinels' master), all in one step:
-- logins of one user racing at the cap run one after the other, and none sees a count
-- another is about to change. ARGV: 1 record, 2 TTL in s, 3 now in ms, 4 sid, 5 the cap,
-- 6 'refuse' (else the oldest end), 7 the session key prefix.
-- Returns {'stored', ended ids…, oldest first} or {'refused'}.
--
-- Only live sessions count: an index entry whose session key is gone (expired, ended) is
-- dropped on the way. The sessions ended are those that began first (lowest score). Their
-- keys are not declared (the script cannot know them before it reads the index): fine on a
-- single server, which is why a cluster takes two steps instead (make_room.lua).
local sid = ARGV[4]
local live = {}
local top = nil
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id = entries[i]
  if string.sub(id, 1, 1) ~= '!' and id ~= sid then
    if redis.call('EXISTS', ARGV[7] .. id) == 1 then
      table.insert(live, id)
      local score = tonumber(entries[i + 1])
      if not top or score > top then top = score end
    else
      redis.call('ZREM', KEYS[2], id)
    end
  end
end
local out = {'stored'}
local max = tonumber(ARGV[5])
if #live >= max then
  if ARGV[6] == 'refuse' then return {'refused'} end
  for i = 1, #live - max + 1 do
    redis.call('DEL', ARGV[7] .. live[i])
    redis.call('ZREM', KEYS[2], live[i])
    table.insert(out, live[i])
  end
end
-- Strictly after every session the user holds, even within one millisecond, so that the
-- oldest is never ambiguous.
local score = tonumber(ARGV[3])
if top and score <= top then score = top + 0.01 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], score, sid)
redis.call('EXPIRE', KEYS[2], ARGV[2], 'NX')
redis.call('EXPIRE', KEYS[2], ARGV[2], 'GT')
return out
