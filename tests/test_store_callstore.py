"""CallStore against a real Redis: records, transcripts, events, indexes, TTLs, following, reconciling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.call.registry import CallRecord
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore, default_instance_id
from ivr.store.writer import ResilientWriter
from tests.support.redis import redis_keys, redis_prefix, redis_url

__all__ = ["redis_keys", "redis_prefix", "redis_url"]

SID = "CA0123456789abcdef0123456789abcdef"
RETENTION = 3 * 86400


@pytest.fixture
async def store(redis_client: aioredis.Redis, redis_keys: KeySchema) -> AsyncIterator[CallStore]:
    writer = ResilientWriter(redis_client)
    writer.start()
    try:
        yield CallStore(redis_client, redis_keys, instance_id="node-a", retention_s=RETENTION, writer=writer)
    finally:
        assert await writer.stop(5)
        assert (writer.dropped, writer.failed) == (0, 0)


async def test_call_round_trip(store: CallStore, redis_client: aioredis.Redis, redis_keys: KeySchema) -> None:
    record = CallRecord(call_sid=SID, flow_id="123", caller="+15550001111", called="+15550002222", model="m")
    record.started_at = 1_767_225_600.125
    store.call_started(record.to_dict())
    assert await store.writer.flush(5)
    assert await store.active_calls() == [SID]
    assert await redis_client.zscore(redis_keys.active_calls(), SID) == pytest.approx(1_767_225_600.125)
    assert await redis_client.smembers(redis_keys.instance_calls("node-a")) == {SID}

    store.transcript(SID, "assistant", "Hello, Bright Smile Dental.", ts=1_767_225_601.5)
    store.transcript(SID, "user", "I'd like to book a cleaning.", ts=1_767_225_603.25)
    store.event(SID, "stage.changed", {"from": "reception", "to": "booking"})
    store.call_updated(SID, {"stage": "booking", "usage": {"input_tokens": 120, "output_tokens": 30}})
    store.call_ended(SID, {"outcome": "caller-hung-up", "ended_at": 1_767_225_700.0, "duration_s": 99.875})
    assert await store.writer.flush(5)

    call = await store.get_call(SID)
    assert call is not None
    assert call["call_sid"] == SID
    assert call["flow_id"] == "123"  # a string that looks like a number stays a string
    assert call["caller"] == "+15550001111"
    assert call["started_at"] == 1_767_225_600.125 and call["ended_at"] == 1_767_225_700.0
    assert call["duration_s"] == 99.875
    assert call["outcome"] == "caller-hung-up"
    assert call["stage"] == "booking"
    assert call["usage"] == {"input_tokens": 120, "output_tokens": 30}
    assert call["transcript"] == [] and call["twilio_status"] is None
    assert call["instance_id"] == "node-a"
    assert "_json" not in call
    raw = await redis_client.hgetall(redis_keys.call(SID))
    assert raw["outcome"] == "caller-hung-up" and raw["usage"] == '{"input_tokens":120,"output_tokens":30}'
    assert set(raw["_json"].split(",")) >= {"started_at", "ended_at", "duration_s", "usage", "twilio_status"}
    assert "flow_id" not in raw["_json"].split(",")

    lines = await store.get_transcript(SID)
    assert [(line["role"], line["text"], line["ts"]) for line in lines] == [
        ("assistant", "Hello, Bright Smile Dental.", 1_767_225_601.5),
        ("user", "I'd like to book a cleaning.", 1_767_225_603.25),
    ]
    events = await store.get_events(SID)
    assert [e["type"] for e in events] == ["call.started", "stage.changed", "call.ended"]
    assert events[1]["data"] == {"from": "reception", "to": "booking"}
    assert events[0]["data"]["flow_id"] == "123" and "transcript" not in events[0]["data"]
    assert events[2]["data"]["outcome"] == "caller-hung-up"
    assert all(e["call_sid"] == SID for e in events)

    # Indexes moved; every per-call key has the retention TTL.
    assert await store.active_calls() == []
    assert await store.recent_calls() == [SID]
    assert await redis_client.zscore(redis_keys.recent_calls(), SID) == 1_767_225_700.0
    assert await redis_client.smembers(redis_keys.instance_calls("node-a")) == set()
    for key in (redis_keys.call(SID), redis_keys.transcript(SID), redis_keys.call_events(SID)):
        assert RETENTION - 60 < await redis_client.ttl(key) <= RETENTION, key

    # The global stream has the same events, each pointing at its per-call entry.
    global_entries = [f for _, f in await redis_client.xrange(redis_keys.events()) if f["call_sid"] == SID]
    assert [f["type"] for f in global_entries] == ["call.started", "stage.changed", "call.ended"]
    assert [f["event_id"] for f in global_entries] == [e["id"] for e in events]


async def test_the_turns_go_to_the_hash_not_into_the_call_ended_event(
    store: CallStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    turns = [{"n": n, "latency_ms": 400.0 + n, "at": 1_767_225_600.0 + n} for n in range(1, 501)]
    store.call_started({"call_sid": SID, "flow_id": "desk"})
    store.call_ended(SID, {"outcome": "completed", "turns": turns, "greeting_ms": 812.5})
    assert await store.writer.flush(5)
    call = await store.get_call(SID)
    assert call is not None and call["turns"] == turns and call["greeting_ms"] == 812.5
    ended = (await store.get_events(SID))[-1]
    assert ended["type"] == "call.ended" and ended["data"]["outcome"] == "completed"
    assert "turns" not in ended["data"] and ended["data"]["greeting_ms"] == 812.5
    (global_ended,) = [
        f for _, f in await redis_client.xrange(redis_keys.events()) if f["type"] == "call.ended"
    ]
    assert "turns" not in global_ended["data"]


async def test_updating_a_field_to_a_string_drops_it_from_the_json_list(store: CallStore) -> None:
    store.call_started({"call_sid": SID, "cost_usd": 0.25, "note": None})
    store.call_updated(SID, {"note": "called back", "cost_usd": 0.5})
    assert await store.writer.flush(5)
    call = await store.get_call(SID)
    assert call is not None
    assert (call["note"], call["cost_usd"]) == ("called back", 0.5)


async def test_unknown_call_reads_are_empty(store: CallStore) -> None:
    assert await store.get_call("CAnothing") is None
    assert await store.get_transcript("CAnothing") == []
    assert await store.get_events("CAnothing") == []
    assert await store.load_context("CAnothing") is None


async def test_bad_input_is_logged_not_raised(store: CallStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="ivr.store.store"):
        store.call_started({"flow_id": "no sid"})
        store.call_started({"call_sid": "CA1:evil"})
        store.call_updated(SID, {"a,b": 1})
        store.event("", "dtmf", {})
        store.transcript("bad sid", "user", "hi")
    assert store.writer.queued == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and all("not stored" in m for m in messages), messages
    assert "missing field 'call_sid'" in messages[0]
    assert "call sid='CA1:evil' contains ':'" in messages[1]
    assert "hash field name 'a,b' is not allowed" in messages[2]
    assert "call sid must not be empty" in messages[3]
    assert "call sid='bad sid' contains ' '" in messages[4]


async def test_follow_replays_then_follows_until_call_ended(store: CallStore) -> None:
    store.call_started({"call_sid": SID})
    store.event(SID, "dtmf", {"digit": "1"})
    assert await store.writer.flush(5)

    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def follow() -> None:
        async for event in store.follow_call_events(SID, block_ms=200):
            await received.put(event)

    follower = asyncio.create_task(follow())
    replayed = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
    assert [e["type"] for e in replayed] == ["call.started", "dtmf"]
    assert received.empty() and not follower.done()

    store.event(SID, "tool.called", {"name": "book"})
    live = await asyncio.wait_for(received.get(), 5)
    assert (live["type"], live["data"]) == ("tool.called", {"name": "book"})

    store.call_ended(SID, {"outcome": "completed"})
    store.event(SID, "late", {})  # after call.ended: not part of the follow
    last = await asyncio.wait_for(received.get(), 5)
    assert last["type"] == "call.ended"
    await asyncio.wait_for(follower, 5)
    assert received.empty()

    # Resuming from an id replays only what came after it.
    after = [e["type"] async for e in store.follow_call_events(SID, from_id=replayed[1]["id"])]
    assert after == ["tool.called", "call.ended"]


async def test_follow_stops_when_the_record_says_ended(store: CallStore) -> None:
    store.call_started({"call_sid": SID})
    assert await store.writer.flush(5)
    seen: list[str] = []

    async def follow() -> None:
        async for event in store.follow_call_events(SID, block_ms=50):
            seen.append(event["type"])

    follower = asyncio.create_task(follow())
    # The call.ended event was lost, but the record has ended_at: the follower must not hang.
    store.call_updated(SID, {"ended_at": 1_767_225_700.0})
    await asyncio.wait_for(follower, 5)
    assert seen == ["call.started"]


async def test_context_round_trip_replaces_and_expires(
    store: CallStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    await store.save_context(SID, {"flow_id": "dental", "from": "+15550001111", "params": {"lang": "en"}})
    await store.save_context(SID, {"flow_id": "restaurant", "open_now": False}, ttl_s=120)
    assert await store.load_context(SID) == {"flow_id": "restaurant", "open_now": False}
    assert 100 < await redis_client.ttl(redis_keys.context(SID)) <= 120


async def test_heartbeat(store: CallStore, redis_client: aioredis.Redis, redis_keys: KeySchema) -> None:
    await store.heartbeat()
    beat = await redis_client.hgetall(redis_keys.instance("node-a"))
    assert beat["instance_id"] == "node-a"
    assert float(beat["last_seen"]) >= float(beat["started_at"])
    assert int(beat["pid"]) > 0
    assert 0 < await redis_client.ttl(redis_keys.instance("node-a")) <= 30


async def test_reconcile_marks_orphaned_calls_ended(
    redis_client: aioredis.Redis, redis_keys: KeySchema, store: CallStore
) -> None:
    for sid in ("CAorphan", "CAlive", "CAdone"):
        store.call_started({"call_sid": sid, "started_at": 1_767_225_600.0})
    store.call_ended("CAdone", {"outcome": "completed"})
    other = ResilientWriter(redis_client)
    other_store = CallStore(redis_client, redis_keys, instance_id="node-b", writer=other)
    other.start()
    other_store.call_started({"call_sid": "CAelsewhere"})
    assert await store.writer.flush(5) and await other.flush(5)
    await other.stop(1)

    # node-a restarts: a new store with the same instance id; only CAlive survived (e.g. still on its socket).
    restarted = CallStore(
        redis_client, redis_keys, instance_id="node-a", writer=ResilientWriter(redis_client)
    )
    assert await restarted.reconcile({"CAlive"}) == ["CAorphan"]

    orphan = await restarted.get_call("CAorphan")
    assert orphan is not None
    assert orphan["outcome"] == "instance-restart"
    assert orphan["duration_s"] == pytest.approx(orphan["ended_at"] - 1_767_225_600.0, abs=0.01)
    assert set(await restarted.active_calls()) == {"CAlive", "CAelsewhere"}
    assert "CAorphan" in await restarted.recent_calls()
    assert await redis_client.smembers(redis_keys.instance_calls("node-a")) == {"CAlive"}
    events = await restarted.get_events("CAorphan")
    assert [e["type"] for e in events] == ["call.started", "call.ended"]
    assert events[-1]["data"]["outcome"] == "instance-restart"
    assert 0 < await redis_client.ttl(redis_keys.call("CAorphan")) <= 30 * 86400
    # A second pass finds nothing more.
    assert await restarted.reconcile({"CAlive"}) == []


def test_default_instance_id_is_stable_and_key_safe() -> None:
    assert default_instance_id(8080) == default_instance_id(8080)
    assert default_instance_id(8080) != default_instance_id(8081)
    KeySchema().instance(default_instance_id(8080))  # no ':' or whitespace


async def test_bad_instance_id_is_refused(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="instance id='a:b' contains ':'"):
        CallStore(redis_client, KeySchema(), instance_id="a:b", writer=ResilientWriter(redis_client))
