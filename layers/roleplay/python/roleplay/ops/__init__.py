"""Running Server B for real users: one JSON log line per request, per-user quotas, and
upstream failover with circuit breakers (request ids and metrics are in `core`, since
every layer reports them).

Each module is small and imported where it is used; nothing here makes a request slower
when it is off (quotas) and the always-on parts cost microseconds.
"""
