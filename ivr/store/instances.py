"""This app instance in Redis: its id, its heartbeat, and the calls a previous run of it (or a lost peer) left
in progress.

Why a module of its own: an instance's liveness is its heartbeat (the fleet page and other instances read
it); a restarted instance must close the books on the calls its previous run owned, and a survivor those of
an instance whose heartbeat stopped (killed, its machine gone). All of it is about instances rather than one
call; :class:`~ivr.store.store.CallStore` exposes it as ``heartbeat``, ``reconcile`` and ``take_over_lost``.
Direct writes: these raise when Redis is unreachable (the app's housekeeping loop in :mod:`ivr.state`
retries).

On Redis Cluster (hash-tagged keys) the end of an orphaned call spans two slots: the call's own keys and the
global indexes. It is then a watched transaction on the call's slot (the record, the transcript text, the
call's ``call.ended`` entry, TTLs), followed by the global part (indexes, the global copy of the event),
which is idempotent. A crash between the two leaves the call ended but still listed as active; the next
reconciliation or takeover that meets it (its sid is still in its instance's set) writes the global part then.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ivr.store.codec import HSET_TYPED_SCRIPT, hset_typed_args
from ivr.store.indexes import (
    HEARTBEAT_INTERVAL_S,
    add_transcript_text,
    beat,
    end_call_indexes,
    expire_call,
)
from ivr.store.keys import KeySchema
from ivr.store.streams import (
    append_event_ops,
    append_global_event,
    event_fields,
    to_float,
    ts_text,
)

__all__ = [
    "LOST_OUTCOME",
    "RESTART_OUTCOME",
    "default_instance_id",
    "heartbeat",
    "reconcile",
    "take_over_lost",
]

log = logging.getLogger(__name__)

#: Outcome written for calls found orphaned by :func:`reconcile` (a restarted instance, its own calls).
RESTART_OUTCOME = "instance-restart"
#: Outcome written for the calls of an instance whose heartbeat stopped (:func:`take_over_lost`).
LOST_OUTCOME = "instance-lost"
#: Seconds added to a lost instance's next-beat time when telling its calls from a newer run's.
_CLOCK_SLACK_S = 1.0
#: A watched end of one call is retried this many times when the record changes under it.
_WATCH_ATTEMPTS = 5
#: The writer name under which an orphan's ``call.ended`` is copied to the global stream on Redis Cluster
#: (``KeySchema.events_hwm``): one such event per call, whoever writes it.
ORPHAN_WRITER = "orphan-end"
#: KEYS[1] = a lease, ARGV[1] = its holder: let go of it only if still held by ARGV[1].
_RELEASE_LEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)

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
    outcome: str = RESTART_OUTCOME,
    by: str | None = None,
    started_before: float | None = None,
) -> list[str]:
    """Mark ended the calls ``instance_id`` owned that are not ``live``; returns the sids this call ended.

    Used by a restarted instance on its own calls (``outcome = instance-restart``) and by a survivor taking
    over a lost instance's calls (``outcome = instance-lost``, ``by`` = the survivor). Each call is ended at
    most once whoever races: the end is a transaction watching the call hash, skipped when the record no
    longer says ``in-progress`` (a lost reply that redis-py re-sends cannot end it twice either: a watched
    transaction is not retried, it is re-checked).

    ``started_before``: only calls that started at or before this time are ended — a restarted instance
    passes its own start (calls its new run took while Redis was unreachable are live, not orphans), a
    survivor the lost instance's last heartbeat (a restarted instance with the same id keeps its new calls).
    """
    owned = await redis.smembers(keys.instance_calls(instance_id))
    ended: list[str] = []
    for sid in sorted(sid for sid in owned if sid not in live):
        if await _end_orphan(
            redis,
            keys,
            sid,
            instance_id,
            outcome=outcome,
            by=by,
            retention_s=retention_s,
            clock=clock,
            started_before=started_before,
        ):
            ended.append(sid)
            log.warning(
                "call %s was left in progress by %s; marked ended (%s)",
                sid,
                "a previous run of this instance" if by is None else f"lost instance {instance_id}",
                outcome,
            )
    return ended


async def _end_orphan(
    redis: aioredis.Redis,
    keys: KeySchema,
    sid: str,
    owner: str,
    *,
    outcome: str,
    by: str | None,
    retention_s: int,
    clock: Callable[[], float],
    started_before: float | None = None,
) -> bool:
    """End one orphaned call unless someone else already did (or it started after ``started_before``: it
    is not an orphan); True if this call ended it."""
    call_key = keys.call(sid)
    split = keys.hash_tags  # Redis Cluster: the call's slot in a transaction, then the global part
    for _ in range(_WATCH_ATTEMPTS):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(call_key)
                current, started_raw, flow_id, tail, holder, ended_raw = await pipe.hmget(
                    call_key, ["outcome", "started_at", "flow_id", "caller_tail", "instance_id", "ended_at"]
                )
                started = to_float(started_raw)
                if started_before is not None and started is not None and started > started_before:
                    await pipe.unwatch()
                    return False  # started by a newer run of its instance: live, leave it be
                if current not in (None, "in-progress") or holder not in (None, owner):
                    # Already ended (its owner finished it, or another survivor won), or another instance
                    # carries the call now: not this owner's to end; just tidy the owner's index.
                    if not split:
                        pipe.multi()
                        pipe.srem(keys.instance_calls(owner), sid)
                        await pipe.execute()
                        return False
                    await pipe.unwatch()
                    if current in (RESTART_OUTCOME, LOST_OUTCOME) and holder in (None, owner):
                        await _repair_orphan_end(
                            redis, keys, sid, owner, outcome=current, ended_raw=ended_raw, flow_id=flow_id,
                            tail=tail, retention_s=retention_s,
                        )  # fmt: skip
                    await redis.srem(keys.instance_calls(owner), sid)
                    return False
                last = await pipe.xrevrange(keys.call_events(sid), count=1)
                now = clock()
                fields: dict[str, Any] = {"outcome": outcome, "ended_at": now}
                if started is not None:
                    fields["duration_s"] = round(max(now - started, 0.0), 3)
                event = {**fields, "instance_id": owner, **({"ended_by": by} if by else {})}
                entry_id = _after(last[0][0] if last else None, now)
                entry = event_fields(sid, "call.ended", event, now)
                pipe.multi()
                pipe.eval(HSET_TYPED_SCRIPT, 1, call_key, *hset_typed_args(fields, retention_s))
                if split:
                    add_transcript_text(pipe, keys, sid)
                else:
                    end_call_indexes(
                        pipe,
                        keys,
                        sid,
                        now,
                        instance_id=owner,
                        retention_s=retention_s,
                        flow_id=flow_id,
                        outcome=outcome,
                        caller_tail=tail,
                    )
                append_event_ops(
                    pipe, keys, sid, entry_id, entry, retention_s, writer=ORPHAN_WRITER, global_step=False
                )
                expire_call(pipe, keys, sid, retention_s)
                # The webhook's context (caller and called numbers) only serves a live call's media socket.
                # The stream's claim stays until its TTL: a replayed start must still find the sid taken.
                pipe.delete(keys.context(sid))
                await pipe.execute()
            except WatchError:
                continue  # the record changed under us: look again
        if split:
            await _end_globally(
                redis, keys, sid, owner, ended_at=now, outcome=outcome, flow_id=flow_id, tail=tail,
                entry_id=entry_id, entry=entry, retention_s=retention_s,
            )  # fmt: skip
        return True
    log.warning("call %s: could not mark it ended after %d tries (it keeps changing)", sid, _WATCH_ATTEMPTS)
    return False


async def _end_globally(
    redis: aioredis.Redis,
    keys: KeySchema,
    sid: str,
    owner: str,
    *,
    ended_at: float,
    outcome: str,
    flow_id: object,
    tail: object,
    entry_id: str,
    entry: dict[str, str],
    retention_s: int,
) -> None:
    """Redis Cluster: the global part of an orphan's end — the indexes (the active one last: a call still
    listed there had this part not done) and the global copy of its ``call.ended`` (once per call, under
    :data:`ORPHAN_WRITER`). Every command is idempotent, so it may run again after a crash."""
    async with redis.pipeline(transaction=False) as pipe:
        append_global_event(pipe, keys, sid, entry_id, entry, retention_s, writer=ORPHAN_WRITER)
        end_call_indexes(
            pipe,
            keys,
            sid,
            ended_at,
            instance_id=owner,
            retention_s=retention_s,
            flow_id=flow_id,
            outcome=outcome,
            caller_tail=tail,
            transcript_text=False,
            active_last=True,
        )
        await pipe.execute()


async def _repair_orphan_end(
    redis: aioredis.Redis,
    keys: KeySchema,
    sid: str,
    owner: str,
    *,
    outcome: str,
    ended_raw: str | None,
    flow_id: object,
    tail: object,
    retention_s: int,
) -> None:
    """Redis Cluster: a call some reconciliation ended (``outcome`` is ours) but that is still in the active
    index — the process died between the two parts of :func:`_end_orphan`: write the global part now, from
    the record and the call's last ``call.ended`` entry."""
    ended_at = to_float(ended_raw)
    if ended_at is None or await redis.zscore(keys.active_calls(), sid) is None:
        return
    for entry_id, fields in await redis.xrevrange(keys.call_events(sid), count=20):
        if fields.get("type") == "call.ended":
            entry = {k: v for k, v in fields.items() if k != "event_id"}
            await _end_globally(
                redis, keys, sid, owner, ended_at=ended_at, outcome=outcome, flow_id=flow_id, tail=tail,
                entry_id=fields.get("event_id") or entry_id, entry=entry, retention_s=retention_s,
            )  # fmt: skip
            log.warning(
                "call %s: its end was recorded but not indexed (a crash in between); indexed now", sid
            )
            return


