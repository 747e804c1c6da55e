"""This app instance in Redis: its id, its heartbeat, and the calls a previous run of it left in progress.

Why a module of its own: an instance's liveness is its heartbeat (the fleet page and other instances read
it), and a restarted instance must close the books on the calls its previous run owned. Both are about the
instance rather than one call; :class:`~ivr.store.store.CallStore` exposes them as ``heartbeat`` and
``reconcile``. Direct writes: these raise when Redis is unreachable (the app's housekeeping loop in
:mod:`ivr.state` retries).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from ivr.store.codec import HSET_TYPED_SCRIPT, hset_typed_args
from ivr.store.indexes import beat, end_call_indexes, expire_call
from ivr.store.keys import KeySchema
from ivr.store.streams import CALL_EVENTS_MAXLEN, EVENTS_MAXLEN, event_fields, to_float, ts_text

__all__ = ["RESTART_OUTCOME", "default_instance_id", "heartbeat", "reconcile"]

log = logging.getLogger(__name__)

#: Outcome written for calls found orphaned by :func:`reconcile`.
RESTART_OUTCOME = "instance-restart"

_HOST_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_instance_id(port: int | None = None) -> str:
    """A stable id for this app instance: the host name, plus the port when given.

    It must survive a restart of the same instance (that is how :meth:`CallStore.reconcile` finds the calls
    the previous run owned) and differ between instances sharing a Redis (two servers on one host listen on
    different ports).
    """
    host = _HOST_SAFE.sub("-", socket.gethostname()).strip("-") or "host"
    return f"{host}-{port}" if port is not None else host


async def heartbeat(
    redis: aioredis.Redis,
    keys: KeySchema,
    instance_id: str,
    *,
    started_at: float,
    now: float,
    stats: Mapping[str, Any] | None = None,
) -> None:
    """Replace the instance's heartbeat hash and bump it in the fleet index (see ``CallStore.heartbeat``)."""
    fields = {
        "instance_id": instance_id,
        "started_at": ts_text(started_at),
        "last_seen": ts_text(now),
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
    }
    async with redis.pipeline(transaction=True) as pipe:
        beat(pipe, keys, instance_id, fields, stats, now=now)
        await pipe.execute()


async def reconcile(
    redis: aioredis.Redis,
    keys: KeySchema,
    instance_id: str,
    live: set[str],
    *,
    retention_s: int,
    clock: Callable[[], float],
) -> list[str]:
    """Mark ended the calls ``instance_id`` owned that are not ``live``; returns their sids (see
    ``CallStore.reconcile``)."""
    owned = await redis.smembers(keys.instance_calls(instance_id))
    orphans = sorted(sid for sid in owned if sid not in live)
    for sid in orphans:
        now = clock()
        started_raw, flow_id, tail = await redis.hmget(
            keys.call(sid), ["started_at", "flow_id", "caller_tail"]
        )
        started = to_float(started_raw)
        fields: dict[str, Any] = {"outcome": RESTART_OUTCOME, "ended_at": now}
        if started is not None:
            fields["duration_s"] = round(max(now - started, 0.0), 3)
        event = {**fields, "instance_id": instance_id}
        async with redis.pipeline(transaction=True) as pipe:
            pipe.eval(HSET_TYPED_SCRIPT, 1, keys.call(sid), *hset_typed_args(fields, retention_s))
            end_call_indexes(
                pipe,
                keys,
                sid,
                now,
                instance_id=instance_id,
                retention_s=retention_s,
                flow_id=flow_id,
                outcome=RESTART_OUTCOME,
                caller_tail=tail,
            )
            # Auto ids: this process did not write the earlier entries, so it cannot continue their ids.
            entry = event_fields(sid, "call.ended", event, now)
            pipe.xadd(keys.call_events(sid), entry, maxlen=CALL_EVENTS_MAXLEN, approximate=True)
            pipe.xadd(keys.events(), entry, maxlen=EVENTS_MAXLEN, approximate=True)
            expire_call(pipe, keys, sid, retention_s)
            await pipe.execute()
        log.warning("call %s was left in progress by a previous run of this instance; marked ended", sid)
    return orphans
