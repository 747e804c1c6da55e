"""The transcript and event streams: their caps and the shape of their entries, written and read back.

Why a module of its own: the call store writes these entries, the reconciliation of a restarted instance
writes ``call.ended`` entries of the same shape, and readers decode them — one definition serves all three
(docs/redis.md: an event entry has ``type``, ``call_sid``, ``ts`` and ``data``; a transcript entry ``role``,
``text``, ``ts`` and, for agent lines, ``item_id`` and how much was heard). Pure: no Redis here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.store.codec import dumps, loads_or_raw

__all__ = [
    "CALL_EVENTS_MAXLEN",
    "EVENTS_MAXLEN",
    "TRANSCRIPT_MAXLEN",
    "decode_event",
    "event_fields",
    "to_float",
    "transcript_line",
    "ts_text",
]

#: Approximate caps (XADD MAXLEN ~) of the streams.
EVENTS_MAXLEN = 100_000
CALL_EVENTS_MAXLEN = 10_000
TRANSCRIPT_MAXLEN = 10_000


def ts_text(value: float) -> str:
    """A Unix time as stored in entries and hashes: seconds with millisecond precision."""
    return f"{value:.3f}"


def to_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def event_fields(sid: str, type_: str, data: Mapping[str, Any], now: float) -> dict[str, str]:
    """The fields of one event entry (``data`` as JSON)."""
    return {"type": type_, "call_sid": sid, "ts": ts_text(now), "data": dumps(data)}


def decode_event(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """An event entry read back: ``{id, type, call_sid, ts, data}``."""
    data = loads_or_raw(fields.get("data", "{}"))
    return {
        "id": entry_id,
        "type": fields.get("type", ""),
        "call_sid": fields.get("call_sid", ""),
        "ts": to_float(fields.get("ts")),
        "data": data,
    }


def transcript_line(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A transcript entry read back: ``{id, role, text, ts}`` plus its other fields, ``interrupted`` as a
    bool and ``heard_ms``/``total_ms`` as numbers."""
    line: dict[str, Any] = {
        **fields,
        "id": entry_id,
        "role": fields.get("role", ""),
        "text": fields.get("text", ""),
        "ts": to_float(fields.get("ts")),
    }
    if "interrupted" in fields:
        line["interrupted"] = fields["interrupted"] == "true"
    for name in ("heard_ms", "total_ms"):
        if name in fields:
            value = to_float(fields[name])
            line[name] = int(value) if value is not None and value.is_integer() else value
    return line
