"""The history and fleet indexes: which Redis commands keep them, beside the call store's own writes.

Why a module of its own: the console reads ended calls by time, flow, outcome and instance, and the fleet by
heartbeat, without SCAN — so these sorted sets must be written in the same pipelined batch as the record they
index (``CallStore.call_ended``, ``reconcile``, ``heartbeat``). Keeping the commands here keeps that rule in
one place and :mod:`ivr.store.store` small. Everything is documented in docs/redis.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio.client import Pipeline

from ivr.logs import mask_number
from ivr.store.codec import JSON_FIELD, encode_fields
from ivr.store.keys import KeySchema, KeySchemaError

__all__ = [
    "CALLER_TAIL_DIGITS",
    "FLEET_KEEP_S",
    "HEARTBEAT_INTERVAL_S",
    "HEARTBEAT_TTL_S",
    "TRANSCRIPT_TEXT_SCRIPT",
    "add_history_indexes",
    "add_transcript_text",
    "beat",
    "caller_fields",
    "caller_tail",
    "end_call_indexes",
    "expire_call",
]

log = logging.getLogger(__name__)

#: How many trailing digits of the caller's number the record keeps in ``caller_tail`` (the caller filter
#: of the history matches at most this many).
CALLER_TAIL_DIGITS = 6
#: Heartbeat cadence and the TTL of the heartbeat hash: three missed beats and the instance counts as gone.
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 20
#: How long an instance whose heartbeat expired stays in the fleet index (shown as "gone") before trimming.
FLEET_KEEP_S = 24 * 3600

#: Copies a call's transcript into its record as plain text (``transcript_text``: one ``role: text`` line per
#: entry, line breaks inside a line made spaces), so a history text search reads one field per call instead
#: of parsing every stream entry. KEYS[1] = the call hash, KEYS[2] = its transcript stream (one call's keys).
TRANSCRIPT_TEXT_SCRIPT = r"""
local entries = redis.call('XRANGE', KEYS[2], '-', '+')
if #entries == 0 then return 0 end
local lines = {}
for _, entry in ipairs(entries) do
  local fields, role, text = entry[2], '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'role' then role = fields[i + 1] elseif fields[i] == 'text' then text = fields[i + 1] end
  end
  lines[#lines + 1] = role .. ': ' .. (string.gsub(text, '[\r\n]+', ' '))
end
redis.call('HSET', KEYS[1], 'transcript_text', table.concat(lines, '\n'))
return #lines
"""


def caller_tail(number: str | None) -> str:
    """The last :data:`CALLER_TAIL_DIGITS` digits of a number (digits only; "" when it has none)."""
    digits = "".join(ch for ch in number or "" if ch.isdigit())
    return digits[-CALLER_TAIL_DIGITS:]


def caller_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """``caller_masked`` and ``caller_tail`` for a record that carries ``caller``, else nothing.

    Stored beside the number so the history table and its caller filter never read the full number.
    """
    caller = fields.get("caller")
    if not isinstance(caller, str):
        return {}
    return {"caller_masked": mask_number(caller), "caller_tail": caller_tail(caller)}


def add_history_indexes(
    pipe: Pipeline,
    keys: KeySchema,
    sid: str,
    ended_at: float,
    *,
    flow_id: object,
    outcome: object,
    instance_id: str,
    caller_tail: object,
    retention_s: int,
) -> None:
    """Index an ended call by flow, outcome, instance and the last two digits of the caller's number
    (score = end time), trimmed to the retention.

    An id that cannot be part of a key (a flow id with ``:``, say) only skips that index: the end of a call
    must never be lost to an index.
    """
    targets = (
        ("flow", flow_id, keys.recent_calls_by_flow),
        ("outcome", outcome, keys.recent_calls_by_outcome),
        ("instance", instance_id, keys.recent_calls_by_instance),
        ("caller", caller_tail[-2:] if isinstance(caller_tail, str) else None, keys.recent_calls_by_caller),
    )
    oldest = f"({ended_at - retention_s}"
    for what, value, key_of in targets:
        if not isinstance(value, str) or not value or (what == "caller" and len(value) < 2):
            continue
        try:
            key = key_of(value)
        except KeySchemaError as exc:
            log.warning("call %s is not indexed by %s: %s", sid, what, exc)
            continue
        pipe.zadd(key, {sid: ended_at})
        pipe.zremrangebyscore(key, "-inf", oldest)
        # A flow (outcome, instance) that gets no more calls: its index goes when its last entry would.
        pipe.expire(key, retention_s)


def add_transcript_text(pipe: Pipeline, keys: KeySchema, sid: str) -> None:
    """Copy the ended call's transcript into ``transcript_text`` (see :data:`TRANSCRIPT_TEXT_SCRIPT`)."""
    pipe.eval(TRANSCRIPT_TEXT_SCRIPT, 2, keys.call(sid), keys.transcript(sid))


def end_call_indexes(
    pipe: Pipeline,
    keys: KeySchema,
    sid: str,
    ended_at: float,
    *,
    instance_id: str,
    retention_s: int,
    flow_id: object,
    outcome: object,
    caller_tail: object,
    transcript_text: bool = True,
    active_last: bool = False,
) -> None:
    """A call ended: out of the active index and its instance's set, into the recent index (trimmed to the
    retention) and the history indexes, its transcript copied as text.

    On Redis Cluster these keys are in two slots (the call's, the global one); a transaction over one slot
    passes ``transcript_text=False`` and adds :func:`add_transcript_text` itself. ``active_last`` leaves the
    active index last, so a call still listed there after a crash had its indexes not (all) written.
    """
    if not active_last:
        pipe.zrem(keys.active_calls(), sid)
    pipe.zadd(keys.recent_calls(), {sid: ended_at})
    pipe.zremrangebyscore(keys.recent_calls(), "-inf", f"({ended_at - retention_s}")
    pipe.srem(keys.instance_calls(instance_id), sid)
    add_history_indexes(
        pipe,
        keys,
        sid,
        ended_at,
        flow_id=flow_id,
        outcome=outcome,
        instance_id=instance_id,
        caller_tail=caller_tail,
        retention_s=retention_s,
    )
    if transcript_text:
        add_transcript_text(pipe, keys, sid)
    if active_last:
        pipe.zrem(keys.active_calls(), sid)


def expire_call(pipe: Pipeline, keys: KeySchema, sid: str, retention_s: int) -> None:
    """The ended call's keys (record, transcript, events, approvals) expire after the retention."""
    for key in (keys.call(sid), keys.transcript(sid), keys.call_events(sid), keys.call_approvals(sid)):
        pipe.expire(key, retention_s)


def beat(
    pipe: Pipeline,
    keys: KeySchema,
    instance_id: str,
    base: Mapping[str, str],
    stats: Mapping[str, Any] | None,
    *,
    now: float | None = None,
) -> None:
    """Replace the heartbeat hash (``base`` strings + ``stats``, JSON-encoded as in call records) and bump
    the instance in the fleet index, trimming instances gone for longer than :data:`FLEET_KEEP_S`."""
    now = time.time() if now is None else now
    extra = {k: v for k, v in (stats or {}).items() if k not in base and k != JSON_FIELD}
    flat, json_names = encode_fields(extra)
    mapping = {**flat, **base, JSON_FIELD: ",".join(sorted(json_names))}
    key = keys.instance(instance_id)
    pipe.delete(key)  # a field the app stopped reporting must not linger
    pipe.hset(key, mapping=mapping)
    pipe.expire(key, HEARTBEAT_TTL_S)
    pipe.zadd(keys.instances(), {instance_id: now})
    pipe.zremrangebyscore(keys.instances(), "-inf", f"({now - FLEET_KEEP_S}")
