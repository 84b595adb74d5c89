-- Cancel a person's reminder before it fires; it must be theirs and still scheduled.
-- KEYS: 1 reminder, 2 schedule data hash, 3 schedules due set
-- ARGV: 1 owner chat id, 2 reminder id, 3 now_ms
local r = hgetall_map(KEYS[1])
if r.id == nil or r.chat_id ~= ARGV[1] then return 'not_found' end
if r.status ~= 'scheduled' then return r.status end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 'canceled'
