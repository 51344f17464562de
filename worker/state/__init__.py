"""What smsq keeps in Redis and the atomic steps on it: records of jobs, recipients,
indexes and dead letters (``store``), the one path applying statuses (``status_apply``),
exact rate limits and in-flight leases (``limiter``), leases (``lease``) and every Lua script
(``scripts/*.lua``, each with a KEYS/ARGV header). Every key is named in producers/keys.py.
"""
