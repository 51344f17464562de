"""Entry module for ``dramatiq worker.app``: the broker configured from SMSQ_CONFIG."""

from __future__ import annotations

import logging

from worker import logs
from worker.actors import create_app
from worker.config import load_settings

# Dramatiq has set up this worker process's logging before importing us.
logs.install()
logging.getLogger("smsq").setLevel(logging.INFO)
app = create_app(load_settings())
broker = app.broker
