"""One Redis pub/sub subscription per instance, kept alive across Redis outages.

Why shared: the approval listener (:mod:`ivr.approvals.listener`) and the call-command listener
(:mod:`ivr.console.commands`) each hold one subscription to one channel, resubscribe with backoff after an
error, and let start-up checks, health and tests wait for the subscription and for their counters. Every
``subscribe`` confirmation counts as a (re)subscription — redis-py also resubscribes on its own after a
reconnect — so a subclass can re-read what it may have missed while it was not listening.

On Redis Cluster the subscription is sharded (``SSUBSCRIBE``, read with ``get_sharded_message``): classic
pub/sub there reaches only the subscribers of the node a message was published on, while a shard channel
lives on the node of its hash slot, where the publishers (``SPUBLISH``, also from the approval scripts) send
it, and the publisher learns the exact number of receivers. An ``ssubscribe`` confirmation counts as a
(re)subscription the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Self

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ivr.store.client import is_cluster

__all__ = ["BACKOFF_MAX_S", "BACKOFF_START_S", "CONNECTION_ERRORS", "ChannelListener"]

BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 2.0
#: What a lost or unreachable Redis raises.
CONNECTION_ERRORS = (RedisError, OSError, asyncio.IncompleteReadError)
#: How long one sharded read waits before polling again (``get_sharded_message`` takes no "forever").
_SHARDED_POLL_S = 1.0


class ChannelListener:
    """Subscribes to ``channel`` and hands each message to :meth:`_on_message`.

    ``start()`` once, ``stop()`` at shutdown. ``what`` names the listener in its task name
    (``{what}-listener``) and log lines; ``log`` is the subclass's logger. Subclasses implement
    :meth:`_on_message` and may override :meth:`_on_subscribed`; tasks they start for messages go in
    :attr:`_helpers`, so that ``stop()`` cancels them too.
    """

    def __init__(self, redis: aioredis.Redis, channel: str, *, what: str, log: logging.Logger) -> None:
        self._redis = redis
        self._channel = channel
        #: Sharded pub/sub (SSUBSCRIBE): on a Redis Cluster client.
        self.sharded = is_cluster(redis)
        self._what = what
        self._log = log
        self._task: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self._changed = asyncio.Condition()
        #: Times the subscription was (re)established; the first one counts too.
        self.subscriptions = 0
        #: Connection losses seen by the listener.
        self.disconnects = 0

    def start(self) -> None:
        """Start the subscription task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"{self._what}-listener")

    async def stop(self) -> None:
        """Stop listening; the subscription task and the helper tasks still running are cancelled."""
        tasks = [t for t in (self._task, *self._helpers) if t is not None]
        self._task = None
        while tasks:  # on Python 3.11 redis-py can swallow a cancellation: cancel until done
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

    async def wait_until(self, predicate: Callable[[Self], bool], timeout: float | None = None) -> None:
        """Wait until ``predicate(self)`` holds, re-tested whenever a counter changes, e.g.
        ``lambda l: l.subscriptions >= 2`` (resubscribed after an outage). For health checks and tests."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _on_subscribed(self) -> None:
        """The subscription was (re)established; messages published meanwhile were lost."""

    async def _on_message(self, data: object) -> None:
        """One message published on the channel."""
        raise NotImplementedError

    async def _run(self) -> None:
        delay = BACKOFF_START_S
        while True:
            pubsub: Any = self._redis.pubsub()
            try:
                if self.sharded:
                    await pubsub.ssubscribe(self._channel)
                else:
                    await pubsub.subscribe(self._channel)
                while True:
                    if self.sharded:
                        message = await pubsub.get_sharded_message(timeout=_SHARDED_POLL_S)
                    else:
                        message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind in ("subscribe", "ssubscribe"):  # also after redis-py reconnects on its own
                        self.subscriptions += 1
                        self._subscribed.set()
                        delay = BACKOFF_START_S
                        self._on_subscribed()
                        await self._notify()
                    elif kind in ("message", "smessage"):
                        await self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                self._subscribed.clear()
                self.disconnects += 1
                self._log.warning("%s subscription lost (%s); reconnecting in %.2f s", self._what, exc, delay)
            except Exception:
                self._subscribed.clear()
                self.disconnects += 1
                self._log.exception("%s listener failed; resubscribing in %.2f s", self._what, delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)  # backoff before reconnecting to an unreachable Redis
            delay = min(delay * 2, BACKOFF_MAX_S)
