-- Issue a new code for a pending verification (the old one stops working) and queue it.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua)
-- KEYS: 9 destination windows, this bucket (hash), 10 site hour, 11 the new delivery's
--       watchdog bucket (list, verification.timers),
--       12 verification deliveries (earlier releases' list), 13 task stream,
--       14 phone-prefix hour (SMS only), 15 destination windows, the previous bucket,
--       16 the new expiry's bucket (list)
-- ARGV: 1 now_ms, 2 site, 3 new code hash, 4 expires_at_ms, 5 cooldown_ms, 6 window_ms,
--       7 destination limit, 8 site limit, 9 site_ttl_ms, 10 delivery id, 11 delivery json,
--       12 record_ttl_ms, 13 channel, 14 verification id,
--       15 compact task entry, 16 stream maxlen, 17 new link hash, 18 destination,
--       19 phone-prefix limit (0: none), 20 its ttl_ms, 21 destination's window field,
--       22 the signup's email ('' = none)
local now = tonumber(ARGV[1])
local sk = status_keys()
local v = hgetall_map(sk.v)
if v.site == nil or v.site ~= ARGV[2] then return {'not_found'} end
settle_expiry(sk, v, now, ARGV[14])
if v.status ~= 'pending' then return {'inactive', v.status} end

local since = now - tonumber(v.last_send_at or v.created_at)
local cooldown = tonumber(ARGV[5])
if since < cooldown then return {'limited', tostring(cooldown - since), 'cooldown'} end
local wait, sent_here = window_wait(KEYS[9], KEYS[15], ARGV[21], now, tonumber(ARGV[6]),
  tonumber(ARGV[7]))
if wait > 0 then return {'limited', tostring(wait), 'destination'} end
wait = counter_wait(KEYS[10], tonumber(ARGV[8]))
if wait > 0 then return {'limited', tostring(wait), 'site'} end
local prefix_limit = tonumber(ARGV[19])
if prefix_limit > 0 then
  wait = counter_wait(KEYS[14], prefix_limit)
  if wait > 0 then return {'limited', tostring(wait), 'prefix'} end
end

local sends = redis.call('HINCRBY', sk.v, 'sends', 1)
local delivery = cjson.decode(ARGV[11])
delivery.send_no = sends
local ttl = tonumber(ARGV[12])
redis.call('HSET', sk.v, 'code_hash', ARGV[3], 'link_hash', ARGV[17], 'expires_at', ARGV[4],
  'last_send_at', now, 'channel', ARGV[13], 'destination', ARGV[18], 'updated_at', now)
if ARGV[22] ~= '' then redis.call('HSET', sk.v, 'email', ARGV[22]) end
redis.call('PEXPIRE', sk.v, ttl)
store_delivery(KEYS[1], ARGV[10], delivery)
add_delivery(KEYS[1], KEYS[12], ARGV[10], ttl)
if redis.call('RPUSH', KEYS[11], ARGV[10]) == 1 then redis.call('PEXPIRE', KEYS[11], ttl) end
if redis.call('RPUSH', KEYS[16], string.sub(ARGV[14], 5)) == 1 then
  redis.call('PEXPIRE', KEYS[16], ttl)
end
record_send(KEYS[9], ARGV[21], sent_here, now, tonumber(ARGV[6]), KEYS[10], tonumber(ARGV[9]))
if prefix_limit > 0 then count_send(KEYS[14], tonumber(ARGV[20])) end
redis.call('HINCRBY', sk.stats, 'deliveries:queued:' .. ARGV[13], 1)
redis.call('XADD', KEYS[13], 'MAXLEN', '~', ARGV[16], '*', 'd', ARGV[15])
return {'sent', tostring(sends)}
