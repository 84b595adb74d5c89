-- Accept a signup: replay guard, rate limits, verification, first delivery. One round trip.
-- Every key is in the verification's shard (chosen from what the limits count).
-- KEYS: 1 webhook-seen (read: earlier releases' records), 2 verification, 3 destination window, 4 site hour, 5 user index (hash),
--       6 delivery, 7 due set, 8 verification deliveries (earlier releases' list), 9 expiring set, 10 stats,
--       11 task stream, 12 phone-prefix hour (SMS only), 13 schedules hash, 14 schedules due,
--       15 today's stats
-- ARGV: 1 now_ms, 2 replay_ttl_ms (unused), 3 verification id (derived from the webhook-id),
--       4 record_ttl_ms, 5 window_ms, 6 destination limit, 7 site limit, 8 site_ttl_ms,
--       9 delivery id ('' = none), 10 requeue_at_ms, 11 expires_at_ms, 12 compact task entry (tasks.broker.CompactTask),
--       13 stream maxlen, 14 phone-prefix limit (0: none), 15 its ttl_ms,
--       16 reminder schedule id ('' = none), 17 its ScheduledTask json, 18 its due ms,
--       19 channel, 20 verification json, 21 delivery json
-- Two JSON objects rather than one argument per field: redis-py's cost is per argument.
local now = tonumber(ARGV[1])
-- The verification's id is derived from the webhook-id, so its hash is the replay record.
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- Written again (the same value) so that a WAIT after this script also covers the
  -- verification, which another connection wrote and may not have replicated yet.
  redis.call('HSET', KEYS[2], 'site', redis.call('HGET', KEYS[2], 'site'))
  return {'replay', ARGV[3]}
end
-- A webhook-id record: of an earlier release's signup, or of a cancel that used this id.
local seen = redis.call('GET', KEYS[1])
if seen then
  -- Written again (same value and TTL) so that a WAIT after this script also covers the
  -- first answer, which another connection wrote and may not have replicated yet.
  redis.call('SET', KEYS[1], seen, 'KEEPTTL')
  return {'replay', seen}
end

local wait = window_wait(KEYS[3], now, tonumber(ARGV[5]), tonumber(ARGV[6]))
if wait > 0 then return {'limited', tostring(wait), 'destination'} end
wait = counter_wait(KEYS[4], tonumber(ARGV[7]))
if wait > 0 then return {'limited', tostring(wait), 'site'} end
local prefix_limit = tonumber(ARGV[14])
if prefix_limit > 0 then
  wait = counter_wait(KEYS[12], prefix_limit)
  if wait > 0 then return {'limited', tostring(wait), 'prefix'} end
end

local vid = ARGV[3]
local channel = ARGV[19]
local ttl = tonumber(ARGV[4])
hset_map(KEYS[2], cjson.decode(ARGV[20]))
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('HSET', KEYS[5], vid, '')
redis.call('PEXPIRE', KEYS[5], ttl)
redis.call('ZADD', KEYS[9], tonumber(ARGV[11]), vid)
count_verification({stats = KEYS[10], day = KEYS[15]}, 'created', channel)
-- No delivery id: the person comes to us (a Telegram deep link), nothing is sent now.
local did = ARGV[9]
if did ~= '' then
  hset_map(KEYS[6], cjson.decode(ARGV[21]))
  redis.call('PEXPIRE', KEYS[6], ttl)
  add_delivery(KEYS[2], KEYS[8], did, ttl)
  redis.call('ZADD', KEYS[7], tonumber(ARGV[10]), did)
  record_send(KEYS[3], now, tonumber(ARGV[5]), did, KEYS[4], tonumber(ARGV[8]))
  if prefix_limit > 0 then count_send(KEYS[12], tonumber(ARGV[15])) end
  redis.call('HINCRBY', KEYS[10], 'deliveries:queued:' .. channel, 1)
  redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[13], '*', 'd', ARGV[12])
end
-- remind_after: the reminder is scheduled with the signup, atomically.
if ARGV[16] ~= '' then
  redis.call('HSET', KEYS[13], ARGV[16], ARGV[17])
  redis.call('ZADD', KEYS[14], tonumber(ARGV[18]), ARGV[16])
end
return {'created'}
