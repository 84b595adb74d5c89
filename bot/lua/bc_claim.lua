-- Take a broadcast to send a stretch of it. A lease keeps other workers off; a lease
-- that ran out (its worker died) hands the broadcast over, and whatever that worker had
-- in flight is counted 'unknown' rather than sent again: each person gets it at most once.
-- KEYS: 1 broadcast, 2 due set, 3 in-flight hash
-- ARGV: 1 now_ms, 2 lease_ms, 3 lease token, 4 broadcast id
local now = tonumber(ARGV[1])
local b = hgetall_map(KEYS[1])
if b.state == nil then redis.call('ZREM', KEYS[2], ARGV[4]) return {'gone'} end
if b.state ~= 'queued' and b.state ~= 'running' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {'finished', b.state}
end
if tonumber(b.lease_until or '0') > now and b.lease_token ~= ARGV[3] then return {'busy'} end
if b.lease_token ~= nil and b.lease_token ~= ARGV[3] then
  local lost = redis.call('HLEN', KEYS[3])
  if lost > 0 then
    redis.call('HINCRBY', KEYS[1], 'unknown', lost)
    redis.call('DEL', KEYS[3])
  end
end
local lease_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'running', 'lease_until', lease_until, 'lease_token', ARGV[3])
if b.started_at == nil then redis.call('HSET', KEYS[1], 'started_at', now) end
redis.call('ZADD', KEYS[2], lease_until, ARGV[4])
return {'claimed'}
