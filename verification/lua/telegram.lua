-- A person answering a Telegram deep link: link the chat, then approve or decline.
-- KEYS 1-8: the status keys (see status_keys in _lib.lua)
-- ARGV: 1 now_ms, 2 verification id, 3 action (link|approve|decline), 4 Telegram user id,
--       5 chat id, 6 how it was approved (button|contact), 7 the shared contact's phone
--       (E.164; approving by contact needs it to equal the signup's)
-- Reply: {state, site, locale, phone}; state is linked | approved | declined |
-- phone_mismatch | not_linked |
-- other_user (the link was opened by someone else first) | not_found | the final status.
local now = tonumber(ARGV[1])
local sk = status_keys()
local v = hgetall_map(sk.v)
if v.site == nil or v.channel ~= 'telegram' then return {'not_found', '', '', ''} end
settle_expiry(sk, v, now, ARGV[2])
local phone = v.phone or ''
if v.status ~= 'pending' then return {v.status, v.site, v.locale, phone} end
if v.tg_user ~= nil and v.tg_user ~= ARGV[4] then return {'other_user', v.site, v.locale, ''} end

local action = ARGV[3]
if action == 'link' then
  redis.call('HSET', sk.v, 'tg_user', ARGV[4], 'tg_chat', ARGV[5], 'destination',
    'telegram:' .. ARGV[5], 'updated_at', now)
  return {'linked', v.site, v.locale, phone}
end
if v.tg_user == nil then return {'not_linked', v.site, v.locale, phone} end
if action == 'approve' and ARGV[6] == 'contact' and (v.phone == nil or v.phone ~= ARGV[7]) then
  return {'phone_mismatch', v.site, v.locale, ''}
end
if action == 'approve' then
  approve(sk, v, now, ARGV[2], 'telegram_' .. ARGV[6])
  return {'approved', v.site, v.locale, phone}
end
finish(sk, v, now, ARGV[2], 'canceled')
return {'declined', v.site, v.locale, phone}
