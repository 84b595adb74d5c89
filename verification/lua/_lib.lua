-- Shared helpers, prepended to every script.
local function hgetall_map(key)
  local flat = redis.call('HGETALL', key)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end

local function hset_map(key, map)
  local args = {}
  for k, v in pairs(map) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

-- Sends to one address or number in the last `window` ms. Time is cut into buckets one
-- window long; each bucket is a hash (address digest -> its send times in that bucket,
-- space-separated ms), expiring a window after it ends. So an address costs a field,
-- not a key, and nothing needs pruning. The window spans this bucket and the previous.
-- Returns the milliseconds until a send is allowed (0 = now) and this bucket's field,
-- for record_send.
local function window_wait(cur, prev, field, now, window, limit)
  local sends = {}
  local raw_cur = redis.call('HGET', cur, field)
  for _, raw in ipairs({redis.call('HGET', prev, field), raw_cur}) do
    if raw then
      for t in string.gmatch(raw, '%d+') do
        if tonumber(t) > now - window then sends[#sends + 1] = t end
      end
    end
  end
  if #sends >= limit then
    return math.max(tonumber(sends[#sends - limit + 1]) + window - now, 1), raw_cur
  end
  return 0, raw_cur
end

local function counter_wait(key, limit)
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= limit then return math.max(redis.call('PTTL', key), 1) end
  return 0
end

local function count_send(key, ttl)
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ttl) end
end

-- A send to the destination (raw_cur: its field in this bucket, as window_wait read it).
local function record_send(cur, field, raw_cur, now, window, site_key, site_ttl)
  local stamp = string.format('%.0f', now)
  redis.call('HSET', cur, field, raw_cur and (raw_cur .. ' ' .. stamp) or stamp)
  -- The bucket is read until a window after it ends.
  redis.call('PEXPIREAT', cur, (math.floor(now / window) + 2) * window)
  count_send(site_key, site_ttl)
end

-- The keys a status change touches, passed first (KEYS[1..8]) by every script that can
-- change a verification's status, all in the verification's shard (one slot).
local function status_keys()
  return {v = KEYS[1], expiring = KEYS[2], stats = KEYS[3], day = KEYS[4], event = KEYS[5],
    events_due = KEYS[6], sched = KEYS[7], sched_due = KEYS[8]}
end

-- Verification counters: all-time (for /metrics) and per UTC day (for /stats).
local function count_verification(sk, status, channel)
  redis.call('HINCRBY', sk.stats, 'verifications:' .. status, 1)
  redis.call('HINCRBY', sk.day, status, 1)
  if channel then redis.call('HINCRBY', sk.day, status .. ':' .. channel, 1) end
  redis.call('PEXPIRE', sk.day, 8 * 86400000)
end

-- A verification that is no longer pending needs no remind_after reminder.
local function drop_signup_reminder(sk, vid)
  redis.call('HDEL', sk.sched, 'remind_' .. vid)
  redis.call('ZREM', sk.sched_due, 'remind_' .. vid)
end

-- The outbound event of a verification's one final status change, queued with it
-- (a transactional outbox: no status change without its event, no event without one).
-- An approval whose signup opted in to email announcements is subscribed by the worker
-- that takes this event (the subscriber list lives in the home shard, another slot).
local EVENT_TTL_MS = 4 * 86400 * 1000
-- An operator's replay can reopen a failed verification; its next event gets a new id.
local function emit_event(sk, now, vid, v, status)
  local id = 'evt_' .. string.sub(vid, 5)
  if v.event_gen ~= nil and v.event_gen ~= '0' then id = id .. '_' .. v.event_gen end
  redis.call('DEL', sk.event)
  redis.call('HSET', sk.event, 'id', id, 'type', 'verification.' .. status,
    'verification_id', vid, 'site', v.site, 'created_at', now, 'status', 'pending', 'attempts', 0)
  redis.call('PEXPIRE', sk.event, EVENT_TTL_MS)
  redis.call('ZADD', sk.events_due, now, id)
end

-- End a pending verification with a final status (not approval, see approve).
local function finish(sk, v, now, vid, status)
  redis.call('HSET', sk.v, 'status', status, 'updated_at', now)
  redis.call('HDEL', sk.v, 'code_hash')
  redis.call('ZREM', sk.expiring, vid)
  count_verification(sk, status, v.channel)
  drop_signup_reminder(sk, vid)
  emit_event(sk, now, vid, v, status)
  v.status = status
end

-- A pending verification whose time ran out becomes 'expired' on first touch.
local function settle_expiry(sk, v, now, vid)
  if v.status == 'pending' and tonumber(v.expires_at) <= now then
    finish(sk, v, now, vid, 'expired')
  end
end

-- Approve a pending verification (a matching code, a used link, a confirmation in
-- Telegram).
local function approve(sk, v, now, vid, how)
  redis.call('HSET', sk.v, 'approved_by', how)
  finish(sk, v, now, vid, 'approved')
end

-- A delivery's record. Since 2026-12 its fields live in its verification's hash, each
-- named '<last 8 characters of its id>.<field>' (no key, no TTL of its own: a third of a
-- pending verification's memory). Deliveries of earlier releases keep a hash of their own
-- (own_key), used while it exists.
local DELIVERY_FIELDS = {'status', 'attempts', 'channel', 'send_no', 'created_at', 'secret',
  'purpose', 'lease_until', 'lease_token', 'provider_id', 'error', 'finished_at',
  'next_attempt_at', 'replayed_by'}

-- A delivery inside its verification's hash (verification.models.delivery_field).
local function folded(v_key, did)
  return {key = v_key, pre = string.sub(did, -8) .. '.'}
end

local function delivery_ref(own_key, v_key, did)
  if redis.call('EXISTS', own_key) == 1 then return {key = own_key, pre = ''} end
  return folded(v_key, did)
end

-- A first delivery's number and time are its verification's: not stored (defaults here).
local function dget(ref)
  if ref.pre == '' then return hgetall_map(ref.key) end
  local names = {}
  for i, f in ipairs(DELIVERY_FIELDS) do names[i] = ref.pre .. f end
  names[#names + 1] = 'created_at'
  local values = redis.call('HMGET', ref.key, unpack(names))
  local d = {}
  for i, f in ipairs(DELIVERY_FIELDS) do
    if values[i] then d[f] = values[i] end
  end
  if d.status ~= nil then
    d.send_no = d.send_no or '1'
    d.created_at = d.created_at or values[#names]
  end
  return d
end

local function dset(ref, ...)
  local args = {...}
  for i = 1, #args, 2 do args[i] = ref.pre .. args[i] end
  redis.call('HSET', ref.key, unpack(args))
end

local function ddel(ref, ...)
  local args = {...}
  for i = 1, #args do args[i] = ref.pre .. args[i] end
  redis.call('HDEL', ref.key, unpack(args))
end

local function dincr(ref, field, by)
  return redis.call('HINCRBY', ref.key, ref.pre .. field, by)
end

-- A new delivery's fields (a map) into its verification's hash.
local function store_delivery(v_key, did, fields)
  local args = {}
  for k, v in pairs(fields) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  dset(folded(v_key, did), unpack(args))
end

-- A verification's deliveries, oldest first: the 8-hex tails of their ids in its hash's
-- 'deliveries' field (ids are dlv_<verification hex>_<8 hex>), so the hash stays compact
-- for up to seven sends. Verifications of releases before 2026-12 keep a list of their
-- own (list_key), which goes on being used while it exists.
local function add_delivery(v_key, list_key, did, ttl)
  if redis.call('EXISTS', list_key) == 1 then
    redis.call('RPUSH', list_key, did)
    if ttl then redis.call('PEXPIRE', list_key, ttl) end
    return
  end
  local tails = redis.call('HGET', v_key, 'deliveries')
  local tail = string.sub(did, -8)
  redis.call('HSET', v_key, 'deliveries', tails and (tails .. ' ' .. tail) or tail)
end


-- A timer bucket's check (verification.timers): the entries the caller read (ARGV[2..])
-- must still be the bucket's first ones, or another worker took them meanwhile.
local function timer_entries_ours(bucket)
  local n = #ARGV - 1
  local head = redis.call('LRANGE', bucket, 0, n - 1)
  for i = 1, n do
    if head[i] ~= ARGV[i + 1] then return false end
  end
  return true
end

-- Take the checked entries out of the bucket; how many are left.
local function timer_entries_done(bucket)
  redis.call('LTRIM', bucket, #ARGV - 1, -1)
  return redis.call('LLEN', bucket)
end
