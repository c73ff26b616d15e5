-- Unlists a member, announcing its leave if it was listed (a node that
-- found its listing ended may have announced it already).
-- KEYS as presence_add.lua; ARGV[1] id, ARGV[2] PUBLISH or SPUBLISH,
-- ARGV[3] '1' when the channel announces joins and leaves
local user = redis.call('HGET', KEYS[2], ARGV[1])
local listed = redis.call('ZREM', KEYS[1], ARGV[1]) == 1
redis.call('HDEL', KEYS[2], ARGV[1])
if listed and ARGV[3] == '1' then
  announce_member('leave', ARGV[1], user, KEYS[3], ARGV[2])
end
return 0
