-- Record the outcome of one send attempt.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua) of the delivery's verification
-- KEYS: 9 delivery's own hash (earlier releases), 10 due set, 11 dead letters
-- ARGV: 1 now_ms, 2 outcome (sent|failed|retry), 3 provider id, 4 error, 5 next_at_ms,
--       6 delivery id, 7 attempt number this outcome belongs to, 8 '1': a failure that
--       may still have reached the person (keeps the verification open), 9 verification id
local now = tonumber(ARGV[1])
local sk = status_keys()
local ref = delivery_ref(KEYS[9], sk.v, ARGV[6])
local d = dget(ref)
if d.status == nil or d.status == 'sent' or d.status == 'failed' then return {'ignored'} end
if tonumber(d.attempts or '0') ~= tonumber(ARGV[7]) then return {'ignored'} end
local outcome = ARGV[2]
if outcome == 'sent' then
  dset(ref, 'status', 'sent', 'provider_id', ARGV[3], 'finished_at', now)
  ddel(ref, 'secret', 'lease_until', 'lease_token', 'error', 'next_attempt_at')
  redis.call('ZREM', KEYS[10], ARGV[6])
  redis.call('HINCRBY', sk.stats, 'deliveries:sent:' .. d.channel, 1)
  -- Queue-to-sent latency histogram: the one ms bucket it falls in (webhooks/metrics.py
  -- adds them up as Prometheus does; earlier releases counted 'latency:le:' cumulatively).
  local latency = now - tonumber(d.created_at)
  local bucket = 'inf'
  for _, bound in ipairs({100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}) do
    if latency <= bound then
      bucket = bound
      break
    end
  end
  redis.call('HINCRBY', sk.stats, 'latency:in:' .. bucket, 1)
  redis.call('HINCRBY', sk.stats, 'latency:count', 1)
  redis.call('HINCRBY', sk.stats, 'latency:sum_ms', latency)
  return {'sent'}
end
if outcome == 'failed' then
  dset(ref, 'status', 'failed', 'error', ARGV[4], 'finished_at', now)
  ddel(ref, 'secret', 'lease_until', 'lease_token', 'next_attempt_at')
  redis.call('ZREM', KEYS[10], ARGV[6])
  redis.call('LPUSH', KEYS[11], ARGV[6])
  redis.call('LTRIM', KEYS[11], 0, 9999)
  redis.call('HINCRBY', sk.stats, 'deliveries:failed:' .. d.channel, 1)
  redis.call('HINCRBY', sk.day, 'deliveries_failed:' .. d.channel, 1)
  redis.call('PEXPIRE', sk.day, 8 * 86400000)
  -- The latest send failing for good fails the verification: nobody can get the code.
  local v = hgetall_map(sk.v)
  if ARGV[8] ~= '1' and v.status == 'pending' and tonumber(v.sends) == tonumber(d.send_no) then
    finish(sk, v, now, ARGV[9], 'failed')
  end
  return {'failed'}
end
dset(ref, 'error', ARGV[4], 'next_attempt_at', ARGV[5])
ddel(ref, 'lease_until', 'lease_token')
redis.call('ZADD', KEYS[10], tonumber(ARGV[5]), ARGV[6])
redis.call('HINCRBY', sk.stats, 'deliveries:retried:' .. d.channel, 1)
return {'retry'}
