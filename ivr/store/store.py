"""Call records, transcripts and events in Redis, written without ever holding up a call.

Why: Redis is where operators, dashboards and other instances see calls (docs/redis.md is the contract),
but a call must keep running when Redis is down. So every write about a live call goes through the
:class:`~ivr.store.writer.ResilientWriter` (fire-and-forget, ordered, retried), while reads and the few
writes whose caller has a fallback (the webhook's call context, the start-up reconciliation) talk to Redis
directly and may raise.

Every stream entry this store writes is added exactly once, in order, even when the writer re-sends a batch
(a reply lost after Redis applied it, a failover refusing part of a batch): per-call streams get explicit
entry ids from one counter per store that follows this process's clock and never goes back (so entries keep
the time they happened even when flushed after an outage, and a repeated id is refused by Redis and counted
as already written). The global event stream, shared by every instance, is appended to only by the script
that adds the event's per-call entry, and only when that entry is new (``APPEND_EVENT_SCRIPT`` in
:mod:`ivr.store.streams`); on Redis Cluster, where the two streams are in different hash slots, by a second
script guarded by this instance's high-water mark for the call (``append_event_ops``). Only this instance
writes to the streams of the calls it owns.

Beside it: :mod:`ivr.store.streams` (stream caps and entry shapes), :mod:`ivr.store.indexes` (the indexes
written with a record), :mod:`ivr.store.instances` (heartbeat and reconciliation, behind ``heartbeat`` and
``reconcile`` here) and :mod:`ivr.store.codec` (how values are stored in hashes).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from ivr.store import instances
from ivr.store.client import is_cluster
from ivr.store.codec import HSET_TYPED_SCRIPT, JSON_FIELD, decode_hash, encode_fields, hset_typed_args
from ivr.store.indexes import (
    HEARTBEAT_TTL_S,
    caller_fields,
    end_call_indexes,
    expire_call,
)
from ivr.store.instances import LOST_OUTCOME, RESTART_OUTCOME, default_instance_id
from ivr.store.keys import KeySchema
from ivr.store.streams import (
    APPEND_LINE_SCRIPT,
    CALL_EVENTS_MAXLEN,
    EVENTS_MAXLEN,
    TRANSCRIPT_MAXLEN,
    append_event_ops,
    decode_event,
    event_fields,
    to_float,
    transcript_line,
    ts_text,
)
from ivr.store.writer import ResilientWriter

__all__ = [
    "CALL_EVENTS_MAXLEN",
    "EVENTS_MAXLEN",
    "HEARTBEAT_TTL_S",
    "LOST_OUTCOME",
    "RESTART_OUTCOME",
    "TRANSCRIPT_MAXLEN",
    "CallStore",
    "default_instance_id",
]

log = logging.getLogger(__name__)

#: Record fields left out of event payloads: lists kept elsewhere (transcript stream, events) or in the call
#: hash only (per-turn latency, up to 500 entries).
_BULKY = ("transcript", "tool_calls", "turns")


class CallStore:
    """This instance's view of call state in Redis (see docs/redis.md for the keys it writes)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySchema,
        *,
        instance_id: str,
        retention_s: int = 30 * 86400,
        writer: ResilientWriter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_s < 1:
            raise ValueError(f"retention_s must be at least 1 second, got {retention_s}")
        if is_cluster(redis) and not keys.hash_tags:
            raise ValueError(
                "on Redis Cluster the key schema needs hash tags: KeySchema(prefix, hash_tags=True)"
            )
        keys.instance(instance_id)  # validates the id now rather than at the first heartbeat
        self.redis = redis
        self.keys = keys
        self.instance_id = instance_id
        self.retention_s = int(retention_s)
        self.writer = writer
        self._clock = clock
        self.started_at = clock()
        # The last explicit stream id given out (ms, seq): every id is above it, whichever stream it is for.
        self._last_id = (0, 0)
        self._max_tracked_calls = 20_000
        # Flow and caller digits of each call started here (bounded), for the history indexes at its end.
        self._started: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

    # -- fire-and-forget writes ----------------------------------------------------------------------------
    def call_started(self, record: Mapping[str, Any]) -> None:
        """A call began on this instance: its record, the active index, this instance's set, ``call.started``.

        ``record`` is flat-ish: strings are stored verbatim, anything else as JSON (see docs/redis.md).
        """
        try:
            sid = str(record["call_sid"])
            self.keys.call(sid)
            now = self._clock()
            started_at = record.get("started_at")
            started_at = float(started_at) if isinstance(started_at, int | float) else now
            fields = {**record, "call_sid": sid, "started_at": started_at, "instance_id": self.instance_id}
            caller = caller_fields(fields)
            hset_args = hset_typed_args({**fields, **caller}, self.retention_s)
            self._remember(sid, fields.get("flow_id"), caller.get("caller_tail"))
            data = {k: v for k, v in fields.items() if k not in _BULKY}
            event = self._event_ops(sid, "call.started", data, now)
        except Exception as exc:
            log.exception("call_started: the record is not stored: %s", _reason(exc))
            return
        keys = self.keys

        def apply(pipe: Pipeline) -> None:
            pipe.eval(HSET_TYPED_SCRIPT, 1, keys.call(sid), *hset_args)
            pipe.zadd(keys.active_calls(), {sid: started_at})
            pipe.sadd(keys.instance_calls(self.instance_id), sid)
            event(pipe)

        self.writer.submit("call.started", apply)

    def call_updated(self, sid: str, fields: Mapping[str, Any]) -> None:
        """Set some fields of the call record (stage, usage, cost…)."""
        try:
            key = self.keys.call(sid)
            hset_args = hset_typed_args(fields, self.retention_s)
        except Exception as exc:
            log.exception("call_updated(%r): the fields are not stored: %s", sid, _reason(exc))
            return
        if len(hset_args) == 1:
            return
        self.writer.submit("call.updated", lambda pipe: pipe.eval(HSET_TYPED_SCRIPT, 1, key, *hset_args))

    def call_ended(self, sid: str, fields: Mapping[str, Any] | None = None) -> None:
        """The call ended: final fields, out of the active index into the recent one and the history indexes
        (flow, outcome, instance, caller digits), the transcript copied as text, TTLs, ``call.ended``."""
        try:
            self.keys.call(sid)
            now = self._clock()
            fields = dict(fields or {})
            ended_at = fields.get("ended_at")
            ended_at = float(ended_at) if isinstance(ended_at, int | float) else now
            fields["ended_at"] = ended_at
            fields.setdefault("outcome", "completed")
            caller = caller_fields(fields)
            hset_args = hset_typed_args({**fields, **caller}, self.retention_s)
            data = {k: v for k, v in fields.items() if k not in _BULKY}
            event = self._event_ops(sid, "call.ended", data, now)
            flow_id, tail = self._started.pop(sid, (None, None))
            flow_id = fields.get("flow_id") or flow_id
            tail = caller.get("caller_tail", tail)
        except Exception as exc:
            log.exception("call_ended(%r): the end of the call is not stored: %s", sid, _reason(exc))
            return

        def apply(pipe: Pipeline) -> None:
            pipe.eval(HSET_TYPED_SCRIPT, 1, self.keys.call(sid), *hset_args)
            end_call_indexes(
                pipe,
                self.keys,
                sid,
                ended_at,
                instance_id=self.instance_id,
                retention_s=self.retention_s,
                flow_id=flow_id,
                outcome=fields["outcome"],
                caller_tail=tail,
            )
            event(pipe)
            expire_call(pipe, self.keys, sid, self.retention_s)

        self.writer.submit("call.ended", apply)

    def transcript(
        self,
        sid: str,
        role: str,
        text: str,
        ts: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one transcript line (``role`` is "caller" or "agent"; ``ts`` when it was spoken).

        ``extra``: further fields of the entry (an agent line's ``item_id``, and ``interrupted``,
        ``heard_ms``, ``total_ms`` when the caller cut it short; docs/redis.md). Booleans are stored as
        ``true``/``false``.
        """
        try:
            key = self.keys.transcript(sid)
            when = self._clock() if ts is None else float(ts)
            entry = {"role": str(role), "text": str(text), "ts": ts_text(when)}
            for name, value in (extra or {}).items():
                if name not in entry and value is not None:
                    entry[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
            entry_id = self._next_id()
        except Exception as exc:
            log.exception("transcript(%r): the line is not stored: %s", sid, _reason(exc))
            return

        args: list[str | int] = [1, key, entry_id, TRANSCRIPT_MAXLEN, int(self.retention_s)]
        for name, value in entry.items():
            args += [name, value]

        def apply(pipe: Pipeline) -> None:
            pipe.eval(APPEND_LINE_SCRIPT, *args)

        self.writer.submit("transcript", apply)

    def event(self, sid: str, type_: str, data: Mapping[str, Any] | None = None) -> None:
        """Append an event to the call's stream and to the global stream (``type``, ``call_sid``, ``ts``,
        ``data`` as JSON)."""
        try:
            self.keys.call_events(sid)
            ops = self._event_ops(sid, str(type_), dict(data or {}), self._clock())
        except Exception as exc:
            log.exception("event(%r, %r): the event is not stored: %s", sid, type_, _reason(exc))
            return
        self.writer.submit("event", ops)

    # -- direct reads ---------------------------------------------------------------------------------------
    async def get_call(self, sid: str) -> dict[str, Any] | None:
        """The call record with its JSON fields parsed, or None if there is none (or it expired)."""
        raw = await self.redis.hgetall(self.keys.call(sid))
        return decode_hash(raw) if raw else None

    async def get_transcript(self, sid: str) -> list[dict[str, Any]]:
        """Every transcript line, oldest first: ``{id, role, text, ts}`` plus the entry's other fields
        (``item_id``; for a cut agent line ``interrupted`` as a bool and ``heard_ms``/``total_ms``)."""
        entries = await self.redis.xrange(self.keys.transcript(sid))
        return [transcript_line(entry_id, f) for entry_id, f in entries]

    async def get_events(self, sid: str) -> list[dict[str, Any]]:
        """Every event of the call so far, oldest first: ``{id, type, call_sid, ts, data}``."""
        entries = await self.redis.xrange(self.keys.call_events(sid))
        return [decode_event(entry_id, fields) for entry_id, fields in entries]

    async def active_calls(self) -> list[str]:
        """Sids of calls in progress (on any instance), oldest first."""
        return list(await self.redis.zrange(self.keys.active_calls(), 0, -1))

    async def recent_calls(self, limit: int = 100) -> list[str]:
        """Sids of the most recently ended calls, newest first."""
        return list(await self.redis.zrevrange(self.keys.recent_calls(), 0, max(limit, 1) - 1))

    async def follow_call_events(
        self, sid: str, *, from_id: str = "0-0", block_ms: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        """Replay the call's events after ``from_id``, then follow new ones (XREAD BLOCK) to ``call.ended``.

        Also stops when the call record says the call ended and no event is left to read (the ``call.ended``
        event itself may have been lost). ``block_ms`` must stay below the client's socket timeout.
        """
        key = self.keys.call_events(sid)
        last = from_id
        while True:
            reply = await self.redis.xread({key: last}, count=500, block=block_ms)
            entries = reply[0][1] if reply else []
            if not entries:
                # Nothing new for a while: did the call end without its call.ended event reaching us?
                if to_float(await self.redis.hget(self.keys.call(sid), "ended_at")) is not None:
                    tail = await self.redis.xread({key: last}, count=500)
                    if not tail:
                        return
                continue
            for entry_id, fields in entries:
                last = entry_id
                event = decode_event(entry_id, fields)
                yield event
                if event["type"] == "call.ended":
                    return

    # -- call context (direct: the webhook can fall back to its own memory) ---------------------------------
    async def save_context(self, sid: str, ctx: Mapping[str, Any], ttl_s: int = 3600) -> None:
        """Store the webhook's call context so the media socket can land on any instance; replaces the old."""
        key = self.keys.context(sid)
        flat, json_names = encode_fields(ctx)
        flat[JSON_FIELD] = ",".join(sorted(json_names))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=flat)
            pipe.expire(key, max(int(ttl_s), 1))
            await pipe.execute()

    async def load_context(self, sid: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.context(sid))
        return decode_hash(raw) if raw else None

    # -- instance bookkeeping (ivr.store.instances) -------------------------------------------------------
    async def heartbeat(self, stats: Mapping[str, Any] | None = None) -> None:
        """Replace this instance's heartbeat hash (TTL 20 s) and bump it in the fleet index; raises if Redis
        is unreachable.

        ``stats`` (live calls, draining, writer backlog, error counters, version…) go into the hash beside
        ``instance_id``, ``started_at``, ``last_seen``, ``pid`` and ``host``, encoded like call records.
        """
        await instances.heartbeat(
            self.redis,
            self.keys,
            self.instance_id,
            started_at=self.started_at,
            now=self._clock(),
            stats=stats,
        )

    async def reconcile(self, live: set[str]) -> list[str]:
        """Calls this instance owned that are not live any more (it restarted): mark them ended.

        Each gets ``outcome = "instance-restart"``, ``ended_at`` (and ``duration_s`` when the start is known),
        leaves the active index for the recent one (and the history indexes), and a ``call.ended`` event.
        Only calls started before this store was made count (this run's calls are live even if Redis was
        unreachable when they started). Returns their sids. Direct writes: raises if Redis is unreachable.
        """
        return await instances.reconcile(
            self.redis,
            self.keys,
            self.instance_id,
            live,
            retention_s=self.retention_s,
            clock=self._clock,
            started_before=self.started_at,  # calls this run took (Redis down meanwhile) are not orphans
        )

    async def take_over_lost(self, lost_after_s: float) -> dict[str, list[str]]:
        """End the in-progress calls of instances silent for more than ``lost_after_s`` seconds (outcome
        ``instance-lost``; exactly once among racing survivors). Returns ``{instance: [sids]}``. Direct
        writes: raises if Redis is unreachable."""
        return await instances.take_over_lost(
            self.redis,
            self.keys,
            self.instance_id,
            lost_after_s=lost_after_s,
            retention_s=self.retention_s,
            clock=self._clock,
        )

    # -- internals ----------------------------------------------------------------------------------------
    def _event_ops(
        self, sid: str, type_: str, data: Mapping[str, Any], now: float
    ) -> Callable[[Pipeline], None]:
        """Build (now, so that errors surface to the caller's try) the commands appending one event."""
        entry = event_fields(sid, type_, data, now)
        entry_id = self._next_id()
        keys = self.keys
        keys.events_hwm(sid)  # validates the sid for every key the event touches

        def apply(pipe: Pipeline) -> None:
            append_event_ops(pipe, keys, sid, entry_id, entry, self.retention_s, writer=self.instance_id)

        return apply

    def _remember(self, sid: str, flow_id: object, caller_tail: str | None) -> None:
        """Keep what the history indexes need of a live call, for a ``call_ended`` whose fields do not
        repeat it (bounded: the oldest calls are forgotten first)."""
        self._started[sid] = (flow_id if isinstance(flow_id, str) else None, caller_tail)
        self._started.move_to_end(sid)
        while len(self._started) > self._max_tracked_calls:
            self._started.popitem(last=False)

    def _next_id(self) -> str:
        """An explicit stream id: this process's clock in ms, strictly above every id given out before (the
        sequence part counts up within a millisecond and while the clock stands still or steps back)."""
        ms = int(self._clock() * 1000)
        last_ms, last_seq = self._last_id
        ms, seq = (last_ms, last_seq + 1) if ms <= last_ms else (ms, 0)
        if (ms, seq) == (0, 0):
            seq = 1  # 0-0 is not a valid stream id
        self._last_id = (ms, seq)
        return f"{ms}-{seq}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}"
