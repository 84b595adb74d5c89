-- Renew the lease of a send attempt that is still running (and still ours).
-- KEYS: 1 delivery, 2 due set    ARGV: 1 now_ms, 2 lease_ms, 3 delivery id, 4 attempt
local now = tonumber(ARGV[1])
local d = hgetall_map(KEYS[1])
if d.status ~= 'queued' or tonumber(d.attempts or '0') ~= tonumber(ARGV[4]) then return 0 end
if tonumber(d.lease_until or '0') <= now then return 0 end
local lease_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', lease_until)
redis.call('ZADD', KEYS[2], lease_until, ARGV[3])
return 1
