-- On a cluster, the index's half of a login under the user's cap (KEYS[1] is the user's
-- index; the sessions are in other slots). The new session's key is already written, so
-- that every session in an index has its key until it ends: the caller has checked the
-- index's other sessions and names those whose key is gone (ARGV[6…]); they are dropped and
-- do not count. Then, atomically on this slot: at the cap, refuse ('refused') or take the
-- oldest out of the index (their keys are the caller's to delete, in their own slots); add
-- the new session. A user revoked after the new session began gets 'revoked' (the load
-- would refuse it anyway; it never enters the index). ARGV: 1 sid, 2 when it began (ms),
-- 3 the cap, 4 'refuse' (else the oldest end), 5 the index's TTL at least, in s.
-- Returns {'stored', ended ids…, oldest first}, {'refused'} or {'revoked'}.
for i = 6, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
local revoked = redis.call('ZSCORE', KEYS[1], '!revoked')
if revoked and tonumber(ARGV[2]) <= tonumber(revoked) then return {'revoked'} end
local sid = ARGV[1]
local live = {}
local top = nil
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id = entries[i]
  if string.sub(id, 1, 1) ~= '!' and id ~= sid then
    table.insert(live, id)
    local score = tonumber(entries[i + 1])
    if not top or score > top then top = score end
  end
end
local out = {'stored'}
local max = tonumber(ARGV[3])
if #live >= max then
  if ARGV[4] == 'refuse' then return {'refused'} end
  for i = 1, #live - max + 1 do
    redis.call('ZREM', KEYS[1], live[i])
    table.insert(out, live[i])
  end
end
local score = tonumber(ARGV[2])
if top and score <= top then score = top + 0.01 end
redis.call('ZADD', KEYS[1], score, sid)
redis.call('EXPIRE', KEYS[1], ARGV[5], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[5], 'GT')
return out
