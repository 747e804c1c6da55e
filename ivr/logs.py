"""Logging set-up and the redaction helpers that keep secrets and caller numbers out of logs.

Every log line about a call carries its ids (``call=CA… stream=MZ…``) via a :class:`logging.LoggerAdapter`,
so a person can follow one call with ``grep``. Phone numbers are masked to their last two digits; secrets are
never formatted into messages at all, and :class:`RedactingFilter` is a last line of defence that scrubs
anything that looks like an API key or a Twilio signature header.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),  # OpenAI-style keys
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-~+/=]{6,}"),
    re.compile(r"(?i)(x-twilio-signature['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9+/=]{8,}"),
    re.compile(r"(?i)(api-key['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9]{8,}"),
]


def mask_number(number: str | None) -> str:
    """``+15551234567`` → ``+1********67``: enough to tell calls apart, not enough to identify a caller."""
    if not number:
        return "-"
    digits = sum(ch.isdigit() for ch in number)
    if digits <= 4:
        return "*" * len(number)
    keep_tail = 2
    out = []
    seen = 0
    for ch in number:
        if ch.isdigit():
            seen += 1
            out.append(ch if (seen == 1 and number.startswith("+")) or seen > digits - keep_tail else "*")
        else:
            out.append(ch)
    return "".join(out)


def redact(text: str) -> str:
    """Scrub anything that looks like a secret from free text (exception messages, reprs)."""
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    """Applies :func:`redact` to every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            # Tracebacks quote exception messages, which may hold a key: format once, scrub, keep the text.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every message with the call and stream ids."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"call={extra.get('call_sid', '-')} stream={extra.get('stream_sid', '-')} {msg}", kwargs


def call_logger(name: str, call_sid: str, stream_sid: str = "-") -> CallLogger:
    return CallLogger(logging.getLogger(name), {"call_sid": call_sid, "stream_sid": stream_sid})


def configure_logging(level: str = "INFO") -> None:
    """One readable line per event on stderr, redacted; idempotent."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_ivr", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    handler._ivr = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # uvicorn's access log would print query strings and paths for every request; keep it quiet.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
