-- Mark verifications whose time ran out as expired, without anyone asking. The caller
-- read the due ids (ZRANGEBYSCORE) and passes each one's keys, so every key is in KEYS.
-- KEYS: 1 expiring set, 2 stats, 3 today's stats, 4 events due set, 5 schedules hash,
--       6 schedules due set, then per verification: its hash, its event
-- ARGV: 1 now_ms, then the verification ids, in the order of their keys
local now = tonumber(ARGV[1])
local expired = {}
for i = 2, #ARGV do
  local vid = ARGV[i]
  local sk = {v = KEYS[5 + 2 * (i - 1)], expiring = KEYS[1], stats = KEYS[2], day = KEYS[3],
    event = KEYS[6 + 2 * (i - 1)], events_due = KEYS[4], sched = KEYS[5], sched_due = KEYS[6]}
  local score = redis.call('ZSCORE', sk.expiring, vid)
  if score and tonumber(score) <= now then
    local v = hgetall_map(sk.v)
    if v.status ~= nil then settle_expiry(sk, v, now, vid) end
    redis.call('ZREM', sk.expiring, vid)
    if v.status == 'expired' then table.insert(expired, vid) end
  end
end
return expired
