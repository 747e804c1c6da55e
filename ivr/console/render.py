"""Templates and the small formatting helpers the console's pages and live fragments share.

Why one Jinja environment with autoescape on for *every* template: everything on these pages that a caller
or a model said (transcripts, tool arguments, notes) is untrusted text. Escaping by default means a caller
who says ``<script>`` is shown those characters; no template in this package uses ``|safe`` on such text.
Live updates are rendered here too, by the same templates, and sent to the browser as ready HTML — the
browser never builds HTML from raw event JSON.

Times are rendered as ``<time datetime="…Z">`` in UTC (readable without JavaScript); ``console.js`` rewrites
them in the operator's own time zone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape

from ivr.logs import mask_number

__all__ = [
    "args_in_words",
    "duration_text",
    "environment",
    "iso_utc",
    "masked",
    "money",
    "time_tag",
    "url_part",
]


def iso_utc(ts: Any) -> str:
    """Epoch seconds → ``2026-01-01T10:00:00.125Z`` (empty for unknown)."""
    value = _num(ts)
    if value is None:
        return ""
    stamp = datetime.fromtimestamp(value, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def time_tag(ts: Any, fmt: str = "datetime") -> Markup:
    """``<time>`` with a UTC fallback text; ``fmt`` (``datetime``, ``time``, ``date``) picks the format."""
    value = _num(ts)
    if value is None:
        return Markup('<span class="muted">—</span>')
    stamp = datetime.fromtimestamp(value, UTC)
    shown = {"time": "%H:%M:%S UTC", "date": "%Y-%m-%d"}.get(fmt, "%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" data-fmt="{}">{}</time>').format(
        iso_utc(value), fmt, stamp.strftime(shown)
    )


def url_part(value: Any) -> str:
    """A value as one segment of a URL path: every reserved character encoded, ``/`` included (Jinja's
    ``urlencode`` keeps ``/``). Every id a template puts into a path (sids, approval ids, operator names)
    goes through it, so an id with ``?``, ``#``, ``%`` or ``/`` still names itself."""
    return quote(str(value), safe="")


def duration_text(seconds: Any) -> str:
    """``65.2`` → ``1:05``; ``3725`` → ``1:02:05``; unknown → ``—``."""
    value = _num(seconds)
    if value is None or value < 0:
        return "—"
    total = int(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def money(value: Any) -> str:
    """Estimated USD: ``0.01234`` → ``$0.0123``; unknown → ``—``."""
    amount = _num(value)
    if amount is None:
        return "—"
    return f"${amount:.4f}" if amount < 1 else f"${amount:,.2f}"


def masked(number: Any) -> str:
    """A phone number as the console shows it (``+1********67``); text that is already masked is kept."""
    text = "" if number is None else str(number)
    if "*" in text:
        return text
    return mask_number(text)


def args_in_words(arguments: Any) -> str:
    """Tool arguments as a sentence for a person: ``{"action": "book", "start": "…"}`` →
    ``action book · start 2026-03-02T10:00``. Nested values are flattened; long text is shortened."""
    if not isinstance(arguments, Mapping):
        return _short(str(arguments)) if arguments not in (None, "") else "no arguments"
    parts = []
    for name, value in arguments.items():
        label = str(name).replace("_", " ")
        if isinstance(value, Mapping):
            shown = ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            shown = ", ".join(_plain(v) for v in value)
        else:
            shown = _plain(value)
        parts.append(f"{label} {shown}")
    return " · ".join(parts) if parts else "no arguments"


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _short(str(value))


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def tokens(usage: Any) -> str:
    """Token usage in one short phrase: ``1,200 in · 300 out``."""
    if not isinstance(usage, Mapping) or not usage:
        return "—"
    total_in = usage.get("input_tokens")
    total_out = usage.get("output_tokens")
    if total_in is None and total_out is None:
        total = usage.get("total_tokens")
        return f"{int(total):,}" if isinstance(total, int | float) else "—"
    return f"{int(total_in or 0):,} in · {int(total_out or 0):,} out"


def status_class(status: Any) -> str:
    """CSS class of a status word: live/pending/approved green-amber, denied/error red, ended grey."""
    word = str(status or "").lower()
    if word in {"live", "in-progress", "approved", "alive", "ok", "executed"}:
        return "ok"
    if word in {"pending", "draining", "waiting"}:
        return "warn"
    if word in {"denied", "expired", "error", "failed", "gone", "model-unavailable", "configuration-error"}:
        return "bad"
    return "idle"


def environment() -> jinja2.Environment:
    """The console's Jinja environment: package templates, autoescape for every file, helpers as filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ivr.console", "templates"),
        autoescape=True,  # every template, whatever its extension
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        enable_async=False,
    )
    env.filters.update(
        iso=iso_utc,
        timetag=time_tag,
        duration=duration_text,
        money=money,
        masked=masked,
        words=args_in_words,
        tokens=tokens,
        status=status_class,
        num=_num,
        urlpart=url_part,
    )
    env.globals["escape"] = escape
    return env
