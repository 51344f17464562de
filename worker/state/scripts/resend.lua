-- smsq: second-chance resend, shared by record_chunk.lua and apply_status.lua (smsq puts
-- this chunk in front of each when it loads them). A function only: it has no KEYS or ARGV
-- of its own; its callers pass the key names they were given through their KEYS:
--   job_key     the job's hash (<prefix>:job:<job>)
--   resend_key  the resends due (<prefix>:resend)
--   events_key  the events stream (<prefix>:events)
--
-- smsq_resend(job_key, resend_key, events_key, job, phone, rec, status, account, pid, raw,
--             rawerr, reason, now, source, otp_max_age, maxlen)
-- A recipient whose attempt through `account` just ended in the final `status` (a failure
-- the provider's codes call provider-side: the caller checked) is queued for one more send
-- through the next account of its route when its job allows it:
--   the job's route lists `status` in resend_on; the recipient's attempt number is below
--   max_attempts; an account of the route after `account` has not been tried; the message's
--   validity (expires_at) has more than a minute left; an OTP is not older than otp_max_age.
-- Then `rec` (the recipient's record, a Lua table) is changed in place: the attempt that
-- ended goes to rec.attempts, rec.attempt grows by one, rec.status becomes "queued" and
-- rec.resend_to names the next account; "<job>|<phone>|<attempt>" goes to resend_key
-- (the worker turns it into a dispatch message) and one "resend" event is appended. The
-- attempt's final status is NOT a status event: the recipient gets one final status, its
-- last attempt's. Returns true when queued, false when the status stays final.
local function smsq_resend(job_key, resend_key, events_key, job, phone, rec, status, account,
                           pid, raw, rawerr, reason, now, source, otp_max_age, maxlen)
  local f = redis.call("HMGET", job_key, "resend_on", "max_attempts", "accounts", "created_at",
                       "expires_at", "priority")
  if not f[1] or not f[2] then return false end
  if not string.find("," .. f[1] .. ",", "," .. status .. ",", 1, true) then return false end
  local attempt = tonumber(rec.attempt) or 1
  if attempt >= (tonumber(f[2]) or 1) then return false end
  local t = tonumber(now)
  if f[6] == "otp" and t - (tonumber(f[4]) or t) > tonumber(otp_max_age) then return false end
  if f[5] and tonumber(f[5]) and t > tonumber(f[5]) - 60 then return false end
  local route = {}
  for a in string.gmatch(f[3] or "", "[^,]+") do route[#route + 1] = a end
  local tried = {}
  tried[account] = true
  if type(rec.attempts) == "table" then
    for _, a in ipairs(rec.attempts) do
      if type(a) == "table" and a.account then tried[a.account] = true end
    end
  end
  local pos = 0
  for i, a in ipairs(route) do
    if a == account then pos = i end
  end
  local nxt = nil
  for k = 1, #route do
    local a = route[((pos + k - 1) % #route) + 1]
    if not tried[a] then
      nxt = a
      break
    end
  end
  if not nxt then return false end
  local attempts = type(rec.attempts) == "table" and rec.attempts or {}
  local done = {attempt = attempt, account = account, status = status, at = t, source = source}
  if pid and pid ~= "" then done.provider_message_id = pid end
  if raw and raw ~= "" then done.raw_status = raw end
  if rawerr and rawerr ~= "" then done.raw_error = rawerr end
  if reason and reason ~= "" then done.reason = reason end
  attempts[#attempts + 1] = done
  rec.attempts = attempts
  rec.attempt = attempt + 1
  rec.status = "queued"
  rec.resend_to = nxt
  rec.at = t
  for _, name in ipairs({"provider_message_id", "raw_status", "raw_error", "code", "reason",
                         "source", "parts", "cost"}) do
    rec[name] = nil
  end
  redis.call("ZADD", resend_key, t, job .. "|" .. phone .. "|" .. (attempt + 1))
  local ev = {"type", "resend", "job_id", job, "phone", phone, "status", status,
              "account", account, "next_account", nxt, "attempt", tostring(attempt),
              "at", now, "source", source}
  if pid and pid ~= "" then ev[#ev + 1] = "provider_message_id"; ev[#ev + 1] = pid end
  if raw and raw ~= "" then ev[#ev + 1] = "raw_status"; ev[#ev + 1] = raw end
  if rawerr and rawerr ~= "" then ev[#ev + 1] = "raw_error"; ev[#ev + 1] = rawerr end
  redis.call("XADD", events_key, "MAXLEN", "~", maxlen, "*", unpack(ev))
  return true
end
