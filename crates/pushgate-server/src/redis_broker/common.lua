-- Shared by append.lua and read.lua (prepended to each).

-- Redis's clock, in ms: one clock for every node, so ages compare.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drops the stream's entries older than `cutoff` (ms). They are the
-- oldest, so they are a prefix; the work of one call is bounded.
local function expire(stream, cutoff)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][2]) >= cutoff then
    return
  end
  for _ = 1, 16 do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    for i = 1, #batch do
      if tonumber(batch[i][2][2]) >= cutoff then
        redis.call('XTRIM', stream, 'MINID', batch[i][1])
        return
      end
    end
    if #batch == 0 then
      return
    end
    local last = tonumber(string.match(batch[#batch][1], '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', string.format('%d', last + 1))
    if #batch < 64 then
      return
    end
  end
end

-- The channel's epoch and newest offset, made (with `new_epoch`, offset 0)
-- when it has none: what a stream holds from an epoch whose state is gone
-- is dropped with it.
local function state(meta, stream, new_epoch)
  local m = redis.call('HMGET', meta, 'e', 'o')
  if m[1] then
    return m[1], m[2]
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', new_epoch, 'o', 0)
  return new_epoch, '0'
end

-- Announces that member `id` (its user as stored: 'u' .. user, or '-')
-- joined or left (`kind`), as a notice nodes exchange: the text of
-- pushgate_core::hub::cluster::encode_presence, which decodes it.
local function announce_member(kind, id, user, topic, publish)
  local who = 'null'
  if user and string.sub(user, 1, 1) == 'u' then
    who = cjson.encode(string.sub(user, 2))
  end
  redis.call(publish, topic, '{"t":"' .. kind .. '","id":' .. id .. ',"user":' .. who .. '}')
end

-- Unlists the members of a channel whose listing ended (their node died
-- without a word), announcing a leave for each when `announce`: only the
-- script that drops an entry announces it, so each leave goes out once.
-- set, users: the channel's members and their users; topic, publish: its
-- pub/sub channel and PUBLISH or SPUBLISH.
local function drop_ended(set, users, topic, publish, announce)
  local ended = redis.call('ZRANGEBYSCORE', set, '-inf', now_ms())
  for i = 1, #ended do
    local id = ended[i]
    local user = redis.call('HGET', users, id)
    redis.call('ZREM', set, id)
    redis.call('HDEL', users, id)
    if announce then
      announce_member('leave', id, user, topic, publish)
    end
  end
end
