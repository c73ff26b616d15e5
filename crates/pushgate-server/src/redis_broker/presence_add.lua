-- Lists members of a channel until TTL from now (a node renews its own
-- before then) and unlists those whose listing ended (a crashed node's).
-- Whoever lists a member first (its join, or a renewal that lists it
-- again after another node dropped it) announces its join; whoever
-- unlists it, its leave: each goes out once.
-- KEYS[1] members (zset: id → when its listing ends), KEYS[2] users (hash:
-- id → 'u' .. user, or '-' for anonymous), KEYS[3] the channel's pub/sub
-- channel
-- ARGV[1] TTL (ms), ARGV[2] PUBLISH or SPUBLISH, ARGV[3] '1' when the
-- channel announces joins and leaves, ARGV[4], ARGV[5], …: id, user, id,
-- user, …
local announce = ARGV[3] == '1'
drop_ended(KEYS[1], KEYS[2], KEYS[3], ARGV[2], announce)
local ttl = tonumber(ARGV[1])
local ends = now_ms() + ttl
for i = 4, #ARGV, 2 do
  local new = redis.call('ZADD', KEYS[1], ends, ARGV[i]) == 1
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if new and announce then
    announce_member('join', ARGV[i], ARGV[i + 1], KEYS[3], ARGV[2])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 0