def _after(last_id: str | None, now: float) -> str:
    """An explicit stream id after ``last_id`` (the dead owner's ids come from its clock) and near ``now``."""
    ms = int(now * 1000)
    if last_id:
        last_ms, _, last_seq = last_id.partition("-")
        if int(last_ms) >= ms:
            return f"{last_ms}-{int(last_seq or 0) + 1}"
    return f"{max(ms, 1)}-0"


async def take_over_lost(
    redis: aioredis.Redis,
    keys: KeySchema,
    me: str,
    *,
    lost_after_s: float,
    retention_s: int,
    clock: Callable[[], float],
) -> dict[str, list[str]]:
    """Close the books of instances whose heartbeat stopped more than ``lost_after_s`` ago.

    For each lost instance (not ``me``), the survivor that wins a short lease ends its in-progress calls with
    outcome ``instance-lost`` (:func:`reconcile`; the approval sweeper then abandons their pending approvals)
    and drops the instance's call set. Survivors racing each other end every call exactly once: the lease
    keeps them apart, and each call's end re-checks the record. Returns ``{instance: [sids ended]}``.
    """
    now = clock()
    stale = await redis.zrangebyscore(keys.instances(), "-inf", f"({now - lost_after_s}")
    result: dict[str, list[str]] = {}
    for iid in stale:
        if iid == me or not await redis.exists(keys.instance_calls(iid)):
            continue
        lease = keys.instance_takeover(iid)
        if not await redis.set(lease, me, nx=True, ex=max(int(lost_after_s * 2), 10)):
            continue  # another survivor is on it
        try:
            # Re-check under the lease: the instance may have come back since the first look.
            score = await redis.zscore(keys.instances(), iid)
            if score is None or score >= clock() - lost_after_s:
                continue
            ended = await reconcile(
                redis,
                keys,
                iid,
                set(),
                retention_s=retention_s,
                clock=clock,
                outcome=LOST_OUTCOME,
                by=me,
                # It died before its next beat was due: its calls started before then. A newer run with the
                # same id (restarted meanwhile, not beating yet) started its calls later: they are live.
                started_before=score + min(HEARTBEAT_INTERVAL_S, lost_after_s / 3) + _CLOCK_SLACK_S,
            )
            if ended:
                result[iid] = ended
                log.warning(
                    "instance %s stopped its heartbeat; %d of its call(s) marked ended (%s)",
                    iid,
                    len(ended),
                    LOST_OUTCOME,
                )
        finally:
            await redis.eval(_RELEASE_LEASE, 1, lease, me)  # only if still ours
    return result
