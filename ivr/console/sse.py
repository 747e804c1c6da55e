"""Server-sent events from Redis streams: one reader per stream per instance, fanned out to every browser.

Why a hub: twenty operators watching the live board must not mean twenty blocking ``XREAD``s on the global
``events`` stream, nor twenty renderings of the same event. So each stream key has one reader task (on a
Redis client of its own, because a blocking read must not hold a connection of the shared client, whose
socket timeout is shorter than a useful block), which hands every entry to the bounded queue of each
subscriber. A subscriber that cannot keep up (its queue is full) is dropped, never allowed to grow memory; its
browser reconnects with ``Last-Event-ID`` and catches up from Redis. The reader stops when its last
subscriber leaves.

Exactness: a subscriber first joins the topic, *then* replays the stream after its resume id with ``XRANGE``,
and finally takes live entries from its queue, skipping those it already replayed. Because the reader's
start position is fixed before any subscriber's replay, nothing falls between the replay and the live part,
and nothing is sent twice: Redis stream ids are totally ordered, so "after id X" is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["RESYNC", "SseHub", "StreamEntry", "format_comment", "format_event", "parse_stream_id"]

log = logging.getLogger("ivr.console.sse")

_STREAM_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")


@dataclass(slots=True)
class StreamEntry:
    """One entry of a stream (or one tick of a ticker), shared by every subscriber that receives it."""

    id: str
    fields: dict[str, str]
    #: What the topic's ``prepare`` made of the entry (read once per instance, not once per browser).
    prepared: Any = None
    #: Rendered messages by variant (e.g. role), so each variant is rendered once per entry.
    rendered: dict[str, str] = field(default_factory=dict)


#: Yielded instead of entries when the subscriber is too far behind to replay: the page should reload.
RESYNC = StreamEntry("", {})

Prepare = Callable[[StreamEntry], Awaitable[Any]]


def parse_stream_id(value: str) -> tuple[int, int]:
    """``"1767225600125-3"`` → ``(1767225600125, 3)``; raises ValueError for anything else."""
    match = _STREAM_ID.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a Redis stream id (like 1767225600125-0)")
    return int(match.group(1)), int(match.group(2) or 0)


def format_event(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE message; every line of ``data`` gets its own ``data:`` field (so HTML may span lines)."""
    parts: list[str] = []
    if id:
        parts.append(f"id: {id}\n")
    if event:
        parts.append(f"event: {event}\n")
    for line in data.splitlines() or ([""] if data else []):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def format_comment(text: str = "keep-alive") -> bytes:
    """An SSE comment: keeps proxies from closing an idle connection; browsers ignore it."""
    return f": {text}\n\n".encode()


