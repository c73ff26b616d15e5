-- Reads a channel: its epoch and newest offset, and its kept publications
-- from an offset on.
-- KEYS[1] state hash, KEYS[2] stream
-- ARGV[1] epoch if the channel has none, ARGV[2] first offset wanted
-- ('': none, '0': the oldest kept), ARGV[3] most entries, ARGV[4] history
-- TTL (ms, 0: none), ARGV[5] state TTL (ms)
-- Returns {epoch, top, offset1, time1, body1, offset2, …}.
local epoch, top = state(KEYS[1], KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local out = {epoch, top}
if ARGV[2] ~= '' then
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then
    expire(KEYS[2], now_ms() - ttl)
  end
  local from = '-'
  if ARGV[2] ~= '0' then
    from = ARGV[2] .. '-0'
  end
  local entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', ARGV[3])
  for i = 1, #entries do
    local e = entries[i]
    out[#out + 1] = string.match(e[1], '^(%d+)')
    out[#out + 1] = e[2][2]
    out[#out + 1] = e[2][4]
  end
end
return out
