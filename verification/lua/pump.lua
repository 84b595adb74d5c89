-- Hand out due deliveries to be enqueued, pushing each one's score a lease ahead so
-- concurrent pumps never enqueue the same one twice within a lease.
-- KEYS: 1 due set    ARGV: 1 now_ms, 2 lease_ms, 3 limit
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local next_at = now + tonumber(ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], next_at, id) end
return ids
