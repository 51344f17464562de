-- smsq concurrency leases: at most N holders at once; a lease not renewed expires,
-- so a killed process leaks no slot.
--
-- KEYS[1]  sorted set of lease ids scored by expiry (microseconds, Redis clock)
-- ARGV[1]  command: "acquire" | "release" | "renew"
-- ARGV[2]  lease id
-- ARGV[3]  limit (acquire)
-- ARGV[4]  lease time in microseconds (acquire, renew)
-- acquire returns {1, 0} or {0, wait_us until the earliest lease expires};
-- renew moves a held lease's expiry to now + lease time: 1, or 0 when it had expired
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key = KEYS[1]
local function s(x) return string.format("%.0f", x) end
if ARGV[1] == "release" then
  return redis.call("ZREM", key, ARGV[2])
end
local limit = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
if ARGV[1] == "renew" then
  local expiry = redis.call("ZSCORE", key, ARGV[2])
  if (not expiry) or tonumber(expiry) < now then return 0 end
  redis.call("ZADD", key, "XX", s(now + ttl), ARGV[2])
  redis.call("PEXPIRE", key, s(math.ceil(ttl / 1000) + 1000))
  return 1
end
redis.call("ZREMRANGEBYSCORE", key, "-inf", s(now))
if redis.call("ZCARD", key) < limit then
  redis.call("ZADD", key, s(now + ttl), ARGV[2])
  redis.call("PEXPIRE", key, s(math.ceil(ttl / 1000) + 1000))
  return {1, 0}
end
local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
return {0, s(tonumber(first[2]) - now)}
