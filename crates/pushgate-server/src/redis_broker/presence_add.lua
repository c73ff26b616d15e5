-- Lists members of a channel until TTL from now (a node renews its own
-- before then; a crashed node's drop out), and tells the other nodes.
-- KEYS[1] members (zset: id → when its listing ends), KEYS[2] users (hash:
-- id → 'u' .. user, or '-' for anonymous), KEYS[3] the channel's pub/sub
-- channel
-- ARGV[1] TTL (ms), ARGV[2] PUBLISH or SPUBLISH, ARGV[3] the join to
-- announce ('': none), ARGV[4], ARGV[5], …: id, user, id, user, …
local ttl = tonumber(ARGV[1])
local ends = now_ms() + ttl
for i = 4, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ends, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[3] ~= '' then
  redis.call(ARGV[2], KEYS[3], ARGV[3])
end
return 0
