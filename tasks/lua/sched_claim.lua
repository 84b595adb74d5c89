-- Claim due one-off schedules for sending: each moves from the due set to the claimed set
-- under a lease, so exactly one scheduler sends it; a scheduler that dies holding claims
-- gives them back when the lease runs out (and the task's own idempotency absorbs a
-- second send).
-- KEYS: 1 due set, 2 claimed set, 3 schedule data hash
-- ARGV: 1 now_ms, 2 lease_ms, 3 limit, 4 only this schedule id ('' = any due one)
local now = tonumber(ARGV[1])
-- Claims whose lease ran out go back to the due set first (score: now, send at once).
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
end
local ids
if ARGV[4] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[4])
  if not score or tonumber(score) > now then return {} end
  ids = {ARGV[4]}
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
end
local out = {}
local lease_until = now + tonumber(ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local data = redis.call('HGET', KEYS[3], id)
  if data then
    redis.call('ZADD', KEYS[2], lease_until, id)
    out[#out + 1] = id
    out[#out + 1] = data
  end
end
return out
