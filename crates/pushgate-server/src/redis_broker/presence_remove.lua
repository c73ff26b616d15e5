-- Unlists a member, and tells the other nodes.
-- KEYS as presence_add.lua; ARGV[1] id, ARGV[2] the channel's pub/sub
-- channel, ARGV[3] the leave to announce ('': none)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 0
