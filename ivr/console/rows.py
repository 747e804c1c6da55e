"""The console's read models: small, JSON-friendly rows with every phone number already masked.

Why a module of its own: the pages (HTML, SSE, CSV/JSON export) and the queries that fill these rows change
for different reasons. Rows are plain frozen dataclasses with ``as_dict()``; a page never sees a raw Redis
hash, and never a full phone number — numbers are masked here, once, with :func:`ivr.logs.mask_number`.
Times are Unix epoch seconds (UTC); the browser renders them in the operator's time zone.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ivr.logs import mask_number

__all__ = [
    "ApprovalRow",
    "CallDetail",
    "CallRow",
    "EventRow",
    "InstanceRow",
    "ToolCallRow",
    "TranscriptLine",
    "arguments_text",
    "mask_data",
    "rows_to_csv",
    "rows_to_json",
    "split_heard",
]

#: Keys whose string values are phone numbers, wherever they appear in event data or tool arguments.
NUMBER_KEYS = frozenset(
    {"caller", "called", "caller_number", "called_number", "from", "to", "number", "phone", "phone_number"}
)
# A compact E.164 number inside free text (tool outputs, event messages). Dates and times do not match.
_E164 = re.compile(r"\+\d{7,15}\b")


class _Row:
    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested rows become dicts too)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class CallRow(_Row):
    """One call in a table (live board or history)."""

    call_sid: str
    """Twilio's CallSid (``CA…``): the call's id everywhere."""
    flow_id: str
    """The flow (phone number's behaviour) that answered."""
    caller: str
    """The caller's number, masked (``+1********67``)."""
    called: str
    """The number that was called, masked."""
    instance_id: str
    """The app instance that runs (or ran) the call."""
    started_at: float | None
    """When the call started (epoch seconds)."""
    ended_at: float | None
    """When it ended (epoch seconds); None while live."""
    duration_s: float | None
    """Length in seconds once ended."""
    outcome: str
    """``in-progress``, ``completed``, ``caller-hung-up``, ``operator-hangup``, ``transferred``, …"""
    stage: str
    """The flow stage the call is (or ended) in."""
    model: str
    """The model that answered."""
    engine: str
    """realtime, chat or local."""
    cost_usd: float | None
    """Estimated model cost in US dollars, when known."""
    total_tokens: int | None
    """Model tokens used so far."""
    live: bool
    """True while the call is in progress."""
    transfer_available: bool | None = None
    """Whether the call's flow has a human number to transfer to (None when the flows are unknown here)."""
    instance_alive: bool | None = None
    """Whether the owning instance still sends heartbeats (live calls and call pages; None elsewhere)."""
    last_line: str | None = None
    """The latest transcript line, ``"caller: …"`` or ``"agent: …"`` (live board only)."""
    matched_line: str | None = None
    """The first transcript line that matched the history's text search."""
    transcript: str | None = None
    """The whole transcript, one ``role: text`` line each (history export only)."""


@dataclass(frozen=True)
class TranscriptLine(_Row):
    """One line of a call's transcript, as the caller heard it."""

    id: str
    """The Redis stream id (also the SSE event id)."""
    role: str
    """``caller`` or ``agent``."""
    text: str
    """What was said (the whole line, as generated or recognised)."""
    ts: float | None
    """When it was said (epoch seconds)."""
    interrupted: bool = False
    """True when the caller cut the agent off during this line."""
    heard_ms: float | None = None
    """How much of the line's audio the caller heard (interrupted agent lines)."""
    total_ms: float | None = None
    """How long the line's audio was (interrupted agent lines)."""
    heard_text: str = ""
    """The part the caller heard (the whole text unless interrupted)."""
    cut_text: str = ""
    """The part cut off by the interruption ("" unless interrupted)."""


@dataclass(frozen=True)
class EventRow(_Row):
    """One event of a call's timeline."""

    id: str
    """The Redis stream id (also the SSE event id)."""
    type: str
    """``call.started``, ``stage.changed``, ``tool.called``, ``dtmf``, ``barge_in``, ``operator.action``, …"""
    ts: float | None
    """When it happened (epoch seconds)."""
    data: dict[str, Any]
    """The event's fields, numbers masked."""


@dataclass(frozen=True)
class ToolCallRow(_Row):
    """One tool call of a call (from its ``tool.called`` events)."""

    ts: float | None
    """When the tool finished (epoch seconds)."""
    name: str
    """The tool's name from the flow."""
    ok: bool
    """Whether it succeeded."""
    error_type: str | None
    """The error kind when it failed."""
    duration_ms: float | None
    """How long it ran."""
    arguments: dict[str, Any]
    """The arguments the model gave, numbers masked."""
    arguments_text: str
    """The arguments as readable ``key: value`` lines."""
    output: str
    """What the tool answered the model (numbers masked)."""


@dataclass(frozen=True)
class ApprovalRow(_Row):
    """One approval request with its call's context (the approvals queue and a call's page)."""

    id: str
    """The approval id (``ap_…``)."""
    call_sid: str
    """The call that asked."""
    flow_id: str
    """The call's flow."""
    instance_id: str
    """The instance running the call."""
    tool: str
    """The gated tool."""
    arguments: dict[str, Any]
    """The tool's arguments, numbers masked."""
    arguments_text: str
    """The arguments as readable ``key: value`` lines."""
    reason: str
    """Why the flow wants a person to decide."""
    status: str
    """``pending``, ``approved``, ``denied`` or ``expired``."""
    created_at: float
    """When it was asked (epoch seconds)."""
    deadline: float
    """When it expires if nobody decides (epoch seconds)."""
    decided_by: str | None
    """The operator who decided (or ``timeout``)."""
    decided_at: float | None
    """When it was decided."""
    note: str | None
    """The operator's reason, if given."""
    executed_at: float | None
    """When the approved action ran."""
    caller: str
    """The caller's number, masked."""
    caller_last_line: str | None
    """The caller's latest transcript line: what they asked for."""


@dataclass(frozen=True)
class InstanceRow(_Row):
    """One app instance of the fleet, from its heartbeat."""

    instance_id: str
    """The instance's id (``<host>-<port>`` by default)."""
    alive: bool
    """False when its heartbeat expired: the instance is gone."""
    last_seen: float
    """Its last heartbeat (epoch seconds)."""
    host: str = ""
    """Host name (unknown once gone)."""
    pid: int | None = None
    """Process id."""
    version: str = ""
    """ivr version it runs."""
    started_at: float | None = None
    """When the process started."""
    live_calls: int | None = None
    """Calls in progress on it."""
    draining: bool = False
    """True while it refuses new calls and waits for live ones to end."""
    writer_backlog: int | None = None
    """Redis writes queued in the instance, not yet sent."""
    writer_dropped: int | None = None
    """Redis writes dropped because the queue overflowed (an outage too long)."""
    writer_failures: int | None = None
    """Redis writes Redis refused."""
    redis_down: bool = False
    """True while its writes to Redis fail."""
    errors: dict[str, int] = field(default_factory=dict)
    """Error counters: bad signatures, malformed messages, internal errors…"""
    errors_total: int = 0
    """Sum of :attr:`errors`."""
    owned_calls: int = 0
    """Calls Redis still lists as owned by it (left open by a gone instance until it restarts)."""


@dataclass(frozen=True)
class CallDetail(_Row):
    """Everything the call page shows, read from Redis alone."""

    call: CallRow
    """The call's row (numbers masked)."""
    dialect: str
    """The model protocol dialect."""
    audio_mode: str
    """``pcm`` or ``pcmu``."""
    twilio_status: str | None
    """Twilio's last reported call status."""
    usage: dict[str, int]
    """Token usage so far (input/output, audio/text…)."""
    counters: dict[str, int]
    """The call's own counters (barge-ins, tool calls, reconnects…)."""
    greeting_ms: float | None
    """Twilio ``start`` → first greeting audio sent, when measured."""
    turns: list[dict[str, Any]]
    """Per-turn latency, one object per agent reply (``n``, ``latency_ms``, ``at``), when recorded."""
    transcript: list[TranscriptLine]
    """Transcript lines, oldest first."""
    events: list[EventRow]
    """Every event, oldest first (the timeline)."""
    tool_calls: list[ToolCallRow]
    """Tool calls, oldest first."""
    approvals: list[ApprovalRow]
    """Approval requests of the call, oldest first."""


# ------------------------------------------------------------------------------------------ masking


def mask_text(text: str) -> str:
    """Mask E.164 numbers (``+15551234567``) inside free text."""
    return _E164.sub(lambda m: mask_number(m.group()), text)


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def mask_data(value: Any, key: str | None = None) -> Any:
    """A copy of JSON-like data with phone numbers masked: values of :data:`NUMBER_KEYS` and E.164 numbers
    inside strings."""
    if isinstance(value, Mapping):
        return {str(k): mask_data(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v, key) for v in value]
    if isinstance(value, str):
        if key is not None and key.lower() in NUMBER_KEYS and _digits(value) >= 5:
            return mask_number(value)  # ("from"/"to" of a stage change are stage names: left alone)
        return mask_text(value)
    return value


def arguments_text(arguments: Mapping[str, Any]) -> str:
    """Tool arguments as ``key: value`` lines an operator reads at a glance (``party_size`` → ``party size``).

    Expects arguments already masked.
    """
    lines = []
    for name, value in arguments.items():
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        lines.append(f"{str(name).replace('_', ' ')}: {shown}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ transcript


def split_heard(text: str, heard_ms: float | None, total_ms: float | None) -> tuple[str, str]:
    """Split an interrupted line into (heard, cut), proportionally to the audio heard, at a word boundary.

    Speech runs at a roughly even rate, so the share of characters is a fair stand-in for the share of
    audio; the cut is moved to the nearest space so no word is shown half heard.
    """
    if heard_ms is None or not total_ms or total_ms <= 0:
        return text, ""
    ratio = min(max(heard_ms / total_ms, 0.0), 1.0)
    n = round(len(text) * ratio)
    if n >= len(text):
        return text, ""
    if n <= 0:
        return "", text
    if not (text[n].isspace() or text[n - 1].isspace()):
        before = max(text.rfind(" ", 0, n), 0)
        after = text.find(" ", n)
        after = len(text) if after < 0 else after
        n = before if n - before <= after - n else after
    return text[:n].rstrip(), text[n:].lstrip()


# ------------------------------------------------------------------------------------------ export

#: CSV columns of the history export, in order (the header row).
CSV_COLUMNS = (
    "call_sid",
    "started_at",
    "ended_at",
    "duration_s",
    "flow_id",
    "caller",
    "called",
    "outcome",
    "stage",
    "instance_id",
    "model",
    "engine",
    "total_tokens",
    "cost_usd",
    "matched_line",
    "transcript",
)
_TIME_COLUMNS = {"started_at", "ended_at"}
_TEXT_COLUMNS = {"stage", "matched_line", "transcript"}
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): a caller could say one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in _TIME_COLUMNS:
        return _iso(value)
    text = str(value)
    if name in _TEXT_COLUMNS and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def rows_to_csv(rows: Sequence[CallRow]) -> str:
    """History rows as CSV (RFC 4180 quoting, a header row, times in ISO 8601 UTC, numbers masked).

    Free-text cells that a spreadsheet would run as a formula get a leading ``'``.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        data = row.as_dict()
        writer.writerow([_cell(name, data.get(name)) for name in CSV_COLUMNS])
    return out.getvalue()


def rows_to_json(rows: Sequence[_Row]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (times stay epoch seconds, numbers masked)."""
    return [row.as_dict() for row in rows]
