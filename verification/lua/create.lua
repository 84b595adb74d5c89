-- Accept a signup: replay guard, rate limits, verification, first delivery. One round trip.
-- Every key is in the verification's shard (chosen from what the limits count).
-- KEYS: 1 webhook-seen (read: earlier releases' records, cancels'), 2 verification,
--       3 destination windows, this bucket (hash), 4 site hour, 5 today's user signups (hash), 6 due set, 7 expiring set,
--       8 stats, 9 task stream, 10 phone-prefix hour (SMS only), 11 schedules hash,
--       12 schedules due, 13 today's stats, 14 destination windows, the previous bucket
-- ARGV: 1 now_ms, 2 verification id (derived from the webhook-id), 3 record_ttl_ms,
--       4 window_ms, 5 destination limit, 6 site limit, 7 site_ttl_ms,
--       8 delivery id ('' = none), 9 requeue_at_ms, 10 expires_at_ms,
--       11 compact task entry (tasks.broker.CompactTask), 12 stream maxlen,
--       13 phone-prefix limit (0: none), 14 its ttl_ms,
--       15 reminder schedule id ('' = none), 16 its ScheduledTask json, 17 its due ms,
--       18 channel, 19 verification json (with its first delivery's fields),
--       20 the destination's window field, 21 the user's field, 22 when today's user
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

local wait, sent_here = window_wait(KEYS[3], KEYS[14], ARGV[20], now, tonumber(ARGV[4]),
  tonumber(ARGV[5]))
if wait > 0 then return {'limited', tostring(wait), 'destination'} end
wait = counter_wait(KEYS[4], tonumber(ARGV[6]))
if wait > 0 then return {'limited', tostring(wait), 'site'} end
local prefix_limit = tonumber(ARGV[13])
if prefix_limit > 0 then
  wait = counter_wait(KEYS[10], prefix_limit)
  if wait > 0 then return {'limited', tostring(wait), 'prefix'} end
end

local channel = ARGV[18]
local ttl = tonumber(ARGV[3])
-- The verification with its first delivery's fields (store_delivery), in one HSET.
hset_map(KEYS[2], cjson.decode(ARGV[19]))
local listed = redis.call('HGET', KEYS[5], ARGV[21])
local head = string.sub(vid, 5)
redis.call('HSET', KEYS[5], ARGV[21], listed and (listed .. ' ' .. head) or head)
redis.call('PEXPIREAT', KEYS[5], ARGV[22])
redis.call('ZADD', KEYS[7], tonumber(ARGV[10]), vid)
count_verification({stats = KEYS[8], day = KEYS[13]}, 'created', channel)
-- No delivery id: the person comes to us (a Telegram deep link), nothing is sent now.
local did = ARGV[8]
if did ~= '' then
  redis.call('ZADD', KEYS[6], tonumber(ARGV[9]), did)
  record_send(KEYS[3], ARGV[20], sent_here, now, tonumber(ARGV[4]), KEYS[4], tonumber(ARGV[7]))
  if prefix_limit > 0 then count_send(KEYS[10], tonumber(ARGV[14])) end
  redis.call('HINCRBY', KEYS[8], 'deliveries:queued:' .. channel, 1)
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[12], '*', 'd', ARGV[11])
end
redis.call('PEXPIRE', KEYS[2], ttl)
-- remind_after: the reminder is scheduled with the signup, atomically.
if ARGV[15] ~= '' then
  redis.call('HSET', KEYS[11], ARGV[15], ARGV[16])
  redis.call('ZADD', KEYS[12], tonumber(ARGV[17]), ARGV[15])
end
return {'created'}
