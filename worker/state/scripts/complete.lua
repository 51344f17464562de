-- smsq: a permit's request is complete: rescore it at the completion time (Redis clock).
-- KEYS[1] the permit log; ARGV[1] the permit id. A permit no longer in the log is left alone.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call("ZSCORE", KEYS[1], ARGV[1]) then
  redis.call("ZADD", KEYS[1], "XX", string.format("%.0f", now), ARGV[1])
  return 1
end
return 0
