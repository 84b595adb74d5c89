-- A worker ends its stretch of a broadcast: 'done' when the audience is through (and
-- nothing is in flight), else 'release' so another task continues it.
-- KEYS: 1 broadcast, 2 due set, 3 in-flight hash
-- ARGV: 1 now_ms, 2 lease token, 3 done|release, 4 broadcast id
local b = hgetall_map(KEYS[1])
if b.lease_token ~= ARGV[2] then return {'lost'} end
redis.call('HDEL', KEYS[1], 'lease_until', 'lease_token')
if ARGV[3] == 'done' and redis.call('HLEN', KEYS[3]) == 0 then
  if b.state == 'running' then redis.call('HSET', KEYS[1], 'state', 'done') end
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {'done'}
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[4])
return {'released'}
