"""Running Server B for real users: request ids, one JSON log line per request, metrics,
per-user quotas, and upstream failover with circuit breakers.

Each module is small and imported where it is used; nothing here makes a request slower
when it is off (quotas, metrics exposition) and the always-on parts cost microseconds.
"""
