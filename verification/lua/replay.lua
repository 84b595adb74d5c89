-- An operator replays a dead-lettered delivery: a fresh code to the same destination,
-- reopening the verification if that failure failed it and its time has not run out.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua)
-- KEYS: 9 failed delivery's own hash (earlier releases), 10 due set,
--       11 verification deliveries (earlier releases' list), 12 task stream, 13 dead letters
-- ARGV: 1 now_ms, 2 failed delivery id, 3 new delivery id, 4 new delivery json,
--       5 new code hash, 6 compact task entry, 7 stream maxlen, 8 new link hash,
--       9 verification id
local now = tonumber(ARGV[1])
local sk = status_keys()
local failed = delivery_ref(KEYS[9], sk.v, ARGV[2])
local d = dget(failed)
if d.status == nil then return {'not_found'} end
if d.status ~= 'failed' then return {'refused', 'delivery is ' .. d.status} end
if d.replayed_by ~= nil then return {'refused', 'already sent again as ' .. d.replayed_by} end
local v = hgetall_map(sk.v)
if v.site == nil then return {'refused', 'verification no longer exists'} end
if tonumber(v.expires_at) <= now then return {'refused', 'verification has expired'} end
if v.status ~= 'pending' and v.status ~= 'failed' then
  return {'refused', 'verification is ' .. v.status}
end
if v.status == 'failed' then
  redis.call('HSET', sk.v, 'status', 'pending')
  redis.call('HINCRBY', sk.v, 'event_gen', 1)
  redis.call('ZADD', sk.expiring, tonumber(v.expires_at), ARGV[9])
  count_verification(sk, 'reopened', v.channel)
end
local sends = redis.call('HINCRBY', sk.v, 'sends', 1)
redis.call('HSET', sk.v, 'code_hash', ARGV[5], 'link_hash', ARGV[8], 'last_send_at', now,
  'updated_at', now)
local delivery = cjson.decode(ARGV[4])
delivery.send_no = sends
store_delivery(sk.v, ARGV[3], delivery)
add_delivery(KEYS[1], KEYS[11], ARGV[3], nil)
redis.call('ZADD', KEYS[10], now + 120000, ARGV[3])
dset(failed, 'replayed_by', ARGV[3])
redis.call('LREM', KEYS[13], 0, ARGV[2])
redis.call('HINCRBY', sk.stats, 'deliveries:queued:' .. delivery.channel, 1)
redis.call('XADD', KEYS[12], 'MAXLEN', '~', ARGV[7], '*', 'd', ARGV[6])
return {'replayed', ARGV[3]}
