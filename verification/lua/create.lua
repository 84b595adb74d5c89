-- Accept a signup: replay guard, rate limits, verification, first delivery. One round trip.
-- Every key is in the verification's shard (chosen from what the limits count).
-- KEYS: 1 webhook-seen (read: earlier releases' records, cancels'), 2 verification,
--       3 destination windows, this bucket (hash), 4 site hour, 5 today's user signups (hash),
--       6 the delivery's watchdog bucket, 7 the verification's expiry bucket (lists,
--       verification.timers), 8 stats, 9 task stream, 10 phone-prefix hour (SMS only),
--       11 schedules hash, 12 schedules due, 13 today's stats,
--       14 destination windows, the previous bucket
-- ARGV: 1 now_ms, 2 verification id (derived from the webhook-id), 3 record_ttl_ms,
--       4 window_ms, 5 destination limit, 6 site limit, 7 site_ttl_ms,
--       8 delivery id ('' = none), 9 compact task entry (tasks.broker.CompactTask),
--       10 stream maxlen, 11 phone-prefix limit (0: none), 12 its ttl_ms,
--       13 reminder schedule id ('' = none), 14 its ScheduledTask json, 15 its due ms,
--       16 channel, 17 verification json (with its first delivery's fields),
--       18 the destination's window field, 19 the user's field, 20 when today's user
--       signups expire (ms)
-- One JSON object rather than one argument per field: the client's cost is per argument.
local now = tonumber(ARGV[1])
local vid = ARGV[2]
-- The verification's id is derived from the webhook-id, so its hash is the replay record.
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- Written again (the same value) so that a WAIT after this script also covers the
  -- verification, which another connection wrote and may not have replicated yet.
  redis.call('HSET', KEYS[2], 'site', redis.call('HGET', KEYS[2], 'site'))
  return {'replay', vid}
end
local seen = redis.call('GET', KEYS[1])
if seen then
  redis.call('SET', KEYS[1], seen, 'KEEPTTL')
  return {'replay', seen}
end

local wait, sent_here = window_wait(KEYS[3], KEYS[14], ARGV[18], now, tonumber(ARGV[4]),
  tonumber(ARGV[5]))
if wait > 0 then return {'limited', tostring(wait), 'destination'} end
wait = counter_wait(KEYS[4], tonumber(ARGV[6]))
if wait > 0 then return {'limited', tostring(wait), 'site'} end
local prefix_limit = tonumber(ARGV[11])
if prefix_limit > 0 then
  wait = counter_wait(KEYS[10], prefix_limit)
  if wait > 0 then return {'limited', tostring(wait), 'prefix'} end
end

local channel = ARGV[16]
local ttl = tonumber(ARGV[3])
-- The verification with its first delivery's fields (store_delivery), in one HSET.
hset_map(KEYS[2], cjson.decode(ARGV[17]))
local listed = redis.call('HGET', KEYS[5], ARGV[19])
local head = string.sub(vid, 5)
redis.call('HSET', KEYS[5], ARGV[19], listed and (listed .. ' ' .. head) or head)
redis.call('PEXPIREAT', KEYS[5], ARGV[20])
-- Timer lists live as long as what they time (they are emptied as they fall due).
if redis.call('RPUSH', KEYS[7], head) == 1 then redis.call('PEXPIRE', KEYS[7], ttl) end
count_verification({stats = KEYS[8], day = KEYS[13]}, 'created', channel)
-- No delivery id: the person comes to us (a Telegram deep link), nothing is sent now.
local did = ARGV[8]
if did ~= '' then
  if redis.call('RPUSH', KEYS[6], did) == 1 then redis.call('PEXPIRE', KEYS[6], ttl) end
  record_send(KEYS[3], ARGV[18], sent_here, now, tonumber(ARGV[4]), KEYS[4], tonumber(ARGV[7]))
  if prefix_limit > 0 then count_send(KEYS[10], tonumber(ARGV[12])) end
  redis.call('HINCRBY', KEYS[8], 'deliveries:queued:' .. channel, 1)
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[10], '*', 'd', ARGV[9])
end
redis.call('PEXPIRE', KEYS[2], ttl)
-- remind_after: the reminder is scheduled with the signup, atomically.
if ARGV[13] ~= '' then
  redis.call('HSET', KEYS[11], ARGV[13], ARGV[14])
  redis.call('ZADD', KEYS[12], tonumber(ARGV[15]), ARGV[13])
end
return {'created'}
