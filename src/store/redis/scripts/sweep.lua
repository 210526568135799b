-- Delete one session (KEYS[1]) if it belongs to the revoked user (ARGV[2], rendered as the
-- load script does, from the field ARGV[1]) and began at or before the revocation (ARGV[3],
-- ms), or has not been seen by a gate at all. Returns 1 when deleted.
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then return 0 end
local ok, s = pcall(cjson.decode, v)
if not ok or type(s) ~= 'table' then return 0 end
local u = s[ARGV[1]]
local user = nil
if type(u) == 'string' and u ~= '' then user = u
elseif type(u) == 'number' and u == math.floor(u) and math.abs(u) <= 9007199254740991 then
  user = string.format('%.0f', u)
end
if user ~= ARGV[2] then return 0 end
local meta = s['sessiongate']
if type(meta) == 'table' then
  local born = meta['created']
  if type(born) ~= 'number' then born = meta['seen'] end
  if type(born) == 'number' and born > tonumber(ARGV[3]) then return 0 end
end
redis.call('DEL', KEYS[1])
return 1
