-- Take a due reminder for sending, once: a second kick of the same schedule finds it
-- sent (or being sent under a live lease) and does nothing.
-- KEYS: 1 reminder    ARGV: 1 now_ms, 2 lease_ms, 3 lease token
local now = tonumber(ARGV[1])
local r = hgetall_map(KEYS[1])
if r.id == nil then return {'gone'} end
if r.status == 'sending' and tonumber(r.lease_until or '0') > now then return {'busy'} end
if r.status ~= 'scheduled' and r.status ~= 'sending' then return {r.status} end
redis.call('HSET', KEYS[1], 'status', 'sending', 'lease_until', now + tonumber(ARGV[2]),
  'lease_token', ARGV[3])
return {'claimed', r.chat_id, r.text, r.lang or 'en'}
