-- Check a code: consume it on a match, spend an attempt otherwise. Atomic under concurrency.
-- The stored and presented values are HMACs under a server key, so comparing them here
-- leaks nothing about the code through timing.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua)
-- ARGV: 1 now_ms, 2 site, 3 presented code hash, 4 verification id
local now = tonumber(ARGV[1])
local sk = status_keys()
local v = hgetall_map(sk.v)
if v.site == nil or v.site ~= ARGV[2] then return {'not_found'} end
settle_expiry(sk, v, now, ARGV[4])
if v.status ~= 'pending' then return {'inactive', v.status, v.attempts_left} end

-- Hashes are 32 hex digits; earlier releases stored 64, of which the first 32 compare.
if v.code_hash ~= nil and string.sub(v.code_hash, 1, 32) == ARGV[3] then
  approve(sk, v, now, ARGV[4], 'code')
  return {'valid', 'approved', v.attempts_left}
end

local left = redis.call('HINCRBY', sk.v, 'attempts_left', -1)
if left <= 0 then
  finish(sk, v, now, ARGV[4], 'max_attempts_reached')
  return {'invalid', 'max_attempts_reached', '0'}
end
return {'invalid', 'pending', tostring(left)}
