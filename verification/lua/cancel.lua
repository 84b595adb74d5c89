-- Cancel a pending verification.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua)
-- ARGV: 1 now_ms, 2 site ('' = any), 3 verification id
local now = tonumber(ARGV[1])
local sk = status_keys()
local v = hgetall_map(sk.v)
if v.site == nil or (ARGV[2] ~= '' and v.site ~= ARGV[2]) then return {'not_found'} end
settle_expiry(sk, v, now, ARGV[3])
if v.status ~= 'pending' then return {'inactive', v.status} end
finish(sk, v, now, ARGV[3], 'canceled')
return {'canceled'}
