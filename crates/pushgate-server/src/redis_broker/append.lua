-- Appends one publication: the next offset, kept in the stream (trimmed to
-- the history size and TTL), announced on the channel's pub/sub channel.
-- All in one script, so offsets are gapless and in order across nodes, and
-- a publication is readable before it is announced.
-- KEYS[1] state hash (e: epoch, o: newest offset), KEYS[2] stream, KEYS[3]
-- the pub/sub channel (a key too, so a cluster checks it is in the slot)
-- ARGV[1] epoch if the channel has none, ARGV[2] body, ARGV[3] history size,
-- ARGV[4] history TTL (ms, 0: none), ARGV[5] state TTL (ms),
-- ARGV[6] PUBLISH, or SPUBLISH in a cluster
-- Returns {offset, epoch, time}.
local epoch = state(KEYS[1], KEYS[2], ARGV[1])
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local now = now_ms()
local size, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, string.format('%d-0', offset),
    't', string.format('%d', now), 'b', ARGV[2])
  if ttl > 0 then
    expire(KEYS[2], now - ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call(ARGV[6], KEYS[3], string.format('%d:%s:%d:', offset, epoch, now) .. ARGV[2])
return {offset, epoch, string.format('%d', now)}
