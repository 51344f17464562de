"""Entry module for ``dramatiq worker.app``: the broker configured from SMSQ_CONFIG."""

from __future__ import annotations

import logging

from worker.actors import create_app
from worker.config import load_settings

logging.getLogger("smsq").setLevel(logging.INFO)
app = create_app(load_settings())
broker = app.broker
