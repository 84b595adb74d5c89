-- The next person a broadcast goes to, and when (a send slot on the bot-wide schedule).
-- Chats that unsubscribed since the broadcast started are skipped.
-- KEYS: 1 broadcast, 2 audience, 3 in-flight hash, 4 subscribers, 5 send schedule, 6 due set,
--       7 email subscribers
-- ARGV: 1 now_ms, 2 lease token, 3 lease_ms, 4 ms between sends (0: no limit), 5 broadcast id
-- Reply: {'send', index, chat id, wait ms} | {'end'} | {'canceled'} | {'lost'}
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'canceled' then return {'canceled'} end
if state ~= 'running' or redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[2] then
  return {'lost'}
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local lease_until = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_until', lease_until)
redis.call('ZADD', KEYS[6], lease_until, ARGV[5])
for _ = 1, 1000 do
  local index = redis.call('HINCRBY', KEYS[1], 'cursor', 1) - 1
  if index >= total then
    redis.call('HSET', KEYS[1], 'cursor', total)
    return {'end'}
  end
  local chat = redis.call('LINDEX', KEYS[2], index)
  if string.sub(chat, 1, 2) == 'm:' then
    -- Email: its own pace (the SMTP pool), not Telegram's schedule.
    if redis.call('ZSCORE', KEYS[7], string.sub(chat, 3)) then
      redis.call('HSET', KEYS[3], index, chat)
      return {'send', tostring(index), chat, '0'}
    end
  elseif redis.call('ZSCORE', KEYS[4], chat) then
    redis.call('HSET', KEYS[3], index, chat)
    local interval = tonumber(ARGV[4])
    local next_free = tonumber(redis.call('GET', KEYS[5]) or '0')
    local slot = math.max(next_free, now)
    if interval > 0 then redis.call('SET', KEYS[5], slot + interval, 'PX', 3600000) end
    return {'send', tostring(index), chat, tostring(slot - now)}
  end
  redis.call('HINCRBY', KEYS[1], 'skipped', 1)
end
return {'send_none'}
