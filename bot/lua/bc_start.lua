-- Start a draft broadcast: fix its audience (the subscribers now) and queue it.
-- Telegram chats are listed as their ids, email subscribers as 'm:<address>' (text
-- broadcasts only: a copied Telegram message has no email form).
-- KEYS: 1 broadcast, 2 audience list, 3 Telegram subscribers, 4 broadcasts due set,
--       5 email subscribers
-- ARGV: 1 now_ms, 2 broadcast id
local state = redis.call('HGET', KEYS[1], 'state')
if state == false then return {'not_found'} end
if state ~= 'draft' and state ~= 'scheduled' then return {'refused', state} end
local chats = redis.call('ZRANGE', KEYS[3], 0, -1)
if redis.call('HGET', KEYS[1], 'kind') == 'text' then
  for _, address in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    chats[#chats + 1] = 'm:' .. address
  end
end
redis.call('DEL', KEYS[2])
for i = 1, #chats, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(chats, i, math.min(i + 999, #chats)))
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'total', #chats, 'cursor', 0, 'queued_at', ARGV[1])
redis.call('ZADD', KEYS[4], tonumber(ARGV[1]), ARGV[2])
return {'queued', tostring(#chats)}
