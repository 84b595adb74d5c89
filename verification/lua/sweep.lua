-- Mark verifications whose time ran out as expired, without anyone asking.
-- Verification keys are derived from the prefix, so this script is single-node only.
-- KEYS: 1 expiring set, 2 stats, 3 events due set    ARGV: 1 now_ms, 2 limit, 3 key prefix
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local expired = {}
for _, vid in ipairs(ids) do
  local vkey = ARGV[3] .. ':v:' .. vid
  local v = hgetall_map(vkey)
  local ekey = ARGV[3] .. ':e:evt_' .. string.sub(vid, 5)
  if v.status ~= nil then settle_expiry(vkey, v, now, KEYS[1], KEYS[2], vid, ekey, KEYS[3]) end
  redis.call('ZREM', KEYS[1], vid)
  if v.status == 'expired' then table.insert(expired, vid) end
end
return expired
