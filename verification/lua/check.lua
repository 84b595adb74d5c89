-- Check a code: consume it on a match, spend an attempt otherwise. Atomic under concurrency.
-- The stored and presented values are HMACs under a server key, so comparing them here
-- leaks nothing about the code through timing.
-- KEYS: 1 verification, 2 expiring set, 3 stats, 4 event, 5 events due set,
--       6 email subscribers
-- ARGV: 1 now_ms, 2 site, 3 presented code hash, 4 verification id
local now = tonumber(ARGV[1])
local v = hgetall_map(KEYS[1])
if v.site == nil or v.site ~= ARGV[2] then return {'not_found'} end
settle_expiry(KEYS[1], v, now, KEYS[2], KEYS[3], ARGV[4], KEYS[4], KEYS[5])
if v.status ~= 'pending' then return {'inactive', v.status, v.attempts_left} end

if v.code_hash == ARGV[3] then
  approve(KEYS[1], v, now, KEYS[2], KEYS[3], ARGV[4], KEYS[4], KEYS[5], 'code', KEYS[6])
  return {'valid', 'approved', v.attempts_left}
end

local left = redis.call('HINCRBY', KEYS[1], 'attempts_left', -1)
if left <= 0 then
  redis.call('HSET', KEYS[1], 'status', 'max_attempts_reached', 'updated_at', now)
  redis.call('HDEL', KEYS[1], 'code_hash')
  redis.call('ZREM', KEYS[2], ARGV[4])
  count_verification(KEYS[3], now, 'max_attempts_reached', v.channel)
  drop_signup_reminder(KEYS[1], ARGV[4])
  emit_event(KEYS[4], KEYS[5], now, ARGV[4], v, 'max_attempts_reached')
  return {'invalid', 'max_attempts_reached', '0'}
end
return {'invalid', 'pending', tostring(left)}
