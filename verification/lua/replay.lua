-- An operator replays a dead-lettered delivery: a fresh code to the same destination,
-- reopening the verification if that failure failed it and its time has not run out.
-- KEYS: 1 failed delivery, 2 verification, 3 new delivery, 4 due set, 5 verification
--       deliveries, 6 expiring set, 7 stats, 8 task stream, 9 dead letters
-- ARGV: 1 now_ms, 2 failed delivery id, 3 new delivery id, 4 new delivery json,
--       5 new code hash, 6 task message, 7 stream maxlen, 8 new link hash
local now = tonumber(ARGV[1])
local d = hgetall_map(KEYS[1])
if d.status == nil then return {'not_found'} end
if d.status ~= 'failed' then return {'refused', 'delivery is ' .. d.status} end
if d.replayed_by ~= nil then return {'refused', 'already sent again as ' .. d.replayed_by} end
local v = hgetall_map(KEYS[2])
if v.site == nil then return {'refused', 'verification no longer exists'} end
if tonumber(v.expires_at) <= now then return {'refused', 'verification has expired'} end
if v.status ~= 'pending' and v.status ~= 'failed' then
  return {'refused', 'verification is ' .. v.status}
end
if v.status == 'failed' then
  redis.call('HSET', KEYS[2], 'status', 'pending')
  redis.call('HINCRBY', KEYS[2], 'event_gen', 1)
  redis.call('ZADD', KEYS[6], tonumber(v.expires_at), d.verification_id)
  count_verification(KEYS[7], now, 'reopened', v.channel)
end
local sends = redis.call('HINCRBY', KEYS[2], 'sends', 1)
redis.call('HSET', KEYS[2], 'code_hash', ARGV[5], 'link_hash', ARGV[8], 'last_send_at', now,
  'updated_at', now)
local delivery = cjson.decode(ARGV[4])
delivery.send_no = sends
hset_map(KEYS[3], delivery)
redis.call('PEXPIRE', KEYS[3], redis.call('PTTL', KEYS[2]))
redis.call('RPUSH', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[4], now + 120000, ARGV[3])
redis.call('HSET', KEYS[1], 'replayed_by', ARGV[3])
redis.call('LREM', KEYS[9], 0, ARGV[2])
redis.call('HINCRBY', KEYS[7], 'deliveries:queued:' .. delivery.channel, 1)
redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[7], '*', 'data', ARGV[6])
return {'replayed', ARGV[3]}
