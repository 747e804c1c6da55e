"""The app's shared Redis-backed services, started and stopped with the app.

With no ``REDIS_URL`` an embedded valkey-server is started (non-persistent; its URL is logged so
``ivr approvals`` can reach it). Redis being down never stops a call: call-state writes go through the
:class:`~ivr.store.writer.ResilientWriter`, which retries and flushes in order when Redis returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from . import __version__
from .approvals.gate import ApprovalGate
from .approvals.listener import ApprovalListener
from .approvals.store import ApprovalStore
from .approvals.sweeper import ApprovalSweeper
from .call.meter import LIVE_TURNS
from .call.registry import CallRecord, EventSink
from .console.commands import CommandHandler, CommandListener
from .console.operators import OperatorStore
from .settings import Settings
from .store.client import describe_redis_url, open_redis
from .store.embedded import EmbeddedRedis, ensure_redis
from .store.indexes import HEARTBEAT_INTERVAL_S
from .store.keys import KeySchema
from .store.store import CallStore, default_instance_id
from .store.writer import ResilientWriter

log = logging.getLogger("ivr.state")

#: redis-py on Python 3.11 can swallow cancellation mid-command; socket timeouts keep a silent Redis from
#: hanging anything, and they must exceed the longest blocking read (XREAD BLOCK of the event feed).
SOCKET_TIMEOUT_S = 5.0


class RedisServices:
    """Redis client, key schema, call store, approvals; one per app instance."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        on_command: CommandHandler | None = None,
    ) -> None:
        self.settings = settings
        #: The app's figures for the heartbeat (live calls, draining, error counters); see instance_stats.
        self.stats = stats
        #: Acts on an operator command for a call of this instance (hang up, transfer).
        self.on_command = on_command
        self.commands: CommandListener | None = None
        self._beat_now = asyncio.Event()
        self.instance_id = settings.instance_id or default_instance_id(port)
        # Hash tags on a Redis Cluster URL (every call's keys in one slot), today's key names otherwise.
        self.keys = KeySchema.for_url(settings.redis_url, settings.redis_prefix)
        self.url = ""
        self.embedded: EmbeddedRedis | None = None
        self.redis: aioredis.Redis | None = None
        self.writer: ResilientWriter | None = None
        self.calls: CallStore | None = None
        self.approvals: ApprovalStore | None = None
        self.listener: ApprovalListener | None = None
        self.gate: ApprovalGate | None = None
        self.sweeper: ApprovalSweeper | None = None
        self.operators: OperatorStore | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.url, self.embedded = await ensure_redis(self.settings.redis_url)
        retention_s = int(self.settings.retention_days * 86400)
        self.redis = open_redis(
            self.url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=15,
        )
        self.writer = ResilientWriter(self.redis)
        self.writer.start()
        self.calls = CallStore(
            self.redis, self.keys, instance_id=self.instance_id, retention_s=retention_s, writer=self.writer
        )
        self.approvals = ApprovalStore(self.redis, self.keys, retention_s=retention_s)
        self.listener = ApprovalListener(self.redis, self.keys, store=self.approvals)
        self.listener.start()
        self.gate = ApprovalGate(self.approvals, self.listener, instance_id=self.instance_id)
        # Expires overdue approvals and abandons those of ended calls while we run (one instance at a time).
        self.sweeper = ApprovalSweeper(self.approvals, instance_id=self.instance_id)
        self.sweeper.start()
        self.operators = OperatorStore(self.redis, self.keys, bootstrap_token=self.settings.operator_token)
        if self.on_command is not None:
            self.commands = CommandListener(self.redis, self.keys, self.instance_id, self.on_command)
            self.commands.start()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="redis-housekeeping"))
        log.info(
            "state in Redis at %s (prefix %r, instance %s)",
            _safe(self.url),
            self.keys.prefix,
            self.instance_id,
        )

    async def _housekeeping(self) -> None:
        """Reconcile calls an earlier run of this instance left open, then heartbeat and take over the calls
        of lost peers (``IVR_INSTANCE_LOST_AFTER``), retried while Redis is down."""
        assert self.calls is not None and self.approvals is not None
        reconciled = False
        beating_since: float | None = None  # monotonic time of the first heartbeat of an unbroken run
        while True:
            try:
                if not reconciled:
                    orphans = await self.calls.reconcile(set())
                    expired = await self.approvals.expire_overdue()
                    reconciled = True
                    if orphans or expired:
                        log.info(
                            "reconciled %d call(s) left open by a previous run; expired %d approval(s)",
                            len(orphans),
                            len(expired),
                        )
                await self.calls.heartbeat(self.instance_stats())
                now = time.monotonic()
                beating_since = now if beating_since is None else beating_since
                # Only an instance whose own heartbeats have gone through for a whole IVR_INSTANCE_LOST_AFTER
                # may call a peer lost: after a Redis outage every heartbeat is stale, and the peers need
                # that long to beat again before anyone may judge them.
                if now - beating_since >= self.settings.instance_lost_after_s:
                    taken = await self.calls.take_over_lost(self.settings.instance_lost_after_s)
                    # Their undecided approvals close now, not at the sweeper's next pass (it stays the
                    # backstop should this instance die between the two steps; abandoning is idempotent).
                    for sid in (sid for sids in taken.values() for sid in sids):
                        await self.approvals.abandon_call(sid, instance_id=self.instance_id)
            except (aioredis.RedisError, OSError) as exc:
                beating_since = None
                log.warning("Redis housekeeping failed (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.heartbeat_interval_s)
            self._beat_now.clear()

    @property
    def heartbeat_interval_s(self) -> float:
        """Seconds between heartbeats (and looks for lost peers): a third of ``IVR_INSTANCE_LOST_AFTER``,
        at most :data:`HEARTBEAT_INTERVAL_S`, so a live instance is never taken for lost."""
        return min(HEARTBEAT_INTERVAL_S, self.settings.instance_lost_after_s / 3)

    def beat_now(self) -> None:
        """Send the next heartbeat at once (draining started: the fleet page should say so now)."""
        self._beat_now.set()

    def instance_stats(self) -> dict[str, Any]:
        """What the heartbeat carries beside the instance's identity (docs/redis.md, ``ivr:instance:{iid}``):
        the app's figures plus the Redis writer's backlog, drops and failures. Never raises."""
        stats: dict[str, Any] = {}
        if self.stats is not None:
            try:
                stats.update(self.stats())
            except Exception:  # the heartbeat must go out even if a figure cannot be computed
                log.exception("could not compute the instance's figures for the heartbeat")
        if self.writer is not None:
            counters = self.writer.counters()
            stats.update(
                writer_backlog=counters["pending"],
                writer_dropped=counters["dropped"],
                writer_failures=counters["failed"],
                writer_retries=counters["retries"],
                redis_down=counters["redis_down"],
            )
        if self.commands is not None:
            errors = stats.get("errors")
            stats["errors"] = {**(errors if isinstance(errors, dict) else {})}
            stats["errors"]["malformed_commands"] = self.commands.malformed
        stats.setdefault("version", __version__)
        return stats

    def sink(self, record: CallRecord) -> EventSink:
        """Where a call's events go: the call hash, transcript and event streams, the global stream."""
        calls = self.calls
        assert calls is not None

        def sink(event: dict[str, Any]) -> None:
            kind, sid = event["type"], event["call_sid"]
            data = {k: v for k, v in event.items() if k not in ("type", "ts", "call_sid")}
            if kind == "call.started":
                calls.call_started(record.summary())
            elif kind == "call.ended":
                calls.call_ended(sid, record.summary())
            else:
                if kind == "transcript":
                    extra = {k: v for k, v in data.items() if k not in ("role", "text")}
                    calls.transcript(sid, data.get("role", ""), data.get("text", ""), event["ts"], extra)
                elif kind == "model.fallback":
                    calls.call_updated(sid, {"engine": record.engine, "audio_mode": record.audio_mode})
                elif kind == "stage.changed":  # the console's live board and call header read the hash
                    calls.call_updated(sid, {"stage": record.stage})
                elif kind == "turn.latency":  # once per turn, just after the frame (ivr/call/meter.py)
                    if data.get("kind") == "greeting":
                        calls.call_updated(sid, {"greeting_ms": record.greeting_ms})
                    else:  # the latest few while the call runs; all of them (≤ MAX_TURNS) at call.ended
                        calls.call_updated(sid, {"turns": record.turns[-LIVE_TURNS:]})
                elif kind == "usage.updated":
                    calls.call_updated(sid, {"usage": record.usage, "cost_usd": record.cost_usd})
                calls.event(sid, kind, data)

        return sink

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.listener is not None:
            await self.listener.stop()
        if self.commands is not None:
            await self.commands.stop()
        if self.writer is not None and not await self.writer.stop(5.0):
            log.error("Redis writes not flushed at shutdown: %s", self.writer.counters())
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def _safe(url: str) -> str:
    """A Redis URL without its passwords (a Sentinel URL as its sentinels and service)."""
    return describe_redis_url(url)
