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
-- (limits.lua, put in front of this script when it is loaded, holds the shared decisions.)
local key = KEYS[1]
if ARGV[1] == "release" then
  return smsq_lease_release(key, ARGV[2])
end
local now = smsq_now()
local limit = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
if ARGV[1] == "renew" then
  local expiry = redis.call("ZSCORE", key, ARGV[2])
  if (not expiry) or tonumber(expiry) < now then return 0 end
  redis.call("ZADD", key, "XX", smsq_s(now + ttl), ARGV[2])
  redis.call("PEXPIRE", key, smsq_s(math.ceil(ttl / 1000) + 1000))
  return 1
end
local wait = smsq_lease_wait(key, now, limit)
if wait == 0 then
  smsq_lease_take(key, now, ttl, ARGV[2])
  return {1, 0}
end
return {0, smsq_s(wait)}
