-- smsq: record a dispatched chunk's outcomes atomically, in one round trip.
--
-- KEYS[1]  the chunk's state key        KEYS[2]  the in-flight hash (chunk key -> dispatch)
-- KEYS[3]  the job's hash    KEYS[4] its recipients    KEYS[5] its counts    KEYS[6] its costs
-- KEYS[7]  the account's message-id index             KEYS[8]  the account's awaiting set
-- KEYS[9]  the events stream                          KEYS[10] the resends due (resend.lua)
-- KEYS[11] the account's price list                   KEYS[12] the account's state hash
-- KEYS[13..] the permit log of ARGV[10] when given, then the lease set of ARGV[11] when given
-- (limits.lua, put in front of this script with resend.lua, completes and releases them as
-- complete.lua and concurrency.lua do: the request is over, however the recording goes).
-- ARGV[1] job id      ARGV[2] account      ARGV[3] now      ARGV[4] events maxlen
-- ARGV[5] first check time                 ARGV[6] chunk state ttl (s)
-- ARGV[7] outcomes JSON:
--   [{"p": phone, "s": status, "id": provider id, "cid": canonical id, "n": parts,
--     "c": cost, "k": raw code, "r": reason, "rs": 1 when the provider's codes call the
--     failure provider-side (a second-chance candidate)}, ...]   (absent keys: no value)
-- ARGV[8] otp max age (s)
-- ARGV[9] "resend" for a second-chance chunk (not one of the job's counted chunks), else ""
-- ARGV[10] the id of the rate permit the chunk's request took, completed now ("": none)
-- ARGV[11] the id of the in-flight lease the request held, released now ("": none)
-- A candidate the job's route resends (see resend.lua) is recorded queued for its next
-- attempt instead of its final status, with a "resend" event instead of a status event.
--
-- Writes every recipient's record, indexes submitted/unknown ids for reconciliation (an
-- unknown recipient without a provider id under the tracking id "~<job>|<phone>", so
-- reconciliation still settles it at its deadline),
-- moves the job's counts from each recipient's recorded status, appends one event per
-- recipient, marks the chunk done (and no longer in flight) and, with the job's last chunk,
-- the job done.
-- Adds what went out to the job's costs (<job>:cost, "<account>|<currency>" -> amount).
-- A chunk already done (another delivery recorded it) or cancelled is left alone: returns -1;
-- otherwise {the number of the job's chunks done, {"<account>|<currency>", amount, ...},
-- {status, number queued for a second chance instead, ...}}.
local job, account, now = ARGV[1], ARGV[2], ARGV[3]
local second_chance, otp_max_age = ARGV[9] == "resend", ARGV[8] or "600"
local chunk_key, inflight = KEYS[1], KEYS[2]
local base, rcpt_key, counts_key, cost_key = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local index, awaiting, events, resend_key = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local prices_key, account_key = KEYS[11], KEYS[12]
local FINAL = {undeliverable = true, expired = true, rejected = true, failed = true,
               delivered = true}
local resent = {}
local held = 13
if (ARGV[10] or "") ~= "" then
  smsq_rate_complete(KEYS[held], smsq_now(), ARGV[10])
  held = held + 1
end
if (ARGV[11] or "") ~= "" then smsq_lease_release(KEYS[held], ARGV[11]) end
local chunk_state = redis.call("GET", chunk_key)
if chunk_state == "done" or chunk_state == "cancelled" then
  redis.call("HDEL", inflight, chunk_key)
  return -1
