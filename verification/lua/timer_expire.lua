-- Expiry timers of one bucket (verification.timers): mark the verifications whose time
-- ran out as expired. An entry whose verification finished, or was given more time by a
-- resend (which set a later timer), does nothing.
-- KEYS: 1 the bucket (list), 2 expiring set, 3 stats, 4 today's stats, 5 events due set,
--       6 schedules hash, 7 schedules due set, then per entry: its verification, its event
-- ARGV: 1 now_ms, then the entries (verification ids without 'ver_'), as read from the
--       bucket's start
-- Reply: {entries left in the bucket, expired verification ids...}
local now = tonumber(ARGV[1])
if not timer_entries_ours(KEYS[1]) then return {redis.call('LLEN', KEYS[1])} end
local n = #ARGV - 1
local reply = {0}
for i = 1, n do
  local vid = 'ver_' .. ARGV[i + 1]
  local sk = {v = KEYS[6 + 2 * i], expiring = KEYS[2], stats = KEYS[3], day = KEYS[4],
    event = KEYS[7 + 2 * i], events_due = KEYS[5], sched = KEYS[6], sched_due = KEYS[7]}
  local v = hgetall_map(sk.v)
  if v.status == 'pending' then
    settle_expiry(sk, v, now, vid)
    if v.status == 'expired' then reply[#reply + 1] = vid end
  end
end
reply[1] = timer_entries_done(KEYS[1])
return reply
