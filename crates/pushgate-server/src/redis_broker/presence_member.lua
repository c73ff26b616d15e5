-- A member's user ('u' .. user, or '-') while it is listed; nil otherwise.
-- KEYS as presence_add.lua; ARGV[1] id
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends or tonumber(ends) <= now_ms() then
  return false
end
return redis.call('HGET', KEYS[2], ARGV[1]) or '-'
