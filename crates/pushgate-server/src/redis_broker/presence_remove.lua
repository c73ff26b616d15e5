-- Unlists a member, and tells the other nodes.
-- KEYS as presence_add.lua; ARGV[1] id, ARGV[2] PUBLISH or SPUBLISH,
-- ARGV[3] the leave to announce ('': none)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then
  redis.call(ARGV[2], KEYS[3], ARGV[3])
end
return 0
