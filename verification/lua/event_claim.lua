-- Take an event for one send attempt, or say why not.
-- KEYS: 1 event, 2 events due set    ARGV: 1 now_ms, 2 lease_ms, 3 event id, 4 lease token
-- A retry with the same token (its first reply was lost) gets the same attempt back.
local now = tonumber(ARGV[1])
local e = hgetall_map(KEYS[1])
if e.status == nil or e.status ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'done', e.status or 'gone'}
end
local reissue = tonumber(e.lease_until or '0') > now
if reissue and e.lease_token ~= ARGV[4] then return {'busy'} end
local attempts = tonumber(e.attempts or '0')
if not reissue then attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local lease_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', lease_until, 'lease_token', ARGV[4])
redis.call('ZADD', KEYS[2], lease_until, ARGV[3])
return {'claimed', tostring(attempts), e.type, e.site, e.verification_id, e.created_at}
