"""The worker's foundations, shared by every process: configuration (``config``), the
Redis broker hardened against undecodable messages (``broker``), smsq's typed actor messages
(``messages``, checked by ``dispatch_args``), queue names (``queues``), per-process runtime
(Redis clients, the aiohttp session, adapters: ``runtime``), log redaction (``logs``) and
every Prometheus metric (``metrics``).
"""
