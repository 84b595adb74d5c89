-- Accept a signup: replay guard, rate limits, verification, first delivery. One round trip.
-- Every key is in the verification's shard (chosen from what the limits count).
-- KEYS: 1 webhook-seen, 2 verification, 3 destination window, 4 site hour, 5 user index,
--       6 delivery, 7 due set, 8 verification deliveries, 9 expiring set, 10 stats,
--       11 task stream, 12 phone-prefix hour (SMS only), 13 schedules hash, 14 schedules due,
--       15 today's stats
-- ARGV: 1 now_ms, 2 replay_ttl_ms, 3 response json, 4 verification json, 5 delivery json,
--       6 record_ttl_ms, 7 window_ms, 8 destination limit, 9 site limit, 10 site_ttl_ms,
--       11 delivery id, 12 requeue_at_ms, 13 verification id, 14 expires_at_ms,
--       15 task message, 16 stream maxlen, 17 phone-prefix limit (0: none), 18 its ttl_ms,
--       19 reminder schedule id ('' = none), 20 its ScheduledTask json, 21 its due ms
local now = tonumber(ARGV[1])
local seen = redis.call('GET', KEYS[1])
if seen then
  -- Written again (same value and TTL) so that a WAIT after this script also covers the
  -- first answer, which another connection wrote and may not have replicated yet.
  redis.call('SET', KEYS[1], seen, 'KEEPTTL')
  return {'replay', seen}
end

local wait = window_wait(KEYS[3], now, tonumber(ARGV[7]), tonumber(ARGV[8]))
if wait > 0 then return {'limited', tostring(wait), 'destination'} end
wait = counter_wait(KEYS[4], tonumber(ARGV[9]))
if wait > 0 then return {'limited', tostring(wait), 'site'} end
local prefix_limit = tonumber(ARGV[17])
if prefix_limit > 0 then
  wait = counter_wait(KEYS[12], prefix_limit)
  if wait > 0 then return {'limited', tostring(wait), 'prefix'} end
end

local ttl = tonumber(ARGV[6])
hset_map(KEYS[2], cjson.decode(ARGV[4]))
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[5], ARGV[13])
redis.call('PEXPIRE', KEYS[5], ttl)
redis.call('ZADD', KEYS[9], tonumber(ARGV[14]), ARGV[13])
count_verification({stats = KEYS[10], day = KEYS[15]}, 'created', cjson.decode(ARGV[4]).channel)
-- No delivery id: the person comes to us (a Telegram deep link), nothing is sent now.
if ARGV[11] ~= '' then
  hset_map(KEYS[6], cjson.decode(ARGV[5]))
  redis.call('PEXPIRE', KEYS[6], ttl)
  redis.call('RPUSH', KEYS[8], ARGV[11])
  redis.call('PEXPIRE', KEYS[8], ttl)
  redis.call('ZADD', KEYS[7], tonumber(ARGV[12]), ARGV[11])
  record_send(KEYS[3], now, tonumber(ARGV[7]), ARGV[11], KEYS[4], tonumber(ARGV[10]))
  if prefix_limit > 0 then count_send(KEYS[12], tonumber(ARGV[18])) end
  redis.call('HINCRBY', KEYS[10], 'deliveries:queued:' .. cjson.decode(ARGV[5]).channel, 1)
  redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[16], '*', 'data', ARGV[15])
end
-- remind_after: the reminder is scheduled with the signup, atomically.
if ARGV[19] ~= '' then
  redis.call('HSET', KEYS[13], ARGV[19], ARGV[20])
  redis.call('ZADD', KEYS[14], tonumber(ARGV[21]), ARGV[19])
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', tonumber(ARGV[2]))
return {'created'}
