-- Watchdog timers of one bucket (verification.timers): a new delivery that no worker has
-- taken yet goes into the due set, which queues it again. One that was sent, failed,
-- or is leased or already in the due set (a retry) is left alone.
-- KEYS: 1 the bucket (list), 2 due set, then per entry: its verification
-- ARGV: 1 now_ms, then the entries (delivery ids), as read from the bucket's start
-- Reply: {entries left in the bucket, delivery ids put into the due set...}
local now = tonumber(ARGV[1])
if not timer_entries_ours(KEYS[1]) then return {redis.call('LLEN', KEYS[1])} end
local n = #ARGV - 1
local reply = {0}
for i = 1, n do
  local did = ARGV[i + 1]
  local d = dget(folded(KEYS[2 + i], did))
  if d.status == 'queued' and tonumber(d.lease_until or '0') <= now then
    if redis.call('ZADD', KEYS[2], 'NX', now, did) == 1 then reply[#reply + 1] = did end
  end
end
reply[1] = timer_entries_done(KEYS[1])
return reply
