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
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from ivr.approvals.store import (
    EXPIRED_NOTE,
    TIMEOUT_OPERATOR,
    Approval,
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    ApprovalStore,
)
from ivr.store.keys import KeySchema
from ivr.store.subscription import BACKOFF_MAX_S, BACKOFF_START_S, CONNECTION_ERRORS, ChannelListener

__all__ = ["ApprovalListener"]

log = logging.getLogger(__name__)

#: How long ``wait`` keeps trying to store an expiry while Redis is unreachable before giving up locally.
_EXPIRE_RETRY_S = 3.0


class ApprovalListener(ChannelListener):
    """Waits for decisions on behalf of calls. ``start()`` once, ``wait()`` per request, ``stop()`` last.

    ``stop()`` leaves the calls still waiting to their deadlines. The subscription (and its resubscribing
    after Redis errors) is :class:`~ivr.store.subscription.ChannelListener`'s.
    """

    def __init__(self, redis: aioredis.Redis, keys: KeySchema, *, store: ApprovalStore | None = None) -> None:
        super().__init__(redis, keys.approval_channel(), what="approval", log=log)
        self._keys = keys
        self.store = store if store is not None else ApprovalStore(redis, keys)
        self._waiters: dict[str, set[asyncio.Future[Approval]]] = {}
        #: Decisions delivered to waiters by a pub/sub message (as opposed to a re-read of the record).
        self.delivered_by_message = 0
        #: Decisions delivered by re-reading records (after a (re)subscription or when a wait starts).
        self.delivered_by_check = 0
        #: Waits that have done their first read of the record and now wait for a message.
        self.initial_checks = 0

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
        except CONNECTION_ERRORS:
            record = None  # the re-read after resubscribing covers it
        if record is not None and record.decided and self._resolve(record):
            self.delivered_by_check += 1
        self.initial_checks += 1
        await self._notify()

    async def _expire(self, aid: str, fallback: Approval | None) -> Approval:
        give_up = time.monotonic() + _EXPIRE_RETRY_S
        delay = BACKOFF_START_S
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
            except CONNECTION_ERRORS as exc:
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
                delay = min(delay * 2, BACKOFF_MAX_S)

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
    def _on_subscribed(self) -> None:
        self._spawn(self._recheck())

    async def _on_message(self, data: object) -> None:
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
        delay = BACKOFF_START_S
        while aid in self._waiters:
            try:
                record = await self.store.get(aid)
            except CONNECTION_ERRORS:
                await asyncio.sleep(delay)  # backoff; the re-read after resubscribing may also deliver it
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if record is not None and record.decided and self._resolve(record):
                self.delivered_by_message += 1
            return

    async def _recheck(self) -> None:
        """Re-read every awaited record: decisions published while we were not subscribed are not lost."""
        delay = BACKOFF_START_S
        while True:
            ids = list(self._waiters)
            if not ids:
                return
            try:
                records = await self.store.get_many(ids)
                break
            except CONNECTION_ERRORS as exc:
                log.warning("could not re-read awaited approvals after subscribing (%s); retrying", exc)
                await asyncio.sleep(delay)  # backoff while Redis is unreachable
                delay = min(delay * 2, BACKOFF_MAX_S)
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
