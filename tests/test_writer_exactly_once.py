"""The Redis writer writes every stream exactly once, in order, through lost replies and failovers.

Everything here runs against real valkey servers: a private primary, a second server made its replica with
REPLICAOF (read-only, or refusing with MASTERDOWN while its link is down), a real long-running script (BUSY),
and a TCP proxy in front of a server that forwards a batch, lets the server apply all of it, and then loses
the replies by cutting the client's connection — what a network failure after the write looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.exceptions import ResponseError

from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.streams import decode_event
from ivr.store.writer import ResilientWriter, WriteOp, WriteQueue, is_retryable_refusal
from tests.support.redis import embedded_redis

__all__ = ["embedded_redis"]

SID = "CA0000000000000000000000000000e001"
SID2 = "CA0000000000000000000000000000e002"
KEYS = KeySchema("ivr:")


# -- a proxy that loses replies ------------------------------------------------------------------------------
def _resp_end(buf: bytes, pos: int) -> int | None:
    """End of the RESP value starting at ``pos``, or None if ``buf`` does not hold all of it yet."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind, head, after = buf[pos : pos + 1], buf[pos + 1 : line_end], line_end + 2
    if kind in b"+-:_,#(":
        return after
    if kind in b"$=!":
        size = int(head)
        if size < 0:
            return after
        return after + size + 2 if len(buf) >= after + size + 2 else None
    if kind in b"*~>%|":
        count = int(head) * (2 if kind in b"%|" else 1)
        for _ in range(max(count, 0)):
            end = _resp_end(buf, after)
            if end is None:
                return None
            after = end
        return after
    raise ValueError(f"not RESP: {buf[pos : pos + 20]!r}")


def _count_values(buf: bytearray) -> int:
    """Remove the complete RESP values at the front of ``buf``; returns how many there were."""
    pos = n = 0
    while pos < len(buf):
        end = _resp_end(bytes(buf), pos)
        if end is None:
            break
        pos, n = end, n + 1
    del buf[:pos]
    return n


class ReplyLosingProxy:
    """A TCP proxy to a real Redis. After :meth:`lose_next_reply`, the next request sent on any connection is
    forwarded and fully applied by the server — the proxy waits for all of its replies — but the replies are
    thrown away and the client's connection is cut, so the client cannot tell whether anything was written.
    ``upstream`` may be changed at any time (a DNS name moving to a new primary); it applies to new
    connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._to_lose = 0
        self.lost_replies = 0
        self.lost_batches = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    def lose_next_reply(self) -> None:
        self._to_lose += 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.update((client_w, up_w))
        state = {"requests": 0, "replies": 0, "doomed": False}
        requests_buf, replies_buf = bytearray(), bytearray()

        async def upstream() -> None:
            while data := await client_r.read(1 << 20):
                if self._to_lose and not state["doomed"] and state["requests"] == state["replies"]:
                    self._to_lose -= 1
                    state["doomed"] = True
                    state["requests"] = state["replies"] = 0
                requests_buf.extend(data)
                state["requests"] += _count_values(requests_buf)
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def downstream() -> None:
            while data := await up_r.read(1 << 20):
                replies_buf.extend(data)
                state["replies"] += _count_values(replies_buf)
                if not state["doomed"]:
                    client_w.write(data)
                    await client_w.drain()
                    continue
                if state["replies"] >= state["requests"] and not requests_buf:
                    self.lost_replies += state["replies"]
                    self.lost_batches += 1
                    client_w.transport.abort()  # every command was applied; the client hears nothing
                    return

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            client_w.transport.abort()
            up_w.transport.abort()
            self._writers.difference_update((client_w, up_w))
            self._tasks.difference_update(tasks)


@pytest.fixture
async def proxy(embedded_redis: EmbeddedRedis) -> AsyncIterator[ReplyLosingProxy]:
    lossy = ReplyLosingProxy(embedded_redis.port)
    await lossy.start()
    try:
        yield lossy
    finally:
        await lossy.close()


@pytest.fixture
def second_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- helpers -------------------------------------------------------------------------------------------------
def _store(url: str, *, instance_id: str = "ivr-a", clock: Any = None, **writer_args: int) -> CallStore:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    writer = ResilientWriter(client, **writer_args)
    writer.start()
    extra = {} if clock is None else {"clock": clock}
    return CallStore(client, KEYS, instance_id=instance_id, writer=writer, **extra)


async def _close(*stores: CallStore) -> None:
    for store in stores:
        await store.writer.stop(1)
        await store.redis.aclose()


def _talk(store: CallStore, sid: str, start: int, count: int) -> None:
    """``count`` numbered events and transcript lines for one call."""
    for n in range(start, start + count):
        store.event(sid, "tool.called", {"n": n})
        store.transcript(sid, "caller", f"line {n}")


async def _global_events(client: aioredis.Redis) -> list[dict[str, Any]]:
    entries = await client.xrange(KEYS.events())
    return [{**decode_event(entry_id, f), "event_id": f.get("event_id")} for entry_id, f in entries]


def _numbers(events: list[dict[str, Any]], sid: str) -> list[int]:
    return [e["data"]["n"] for e in events if e["call_sid"] == sid and e["type"] == "tool.called"]


async def _assert_exactly_once(client: aioredis.Redis, sid: str, expected: list[int]) -> None:
    """The call's numbered events are in both event streams and its transcript exactly once, in order."""
    reader = CallStore(client, KEYS, instance_id="reader", writer=ResilientWriter(client))
    call_events = await reader.get_events(sid)
    assert _numbers(call_events, sid) == expected, "the call's own event stream"
    global_events = await _global_events(client)
    numbers = _numbers(global_events, sid)
    assert len(numbers) == len(set(numbers)), f"the global event stream holds duplicates: {numbers}"
    assert numbers == expected, "the global event stream"
    texts = [line["text"] for line in await reader.get_transcript(sid)]
    assert texts == [f"line {n}" for n in expected], "the transcript"
    event_ids = [e["event_id"] for e in global_events if e["call_sid"] == sid]
    assert event_ids == [e["id"] for e in call_events], "event_id = the id in the call stream"


