-- Hand a dead consumer's unacknowledged messages back to the stream as new entries.
-- A consumer is dead when its heartbeat key has expired; live ones are never touched,
-- so a long task is not stolen while its worker runs.
-- KEYS: 1 stream, 2 the consumer's heartbeat key
-- ARGV: 1 group, 2 consumer, 3 maxlen, 4 batch size
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local batch = tonumber(ARGV[4])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', batch, ARGV[2])
local moved = 0
for _, p in ipairs(pending) do
  local id = p[1]
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if #entry > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(entry[1][2]))
    moved = moved + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
if #pending < batch then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return moved
