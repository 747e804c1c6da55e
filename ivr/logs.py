"""Logging set-up and the redaction helpers that keep secrets and caller numbers out of logs.

Every log line about a call carries its ids (``call=CA… stream=MZ…``) via a :class:`logging.LoggerAdapter`,
so a person can follow one call with ``grep``. Phone numbers are masked to their last two digits; secrets are
never formatted into messages at all, and :class:`RedactingFilter` is a last line of defence that scrubs
anything that looks like an API key, a Twilio signature header or a payment card number.

A call's own redaction rules (the flow's ``redact:``; see :mod:`ivr.redaction`) apply to every log line
written while that call is handled: :func:`use_redactor` binds them to the current asyncio context, which the
call's tasks inherit, and :class:`RedactingFilter` applies them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from .redaction import Redactor, issued_card_spans

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


#: The redaction rules of the call being handled in this asyncio context (None outside calls).
_call_redactor: ContextVar[Redactor | None] = ContextVar("ivr_call_redactor", default=None)


def use_redactor(redactor: Redactor | None) -> None:
    """Apply ``redactor`` to every log line written from the current context and tasks started from it."""
    _call_redactor.set(redactor if redactor is not None and redactor.active else None)


def redact(text: str) -> str:
    """Scrub anything that looks like a secret or a card number from free text (exception messages, reprs)."""
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    spans = issued_card_spans(text)
    for start, end in reversed(spans):
        text = text[:start] + "[card_number]" + text[end:]
    call = _call_redactor.get()
    return call.text(text) if call is not None else text


#: Characters that could start a forged line or rewrite the terminal: C0/C1 controls except tab, DEL, and
#: the Unicode line and paragraph separators.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """``text`` on one line: newlines as ``\\n``, other control characters as ``\\xNN`` / ``\\uNNNN``. Log
    messages quote text from outside (frames we could not use, the model's error messages); unescaped, a
    newline in it would write a second line that looks like the server's own."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(lambda m: _NAMED.get(m.group()) or f"\\u{ord(m.group()):04x}", text)


class RedactingFilter(logging.Filter):
    """Applies :func:`redact` to every record's final message, then :func:`escape_controls` (one record is
    one line; tracebacks, the server's own text, keep their lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = escape_controls(redact(message))
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
    # The websockets library dumps every frame at DEBUG: Twilio's carry caller audio and keypad digits.
    logging.getLogger("websockets").setLevel(max(logging.getLevelName(level), logging.INFO))
