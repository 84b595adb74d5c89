-- Look at ('peek') or use ('use') a magic link. Using it approves the verification, like a
-- matching code, atomically. The link hash stays after use so a second click can be told
-- "already used" rather than "invalid"; a resend replaces it, so older links stop working.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua)
-- ARGV: 1 now_ms, 2 presented link hash, 3 verification id, 4 mode (peek|use)
-- Reply: {state, site, locale}; state is pending | approved (this call approved it) |
-- used (approved before, by a link or a code) | invalid | not_found | the verification's
-- other final status.
local now = tonumber(ARGV[1])
local sk = status_keys()
local v = hgetall_map(sk.v)
if v.site == nil then return {'not_found', '', ''} end
-- Hashes are 32 hex digits; earlier releases stored 64, of which the first 32 compare.
if v.link_hash == nil or string.sub(v.link_hash, 1, 32) ~= ARGV[2] then
  return {'invalid', v.site, v.locale}
end
settle_expiry(sk, v, now, ARGV[3])
if v.status == 'approved' then return {'used', v.site, v.locale} end
if v.status ~= 'pending' then return {v.status, v.site, v.locale} end
if ARGV[4] ~= 'use' then return {'pending', v.site, v.locale} end
approve(sk, v, now, ARGV[3], 'link')
return {'approved', v.site, v.locale}