async def _replicate(replica: EmbeddedRedis, primary: EmbeddedRedis) -> None:
    """Make ``replica`` a replica of ``primary`` and wait (WAIT: an event, not a sleep) until synced."""
    async with aioredis.Redis.from_url(replica.url) as r, aioredis.Redis.from_url(primary.url) as p:
        await p.config_set("repl-diskless-sync-delay", "0")  # start the full sync at once (default: 5 s)
        await r.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        await p.set("ivr:sync-probe", "1")
        acked = await p.execute_command("WAIT", 1, 10_000)
        assert acked == 1, "the replica did not sync within 10 s"
        await p.delete("ivr:sync-probe")


async def _promote(server: EmbeddedRedis) -> None:
    async with aioredis.Redis.from_url(server.url) as client:
        await client.execute_command("REPLICAOF", "NO", "ONE")


# -- (a) a batch re-sent after a lost reply ------------------------------------------------------------------
async def test_lost_reply_resent_batch_lands_once_in_every_stream(
    embedded_redis: EmbeddedRedis, proxy: ReplyLosingProxy
) -> None:
    store = _store(proxy.url, batch_size=50)
    direct = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        store.call_started({"call_sid": SID, "flow_id": "dental"})
        _talk(store, SID, 0, 5)
        assert await store.writer.flush(5)  # the writer's connection is open and idle
        proxy.lose_next_reply()
        _talk(store, SID, 5, 40)
        store.call_ended(SID, {"outcome": "completed"})
        assert await store.writer.flush(15), store.writer.counters()
        assert proxy.lost_batches == 1 and proxy.lost_replies > 0
        await _assert_exactly_once(direct, SID, list(range(45)))
        types = [e["type"] for e in await _global_events(direct)]
        assert types.count("call.started") == 1 and types.count("call.ended") == 1
        assert types[0] == "call.started" and types[-1] == "call.ended"
        counters = store.writer.counters()
        assert counters["failed"] == 0 and counters["dropped"] == 0
        assert counters["duplicates"] > 0, "the re-sent operations must be recognised as already written"
    finally:
        await _close(store)
        await direct.aclose()


async def test_lost_replies_many_times_over_two_calls_still_exactly_once(
    embedded_redis: EmbeddedRedis, proxy: ReplyLosingProxy
) -> None:
    store = _store(proxy.url, batch_size=7)
    direct = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        for sid in (SID, SID2):
            store.call_started({"call_sid": sid})
        assert await store.writer.flush(5)
        for round_ in range(10):
            proxy.lose_next_reply()
            _talk(store, SID, round_ * 6, 6)
            _talk(store, SID2, round_ * 6, 6)
            assert await store.writer.flush(15), store.writer.counters()
        assert proxy.lost_batches == 10
        await _assert_exactly_once(direct, SID, list(range(60)))
        await _assert_exactly_once(direct, SID2, list(range(60)))
        assert store.writer.failed == 0
    finally:
        await _close(store)
        await direct.aclose()


