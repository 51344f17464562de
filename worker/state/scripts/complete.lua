-- smsq: a permit's request is complete: rescore it at the completion time (Redis clock).
-- KEYS[1] the permit log; ARGV[1] the permit id. A permit no longer in the log is left alone.
-- (limits.lua is put in front of this script when it is loaded.)
return smsq_rate_complete(KEYS[1], smsq_now(), ARGV[1])
