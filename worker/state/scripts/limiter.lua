-- smsq sliding-log rate limiter: one round trip per acquire, on the Redis server's clock.
-- (limits.lua, put in front of this script when it is loaded, holds the shared decisions.)
--
-- KEYS[1]  the log: a sorted set of permits, scored by grant time (microseconds)
-- KEYS[2]  the pause flag: while it exists nothing is granted (the provider throttled us)
-- KEYS[3]  optional: a chunk state key, set to ARGV[#ARGV - 1] (ttl ARGV[#ARGV]) with the grant,
--          only while its value ends in ":" .. ARGV[#ARGV - 2] (the owner's token)
-- ARGV[1]  permit id (unique)
-- ARGV[2]  priority reserve flag: 1 when the caller may use the reserved share (otp), else 0
-- ARGV[3]  hold (microseconds): a granted permit is scored now + hold, i.e. counted as in
--          flight, until the caller reports the request complete (complete.lua rescores it
--          at the completion time). The provider sees the request between grant and
--          completion, so spacing completions of the log by the window keeps its count right
--          however late a loaded machine sends or stamps the request.
-- ARGV[4]  number of rules, then per rule: limit, window (microseconds), reserve
--
-- A permit is granted when, for every rule, fewer than `limit` permits were
-- granted in the last `window` (fewer than `limit - reserve` for callers without
-- the reserve). Returns {1, 0} on grant, {0, wait_us}: the time after which the
-- blocking rule could next grant (a hint; the caller asks again then), {3, wait_us} while
-- the endpoint is paused, or {2, 0} when the chunk of KEYS[3] is owned by another token
-- (nothing granted).
local now = smsq_now()
local key = KEYS[1]
local paused = redis.call("PTTL", KEYS[2])
if paused > 0 then
  return {3, smsq_s(paused * 1000)}
end
local may_reserve = tonumber(ARGV[2]) == 1
local hold = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local wait, longest = smsq_rate_wait(key, now, may_reserve, n, ARGV, 5)
if wait > 0 then
  return {0, smsq_s(wait)}
end
if KEYS[3] then
  local token, value, ttl = ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
  local current = redis.call("GET", KEYS[3])
  if (not current) or string.match(current, ":([^:]+)$") ~= token then
    return {2, "0"}
  end
  redis.call("SET", KEYS[3], value, "EX", ttl)
end
if n > 0 then
  smsq_rate_grant(key, now, hold, longest, ARGV[1])
end
return {1, 0}
