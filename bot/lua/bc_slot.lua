-- A send slot on the bot-wide schedule; with a pause (Telegram's retry_after) first
-- pushes the whole schedule back, for every broadcast and worker.
-- Senders that already hold an earlier slot see the pause in KEYS[2] before they send.
-- KEYS: 1 send schedule, 2 pause-until    ARGV: 1 now_ms, 2 ms between sends (0: no limit),
--       3 pause ms
local now = tonumber(ARGV[1])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local pause = tonumber(ARGV[3])
if pause > 0 then
  next_free = math.max(next_free, now + pause)
  local until_ms = tonumber(redis.call('GET', KEYS[2]) or '0')
  if now + pause > until_ms then redis.call('SET', KEYS[2], now + pause, 'PX', pause) end
end
local slot = math.max(next_free, now)
local interval = tonumber(ARGV[2])
redis.call('SET', KEYS[1], slot + interval, 'PX', 3600000)
return slot - now
