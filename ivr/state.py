"""The app's shared Redis-backed services, started and stopped with the app.

With no ``REDIS_URL`` an embedded valkey-server is started (non-persistent; its URL is logged so
``ivr approvals`` can reach it). Redis being down never stops a call: call-state writes go through the
:class:`~ivr.store.writer.ResilientWriter`, which retries and flushes in order when Redis returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from .approvals.gate import ApprovalGate
from .approvals.listener import ApprovalListener
from .approvals.store import ApprovalStore
from .call.registry import CallRecord, EventSink
from .settings import Settings
from .store.embedded import EmbeddedRedis, ensure_redis
from .store.keys import KeySchema
from .store.store import CallStore, default_instance_id
from .store.writer import ResilientWriter

log = logging.getLogger("ivr.state")

#: redis-py on Python 3.11 can swallow cancellation mid-command; socket timeouts keep a silent Redis from
#: hanging anything, and they must exceed the longest blocking read (XREAD BLOCK of the event feed).
SOCKET_TIMEOUT_S = 5.0


class RedisServices:
    """Redis client, key schema, call store, approvals; one per app instance."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        self.instance_id = settings.instance_id or default_instance_id(port)
        self.keys = KeySchema(settings.redis_prefix)
        self.url = ""
        self.embedded: EmbeddedRedis | None = None
        self.redis: aioredis.Redis | None = None
        self.writer: ResilientWriter | None = None
        self.calls: CallStore | None = None
        self.approvals: ApprovalStore | None = None
        self.listener: ApprovalListener | None = None
        self.gate: ApprovalGate | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.url, self.embedded = await ensure_redis(self.settings.redis_url)
        retention_s = int(self.settings.retention_days * 86400)
        self.redis = aioredis.Redis.from_url(
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
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="redis-housekeeping"))
        log.info(
            "state in Redis at %s (prefix %r, instance %s)",
            _safe(self.url),
            self.keys.prefix,
            self.instance_id,
        )

    async def _housekeeping(self) -> None:
        """Reconcile calls an earlier run of this instance left open, then heartbeat (retried while down)."""
        assert self.calls is not None and self.approvals is not None
        reconciled = False
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
                await self.calls.heartbeat()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("Redis housekeeping failed (%s); retrying", exc)
            await asyncio.sleep(10.0)

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
                    calls.transcript(sid, data.get("role", ""), data.get("text", ""), event["ts"])
                elif kind == "model.fallback":
                    calls.call_updated(sid, {"engine": record.engine, "audio_mode": record.audio_mode})
                calls.event(sid, kind, data)

        return sink

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.listener is not None:
            await self.listener.stop()
        if self.writer is not None and not await self.writer.stop(5.0):
            log.error("Redis writes not flushed at shutdown: %s", self.writer.counters())
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def _safe(url: str) -> str:
    """A Redis URL without its password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
