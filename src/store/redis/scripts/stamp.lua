-- Stamp `sessiongate.seen` = ARGV[1] (ms) on a session (KEYS[1]) that carries no
-- `sessiongate` member, appending it without re-encoding the record, keeping its TTL.
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, s = pcall(cjson.decode, v)
if not ok or type(s) ~= 'table' or s['sessiongate'] ~= nil then return 0 end
local body = string.match(v, '^(.*)}%s*$')
if not body then return 0 end
local sep = ','
if string.match(body, '{%s*$') then sep = '' end
redis.call('SET', KEYS[1], body .. sep .. '"sessiongate":{"seen":' .. ARGV[1] .. '}}', 'KEEPTTL')
return 1
