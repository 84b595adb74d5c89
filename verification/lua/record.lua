-- Record the outcome of one send attempt.
-- KEYS: 1 delivery, 2 due set, 3 stats, 4 dead letters, 5 verification, 6 expiring set,
--       7 event, 8 events due set
-- ARGV: 1 now_ms, 2 outcome (sent|failed|retry), 3 provider id, 4 error, 5 next_at_ms,
--       6 delivery id, 7 attempt number this outcome belongs to, 8 '1': a failure that
--       may still have reached the person (keeps the verification open)
local now = tonumber(ARGV[1])
local d = hgetall_map(KEYS[1])
if d.status == nil or d.status == 'sent' or d.status == 'failed' then return {'ignored'} end
if tonumber(d.attempts or '0') ~= tonumber(ARGV[7]) then return {'ignored'} end
local outcome = ARGV[2]
if outcome == 'sent' then
  redis.call('HSET', KEYS[1], 'status', 'sent', 'provider_id', ARGV[3], 'finished_at', now)
  redis.call('HDEL', KEYS[1], 'secret', 'lease_until', 'lease_token', 'error', 'next_attempt_at')
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'deliveries:sent:' .. d.channel, 1)
  -- Queue-to-sent latency histogram (ms buckets, cumulative like Prometheus).
  local latency = now - tonumber(d.created_at)
  for _, bound in ipairs({100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}) do
    if latency <= bound then redis.call('HINCRBY', KEYS[3], 'latency:le:' .. bound, 1) end
  end
  redis.call('HINCRBY', KEYS[3], 'latency:count', 1)
  redis.call('HINCRBY', KEYS[3], 'latency:sum_ms', latency)
  return {'sent'}
end
if outcome == 'failed' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4], 'finished_at', now)
  redis.call('HDEL', KEYS[1], 'secret', 'lease_until', 'lease_token', 'next_attempt_at')
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('LPUSH', KEYS[4], ARGV[6])
  redis.call('LTRIM', KEYS[4], 0, 9999)
  redis.call('HINCRBY', KEYS[3], 'deliveries:failed:' .. d.channel, 1)
  local day_key = KEYS[3] .. ':day:' .. math.floor(now / 86400000)
  redis.call('HINCRBY', day_key, 'deliveries_failed:' .. d.channel, 1)
  redis.call('PEXPIRE', day_key, 8 * 86400000)
  -- The latest send failing for good fails the verification: nobody can get the code.
  local v = hgetall_map(KEYS[5])
  if ARGV[8] ~= '1' and v.status == 'pending' and tonumber(v.sends) == tonumber(d.send_no) then
    redis.call('HSET', KEYS[5], 'status', 'failed', 'updated_at', now)
    redis.call('HDEL', KEYS[5], 'code_hash')
    redis.call('ZREM', KEYS[6], d.verification_id)
    count_verification(KEYS[3], now, 'failed', v.channel)
    drop_signup_reminder(KEYS[5], d.verification_id)
    emit_event(KEYS[7], KEYS[8], now, d.verification_id, v, 'failed')
  end
  return {'failed'}
end
redis.call('HSET', KEYS[1], 'error', ARGV[4], 'next_attempt_at', ARGV[5])
redis.call('HDEL', KEYS[1], 'lease_until', 'lease_token')
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), ARGV[6])
redis.call('HINCRBY', KEYS[3], 'deliveries:retried:' .. d.channel, 1)
return {'retry'}
