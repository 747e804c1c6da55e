"""ResilientWriter: ordered, batched writes that survive a real Redis going away and coming back."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.writer import ResilientWriter, WriteOp, WriteQueue
from tests.support.redis import embedded_redis, redis_prefix, redis_url

__all__ = ["embedded_redis", "redis_prefix", "redis_url"]

SID = "CA00000000000000000000000000000001"


def op(kind: str = "k") -> WriteOp:
    return WriteOp(kind, lambda pipe: None)


# -- the sans-I/O core ---------------------------------------------------------------------------------------
def test_queue_keeps_order_across_a_failed_attempt() -> None:
    q = WriteQueue(max_pending=100, batch_size=3)
    ops = [op(f"k{i}") for i in range(5)]
    for o in ops:
        q.submit(o)
    first = q.take()
    assert first == ops[:3]
    assert q.pending == 5
    q.give_back("ConnectionError: down")
    assert (q.retries, q.last_error) == (1, "ConnectionError: down")
    assert q.take() == ops[:3]
    q.done(written=3)
    assert q.take() == ops[3:]
    q.done(written=1, failed=1)
    assert q.idle
    assert q.counters() == {
        "queued": 5,
        "written": 4,
        "pending": 0,
        "retries": 1,
        "dropped": 0,
        "failed": 1,
        "duplicates": 0,
        "abandoned": 0,
        "last_error": "ConnectionError: down",
    }


def test_queue_bound_drops_the_oldest_queued_and_counts_kinds() -> None:
    q = WriteQueue(max_pending=4, batch_size=2)
    ops = [op("transcript" if i % 3 else "event") for i in range(10)]
    for o in ops[:4]:
        q.submit(o)
    inflight = q.take()  # the two oldest are being sent: they cannot be recalled
    assert inflight == ops[:2]
    for o in ops[4:]:
        q.submit(o)
        assert q.pending == 4  # the bound counts the batch in flight too
    assert q.dropped == 6  # ops 2..7, the oldest that were only queued
    assert q.take_unreported_drops() == {"transcript": 4, "event": 2}
    assert q.take_unreported_drops() == {}
    q.give_back("down")  # the failed batch goes back to the front, in order
    assert (q.pending, q.dropped) == (4, 6)
    assert q.take() == ops[:2]
    q.done(written=2)
    assert q.take() == ops[8:10]


def test_queue_rejects_inconsistent_outcomes_and_bad_limits() -> None:
    q = WriteQueue()
    q.submit(op())
    q.take()
    with pytest.raises(RuntimeError, match="already in flight"):
        q.take()
    with pytest.raises(ValueError, match="outcomes for 2 operations, but 1 in flight"):
        q.done(written=2)
    with pytest.raises(ValueError, match="max_pending"):
        WriteQueue(max_pending=0)
    with pytest.raises(ValueError, match="batch_size"):
        WriteQueue(batch_size=0)


def test_abandon_counts_what_was_left() -> None:
    q = WriteQueue(batch_size=1)
    for kind in ("a", "b", "b"):
        q.submit(op(kind))
    q.take()
    assert q.abandon() == {"a": 1, "b": 2}
    assert (q.abandoned, q.pending) == (3, 0)


# -- against a real server ----------------------------------------------------------------------------------
async def test_submit_returns_at_once_and_flush_writes_in_order(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    writer = ResilientWriter(redis_client, batch_size=7)
    key = redis_prefix + "list"
    for i in range(50):
        writer.submit("push", lambda pipe, i=i: pipe.rpush(key, i))
    assert writer.queued == 50 and writer.pending == 50
    assert not await writer.flush(0.05)  # not started: nothing is sent
    writer.start()
    assert await writer.flush(5)
    assert await redis_client.lrange(key, 0, -1) == [str(i) for i in range(50)]
    assert writer.counters() == {
        "queued": 50,
        "written": 50,
        "pending": 0,
        "retries": 0,
        "dropped": 0,
        "failed": 0,
        "duplicates": 0,
        "abandoned": 0,
        "last_error": None,
        "redis_down": False,
    }
    assert await writer.stop(1)


async def test_rejected_command_is_counted_and_does_not_block_the_queue(
    redis_client: aioredis.Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ResilientWriter(redis_client)
    writer.start()
    await redis_client.set(redis_prefix + "str", "x")
    writer.submit("bad-type", lambda pipe: pipe.rpush(redis_prefix + "str", 1))  # WRONGTYPE

    def broken(pipe: Pipeline) -> None:
        pipe.rpush(redis_prefix + "list", "partial")
        raise ValueError("bug in the operation")

    writer.submit("broken", broken)
    writer.submit("good", lambda pipe: pipe.rpush(redis_prefix + "list", "ok"))
    with caplog.at_level(logging.ERROR, logger="ivr.store.writer"):
        assert await writer.flush(5)
    assert (writer.written, writer.failed) == (1, 2)
    assert await redis_client.lrange(redis_prefix + "list", 0, -1) == [
        "ok"
    ]  # the broken op's partial command too
    text = caplog.text
    assert "Redis rejected write 'bad-type'" in text and "WRONGTYPE" in text
    assert "Redis write 'broken' could not be prepared" in text
    await writer.stop(1)


async def test_repeated_explicit_stream_id_counts_as_already_written(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    writer = ResilientWriter(redis_client)
    writer.start()
    key = redis_prefix + "stream"
    for _ in range(2):  # what a batch re-sent after a half-finished attempt looks like
        writer.submit("transcript", lambda pipe: pipe.xadd(key, {"text": "hello"}, id="1000-0"))
    assert await writer.flush(5)
    assert await redis_client.xlen(key) == 1
    assert (writer.written, writer.duplicates, writer.failed) == (2, 1, 0)
    await writer.stop(1)


async def _private_store(server: EmbeddedRedis, **writer_args: int) -> tuple[aioredis.Redis, CallStore]:
    redis_client = aioredis.Redis.from_url(server.url, decode_responses=True)
    writer = ResilientWriter(redis_client, **writer_args)
    writer.start()
    return redis_client, CallStore(redis_client, KeySchema("ivr:"), instance_id="test-1", writer=writer)


async def test_outage_500_transcript_lines_all_written_in_order(embedded_redis: EmbeddedRedis) -> None:
    redis_client, store = await _private_store(embedded_redis)
    writer = store.writer
    try:
        store.call_started({"call_sid": SID, "flow_id": "dental"})
        assert await writer.flush(5)
        await asyncio.to_thread(embedded_redis.stop)

        started = time.perf_counter()
        for i in range(500):
            store.transcript(SID, "user" if i % 2 else "assistant", f"line {i}", ts=1_000.0 + i)
        submit_s = time.perf_counter() - started
        assert submit_s < 0.5, f"submitting 500 lines took {submit_s:.3f} s while Redis was down"

        assert await writer.wait_until(lambda w: w.retries >= 2, 10), writer.counters()
        assert writer.redis_down
        assert writer.pending == 500
        assert "ConnectionError" in (writer.last_error or "")

        await asyncio.to_thread(embedded_redis.restart)
        assert await writer.flush(10), writer.counters()
        lines = await store.get_transcript(SID)
        assert [line["text"] for line in lines] == [f"line {i}" for i in range(500)]
        assert [line["ts"] for line in lines] == [1_000.0 + i for i in range(500)]
        ids = [tuple(map(int, line["id"].split("-"))) for line in lines]
        assert ids == sorted(ids) and len(set(ids)) == 500
        assert writer.retries > 0
        assert (writer.dropped, writer.failed, writer.pending, writer.written) == (0, 0, 0, 501)
        assert not writer.redis_down
    finally:
        await writer.stop(1)
        await redis_client.aclose()


async def test_restart_mid_call_with_persistence_keeps_every_line_exactly_once() -> None:
    server = EmbeddedRedis(appendonly=True)
    await asyncio.to_thread(server.start)
    redis_client, store = await _private_store(server, batch_size=20)
    writer = store.writer
    try:
        store.call_started({"call_sid": SID})
        for i in range(100):
            store.transcript(SID, "user", f"before {i}")
        # Take Redis away while batches are in flight, keep talking, bring it back.
        await asyncio.to_thread(server.stop, cleanup=False)
        for i in range(100):
            store.transcript(SID, "assistant", f"during {i}")
            store.event(SID, "tool.called", {"n": i})
        assert await writer.wait_until(lambda w: w.retries >= 1, 10)
        await asyncio.to_thread(server.start)
        for i in range(100):
            store.transcript(SID, "user", f"after {i}")
        store.call_ended(SID, {"outcome": "completed"})
        assert await writer.flush(15), writer.counters()
        texts = [line["text"] for line in await store.get_transcript(SID)]
        expected = [f"before {i}" for i in range(100)] + [f"during {i}" for i in range(100)]
        assert texts == expected + [f"after {i}" for i in range(100)]
        events = await store.get_events(SID)
        assert [e["type"] for e in events] == ["call.started"] + ["tool.called"] * 100 + ["call.ended"]
        assert [e["data"]["n"] for e in events[1:-1]] == list(range(100))
        assert (writer.dropped, writer.failed) == (0, 0)
    finally:
        await writer.stop(1)
        await redis_client.aclose()
        await asyncio.to_thread(server.stop)


async def test_overflow_drops_the_oldest_and_logs_them(
    redis_client: aioredis.Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ResilientWriter(redis_client, max_pending=10, drop_log_interval_s=3600)
    store = CallStore(redis_client, KeySchema(redis_prefix), instance_id="test-1", writer=writer)
    with caplog.at_level(logging.ERROR, logger="ivr.store.writer"):
        for i in range(25):
            store.transcript(SID, "user", f"line {i}")  # never raises, never blocks
        assert (writer.pending, writer.dropped, writer.queued) == (10, 15, 25)
        writer.start()
        assert await writer.flush(5)
    assert [line["text"] for line in await store.get_transcript(SID)] == [f"line {i}" for i in range(15, 25)]
    pattern = r"dropped the (\d+) oldest write\(s\) \(transcript=\1\)"
    reported = [int(n) for n in re.findall(pattern, caplog.text)]
    assert sum(reported) == 15, caplog.text
    assert "max_pending=10" in caplog.text
    await writer.stop(1)


async def test_overflow_while_redis_is_down_keeps_memory_bounded(embedded_redis: EmbeddedRedis) -> None:
    redis_client, store = await _private_store(embedded_redis, max_pending=50, batch_size=10)
    writer = store.writer
    try:
        await asyncio.to_thread(embedded_redis.stop)
        assert await writer.wait_until(lambda w: w.running, 1)
        for i in range(200):
            store.transcript(SID, "user", f"line {i}")
            assert writer.pending <= 50
        assert await writer.wait_until(lambda w: w.retries >= 1, 10)
        assert writer.dropped == 150
        await asyncio.to_thread(embedded_redis.restart)
        assert await writer.flush(10), writer.counters()
        texts = [line["text"] for line in await store.get_transcript(SID)]
        assert len(texts) == 50
        numbers = [int(t.split()[1]) for t in texts]
        assert numbers == sorted(numbers) and numbers[-1] == 199
    finally:
        await writer.stop(1)
        await redis_client.aclose()


async def test_stop_while_redis_is_down_reports_what_is_left(
    embedded_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client, store = await _private_store(embedded_redis)
    writer = store.writer
    try:
        await asyncio.to_thread(embedded_redis.stop)
        for i in range(7):
            store.transcript(SID, "user", f"line {i}")
        store.event(SID, "dtmf", {"digit": "1"})
        assert await writer.wait_until(lambda w: w.retries >= 1, 10)
        with caplog.at_level(logging.ERROR, logger="ivr.store.writer"):
            assert await writer.stop(0.2) is False
            assert (writer.abandoned, writer.pending, writer.running) == (8, 0, False)
            store.transcript(SID, "user", "too late")  # after stop: still never raises, counted, logged
        assert (writer.abandoned, writer.pending) == (9, 0)
        assert "8 write(s) not written (transcript=7, event=1)" in caplog.text
        assert "'transcript' submitted after the writer stopped" in caplog.text
    finally:
        await redis_client.aclose()


async def test_flush_of_10000_transcript_writes(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    writer = ResilientWriter(redis_client)
    store = CallStore(redis_client, KeySchema(redis_prefix), instance_id="test-1", writer=writer)
    writer.start()
    started = time.perf_counter()
    for i in range(10_000):
        store.transcript(SID, "user", f"line number {i} of a long conversation")
    submitted = time.perf_counter()
    assert await writer.flush(30)
    flushed = time.perf_counter()
    assert await redis_client.xlen(KeySchema(redis_prefix).transcript(SID)) == 10_000
    assert writer.written == 10_000
    submit_s, flush_s = submitted - started, flushed - submitted
    print(f"\n10,000 transcript writes: submit {submit_s:.3f} s, flush {flush_s:.3f} s")
    await writer.stop(1)
