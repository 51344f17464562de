"""Following each message to its final status, and the periodic work around it:
the scheduler (``scheduler``), status polls (``status_polls``), the sent-history sweep
(``history``), incoming messages (``incoming``, stored by ``inbound``), balances
(``balance``), retention (``retention``), the periodic actors (``periodic``, sharing
``runs``) and the producers' callbacks (``callbacks``).
"""
