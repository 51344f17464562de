from __future__ import annotations

import logging

import pytest

from worker.core.logs import RedactingFilter, redact


def test_phone_numbers_are_masked_and_other_numbers_kept() -> None:
    text = "to ['447400123123', '+79161234567'] id 4092112510348380960001 port 6379 job 870aada98b9c4000"
    out = redact(text)
    assert "447400123123" not in out and "79161234567" not in out
    assert "4474******23" in out and "7916*****67" in out
    assert "4092112510348380960001" in out and "6379" in out and "870aada98b9c4000" in out


def test_filter_masks_messages_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("smsq.test.redaction")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="smsq.test.redaction"):
        logger.info("sending to %s", "447400123123")
        try:
            raise ValueError("bad number 79161234567")
        except ValueError:
            logger.exception("failed for %s", ["447400123124"])
    assert "447400123123" not in caplog.text
    assert "79161234567" not in caplog.text
    assert "447400123124" not in caplog.text
    assert "4474******23" in caplog.text


def test_dramatiq_messages_are_summarised_and_bad_log_calls_do_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import dramatiq

    logger = logging.getLogger("smsq.test.redaction2")
    caplog.handler.addFilter(RedactingFilter())
    msg = dramatiq.Message(
        queue_name="q",
        actor_name="dispatch_chunk",
        args=("job", 0, "Your code is 123456", ["447400123125"]),
        kwargs={},
        options={},
    )
    with caplog.at_level(logging.INFO, logger="smsq.test.redaction2"):
        logger.error("Failed to process message %s with unhandled exception.", msg)
        logger.info("two placeholders %s %s", "only one")  # malformed: must not raise
        logger.info("sentence ends with a number 79161234567.")
    assert f"dispatch_chunk[{msg.message_id}]" in caplog.text
    assert "123456" not in caplog.text and "447400123125" not in caplog.text
    assert "79161234567" not in caplog.text and "two placeholders" in caplog.text
