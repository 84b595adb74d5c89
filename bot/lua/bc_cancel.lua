-- Cancel a broadcast that has not finished; its workers stop at their next send.
-- KEYS: 1 broadcast, 2 due set, 3 schedule data hash, 4 schedules due set
-- ARGV: 1 now_ms, 2 broadcast id
local state = redis.call('HGET', KEYS[1], 'state')
if state == false then return {'not_found'} end
if state ~= 'draft' and state ~= 'scheduled' and state ~= 'queued' and state ~= 'running' then
  return {'refused', state}
end
-- A scheduled one will not start.
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'canceled', 'canceled_at', ARGV[1])
if state ~= 'running' then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return {'canceled', state}
