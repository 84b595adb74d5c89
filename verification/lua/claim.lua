-- Take a delivery for one send attempt, or say why not. The lease keeps a second copy of
-- the task from sending while this one runs; the due-set entry brings it back if we die.
-- The delivery id names its verification, so the worker passes both in one round trip.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua) of the delivery's verification
-- KEYS: 9 delivery's own hash (earlier releases), 10 due set
-- ARGV: 1 now_ms, 2 lease_ms, 3 delivery id, 4 lease token, 5 verification id
-- A retry with the same token (its first reply was lost) gets the same attempt back.
local now = tonumber(ARGV[1])
local vid = ARGV[5]
local sk = status_keys()
local ref = delivery_ref(KEYS[9], sk.v, ARGV[3])
local d = dget(ref)
if d.status == nil then
  redis.call('ZREM', KEYS[10], ARGV[3])
  return {'gone'}
end
if d.status == 'sent' or d.status == 'failed' then
  redis.call('ZREM', KEYS[10], ARGV[3])
  return {'done', d.status}
end
local reissue = tonumber(d.lease_until or '0') > now
if reissue and d.lease_token ~= ARGV[4] then return {'busy'} end

local v = hgetall_map(sk.v)
local reason = nil
if v.site == nil then
  reason = 'verification no longer exists'
else
  settle_expiry(sk, v, now, vid)
  if v.status ~= 'pending' then
    reason = 'verification is ' .. v.status
  elseif tonumber(v.sends) ~= tonumber(d.send_no) then
    reason = 'superseded by a newer code'
  end
end
if reason then
  if v.site ~= nil or ref.pre == '' then
    dset(ref, 'status', 'failed', 'error', reason, 'finished_at', now)
    ddel(ref, 'secret', 'lease_until', 'lease_token')
  end
  redis.call('ZREM', KEYS[10], ARGV[3])
  redis.call('HINCRBY', sk.stats, 'deliveries:skipped:' .. d.channel, 1)
  return {'skipped', reason}
end

local attempts = tonumber(d.attempts or '0')
if not reissue then attempts = dincr(ref, 'attempts', 1) end
local lease_until = now + tonumber(ARGV[2])
dset(ref, 'lease_until', lease_until, 'lease_token', ARGV[4])
redis.call('ZADD', KEYS[10], lease_until, ARGV[3])
return {'claimed', tostring(attempts), d.secret or '', v.destination, v.locale, v.site, d.channel,
  v.expires_at, vid, d.purpose or 'code'}
