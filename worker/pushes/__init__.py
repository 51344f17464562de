"""What providers push to smsq (delivery reports, incoming messages, HLR results):
received by the web process on ``/hooks/<account>`` (``receive``: verified by the provider's
``pushes`` module, stored, answered), then parsed and applied by the ``apply_webhook`` actor
(``apply``).
"""