end
local maxlen, first_check = ARGV[4], ARGV[5]
local outcomes = cjson.decode(ARGV[7])
local records, tally, left = {}, {}, {}
local at = tonumber(now)
local phones = {}
for i, o in ipairs(outcomes) do phones[i] = o.p end
local current = {}
if #phones > 0 then
  for i = 1, #phones, 4000 do
    local part = redis.call("HMGET", rcpt_key, unpack(phones, i, math.min(i + 3999, #phones)))
    for j, v in ipairs(part) do current[i + j - 1] = v end
  end
end

local function flush(key, cmd, args)
  -- HSET/ZADD in slices: Lua's unpack has a stack limit
  for i = 1, #args, 4000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end

-- What intake (and routing) recorded about a recipient stays in its record.
local KEEP = {"country", "route_account", "operator", "price", "currency", "priced_by",
              "attempt", "attempts"}
-- Cost of what went out: the provider's own cost of the recipient when it gave one, else
-- the routing price times the parts, when this account is the one routing priced.
local SENT = {submitted = true, delivered = true, unknown = true}
local job_parts = tonumber(redis.call("HGET", base, "parts") or "") or 1
local account_currency = redis.call("HGET", prices_key, "currency")
if not account_currency or account_currency == "" then  -- the balance poll's currency
  account_currency = redis.call("HGET", account_key, "currency")
  if account_currency == "" then account_currency = false end
end
local costs = {}
local idx, aw = {}, {}
for i, o in ipairs(outcomes) do
  local previous = "queued"
  local old = nil
  if current[i] then
    old = cjson.decode(current[i])
    previous = old.status or "queued"
  end
  left[previous] = (left[previous] or 0) + 1
  local rec = {status = o.s, at = at, account = account,
               provider_message_id = o.id, parts = o.n, cost = o.c, code = o.k, reason = o.r}
  if old then
    for _, name in ipairs(KEEP) do rec[name] = old[name] end
  end
  if SENT[o.s] then
    local amount, currency = nil, nil
    if o.c and tonumber(o.c) then
      amount = tonumber(o.c)
      currency = account_currency or (old and old.route_account == account and old.currency)
    elseif old and old.route_account == account and old.price and tonumber(old.price) then
      amount = tonumber(old.price) * (o.n or job_parts)
      currency = old.currency
    end
    if amount then
      local ckey = account .. "|" .. (currency or "")
      costs[ckey] = (costs[ckey] or 0) + amount
    end
  end
  local again = o.rs and FINAL[o.s] and smsq_resend(base, resend_key, events, job, o.p,
                                                     rec, o.s, account, o.id, o.k, nil, o.r,
                                                     now, "dispatch", otp_max_age, maxlen)
  records[#records + 1] = o.p
  records[#records + 1] = cjson.encode(rec)
  local cid = o.cid
  if (not cid) and o.s == "unknown" then cid = "~" .. job .. "|" .. o.p end
  if again then
    resent[o.s] = (resent[o.s] or 0) + 1
    tally["queued"] = (tally["queued"] or 0) + 1
  else
    tally[o.s] = (tally[o.s] or 0) + 1
  end
  if again then
    -- queued for the next account: no index entry, no status event (resend.lua wrote one)
  elseif cid and (o.s == "submitted" or o.s == "unknown") then
    idx[#idx + 1] = cid
    idx[#idx + 1] = job .. "|" .. o.p
    aw[#aw + 1] = first_check
    aw[#aw + 1] = cid
  end
  if not again then
    local ev = {"type", "status", "job_id", job, "phone", o.p, "status", o.s,
                "previous", previous, "account", account, "at", now, "source", "dispatch"}
    if o.id then ev[#ev + 1] = "provider_message_id"; ev[#ev + 1] = o.id end
    if o.k then ev[#ev + 1] = "raw_status"; ev[#ev + 1] = o.k end
    if o.r then ev[#ev + 1] = "reason"; ev[#ev + 1] = o.r end
    if rec.attempt then ev[#ev + 1] = "attempt"; ev[#ev + 1] = tostring(rec.attempt) end
    redis.call("XADD", events, "MAXLEN", "~", maxlen, "*", unpack(ev))
  end
end
if #records > 0 then flush(rcpt_key, "HSET", records) end
if #idx > 0 then
  flush(index, "HSET", idx)
  flush(awaiting, "ZADD", aw)
end
for status, n in pairs(left) do redis.call("HINCRBY", counts_key, status, -n) end
for status, n in pairs(tally) do redis.call("HINCRBY", counts_key, status, n) end
local cost_list = {}
for ckey, amount in pairs(costs) do
  redis.call("HINCRBYFLOAT", cost_key, ckey, string.format("%.6f", amount))
  cost_list[#cost_list + 1] = ckey
  cost_list[#cost_list + 1] = string.format("%.6f", amount)
end
local resent_list = {}
for status, n in pairs(resent) do
  resent_list[#resent_list + 1] = status
  resent_list[#resent_list + 1] = n
end
redis.call("SET", chunk_key, "done", "EX", ARGV[6])
redis.call("HDEL", inflight, chunk_key)
local done = 0
if second_chance then
  done = tonumber(redis.call("HGET", base, "chunks_done") or "0")
else
  done = redis.call("HINCRBY", base, "chunks_done", 1)
  local total = tonumber(redis.call("HGET", base, "chunks") or "0")
  if total > 0 and done >= total then
    redis.call("HSET", base, "state", "done", "finished_at", now)
  end
end
return {done, cost_list, resent_list}
