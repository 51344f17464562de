-- smsq sliding-log rate limiter: one round trip per acquire, on the Redis server's clock.
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
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key = KEYS[1]
local function s(x) return string.format("%.0f", x) end
local paused = redis.call("PTTL", KEYS[2])
if paused > 0 then
  return {3, s(paused * 1000)}
end
local may_reserve = tonumber(ARGV[2]) == 1
local hold = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local longest = 0
local wait = 0
for i = 0, n - 1 do
  local limit = tonumber(ARGV[5 + i * 3])
  local window = tonumber(ARGV[6 + i * 3])
  local reserve = tonumber(ARGV[7 + i * 3])
  if window > longest then longest = window end
  local allowed = limit
  if not may_reserve then allowed = limit - reserve end
  local since = now - window
  local used = redis.call("ZCOUNT", key, "(" .. s(since), "+inf")
  if used >= allowed then
    -- the permit that must age out first: the (used - allowed + 1)-th oldest in the window
    local oldest = redis.call("ZRANGEBYSCORE", key, "(" .. s(since), "+inf", "WITHSCORES", "LIMIT", used - allowed, 1)
    local w = window
    if oldest[2] then
      local score = tonumber(oldest[2])
      if score > now then
        w = 20000  -- still in flight: it usually completes within milliseconds; ask again soon
      else
        w = score + window - now
      end
    end
    if allowed <= 0 then w = window end
    if w > wait then wait = w end
  end
end
if wait > 0 then
  return {0, s(wait)}
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
  redis.call("ZREMRANGEBYSCORE", key, "-inf", s(now - longest))
  redis.call("ZADD", key, s(now + hold), ARGV[1])
  redis.call("PEXPIRE", key, s(math.ceil((longest + hold) / 1000) + 1000))
end
return {1, 0}
