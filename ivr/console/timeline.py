"""A call's events in words, its transcript lines from events, and its per-turn latency strip. Pure code.

Why events are the single source of the call page: the page's snapshot and its live updates must meet
exactly (no line twice, none missing). Both come from the call's event stream, whose entry ids are the SSE
event ids, so "everything up to id X" rendered by the server and "everything after X" sent live is exact.
Transcript lines are ``transcript`` events there, with the same fields as the transcript stream (including
the interruption cut).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ivr.console.decode import to_float, transcript_line
from ivr.console.render import args_in_words, duration_text
from ivr.console.rows import ApprovalRow, EventRow, TranscriptLine

__all__ = ["HIDDEN_TYPES", "LatencyStrip", "TimelineItem", "describe", "latency_strip", "line_of"]

#: Event types that are not timeline items: lines go to the transcript, figures to the header and strip.
HIDDEN_TYPES = frozenset({"transcript", "turn.latency", "usage.updated", "engine.turn"})
_DETAIL_LIMIT = 400
#: A gated tool call that did not run (yet): the approval gate's answer, not a failure of the tool.
_GATED = {
    "pending": "held for a person's approval",
    "denied": "not run: the request was denied",
    "expired": "not run: nobody decided in time",
}


@dataclass(frozen=True)
class TimelineItem:
    id: str
    ts: float | None
    type: str
    cls: str  # tool, approval, ok, bad, stage, operator or ""
    title: str
    detail: str = ""


def line_of(event: EventRow) -> TranscriptLine:
    """A ``transcript`` event as a transcript line (as heard: an interrupted line carries its cut)."""
    fields = {k: v for k, v in event.data.items() if v is not None}
    fields["ts"] = event.ts
    return transcript_line(event.id, fields)  # type: ignore[arg-type]  # tolerant of non-str values


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _output(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return _short(value)
    if isinstance(value, Mapping):
        return _short(args_in_words(value))
    return _short(orjson.dumps(value).decode())


def describe(event: EventRow, approvals: Mapping[str, ApprovalRow] | None = None) -> TimelineItem | None:
    """The timeline item for an event, or None for events shown elsewhere (:data:`HIDDEN_TYPES`)."""
    kind, data = event.type, event.data
    if kind in HIDDEN_TYPES:
        return None

    def item(cls: str, title: str, detail: str = "") -> TimelineItem:
        return TimelineItem(event.id, event.ts, kind, cls, title, _short(detail))

    if kind == "call.started":
        parts = [f"flow {data.get('flow_id') or data.get('flow') or '—'}"]
        for name in ("model", "engine", "dialect"):
            if data.get(name):
                parts.append(f"{name} {data[name]}")
        return item("ok", "Call started", " · ".join(parts))
    if kind == "call.ended":
        detail = f"outcome {data.get('outcome') or '—'}"
        if data.get("duration_s") is not None:
            detail += f" · {duration_text(data.get('duration_s'))}"
        return item("", "Call ended", detail)
    if kind == "stage.changed":
        title = f"Stage {data.get('previous') or '—'} → {data.get('stage') or '—'}"
        return item("stage", title, f"by {data['trigger']}" if data.get("trigger") else "")
    if kind == "tool.called":
        name = data.get("name") or data.get("tool") or "tool"
        ok = bool(data.get("ok"))
        if not ok and data.get("error_type") in _GATED:
            title = f"Tool {name} {_GATED[str(data['error_type'])]}"
            return item("approval", title, args_in_words(data.get("arguments") or {}))
        took = to_float(data.get("duration_ms"))
        title = f"Tool {name} {'ok' if ok else 'failed'}" + (f" in {took:.0f} ms" if took is not None else "")
        if not ok and data.get("error_type"):
            title += f" ({data['error_type']})"
        detail = args_in_words(data.get("arguments") or {})
        result = _output(data.get("output"))
        if result:
            detail += f" → {result}"
        return item("tool" if ok else "bad", title, detail)
    if kind in ("approval.requested", "approval.decided"):
        return _approval_item(event, approvals or {})
    if kind == "dtmf":
        return item("", f"Keypad {data.get('digit', '?')}")
    if kind == "barge_in":
        heard = data.get("heard_ms")
        if isinstance(heard, list) and heard:
            detail = "heard " + ", ".join(f"{(to_float(h) or 0) / 1000:.1f} s" for h in heard)
        else:
            detail = ""
        return item("", "Caller interrupted the agent", detail)
    if kind == "model.reconnected":
        return item("", "Model connection re-established")
    if kind == "model.rolled_over":
        return item("", "Model session renewed", "before the provider's session limit; nothing was lost")
    if kind == "model.fallback":
        detail = f"{data.get('previous') or '?'} → {data.get('engine') or '?'}"
        if data.get("reason"):
            detail += f" · {data['reason']}"
        return item("bad", "Fell back to another engine", detail)
    if kind == "error":
        return item("bad", "Error", str(data.get("message") or ""))
    if kind == "operator.action":
        action = {"hangup": "hang up", "transfer": "transfer"}.get(
            str(data.get("action")), str(data.get("action"))
        )
        title = f"{data.get('by') or 'An operator'} asked to {action}"
        return item("bad" if data.get("refused") else "operator", title, str(data.get("refused") or ""))
    if kind == "transfer":
        return item("operator", "Transferred", str(data.get("to") or data.get("number") or ""))
    if kind == "call.status":
        return item("", f"Twilio status {data.get('status') or '?'}")
    # Unknown types are shown plainly, not dropped: new event types may appear (docs/redis.md).
    return item("", kind or "event", args_in_words(data) if data else "")


def _approval_item(event: EventRow, approvals: Mapping[str, ApprovalRow]) -> TimelineItem:
    data = event.data
    aid = str(data.get("approval_id") or data.get("id") or "")
    row = approvals.get(aid)
    tool = data.get("tool") or (row.tool if row else "tool")
    if event.type == "approval.requested":
        detail = args_in_words(row.arguments) if row else ""
        if row and row.reason:
            detail += f" · {row.reason}"
        return TimelineItem(
            event.id, event.ts, event.type, "approval", f"Approval requested for {tool}", detail
        )
    status = str(data.get("status") or (row.status if row else "decided"))
    who = data.get("decided_by") or (row.decided_by if row else None)
    title = f"Approval {status}" + (f" by {who}" if who else "") + f" for {tool}"
    detail = f"note: {row.note}" if row and row.note else ""
    cls = "ok" if status == "approved" else "bad"
    return TimelineItem(event.id, event.ts, event.type, cls, title, detail)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str
    label: str
    title: str
    value: str  # the latency, written above the bar


@dataclass(frozen=True)
class LatencyStrip:
    bars: list[Bar]
    width: int
    height: int
    base: float
    summary: str


def latency_strip(turns: Sequence[Mapping[str, Any]], greeting_ms: Any = None) -> LatencyStrip:
    """Bars (SVG coordinates) for the greeting and each reply: height = latency, colour = how it felt."""
    points: list[tuple[str, float, str]] = []
    greeting = to_float(greeting_ms)
    if greeting is not None:
        points.append(("G", greeting, f"Greeting: {greeting:.0f} ms to first audio"))
    for t in turns:
        ms = to_float(t.get("latency_ms", t.get("ms")))
        if ms is None:
            continue
        n = t.get("n", len(points))
        points.append((str(n), ms, f"Turn {n}: {ms:.0f} ms from end of speech to first reply audio"))
    height, top, bottom = 140, 16.0, 16.0
    slot = 40.0
    width = int(max(len(points) * slot + 8, 360))
    if not points:
        return LatencyStrip([], width, height, height - bottom, "")
    peak = max(max(ms for _, ms, _ in points), 1000.0)
    usable = height - top - bottom
    bars = []
    for i, (label, ms, title) in enumerate(points):
        h = max(usable * ms / peak, 2.0)
        cls = "ok" if ms < 1000 else "warn" if ms < 2000 else "bad"
        x = 8 + i * slot
        shown = f"{ms / 1000:.1f}s" if ms >= 1000 else f"{ms:.0f}"
        bars.append(Bar(x, round(height - bottom - h, 1), slot - 12, round(h, 1), cls, label, title, shown))
    replies = [ms for label, ms, _ in points if label != "G"]
    summary = f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'}"
    if replies:
        ordered = sorted(replies)
        summary += f" · median {ordered[len(ordered) // 2]:.0f} ms · worst {ordered[-1]:.0f} ms"
    if greeting is not None:
        summary += f" · greeting {greeting:.0f} ms"
    return LatencyStrip(bars, width, height, height - bottom, summary)
