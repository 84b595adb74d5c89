-- Cancel a pending verification.
-- KEYS: 1 verification, 2 expiring set, 3 stats, 4 event, 5 events due set
-- ARGV: 1 now_ms, 2 site ('' = any), 3 verification id
local now = tonumber(ARGV[1])
local v = hgetall_map(KEYS[1])
if v.site == nil or (ARGV[2] ~= '' and v.site ~= ARGV[2]) then return {'not_found'} end
settle_expiry(KEYS[1], v, now, KEYS[2], KEYS[3], ARGV[3], KEYS[4], KEYS[5])
if v.status ~= 'pending' then return {'inactive', v.status} end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'updated_at', now)
redis.call('HDEL', KEYS[1], 'code_hash')
redis.call('ZREM', KEYS[2], ARGV[3])
count_verification(KEYS[3], now, 'canceled', v.channel)
drop_signup_reminder(KEYS[1], ARGV[3])
emit_event(KEYS[4], KEYS[5], now, ARGV[3], v, 'canceled')
return {'canceled'}
