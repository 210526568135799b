-- Load a session (KEYS[1]): GET it, refuse it when its user was revoked after it began,
-- stamp the first time a gate sees it, keep it in its user's index, and with a policy push
-- its TTL. ARGV: 1 idle timeout in s ('' = no push), 2 touch interval, 3 absolute timeout
-- (0 = none), 4 now in ms, 5 user field, 6 index prefix ('' on a cluster: the index is
-- another slot's, see admit.lua), 7 sid, 8 'quiet' (a touch only: the record comes back ''),
-- 9 the longest a session lives, in s, 10 'nostamp' (on a cluster: stamp.lua stamps, after
-- admit.lua has checked the session against a revocation).
-- Returns `{record, ttl left, own ttl, touched}`, or nil when there is no session to serve.
--
-- The user's index `<index prefix><user>` is a sorted set of session ids scored by when each
-- began; a revocation adds the member '!revoked' scored with its time, and '!sweep' scored
-- with the deadline of the sweep that looks for sessions the index did not know. A session
-- began at `sessiongate.created` (a gate made it) or `sessiongate.seen` (the first time a
-- gate loaded it); one that no gate has seen yet began now, unless a sweep is running for
-- its user (it may be one the sweep has not reached): then it is refused.
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, s = pcall(cjson.decode, v)
if not ok or type(s) ~= 'table' then
  if ARGV[8] == 'quiet' then v = '' end
  return {v, redis.call('TTL', KEYS[1]), 0, 0}
end
-- The user id as the gate's Rust renders it (record::render_user): a non-empty string, or
-- an integer within JavaScript's safe range (|u| <= 2^53 - 1, which a double holds exactly),
-- without exponent ('%.0f'; never tostring's 1.2e+16). Larger numbers name no user.
local function render(u)
  if type(u) == 'string' and u ~= '' then return u end
  if type(u) == 'number' and u == math.floor(u) and math.abs(u) <= 9007199254740991 then
    return string.format('%.0f', u)
  end
  return nil
end
local now = tonumber(ARGV[4])
local user = render(s[ARGV[5]])
local idx = nil
if user and ARGV[6] ~= '' then idx = ARGV[6] .. user end
local meta = s['sessiongate']
local born = nil
if type(meta) == 'table' then
  if type(meta['created']) == 'number' then born = meta['created']
  elseif type(meta['seen']) == 'number' then born = meta['seen'] end
end
if idx then
  local revoked = redis.call('ZSCORE', idx, '!revoked')
  if revoked then
    local refused
    if born then
      refused = born <= tonumber(revoked)
    else
      local sweep = redis.call('ZSCORE', idx, '!sweep')
      refused = sweep ~= false and tonumber(sweep) > now
    end
    if refused then
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', idx, ARGV[7])
      return false
    end
  end
end
if not born and meta == nil and ARGV[10] ~= 'nostamp' then
  -- First seen by a gate: stamp it without re-encoding the record (cjson would turn big
  -- numbers into exponents and reorder members); express apps carry the member along.
  local body = string.match(v, '^(.*)}%s*$')
  if body then
    local sep = ','
    if string.match(body, '{%s*$') then sep = '' end
    v = body .. sep .. '"sessiongate":{"seen":' .. string.format('%.0f', now) .. '}}'
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
    born = now
  end
end
local out = v
if ARGV[8] == 'quiet' then out = '' end
-- Keeps the session in its user's index, the index living at least `t` seconds.
local function index(t)
  if not idx then return end
  redis.call('ZADD', idx, 'NX', born or now, ARGV[7])
  if t < 1 then t = tonumber(ARGV[9]) end
  redis.call('EXPIRE', idx, t, 'NX')
  redis.call('EXPIRE', idx, t, 'GT')
end
if ARGV[1] == '' then
  local left = redis.call('TTL', KEYS[1])
  index(left)
  return {out, left, 0, 0}
end
local ttl = tonumber(ARGV[1])
local c = s['cookie']
if type(c) == 'table' and type(c['originalMaxAge']) == 'number' and c['originalMaxAge'] > 0 then
  ttl = math.ceil(c['originalMaxAge'] / 1000)
end
local abs = tonumber(ARGV[3])
if abs > 0 and type(meta) == 'table' and type(meta['created']) == 'number' then
  local left = math.floor((meta['created'] + abs * 1000 - now) / 1000)
  if left < 1 then
    redis.call('DEL', KEYS[1])
    if idx then redis.call('ZREM', idx, ARGV[7]) end
    return false
  end
  if left < ttl then ttl = left end
end
-- Never more than half the TTL, so an active session is pushed before it runs out.
local interval = math.min(tonumber(ARGV[2]), math.floor(ttl / 2))
if interval > 0 then
  local remaining = redis.call('TTL', KEYS[1])
  if remaining >= 0 and remaining + interval > ttl then
    index(ttl)
    return {out, remaining, ttl, 0}
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
index(ttl)
return {out, ttl, ttl, 1}
