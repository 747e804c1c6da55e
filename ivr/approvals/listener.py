"""Bring operator decisions to the calls waiting for them, over Redis pub/sub.

One listener per app instance holds one subscription to the approval channel; each waiting call registers a
future for its approval id. A decision is stored first and published second (in the same server-side
script), so the listener can close every gap by reading the record:

* after (re)subscribing — a decision made before the subscription existed is already in the hash;
* when a ``wait`` starts — the decision may have landed before the caller started waiting;
* at the deadline — ``expire`` is refused for a request that was decided in the meantime, and returns it.

Pub/sub messages published while the connection is down are lost, so every (re)subscription — our own
reconnect after an error, or one redis-py performs internally — re-reads the status of every awaited id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivr.approvals.store import (
    EXPIRED_NOTE,
    TIMEOUT_OPERATOR,
    Approval,
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    ApprovalStore,
)
from ivr.store.keys import KeySchema

__all__ = ["ApprovalListener"]

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 2.0
#: How long ``wait`` keeps trying to store an expiry while Redis is unreachable before giving up locally.
_EXPIRE_RETRY_S = 3.0
_CONNECTION_ERRORS = (RedisError, OSError, asyncio.IncompleteReadError)


class ApprovalListener:
    """Waits for decisions on behalf of calls. ``start()`` once, ``wait()`` per request, ``stop()`` last."""

    def __init__(self, redis: aioredis.Redis, keys: KeySchema, *, store: ApprovalStore | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self.store = store if store is not None else ApprovalStore(redis, keys)
        self._channel = keys.approval_channel()
        self._waiters: dict[str, set[asyncio.Future[Approval]]] = {}
        self._subscribed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        #: Times the subscription was (re)established; the first one counts too.
        self.subscriptions = 0
        #: Connection losses seen by the listener.
        self.disconnects = 0
        #: Decisions delivered to waiters by a pub/sub message (as opposed to a re-read of the record).
        self.delivered_by_message = 0
        #: Decisions delivered by re-reading records (after a (re)subscription or when a wait starts).
        self.delivered_by_check = 0
        #: Waits that have done their first read of the record and now wait for a message.
        self.initial_checks = 0

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the subscription task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="approval-listener")

    async def stop(self) -> None:
        """Stop listening. Calls still waiting fall back to their deadlines."""
        tasks = [t for t in (self._task, *self._helpers) if t is not None]
        self._task = None
        # Cancel until done: on Python 3.11 redis-py can swallow a cancellation (see _wait).
        while tasks:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.5)
            tasks = [task for task in tasks if not task.done()]
        self._subscribed.clear()

    @property
    def connected(self) -> bool:
        """True while the subscription is established."""
        return self._subscribed.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the subscription is established (for start-up checks and tests)."""
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()

    async def wait_until(
        self, predicate: Callable[[ApprovalListener], bool], timeout: float | None = None
    ) -> None:
        """Wait until ``predicate(self)`` holds, re-tested whenever a counter changes, e.g.
        ``lambda l: l.subscriptions >= 2`` (resubscribed after an outage). For health checks and tests."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def awaited(self) -> frozenset[str]:
        """Ids some call is waiting for right now."""
        return frozenset(self._waiters)

    # -- waiting -------------------------------------------------------------------------------------------
    def wait(
        self, aid: str, deadline: float, *, fallback: Approval | None = None
    ) -> Coroutine[Any, Any, Approval]:
        """Await the decided record of ``aid``, or at ``deadline`` (Unix seconds) the expired one.

        The waiter is registered when this is called (not when the result is first awaited), so a
        decision published right after the call is not missed. When the request cannot be expired in
        Redis (the record is gone, or Redis stays unreachable) and a ``fallback`` record is given, an
        expired copy of it is returned so the call can go on, denied.
        """
        if self._task is None:
            raise RuntimeError("ApprovalListener.wait() before start()")
        future: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(aid, set()).add(future)
        return self._wait(aid, deadline, future, fallback)

    async def _wait(
        self, aid: str, deadline: float, future: asyncio.Future[Approval], fallback: Approval | None
    ) -> Approval:
        # The deadline is enforced with asyncio.wait, which cancels nothing: on Python 3.11 a cancellation
        # that lands while redis-py writes a command (inside asyncio.wait_for) can be swallowed, so a
        # timeout that works by cancelling a Redis call could be lost and leave the call waiting forever.
        try:
            self._spawn(self._initial_check(aid))
            remaining = deadline - time.time()
            if remaining > 0 and not future.done():
                await asyncio.wait({future}, timeout=remaining)
            if future.done():
                return future.result()
            return await self._expire(aid, fallback)
        finally:
            waiters = self._waiters.get(aid)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[aid]

    async def _initial_check(self, aid: str) -> None:
        """Once subscribed, read the record: the decision may have landed before the wait began."""
        await self._subscribed.wait()
        try:
            record = await self.store.get(aid)
        except _CONNECTION_ERRORS:
            record = None  # the re-read after resubscribing covers it
        if record is not None and record.decided and self._resolve(record):
            self.delivered_by_check += 1
        self.initial_checks += 1
        await self._notify()

    async def _expire(self, aid: str, fallback: Approval | None) -> Approval:
        give_up = time.monotonic() + _EXPIRE_RETRY_S
        delay = _BACKOFF_START_S
        while True:
            try:
                return await self.store.expire(aid)
            except ApprovalAlreadyDecided as exc:
                return exc.approval
            except ApprovalNotFound:
                if fallback is None:
                    raise
                log.error("approval %s vanished from Redis before its deadline; treating it as expired", aid)
                return self._expired_copy(fallback)
            except _CONNECTION_ERRORS as exc:
                if time.monotonic() >= give_up:
                    if fallback is None:
                        raise
                    log.error(
                        "could not store the expiry of approval %s (Redis: %s); the call treats it as "
                        "expired, and a late decision will be refused because its deadline has passed",
                        aid,
                        exc,
                    )
                    return self._expired_copy(fallback)
                await asyncio.sleep(delay)  # backoff while Redis is unreachable
                delay = min(delay * 2, _BACKOFF_MAX_S)

    @staticmethod
    def _expired_copy(approval: Approval) -> Approval:
        return replace(
            approval,
            status="expired",
            decided_by=TIMEOUT_OPERATOR,
            decided_at=time.time(),
            note=EXPIRED_NOTE,
        )

    def _resolve(self, approval: Approval) -> bool:
        delivered = False
        for future in self._waiters.get(approval.id, ()):
            if not future.done():
                future.set_result(approval)
                delivered = True
        return delivered

    # -- the subscription ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = _BACKOFF_START_S
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Also seen when redis-py reconnects and resubscribes on its own.
                        self.subscriptions += 1
                        self._subscribed.set()
                        delay = _BACKOFF_START_S
                        self._spawn(self._recheck())
                        await self._notify()
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except _CONNECTION_ERRORS as exc:
                self._subscribed.clear()
                self.disconnects += 1
                log.warning("approval subscription lost (%s); reconnecting in %.2f s", exc, delay)
            except Exception:
                self._subscribed.clear()
                self.disconnects += 1
                log.exception("approval listener failed; resubscribing in %.2f s", delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)  # backoff before reconnecting to an unreachable Redis
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _on_message(self, data: object) -> None:
        try:
            payload = json.loads(data) if isinstance(data, str | bytes) else None
            aid = payload.get("id") if isinstance(payload, dict) else None
        except ValueError:
            aid = None
        if not isinstance(aid, str):
            log.warning("ignoring a malformed message on %s", self._channel)
            return
        if aid in self._waiters:
            self._spawn(self._fetch(aid))

    async def _fetch(self, aid: str) -> None:
        """Read the decided record and hand it to the waiters; retry while Redis hiccups."""
        delay = _BACKOFF_START_S
        while aid in self._waiters:
            try:
                record = await self.store.get(aid)
            except _CONNECTION_ERRORS:
                await asyncio.sleep(delay)  # backoff; the re-read after resubscribing may also deliver it
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            if record is not None and record.decided and self._resolve(record):
                self.delivered_by_message += 1
            return

    async def _recheck(self) -> None:
        """Re-read every awaited record: decisions published while we were not subscribed are not lost."""
        delay = _BACKOFF_START_S
        while True:
            ids = list(self._waiters)
            if not ids:
                return
            try:
                records = await self.store.get_many(ids)
                break
            except _CONNECTION_ERRORS as exc:
                log.warning("could not re-read awaited approvals after subscribing (%s); retrying", exc)
                await asyncio.sleep(delay)  # backoff while Redis is unreachable
                delay = min(delay * 2, _BACKOFF_MAX_S)
        for record in records:
            if record is not None and record.decided and self._resolve(record):
                self.delivered_by_check += 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helper_done)

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        self._helpers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("approval listener helper failed", exc_info=task.exception())
