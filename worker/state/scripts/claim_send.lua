-- smsq: the first step of a send in one round trip: claim the chunk, take the account's
-- in-flight lease (when it has a cap) and rate permit (when a rule applies) and mark the chunk
-- sending, all or nothing. When any of them cannot be had at once nothing changes and the
-- answer says why; dispatch then waits or takes the step-by-step path (worker/dispatch.py),
-- which decides the same way. limits.lua, put in front of this script when it is loaded,
-- holds the limiter's and the leases' decisions, shared with limiter.lua and concurrency.lua.
--
-- KEYS[1]  the chunk's state key (worker/chunk_state.py)
-- KEYS[2]  the in-flight hash: chunk key -> the message carrying it (the stranded-work sweep)
-- KEYS[3]  the permit log of (account, endpoint); KEYS[4] its pause flag
-- KEYS[5]  the account's in-flight leases
-- KEYS[6..] the state hashes of the route's accounts, the account to send through first
-- ARGV[1]  the chunk's new value, "sending:<account>:<token>"   ARGV[2] its ttl (seconds)
-- ARGV[3]  the in-flight entry to write ("": none)
-- ARGV[4]  lease id ("": the account has no in-flight cap)   ARGV[5] the cap
-- ARGV[6]  lease time (microseconds)
-- ARGV[7]  permit id   ARGV[8] 1 when the caller may use a rule's reserve (otp), else 0
-- ARGV[9]  hold (microseconds, see limiter.lua)
-- ARGV[10] number of rate rules (0: none applies, no permit is taken), then per rule:
--          limit, window (microseconds), reserve
--
-- The chunk is claimed when it has no state or is "claimed" by any delivery (one that never
-- sent it: taken over, as the step-by-step claim does). Returns
--   {"sending", {state, reason, probe_at} per route account}: ours, marked sending; the
--       lease, the permit and the in-flight entry are held
--   {"done"} or {"cancelled"}: nothing to send (its in-flight entry is removed)
--   {"found", value}: the chunk is in another state (sending, or ours from an earlier run)
--   {"paused"}: the first account of the route is paused
--   {"wait", microseconds, "pause" | "lease" | "rate"}: the endpoint is paused by the
--       provider, every lease is held, or a rule allows no permit yet
local current = redis.call("GET", KEYS[1])
if current == "done" or current == "cancelled" then
  redis.call("HDEL", KEYS[2], KEYS[1])
  return {current}
end
if current and string.sub(current, 1, 8) ~= "claimed:" then
  return {"found", current}
end
local states = {}
for i = 6, #KEYS do
  states[#states + 1] = redis.call("HMGET", KEYS[i], "state", "reason", "probe_at")
end
if states[1] and states[1][1] == "paused" then
  return {"paused"}
end
local paused = redis.call("PTTL", KEYS[4])
if paused > 0 then
  return {"wait", smsq_s(paused * 1000), "pause"}
end
local now = smsq_now()
local lease = ARGV[4]
if lease ~= "" then
  local wait = smsq_lease_wait(KEYS[5], now, tonumber(ARGV[5]))
  if wait > 0 then return {"wait", smsq_s(wait), "lease"} end
end
local n = tonumber(ARGV[10])
local longest = 0
if n > 0 then
  local wait
  wait, longest = smsq_rate_wait(KEYS[3], now, tonumber(ARGV[8]) == 1, n, ARGV, 11)
  if wait > 0 then return {"wait", smsq_s(wait), "rate"} end
end
if lease ~= "" then smsq_lease_take(KEYS[5], now, tonumber(ARGV[6]), lease) end
if n > 0 then smsq_rate_grant(KEYS[3], now, tonumber(ARGV[9]), longest, ARGV[7]) end
redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2])
if ARGV[3] ~= "" then redis.call("HSET", KEYS[2], KEYS[1], ARGV[3]) end
return {"sending", states}
