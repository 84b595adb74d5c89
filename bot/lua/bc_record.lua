-- What happened to one send of a broadcast. A blocked bot unsubscribes the chat.
-- KEYS: 1 broadcast, 2 in-flight hash, 3 Telegram subscribers
-- ARGV: 1 index, 2 chat id, 3 outcome (sent|blocked|failed|unknown)
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
if ARGV[3] == 'blocked' then redis.call('ZREM', KEYS[3], ARGV[2]) end
return 1
