"""Where each process starts: the ``smsq`` command (``cli``), the Dramatiq entry module
(``app``) and its actors (``actors``), the worker supervisor and its processes
(``supervisor``, ``worker_process``), the web process (``web``), the metrics and health
endpoints (``exposition``, ``health``) and ``smsq top`` (``top``).
"""