async def test_two_instances_with_skewed_clocks_never_collide_on_the_global_stream(
    embedded_redis: EmbeddedRedis,
) -> None:
    """Ids chosen by each instance's clock would be refused on a stream both append to (the ahead clock
    wins, the other instance's entries are "smaller than the top"): the global stream must take both."""
    loop_time = asyncio.get_running_loop().time
    ahead = _store(embedded_redis.url, instance_id="ivr-ahead", clock=lambda: time.time() + 3600)
    behind = _store(embedded_redis.url, instance_id="ivr-behind", clock=lambda: time.time() - 3600)
    direct = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        started = loop_time()
        for n in range(30):
            ahead.event(SID, "tool.called", {"n": n})
            ahead.transcript(SID, "caller", f"line {n}")
            behind.event(SID2, "tool.called", {"n": n})
            behind.transcript(SID2, "caller", f"line {n}")
            if n % 10 == 9:
                assert await ahead.writer.flush(5) and await behind.writer.flush(5)
        assert loop_time() - started < 10
        await _assert_exactly_once(direct, SID, list(range(30)))
        await _assert_exactly_once(direct, SID2, list(range(30)))
        for store in (ahead, behind):
            assert (store.writer.failed, store.writer.duplicates) == (0, 0), store.writer.counters()
    finally:
        await _close(ahead, behind)
        await direct.aclose()


async def test_clock_stepping_back_loses_no_entry(embedded_redis: EmbeddedRedis) -> None:
    """Explicit ids come from one counter that never goes back, whatever the clock does (an NTP step)."""
    now = [1_800_000_000.0]
    store = _store(embedded_redis.url, clock=lambda: now[0])
    direct = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        for n in range(30):
            store.event(SID if n % 2 else SID2, "tool.called", {"n": n})
            store.transcript(SID if n % 2 else SID2, "caller", f"line {n}")
            now[0] += -10.0 if n == 14 else 0.0005
        assert await store.writer.flush(5)
        await _assert_exactly_once(direct, SID, list(range(1, 30, 2)))
        await _assert_exactly_once(direct, SID2, list(range(0, 30, 2)))
        assert (store.writer.failed, store.writer.duplicates) == (0, 0)
    finally:
        await _close(store)
        await direct.aclose()


# -- (b) refusals returned inside a pipeline during a failover -----------------------------------------------
async def test_read_only_replica_refusals_are_retried_until_promoted(
    embedded_redis: EmbeddedRedis, second_server: EmbeddedRedis
) -> None:
    await _replicate(second_server, embedded_redis)
    store = _store(second_server.url, batch_size=10)
    direct = aioredis.Redis.from_url(second_server.url, decode_responses=True)
    try:
        store.call_started({"call_sid": SID})
        _talk(store, SID, 0, 20)
        store.call_updated(SID, {"stage": "booking"})
        submitted = store.writer.queued
        writer = store.writer
        assert await writer.wait_until(lambda w: w.retries >= 2 or w.failed > 0, 10), writer.counters()
        assert writer.failed == 0, f"READONLY refusals were dropped as failures: {writer.counters()}"
        assert writer.pending == submitted and writer.redis_down
        assert "READONLY" in (writer.last_error or "") or "read only" in (writer.last_error or "")

        await _promote(second_server)  # the failover completes: the replica is the primary now
        assert await writer.flush(10), writer.counters()
        await _assert_exactly_once(direct, SID, list(range(20)))
        call = await store.get_call(SID)
        assert call is not None and call["stage"] == "booking"
        assert (writer.failed, writer.dropped, writer.written) == (0, 0, submitted)
        assert not writer.redis_down
    finally:
        await _close(store)
        await direct.aclose()


async def test_masterdown_refusals_are_retried(second_server: EmbeddedRedis) -> None:
    """A replica that serves no stale data answers MASTERDOWN while its link to the primary is down."""
    async with aioredis.Redis.from_url(second_server.url) as admin:
        await admin.config_set("replica-read-only", "no")
        await admin.config_set("replica-serve-stale-data", "no")
        await admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # nothing listens there: the link is down
    store = _store(second_server.url)
    direct = aioredis.Redis.from_url(second_server.url, decode_responses=True)
    try:
        store.call_started({"call_sid": SID})
        _talk(store, SID, 0, 10)
        writer = store.writer
        assert await writer.wait_until(lambda w: w.retries >= 1 or w.failed > 0, 10), writer.counters()
        assert writer.failed == 0, f"MASTERDOWN refusals were dropped as failures: {writer.counters()}"
        assert "MASTERDOWN" in (writer.last_error or "") or "Link with MASTER" in (writer.last_error or "")
        await _promote(second_server)
        assert await writer.flush(10), writer.counters()
        await _assert_exactly_once(direct, SID, list(range(10)))
        assert (writer.failed, writer.dropped) == (0, 0)
    finally:
        await _close(store)
        await direct.aclose()