class _Subscriber:
    __slots__ = ("dropped", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[StreamEntry] = asyncio.Queue(maxsize=size)
        self.dropped = False

    def offer(self, entry: StreamEntry) -> bool:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True


class _Topic:
    def __init__(self, key: str, prepare: Prepare | None, interval_s: float | None = None) -> None:
        self.key = key
        self.prepare = prepare
        self.interval_s = interval_s  # set for tickers
        self.subscribers: set[_Subscriber] = set()
        self.cursor = "0-0"
        self.started = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.latest: StreamEntry | None = None  # tickers: the last value, handed to new subscribers


class SseHub:
    """Fan-out of Redis streams (and periodic tickers) to many SSE subscribers, one reader per topic.

    ``connect`` makes the hub's own Redis client, lazily, on the first subscriber. ``block_ms`` bounds how
    long a reader blocks in ``XREAD`` (and so how long an idle reader lingers after its last subscriber left,
    and how long :meth:`close` waits); keep it below the client's socket timeout.
    """

    def __init__(
        self,
        connect: Callable[[], aioredis.Redis],
        *,
        queue_size: int = 256,
        block_ms: int = 1000,
        replay_limit: int = 2000,
        idle_tick_s: float = 1.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size} must be at least 1")
        self._connect = connect
        self._redis: aioredis.Redis | None = None
        self.queue_size = queue_size
        self.block_ms = block_ms
        self.replay_limit = replay_limit
        self.idle_tick_s = idle_tick_s
        self._topics: dict[str, _Topic] = {}
        self._closed = False
        self.dropped = 0  # subscribers dropped for being too slow (diagnostics, tests)

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def readers(self) -> dict[str, int]:
        """Topics being read now and their subscriber counts (for tests and diagnostics)."""
        return {key: len(t.subscribers) for key, t in self._topics.items() if t.task and not t.task.done()}

    async def follow(
        self, key: str, after: str | None, prepare: Prepare | None = None
    ) -> AsyncIterator[StreamEntry | None]:
        """Entries of stream ``key`` strictly after ``after`` (``None`` or ``"$"``: from now), then live.

        Yields ``None`` after each idle ``idle_tick_s`` (so the caller can send heart-beats and notice a
        shutdown), :data:`RESYNC` once if more than ``replay_limit`` entries would have to be replayed, and
        ends when the hub closes or this subscriber is dropped for being slow.
        """
        async for batch in self.follow_batches(key, after, prepare):
            if batch is None:
                yield None
                continue
            for entry in batch:
                yield entry

    async def follow_batches(
        self, key: str, after: str | None, prepare: Prepare | None = None
    ) -> AsyncIterator[list[StreamEntry] | None]:
        """Like :meth:`follow`, but every entry already waiting comes in one list.

        What a server-sent-event response wants: one socket write per batch rather than per entry, which is
        most of what following a busy stream costs when many browsers do it.

        The first batch comes as soon as the subscriber has joined and read the first page of its replay,
        even when that page is empty (``[]``): awaiting it is how a caller learns, before it answers its
        client, that Redis could be read (a Redis error raises there, with the subscriber already gone).
        """
        if after not in (None, "$"):
            parse_stream_id(after)
        sub, topic = await self._join(key, prepare, None)
        try:
            redis = self._client()
            if after in (None, "$"):
                after = topic.cursor
            last = parse_stream_id(after)
            start = "(" + after
            replayed = 0
            first = True
            while True:
                page = await redis.xrange(key, min=start, max="+", count=500)
                replayed += len(page)
                if replayed > self.replay_limit:
                    yield [RESYNC]
                    return
                batch = []
                for entry_id, fields in page:
                    entry = StreamEntry(entry_id, fields)
                    await self._prepare(topic, entry)
                    batch.append(entry)
                if page:
                    last = parse_stream_id(page[-1][0])
                if batch or first:
                    yield batch
                first = False
                if len(page) < 500:
                    break
                start = "(" + page[-1][0]
            async for live in self._drain(sub):
                if live is not None:
                    live = [entry for entry in live if parse_stream_id(entry.id) > last]  # not replayed
                    if not live:
                        continue
                yield live
        finally:
            self._leave(topic, sub)

    async def tick(self, name: str, interval_s: float, produce: Prepare) -> AsyncIterator[StreamEntry | None]:
        """A periodic value (``produce`` run once per ``interval_s`` for all subscribers), latest first."""
        sub, topic = await self._join("tick:" + name, produce, interval_s)
        try:
            if topic.latest is not None:
                yield topic.latest
            async for batch in self._drain(sub):
                if batch is None:
                    yield None
                else:
                    yield batch[-1]  # only the latest value matters
        finally:
            self._leave(topic, sub)

    async def close(self) -> None:
        """Stop every reader and close the hub's Redis client; subscribers end at their next tick."""
        self._closed = True
        tasks = [t.task for t in self._topics.values() if t.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.block_ms / 1000 + 2.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._topics.clear()
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    # -- internals -------------------------------------------------------------------------------------------
    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = self._connect()
        return self._redis

    async def _join(
        self, key: str, prepare: Prepare | None, interval_s: float | None
    ) -> tuple[_Subscriber, _Topic]:
        if self._closed:
            raise RuntimeError("the console's event hub is closed (the server is shutting down)")
        sub = _Subscriber(self.queue_size)
        topic = self._topics.get(key)
        if topic is None:
            topic = _Topic(key, prepare, interval_s)
            self._topics[key] = topic
            topic.subscribers.add(sub)
            try:
                if interval_s is None:
                    # Fix the reader's start before anyone replays: nothing can then fall in between.
                    newest = await self._client().xrevrange(key, "+", "-", count=1)
                    topic.cursor = newest[0][0] if newest else "0-0"
            except BaseException:
                topic.subscribers.discard(sub)
                if self._topics.get(key) is topic:
                    del self._topics[key]
                topic.started.set()
                raise
            runner = self._run_ticker(topic) if interval_s is not None else self._run_reader(topic)
            topic.task = asyncio.create_task(runner, name=f"sse-hub:{key}")
            topic.started.set()
        else:
            topic.subscribers.add(sub)
            try:
                await topic.started.wait()
            except BaseException:  # cancelled (the browser left) before it joined: leave no trace
                topic.subscribers.discard(sub)
                raise
        return sub, topic

    def _leave(self, topic: _Topic, sub: _Subscriber) -> None:
        topic.subscribers.discard(sub)
        # The reader notices an empty topic after its current XREAD and removes it then.

    async def _drain(self, sub: _Subscriber) -> AsyncIterator[list[StreamEntry] | None]:
        """Everything queued for ``sub`` as one list (waiting for the first entry), or None when idle."""
        queue = sub.queue
        while not self._closed and not sub.dropped:
            if queue.empty():
                try:
                    first = await asyncio.wait_for(queue.get(), self.idle_tick_s)
                except TimeoutError:
                    yield None
                    continue
            else:
                first = queue.get_nowait()
            batch = [first]
            while not queue.empty():
                batch.append(queue.get_nowait())
            if sub.dropped:
                break
            yield batch
        if sub.dropped:
            log.info("an SSE subscriber fell %d entries behind and was dropped", self.queue_size)

    def _publish(self, topic: _Topic, entry: StreamEntry) -> None:
        for sub in list(topic.subscribers):
            if not sub.offer(entry):
                topic.subscribers.discard(sub)
                self.dropped += 1

    def _retire(self, topic: _Topic) -> bool:
        """True (and the topic forgotten) when nobody follows it any more. No await: no race with _join."""
        if topic.subscribers and not self._closed:
            return False
        if self._topics.get(topic.key) is topic:
            del self._topics[topic.key]
        return True

    async def _prepare(self, topic: _Topic, entry: StreamEntry) -> None:
        if topic.prepare is None:
            return
        try:
            entry.prepared = await topic.prepare(entry)
        except (RedisError, OSError) as exc:
            log.warning("could not enrich event %s of %s (%s); sending it plain", entry.id, topic.key, exc)
        except Exception:
            log.exception("could not enrich event %s of %s; sending it plain", entry.id, topic.key)

    async def _run_reader(self, topic: _Topic) -> None:
        redis = self._client()
        failures = 0
        while not self._retire(topic):
            try:
                reply = await redis.xread({topic.key: topic.cursor}, count=500, block=self.block_ms)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("console event reader for %s: Redis error (%s); retrying", topic.key, exc)
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            for entry_id, fields in reply[0][1] if reply else []:
                entry = StreamEntry(entry_id, fields)
                await self._prepare(topic, entry)
                topic.cursor = entry_id
                self._publish(topic, entry)

    async def _run_ticker(self, topic: _Topic) -> None:
        assert topic.interval_s is not None
        n = 0
        while not self._retire(topic):
            n += 1
            entry = StreamEntry(str(n), {})
            await self._prepare(topic, entry)
            topic.latest = entry
            self._publish(topic, entry)
            # Sleep in short steps so a topic nobody follows is retired quickly.
            waited = 0.0
            while waited < topic.interval_s and topic.subscribers and not self._closed:
                step = min(self.block_ms / 1000, topic.interval_s - waited)
                await asyncio.sleep(step)
                waited += step
