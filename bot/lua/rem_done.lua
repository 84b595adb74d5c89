-- The outcome of sending a reminder (sent | failed), if the lease is still ours.
-- KEYS: 1 reminder    ARGV: 1 now_ms, 2 lease token, 3 outcome, 4 error
local r = hgetall_map(KEYS[1])
if r.lease_token ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', ARGV[1], 'error', ARGV[4])
redis.call('HDEL', KEYS[1], 'lease_until', 'lease_token')
return 1
