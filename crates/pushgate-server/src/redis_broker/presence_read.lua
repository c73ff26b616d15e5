-- Every member listed, after unlisting those whose listing ended (and
-- announcing their leaves).
-- KEYS as presence_add.lua; ARGV[1] PUBLISH or SPUBLISH, ARGV[2] '1' when
-- the channel announces joins and leaves.
-- Returns {id1, user1, id2, user2, …}.
drop_ended(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2] == '1')
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
