"""Development tooling, never imported on the production path: ``smsq demo``
(``demo``), the Procfile's embedded defaults (``dev``), the providers' sandboxes side by side
(``sandboxes``) and a private ``redis-server`` (``redis_server``).
"""
