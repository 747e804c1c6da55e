"""Redis entries → console rows: transcript lines, events, tool calls, approvals, heartbeats.

Why apart from the queries: decoding is pure (no Redis, no I/O) and tolerant — records written by older
versions, or fields another part of the app adds later (interruption cuts, per-turn latency), must never
break a page — so it is easiest to read and to test on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ivr.approvals.store import Approval
from ivr.console.rows import (
    ApprovalRow,
    EventRow,
    InstanceRow,
    ToolCallRow,
    TranscriptLine,
    arguments_text,
    mask_data,
    split_heard,
)
from ivr.logs import mask_number
from ivr.store.codec import decode_hash, loads_or_raw

__all__ = [
    "CALLER_FIELDS",
    "approval_row",
    "event_row",
    "instance_row",
    "json_dict",
    "shown_caller",
    "to_float",
    "to_int",
    "tool_call",
    "total_tokens",
    "transcript_line",
    "turns",
]

_TRUE = {"1", "true", "True", "yes"}
#: The call record's fields :func:`shown_caller` needs, in its argument order.
CALLER_FIELDS = ("caller_masked", "caller")


def shown_caller(masked: str | None, raw: str | None) -> str:
    """The caller as the console shows it: the record's ``caller_masked``, else its raw ``caller`` masked
    here (records written before ``caller_masked`` existed); ``-`` when there is neither."""
    return masked or mask_number(raw)


def to_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def to_int(value: Any) -> int | None:
    number = to_float(value)
    return int(number) if number is not None else None


def json_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = loads_or_raw(value)
    return value if isinstance(value, dict) else {}


def total_tokens(usage: Mapping[str, Any]) -> int | None:
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get(k) for k in ("input_tokens", "output_tokens")]
    return sum(p for p in parts if isinstance(p, int)) if any(isinstance(p, int) for p in parts) else None


def _flag(value: Any) -> bool:
    return str(value) in _TRUE


def transcript_line(entry_id: str, fields: Mapping[str, str]) -> TranscriptLine:
    text = fields.get("text", "")
    interrupted = _flag(fields.get("interrupted"))
    heard_ms, total_ms = to_float(fields.get("heard_ms")), to_float(fields.get("total_ms"))
    heard_chars = to_int(fields.get("heard_chars"))
    if interrupted and heard_chars is not None:  # the precise figure, when the call recorded it
        heard, cut = split_heard(text, heard_chars, len(text))
    elif interrupted:
        heard, cut = split_heard(text, heard_ms, total_ms)
    else:
        heard, cut = text, ""
    return TranscriptLine(
        id=entry_id,
        role=fields.get("role", ""),
        text=text,
        ts=to_float(fields.get("ts")),
        interrupted=interrupted,
        heard_ms=heard_ms,
        total_ms=total_ms,
        heard_text=heard,
        cut_text=cut,
    )


def event_row(entry_id: str, fields: Mapping[str, str]) -> EventRow:
    data = loads_or_raw(fields.get("data", "{}"))
    return EventRow(
        id=entry_id,
        type=fields.get("type", ""),
        ts=to_float(fields.get("ts")),
        data=mask_data(data if isinstance(data, dict) else {"value": data}),
    )


def tool_call(event: EventRow) -> ToolCallRow:
    data = event.data
    arguments = data.get("arguments")
    arguments = arguments if isinstance(arguments, dict) else {}
    output = data.get("output")
    return ToolCallRow(
        ts=event.ts,
        name=str(data.get("name") or data.get("tool") or ""),
        ok=bool(data.get("ok")),
        error_type=data.get("error_type") if isinstance(data.get("error_type"), str) else None,
        duration_ms=to_float(data.get("duration_ms")),
        arguments=arguments,
        arguments_text=arguments_text(arguments),
        output=output if isinstance(output, str) else orjson.dumps(output).decode(),
    )


def turns(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = loads_or_raw(value)
    if isinstance(value, dict):
        value = value.get("turns", [value])
    return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []


def approval_row(approval: Approval, caller: str, last_line: str | None) -> ApprovalRow:
    arguments = mask_data(approval.arguments)
    return ApprovalRow(
        id=approval.id,
        call_sid=approval.call_sid,
        flow_id=approval.flow_id,
        instance_id=approval.instance_id,
        tool=approval.tool,
        arguments=arguments,
        arguments_text=arguments_text(arguments),
        reason=approval.reason,
        status=approval.status,
        created_at=approval.created_at,
        deadline=approval.deadline,
        decided_by=approval.decided_by,
        decided_at=approval.decided_at,
        note=approval.note,
        executed_at=approval.executed_at,
        caller=caller,
        caller_last_line=last_line,
    )


def instance_row(iid: str, score: float, raw: Mapping[str, str], owned: int) -> InstanceRow:
    if not raw:
        return InstanceRow(instance_id=iid, alive=False, last_seen=score, owned_calls=owned)
    beat = decode_hash(raw)
    errors = {k: v for k, v in json_dict(beat.get("errors")).items() if isinstance(v, int)}
    return InstanceRow(
        instance_id=iid,
        alive=True,
        last_seen=to_float(beat.get("last_seen")) or score,
        host=str(beat.get("host") or ""),
        pid=to_int(beat.get("pid")),
        version=str(beat.get("version") or ""),
        started_at=to_float(beat.get("started_at")),
        live_calls=to_int(beat.get("live_calls")),
        draining=beat.get("draining") is True,
        writer_backlog=to_int(beat.get("writer_backlog")),
        writer_dropped=to_int(beat.get("writer_dropped")),
        writer_failures=to_int(beat.get("writer_failures")),
        redis_down=beat.get("redis_down") is True,
        errors=errors,
        errors_total=sum(errors.values()),
        owned_calls=owned,
    )
