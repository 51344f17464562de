-- smsq: apply provider status reports with monotonic rules, atomically.
--
-- KEYS[1]  the account's message-id index (<prefix>:msgid:<account>): provider id -> "job|phone"
-- KEYS[2]  the account's awaiting set (<prefix>:awaiting:<account>)
-- KEYS[3]  the events stream (<prefix>:events)
-- KEYS[4]  the resends due (<prefix>:resend, see resend.lua)
-- KEYS[5..] per job the caller found for the reports, 3 keys each, job j (from 1) at
--          KEYS[2 + 3j], KEYS[3 + 3j], KEYS[4 + 3j]: the job's hash, recipients, counts
-- ARGV[1]  account       ARGV[2] now (epoch seconds, text)      ARGV[3] events stream maxlen
-- ARGV[4]  otp max age (s)            ARGV[5] J, the number of jobs given in KEYS
-- ARGV[6..5 + J] the job ids, in the order of their keys
-- then per report, 9 values: provider message id, the job's number j (0: none found), status,
-- raw status, raw error, at, source, extra JSON, "1" when the provider's codes call a
-- failure provider-side (a second-chance candidate: see resend.lua; a resent recipient goes
-- back to queued with a "resend" event, its id leaves the index and the awaiting set, and
-- no status event is written)
--
-- The caller looks each report's job up in the index before the call (a tracking id
-- "~job|phone" names its job); the script checks the index again: a report whose id now
-- maps to another job than the one given, or to a job when none was given (the send's
-- recording came in between), is left untouched and returned in `deferred` for the caller
-- to apply in another call with that job's keys. An id the index does not map is unmatched.
-- A report is applied only when it moves the recipient forward (see RANK); an applied report
-- rewrites the recipient's record, moves the job's counts, leaves the awaiting set when
-- final, and appends exactly one event. Returns {applied, unchanged, unmatched, resent,
-- finals, deferred}: finals lists, for each recipient that reached its first final status,
-- the status and the seconds since it was submitted ("" when it was not awaiting as
-- submitted or unknown), flattened; deferred lists the positions (from 1) of the reports
-- left untouched.
local account, now = ARGV[1], ARGV[2]
local maxlen = tonumber(ARGV[3])
local otp_max_age = ARGV[4]
local index, awaiting, events, resend_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local njobs = tonumber(ARGV[5])
local jobs = {}
for j = 1, njobs do jobs[j] = ARGV[5 + j] end
local first = 6 + njobs
local RANK = {queued = 0, unknown = 1, submitted = 2,
              undeliverable = 3, expired = 3, rejected = 3, failed = 3, cancelled = 3,
              delivered = 4}
local FINAL = {undeliverable = true, expired = true, rejected = true, failed = true,
               cancelled = true, delivered = true}
local applied, unchanged, unmatched, resent = 0, 0, 0, 0
local finals, deferred = {}, {}
local n = (#ARGV - first + 1) / 9
for i = 0, n - 1 do
  local base = first + i * 9
  local pid, slot, status, raw, rawerr, at, source, extra, candidate =
    ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2], ARGV[base + 3], ARGV[base + 4],
    ARGV[base + 5], ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local ref = redis.call("HGET", index, pid)
  local sep = ref and string.find(ref, "|", 1, true)
  local job = sep and string.sub(ref, 1, sep - 1)
  if not ref then
    unmatched = unmatched + 1
  elseif slot == 0 or jobs[slot] ~= job then
    deferred[#deferred + 1] = i + 1
  else
    local phone = string.sub(ref, sep + 1)
    local jkey, rkey, ckey = KEYS[2 + 3 * slot], KEYS[3 + 3 * slot], KEYS[4 + 3 * slot]
    local current = redis.call("HGET", rkey, phone)
    local record = current and cjson.decode(current) or nil
    local previous = record and record["status"] or "queued"
    if not record then
      -- The job's records are gone (purged): nothing to update; forget the id.
      redis.call("HDEL", index, pid)
      unmatched = unmatched + 1
    elseif candidate == "1" and FINAL[status] and (RANK[status] or -1) > (RANK[previous] or 0)
        and smsq_resend(jkey, resend_key, events, job, phone, record, status, account, pid,
                        raw, rawerr, nil, now, source, otp_max_age, maxlen) then
      -- A second chance through the next account: the record is queued again.
      redis.call("HSET", rkey, phone, cjson.encode(record))
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
return {applied, unchanged, unmatched, resent, finals, deferred}
