-- The live nodes of the cluster: a sorted set of node numbers scored by
-- when their listing ends (Redis's clock). Lists ARGV[1] for ARGV[2] ms
-- more (unless empty), unlists ARGV[3] (unless empty), forgets the nodes
-- whose listing ended, and returns the live ones.
-- KEYS[1]: {P}:nodes
local set = KEYS[1]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
if ARGV[1] ~= '' then
  redis.call('ZADD', set, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', set, tonumber(ARGV[2]) * 2)
end
if ARGV[3] ~= '' then
  redis.call('ZREM', set, ARGV[3])
end
return redis.call('ZRANGE', set, 0, -1)
