"""Redaction and call-scoped logging (ivr.logs).

Why: logs are read by people who must not see API keys, Twilio signatures or callers' phone numbers.
``mask_number`` and ``redact`` are checked directly; :class:`RedactingFilter` and :class:`CallLogger` are
checked through a real ``logging.Logger`` writing to a ``StringIO``, which is what production does.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from ivr.logs import CallLogger, RedactingFilter, call_logger, mask_number, redact

OPENAI_KEY = "sk-proj-Abc123_def-456GHIjkl789"
SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
CALL_SID = "CA" + "0123456789abcdef" * 2
STREAM_SID = "MZ" + "fedcba9876543210" * 2


# ------------------------------------------------------------------------------------------------
# mask_number
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+15551234567", "+1********67"),
        ("+447700900123", "+4*********23"),
        ("5551234567", "********67"),
        ("+1 (555) 123-4567", "+1 (***) ***-**67"),
        ("12345", "***45"),
    ],
)
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize("number", ["+15551234567", "+447700900123", "+33612345678", "15551234567"])
def test_mask_number_keeps_only_the_country_digit_and_last_two(number: str) -> None:
    masked = mask_number(number)
    assert len(masked) == len(number)
    kept = [ch for ch in masked if ch.isdigit()]
    expected = [number[1], *number[-2:]] if number.startswith("+") else list(number[-2:])
    assert kept == expected
    # No run of three or more digits from the middle of the number survives.
    assert number[3:-2] not in masked


@pytest.mark.parametrize(("number", "masked"), [("1234", "****"), ("+123", "****"), ("911", "***")])
def test_short_numbers_are_fully_masked(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize("number", [None, ""])
def test_missing_number(number: str | None) -> None:
    assert mask_number(number) == "-"


def test_identities_with_few_digits_are_fully_masked() -> None:
    # A Twilio Client identity may be a person's name: nothing of it is shown.
    assert mask_number("client:alice") == "*" * len("client:alice")
    assert mask_number("anonymous") == "*********"


# ------------------------------------------------------------------------------------------------
# redact
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        (f"auth failed for key {OPENAI_KEY}", OPENAI_KEY, "auth failed for key [redacted]"),
        ("sk-abcdefgh", "sk-abcdefgh", "[redacted]"),
        (f"Authorization: Bearer {OPENAI_KEY}", OPENAI_KEY, "Authorization: Bearer [redacted]"),
        ("authorization: bearer abc.def.ghi", "abc.def.ghi", "authorization: bearer [redacted]"),
        (f"X-Twilio-Signature: {SIGNATURE}", SIGNATURE, "X-Twilio-Signature: [redacted]"),
        (f"{{'x-twilio-signature': '{SIGNATURE}'}}", SIGNATURE, "{'x-twilio-signature': '[redacted]'}"),
        (f'{{"X-Twilio-Signature":"{SIGNATURE}"}}', SIGNATURE, '{"X-Twilio-Signature":"[redacted]"}'),
        ("api-key=0123456789abcdef", "0123456789abcdef", "api-key=[redacted]"),
    ],
)
def test_redact_scrubs_secrets(text: str, secret: str, expected: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert cleaned == expected


def test_redact_scrubs_every_occurrence() -> None:
    text = f"first {OPENAI_KEY} then Bearer tok_1234567 then X-Twilio-Signature={SIGNATURE}"
    cleaned = redact(text)
    assert OPENAI_KEY not in cleaned
    assert "tok_1234567" not in cleaned
    assert SIGNATURE not in cleaned
    assert cleaned.count("[redacted]") == 3


@pytest.mark.parametrize(
    "text",
    [
        "call=CA0123 stream=MZ0123 transcript: ask me anything",
        "risk-free task-based desk-top",  # contains "sk-" inside words but no key-like run
        "sk-abc",  # too short to be a key
        "bearer of bad news",
        "",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


# ------------------------------------------------------------------------------------------------
# RedactingFilter and CallLogger through a real logger
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger whose one handler redacts and writes ``LEVEL message`` lines to a StringIO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"tests.logs.{id(stream)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_filter_scrubs_secrets_passed_as_args(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("connecting with headers %s", {"Authorization": f"Bearer {OPENAI_KEY}"})
    logger.warning("bad signature %s for %s", f"X-Twilio-Signature: {SIGNATURE}", "/twilio/voice")
    output = stream.getvalue()
    assert OPENAI_KEY not in output
    assert SIGNATURE not in output
    assert output.splitlines() == [
        "INFO connecting with headers {'Authorization': 'Bearer [redacted]'}",
        "WARNING bad signature X-Twilio-Signature: [redacted] for /twilio/voice",
    ]


def test_filter_scrubs_secrets_in_the_message_itself(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.error(f"upstream said: invalid key {OPENAI_KEY}")
    assert stream.getvalue() == "ERROR upstream said: invalid key [redacted]\n"


def test_filter_leaves_clean_records_untouched(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("call %s answered after %d ms", CALL_SID, 120)
    assert stream.getvalue() == f"INFO call {CALL_SID} answered after 120 ms\n"


def test_filter_never_drops_records() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", (OPENAI_KEY,), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "key [redacted]"
    assert record.args is None


def test_filter_scrubs_secrets_in_logged_exceptions(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise RuntimeError(f"401 from upstream: Incorrect API key provided: {OPENAI_KEY}")
    except RuntimeError:
        logger.exception("model connection failed")
    output = stream.getvalue()
    assert "model connection failed" in output
    assert "RuntimeError" in output
    assert OPENAI_KEY not in output


def test_call_logger_prefixes_call_and_stream_ids(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    log = call_logger(logger.name, CALL_SID, STREAM_SID)
    assert isinstance(log, CallLogger)
    log.info("media started, %d bytes", 160)
    log.warning("caller %s pressed %s", mask_number("+15551234567"), "5")
    assert stream.getvalue().splitlines() == [
        f"INFO call={CALL_SID} stream={STREAM_SID} media started, 160 bytes",
        f"WARNING call={CALL_SID} stream={STREAM_SID} caller +1********67 pressed 5",
    ]


def test_call_logger_without_stream_uses_a_dash(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    call_logger(logger.name, CALL_SID).info("webhook")
    assert stream.getvalue() == f"INFO call={CALL_SID} stream=- webhook\n"


def test_call_logger_output_is_still_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    call_logger(logger.name, CALL_SID, STREAM_SID).error("tool failed: %s", f"Bearer {OPENAI_KEY}")
    output = stream.getvalue()
    assert OPENAI_KEY not in output
    assert output == f"ERROR call={CALL_SID} stream={STREAM_SID} tool failed: Bearer [redacted]\n"


def test_call_logger_respects_levels(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.setLevel(logging.WARNING)
    log = call_logger(logger.name, CALL_SID)
    log.info("hidden")
    log.debug("hidden too")
    log.warning("shown")
    assert stream.getvalue() == f"WARNING call={CALL_SID} stream=- shown\n"
