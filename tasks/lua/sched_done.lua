-- One-off schedules that were sent: forget them.
-- KEYS: 1 claimed set, 2 schedule data hash    ARGV: schedule ids
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #ARGV
