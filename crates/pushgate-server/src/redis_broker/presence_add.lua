-- Lists members of a channel until TTL from now (a node renews its own
-- before then), tells the other nodes, and unlists those whose listing
-- ended (a crashed node's), announcing their leaves.
-- KEYS[1] members (zset: id → when its listing ends), KEYS[2] users (hash:
-- id → 'u' .. user, or '-' for anonymous), KEYS[3] the channel's pub/sub
-- channel
-- ARGV[1] TTL (ms), ARGV[2] PUBLISH or SPUBLISH, ARGV[3] '1' when the
-- channel announces joins and leaves, ARGV[4] the join to announce ('':
-- none), ARGV[5], ARGV[6], …: id, user, id, user, …
local announce = ARGV[3] == '1'
drop_ended(KEYS[1], KEYS[2], KEYS[3], ARGV[2], announce)
local ttl = tonumber(ARGV[1])
local ends = now_ms() + ttl
for i = 5, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ends, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[4] ~= '' then
  redis.call(ARGV[2], KEYS[3], ARGV[4])
end
return 0
