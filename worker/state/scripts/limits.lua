-- smsq: the decisions of the rate limiter and of the in-flight leases, shared by every script
-- that takes or returns a permit or a lease (limiter.lua, complete.lua, concurrency.lua,
-- claim_send.lua, record_chunk.lua): smsq puts this chunk in front of each when it loads them,
-- so the limits mean the same whichever script applies them. Functions only; no KEYS or ARGV.
--
-- Permit logs: a sorted set of permits scored by grant time (microseconds, Redis clock), or
-- by grant time + hold while the permit's request is in flight (see limiter.lua).
-- Lease sets: a sorted set of lease ids scored by expiry (microseconds, Redis clock).

local function smsq_now()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function smsq_s(x) return string.format("%.0f", x) end

-- The wait (microseconds, 0 when a permit may be granted now) and the longest window of the
-- `n` rules found in `argv` from index `first` on, each (limit, window us, reserve).
-- A permit may be granted when, for every rule, fewer than `limit` permits were granted in
-- the last `window` (fewer than `limit - reserve` without the reserve).
local function smsq_rate_wait(key, now, may_reserve, n, argv, first)
  local longest = 0
  local wait = 0
  for i = 0, n - 1 do
    local limit = tonumber(argv[first + i * 3])
    local window = tonumber(argv[first + 1 + i * 3])
    local reserve = tonumber(argv[first + 2 + i * 3])
    if window > longest then longest = window end
    local allowed = limit
    if not may_reserve then allowed = limit - reserve end
    local since = now - window
    local used = redis.call("ZCOUNT", key, "(" .. smsq_s(since), "+inf")
    if used >= allowed then
      -- the permit that must age out first: the (used - allowed + 1)-th oldest in the window
      local oldest = redis.call("ZRANGEBYSCORE", key, "(" .. smsq_s(since), "+inf", "WITHSCORES",
                                "LIMIT", used - allowed, 1)
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
  return wait, longest
end

-- Grant `permit`, counted in flight for `hold` microseconds unless completed before.
local function smsq_rate_grant(key, now, hold, longest, permit)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", smsq_s(now - longest))
  redis.call("ZADD", key, smsq_s(now + hold), permit)
  redis.call("PEXPIRE", key, smsq_s(math.ceil((longest + hold) / 1000) + 1000))
end

-- The permit's request is over: count it from `now`. A permit no longer in the log is left
-- alone. Returns 1 when rescored, else 0.
local function smsq_rate_complete(key, now, permit)
  if redis.call("ZSCORE", key, permit) then
    redis.call("ZADD", key, "XX", smsq_s(now), permit)
    return 1
  end
  return 0
end

-- 0 when fewer than `limit` leases are held (expired ones dropped), else the microseconds
-- until the earliest held lease expires.
local function smsq_lease_wait(key, now, limit)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", smsq_s(now))
  if redis.call("ZCARD", key) < limit then return 0 end
  local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
  return tonumber(first[2]) - now
end

local function smsq_lease_take(key, now, ttl, lease)
  redis.call("ZADD", key, smsq_s(now + ttl), lease)
  redis.call("PEXPIRE", key, smsq_s(math.ceil(ttl / 1000) + 1000))
end

local function smsq_lease_release(key, lease)
  return redis.call("ZREM", key, lease)
end

