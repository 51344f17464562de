"""What providers push to smsq (delivery reports, incoming messages, HLR results):
received and stored by the web process (``worker.entry.web``, ``/hooks/<account>``), verified
and parsed by each provider's ``pushes`` module, applied by the ``apply_webhook`` actor
(``apply``).
"""
