-- Take a delivery for one send attempt, or say why not. The lease keeps a second copy of
-- the task from sending while this one runs; the due-set entry brings it back if we die.
-- The verification's keys derive from the delivery (one round trip for the worker), so
-- this script is single-node only, like sweep.lua.
-- KEYS: 1 delivery, 2 due set, 3 stats, 4 expiring set, 5 events due set
-- ARGV: 1 now_ms, 2 lease_ms, 3 delivery id, 4 key prefix, 5 lease token
-- A retry with the same token (its first reply was lost) gets the same attempt back.
local now = tonumber(ARGV[1])
local d = hgetall_map(KEYS[1])
if d.status == nil then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'gone'}
end
if d.status == 'sent' or d.status == 'failed' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'done', d.status}
end
local reissue = tonumber(d.lease_until or '0') > now
if reissue and d.lease_token ~= ARGV[5] then return {'busy'} end

local vkey = ARGV[4] .. ':v:' .. d.verification_id
local ekey = ARGV[4] .. ':e:evt_' .. string.sub(d.verification_id, 5)
local v = hgetall_map(vkey)
local reason = nil
if v.site == nil then
  reason = 'verification no longer exists'
else
  settle_expiry(vkey, v, now, KEYS[4], KEYS[3], d.verification_id, ekey, KEYS[5])
  if v.status ~= 'pending' then
    reason = 'verification is ' .. v.status
  elseif tonumber(v.sends) ~= tonumber(d.send_no) then
    reason = 'superseded by a newer code'
  end
end
if reason then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', reason, 'finished_at', now)
  redis.call('HDEL', KEYS[1], 'secret', 'lease_until', 'lease_token')
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'deliveries:skipped:' .. d.channel, 1)
  return {'skipped', reason}
end

local attempts = tonumber(d.attempts or '0')
if not reissue then attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local lease_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', lease_until, 'lease_token', ARGV[5])
redis.call('ZADD', KEYS[2], lease_until, ARGV[3])
return {'claimed', tostring(attempts), d.secret or '', v.destination, v.locale, v.site, d.channel,
  v.expires_at, d.verification_id, d.purpose or 'code'}