async def test_busy_script_refusals_are_retried(embedded_redis: EmbeddedRedis) -> None:
    """While a script runs past busy-reply-threshold, the server answers every other command with BUSY."""
    admin = aioredis.Redis.from_url(embedded_redis.url)
    blocker = aioredis.Redis.from_url(embedded_redis.url)
    store = _store(embedded_redis.url)
    direct = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    busy: asyncio.Task[Any] | None = None
    try:
        store.call_started({"call_sid": SID})
        assert await store.writer.flush(5)
        await admin.config_set("busy-reply-threshold", "50")
        busy = asyncio.create_task(blocker.eval("while true do end", 0))
        while True:  # each PING waits for the server: answered at once until the script runs, then BUSY
            try:
                await admin.ping()
            except ResponseError as exc:
                assert "BUSY" in str(exc)
                break
        _talk(store, SID, 0, 10)
        writer = store.writer
        assert await writer.wait_until(lambda w: w.retries >= 1 or w.failed > 0, 10), writer.counters()
        assert writer.failed == 0, f"BUSY refusals were dropped as failures: {writer.counters()}"
        await admin.script_kill()
        with pytest.raises(Exception, match="killed"):
            await busy
        assert await writer.flush(10), writer.counters()
        await _assert_exactly_once(direct, SID, list(range(10)))
    finally:
        if busy is not None and not busy.done():
            with contextlib.suppress(Exception):
                await admin.script_kill()
            with contextlib.suppress(Exception):
                await busy
        await _close(store)
        for client in (admin, blocker, direct):
            await client.aclose()


async def test_failover_to_a_new_primary_behind_the_same_address(
    embedded_redis: EmbeddedRedis, second_server: EmbeddedRedis, proxy: ReplyLosingProxy
) -> None:
    """The address the writer uses moves to the promoted replica (as a DNS name or VIP does); the old primary
    is demoted while it cannot reach the new one (a partition), so it keeps refusing writes with READONLY on
    the connection the writer still holds. The writer must reconnect, and every entry must be in the new
    primary exactly once, in order."""
    await _replicate(second_server, embedded_redis)
    store = _store(proxy.url, batch_size=10)
    direct = aioredis.Redis.from_url(second_server.url, decode_responses=True)
    try:
        store.call_started({"call_sid": SID})
        _talk(store, SID, 0, 10)
        assert await store.writer.flush(5)
        async with aioredis.Redis.from_url(embedded_redis.url) as old:
            assert await old.execute_command("WAIT", 1, 10_000) == 1  # the replica has everything
        await _promote(second_server)
        async with aioredis.Redis.from_url(embedded_redis.url) as old:
            await old.execute_command("REPLICAOF", "127.0.0.1", "1")  # nothing listens there
        proxy.upstream_port = second_server.port
        _talk(store, SID, 10, 20)
        store.call_ended(SID, {"outcome": "completed"})
        assert await store.writer.flush(15), store.writer.counters()
        await _assert_exactly_once(direct, SID, list(range(30)))
        assert (store.writer.failed, store.writer.dropped) == (0, 0)
    finally:
        await _close(store)
        await direct.aclose()


# -- sans-I/O: which refusals are retried, and a batch settled in part ---------------------------------------
@pytest.mark.parametrize(
    ("line", "retry"),
    [
        ("READONLY You can't write against a read only replica.", True),
        ("LOADING Valkey is loading the dataset in memory", True),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", True),
        ("TRYAGAIN Multiple keys request during rehashing of slot", True),
        ("CLUSTERDOWN The cluster is down", True),
        ("BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", True),
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("ERR The ID specified in XADD is equal or smaller than the target stream top item", False),
        ("ERR wrong number of arguments for 'xadd' command", False),
        ("NOSCRIPT No matching script.", False),
    ],
)
def test_refusal_classification_of_real_error_lines(line: str, retry: bool) -> None:
    error = BaseParser.parse_error(line)  # exactly what the client builds from the server's "-..." line
    assert is_retryable_refusal(error) is retry, (type(error).__name__, str(error))


def test_queue_settles_a_batch_in_part_and_retries_the_rest_first_in_order() -> None:
    q = WriteQueue(batch_size=5)
    ops = [WriteOp(f"k{i}", lambda pipe: None) for i in range(7)]
    for o in ops:
        q.submit(o)
    assert q.take() == ops[:5]
    q.done(written=1, duplicates=1, failed=0, retry=3, error="ReadOnlyError: READONLY")
    assert (q.written, q.duplicates, q.retries, q.pending) == (2, 1, 1, 5)
    assert q.last_error == "ReadOnlyError: READONLY"
    assert q.take() == [*ops[2:5], *ops[5:7]]
    with pytest.raises(ValueError, match="outcomes for 6 operations, but 5 in flight"):
        q.done(written=3, retry=3)
