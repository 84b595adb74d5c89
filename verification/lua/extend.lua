-- Renew the lease of a send attempt that is still running (and still ours).
-- KEYS: 1 delivery's own hash (earlier releases), 2 due set, 3 verification
-- ARGV: 1 now_ms, 2 lease_ms, 3 delivery id, 4 attempt
local now = tonumber(ARGV[1])
local ref = delivery_ref(KEYS[1], KEYS[3], ARGV[3])
local d = dget(ref)
if d.status ~= 'queued' or tonumber(d.attempts or '0') ~= tonumber(ARGV[4]) then return 0 end
if tonumber(d.lease_until or '0') <= now then return 0 end
local lease_until = now + tonumber(ARGV[2])
dset(ref, 'lease_until', lease_until)
redis.call('ZADD', KEYS[2], lease_until, ARGV[3])
return 1
