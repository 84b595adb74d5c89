-- Record one attempt to deliver an event: delivered, stopped (410), failed, or retry at.
-- KEYS: 1 event, 2 events due set, 3 stats, 4 failed events list
-- ARGV: 1 now_ms, 2 outcome, 3 detail, 4 next_at_ms, 5 event id, 6 attempt
local now = tonumber(ARGV[1])
local e = hgetall_map(KEYS[1])
if e.status ~= 'pending' or tonumber(e.attempts or '0') ~= tonumber(ARGV[6]) then
  return {'ignored'}
end
local outcome = ARGV[2]
if outcome == 'retry' then
  redis.call('HSET', KEYS[1], 'last_error', ARGV[3], 'next_attempt_at', ARGV[4])
  redis.call('HDEL', KEYS[1], 'lease_until', 'lease_token')
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[5])
  redis.call('HINCRBY', KEYS[3], 'events:retried', 1)
  return {'retry'}
end
redis.call('HSET', KEYS[1], 'status', outcome, 'last_error', ARGV[3], 'finished_at', now)
redis.call('HDEL', KEYS[1], 'lease_until', 'lease_token', 'next_attempt_at')
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'events:' .. outcome, 1)
if outcome == 'failed' then
  redis.call('LPUSH', KEYS[4], ARGV[5])
  redis.call('LTRIM', KEYS[4], 0, 9999)
end
return {outcome}
