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

-- Milliseconds until a send to this destination is allowed (0 = now).
local function window_wait(key, now, window, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return math.max(tonumber(oldest[2]) + window - now, 1)
  end
  return 0
end

local function counter_wait(key, limit)
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= limit then return math.max(redis.call('PTTL', key), 1) end
  return 0
end

local function count_send(key, ttl)
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ttl) end
end

local function record_send(dest_key, now, window, member, site_key, site_ttl)
  redis.call('ZADD', dest_key, now, member)
  redis.call('PEXPIRE', dest_key, window)
  count_send(site_key, site_ttl)
end

-- Verification counters: all-time (for /metrics) and per UTC day (for /stats), the
-- day's hash derived from the stats key (single-node, like the scripts that use it).
local function count_verification(stats_key, now, status, channel)
  redis.call('HINCRBY', stats_key, 'verifications:' .. status, 1)
  local day_key = stats_key .. ':day:' .. math.floor(now / 86400000)
  redis.call('HINCRBY', day_key, status, 1)
  if channel then redis.call('HINCRBY', day_key, status .. ':' .. channel, 1) end
  redis.call('PEXPIRE', day_key, 8 * 86400000)
end

-- A verification that is no longer pending needs no remind_after reminder: drop its
-- schedule. The schedule keys derive from the verification's key (single-node).
local function drop_signup_reminder(vkey, vid)
  local prefix = string.sub(vkey, 1, #vkey - #vid - 3)
  redis.call('HDEL', prefix .. ':sched:data', 'remind_' .. vid)
  redis.call('ZREM', prefix .. ':sched:due', 'remind_' .. vid)
end

-- The outbound event of a verification's one final status change, queued with it
-- (a transactional outbox: no status change without its event, no event without one).
local EVENT_TTL_MS = 4 * 86400 * 1000
-- An operator's replay can reopen a failed verification; its next event gets a new id.
local function emit_event(ekey, edue, now, vid, v, status)
  local id = 'evt_' .. string.sub(vid, 5)
  if v.event_gen ~= nil and v.event_gen ~= '0' then id = id .. '_' .. v.event_gen end
  redis.call('DEL', ekey)
  redis.call('HSET', ekey, 'id', id, 'type', 'verification.' .. status,
    'verification_id', vid, 'site', v.site, 'created_at', now, 'status', 'pending', 'attempts', 0)
  redis.call('PEXPIRE', ekey, EVENT_TTL_MS)
  redis.call('ZADD', edue, now, id)
end

-- A pending verification whose time ran out becomes 'expired' on first touch.
local function settle_expiry(vkey, v, now, expiring_key, stats_key, vid, ekey, edue)
  if v.status == 'pending' and tonumber(v.expires_at) <= now then
    redis.call('HSET', vkey, 'status', 'expired')
    redis.call('HDEL', vkey, 'code_hash')
    redis.call('ZREM', expiring_key, vid)
    count_verification(stats_key, now, 'expired', v.channel)
    drop_signup_reminder(vkey, vid)
    emit_event(ekey, edue, now, vid, v, 'expired')
    v.status = 'expired'
  end
end

-- Approve a pending verification (a matching code, a used link, a confirmation in
-- Telegram). An email address it proved joins the email announcements when the signup
-- opted in (``subscribe``) and ``mail_subs`` is given.
local function approve(vkey, v, now, expiring_key, stats_key, vid, ekey, edue, how, mail_subs)
  redis.call('HSET', vkey, 'status', 'approved', 'approved_by', how, 'updated_at', now)
  redis.call('HDEL', vkey, 'code_hash')
  redis.call('ZREM', expiring_key, vid)
  count_verification(stats_key, now, 'approved', v.channel)
  drop_signup_reminder(vkey, vid)
  emit_event(ekey, edue, now, vid, v, 'approved')
  if mail_subs and v.subscribe == '1' and (v.channel == 'email' or v.channel == 'link')
      and v.email and v.email ~= '' then
    redis.call('ZADD', mail_subs, 'NX', now, v.email)
    redis.call('HSET', mail_subs .. ':locale', v.email, v.locale or 'en')
  end
end
