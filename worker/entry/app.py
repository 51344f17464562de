"""Entry module for ``dramatiq worker.entry.app``: the broker configured from SMSQ_CONFIG."""

from __future__ import annotations

import logging

from worker.core import logs
from worker.core.config import load_settings
from worker.entry.actors import create_app

# Dramatiq has set up this worker process's logging before importing us.
logs.install()
logging.getLogger("smsq").setLevel(logging.INFO)
app = create_app(load_settings())
broker = app.broker
