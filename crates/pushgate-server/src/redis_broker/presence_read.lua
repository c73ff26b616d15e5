-- Every member listed, after dropping those whose listing ended.
-- KEYS as presence_add.lua. Returns {id1, user1, id2, user2, …}.
local now = now_ms()
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #ended > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for i = 1, #ended, 1000 do
    redis.call('HDEL', KEYS[2], unpack(ended, i, math.min(i + 999, #ended)))
  end
end
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  local users = redis.call('HMGET', KEYS[2], unpack(ids, i, last))
  for j = i, last do
    out[#out + 1] = ids[j]
    out[#out + 1] = users[j - i + 1] or '-'
  end
end
return out
