-- smsq: apply provider status reports with monotonic rules, atomically, in one round trip.
--
-- KEYS: none (smsq does not run on Redis Cluster: Dramatiq's broker does not support it)
-- ARGV[1] key prefix          ARGV[2] account       ARGV[3] now (epoch seconds, text)
-- ARGV[4] events stream maxlen    ARGV[5] otp max age (s)
-- then per report, 8 values: provider message id, status, raw status, raw error, at, source,
-- extra JSON, "1" when the provider's codes call a failure provider-side (a second-chance
-- candidate: see resend.lua; a resent recipient goes back to queued with a "resend" event,
-- its id leaves the index and the awaiting set, and no status event is written)
--
-- For each report: the recipient is found through <prefix>:msgid:<account>; a report is applied
-- only when it moves the recipient forward (see RANK); an applied report rewrites the
-- recipient's record, moves the job's counts, leaves the awaiting set when final, and appends
-- exactly one event. Returns {applied, unchanged, unmatched, resent, finals}: finals lists, for
-- each recipient that reached its first final status, the status and the seconds since it was
-- submitted ("" when it was not awaiting as submitted or unknown), flattened.
local prefix, account, now = ARGV[1], ARGV[2], ARGV[3]
local maxlen = tonumber(ARGV[4])
local RANK = {queued = 0, unknown = 1, submitted = 2,
              undeliverable = 3, expired = 3, rejected = 3, failed = 3, cancelled = 3,
              delivered = 4}
local FINAL = {undeliverable = true, expired = true, rejected = true, failed = true,
               cancelled = true, delivered = true}
local index = prefix .. ":msgid:" .. account
local awaiting = prefix .. ":awaiting:" .. account
local events = prefix .. ":events"
local otp_max_age = ARGV[5]
local applied, unchanged, unmatched, resent = 0, 0, 0, 0
local finals = {}
local n = (#ARGV - 5) / 8
for i = 0, n - 1 do
  local base = 6 + i * 8
  local pid, status, raw, rawerr, at, source, extra, candidate =
    ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5],
    ARGV[base + 6], ARGV[base + 7]
  local ref = redis.call("HGET", index, pid)
  if not ref then
    unmatched = unmatched + 1
  else
    local sep = string.find(ref, "|", 1, true)
    local job, phone = string.sub(ref, 1, sep - 1), string.sub(ref, sep + 1)
    local rkey = prefix .. ":job:" .. job .. ":rcpt"
    local current = redis.call("HGET", rkey, phone)
    local record = current and cjson.decode(current) or nil
    local previous = record and record["status"] or "queued"
    if not record then
      -- The job's records are gone (purged): nothing to update; forget the id.
      redis.call("HDEL", index, pid)
      unmatched = unmatched + 1
    elseif candidate == "1" and FINAL[status] and (RANK[status] or -1) > (RANK[previous] or 0)
        and smsq_resend(prefix, job, phone, record, status, account, pid, raw, rawerr, nil,
                        now, source, otp_max_age, maxlen) then
      -- A second chance through the next account: the record is queued again.
      redis.call("HSET", rkey, phone, cjson.encode(record))
      local ckey = prefix .. ":job:" .. job .. ":counts"
      redis.call("HINCRBY", ckey, previous, -1)
      redis.call("HINCRBY", ckey, "queued", 1)
      redis.call("ZREM", awaiting, pid)
      redis.call("HDEL", index, pid)  -- later reports of this attempt match nothing
      resent = resent + 1
      applied = applied + 1
    elseif (RANK[status] or -1) > (RANK[previous] or 0) then
      if FINAL[status] and not FINAL[previous] then
        local since = ""
        if (previous == "submitted" or previous == "unknown") and tonumber(record["at"]) then
          since = string.format("%.3f", tonumber(now) - tonumber(record["at"]))
        end
        finals[#finals + 1] = status
        finals[#finals + 1] = since
      end
      record["status"] = status
      record["raw_status"] = raw
      if rawerr ~= "" then record["raw_error"] = rawerr end
      record["at"] = tonumber(at) or tonumber(now)
      record["source"] = source
      -- smsq's own settling (reconcile) says why in the record's reason.
      if source == "reconcile" then record["reason"] = raw end
      redis.call("HSET", rkey, phone, cjson.encode(record))
      local ckey = prefix .. ":job:" .. job .. ":counts"
      redis.call("HINCRBY", ckey, previous, -1)
      redis.call("HINCRBY", ckey, status, 1)
      if FINAL[status] then
        redis.call("ZREM", awaiting, pid)
      end
      local fields = {"type", "status", "job_id", job, "phone", phone, "status", status,
                      "previous", previous, "account", account,
                      "raw_status", raw, "at", at, "source", source}
      -- "~<job>|<phone>" is smsq's tracking id of a message the provider gave no id
      if string.sub(pid, 1, 1) ~= "~" then
        table.insert(fields, "provider_message_id"); table.insert(fields, pid)
      end
      if rawerr ~= "" then table.insert(fields, "raw_error"); table.insert(fields, rawerr) end
      if extra ~= "" then table.insert(fields, "extra"); table.insert(fields, extra) end
      if record["attempt"] then
        table.insert(fields, "attempt"); table.insert(fields, tostring(record["attempt"]))
      end
      redis.call("XADD", events, "MAXLEN", "~", maxlen, "*", unpack(fields))
      applied = applied + 1
    else
      unchanged = unchanged + 1
      if FINAL[previous] then
        redis.call("ZREM", awaiting, pid)
      end
    end
  end
end
return {applied, unchanged, unmatched, resent, finals}
