"""Carrying a call over to another instance (ivr.store.reattach, ivr.call.resume, v2 stream tokens).

Against a real Redis: a call closed on purpose is never resumed; its next stream is numbered and capped; a
resumed stream is adopted once, moving the call between the instances' sets; the instance that lost it does
not write its end, and a survivor's takeover of that instance leaves it alone.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from ivr.call.resume import RESUMED_NOTICE, history_from_store, resumed_instructions
from ivr.store import reattach
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.writer import ResilientWriter
from ivr.telephony.stream_token import RESUME_PARAMETER, TOKEN_PARAMETER, Refusal, StreamBinding, StreamTokens
from tests.support.redis import redis_keys, redis_prefix, redis_url

__all__ = ["redis_keys", "redis_prefix", "redis_url"]

SID = "CA" + "5" * 32


async def _call_on(redis_client: aioredis.Redis, keys: KeySchema, iid: str, sid: str = SID) -> CallStore:
    """A call in progress on instance ``iid``, its record flushed to Redis."""
    writer = ResilientWriter(redis_client)
    writer.start()
    store = CallStore(redis_client, keys, instance_id=iid, retention_s=3600, writer=writer)
    store.call_started(
        {
            "call_sid": sid,
            "outcome": "in-progress",
            "flow_id": "desk",
            "caller": "+15550100001",
            "called": "+1",
        }
    )
    assert await writer.flush(5)
    return store


async def test_a_call_ended_on_purpose_is_never_resumed(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    store = await _call_on(redis_client, redis_keys, "node-a")
    assert await reattach.release(redis_client, redis_keys, SID, "node-a") is True
    assert await reattach.closed(redis_client, redis_keys, SID)
    why = await reattach.issue_resume(redis_client, redis_keys, SID, now=time.time())
    assert why == "the call was ended on purpose"
    await store.writer.stop(1)


async def test_streams_are_numbered_and_capped_and_an_ended_call_is_not_resumed(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    store = await _call_on(redis_client, redis_keys, "node-a")
    numbers = []
    for _ in range(reattach.MAX_RESUMES):
        issued = await reattach.issue_resume(redis_client, redis_keys, SID, now=time.time())
        assert isinstance(issued, reattach.Resumable)
        assert (issued.flow_id, issued.caller, issued.called) == ("desk", "+15550100001", "+1")
        numbers.append(issued.number)
    assert numbers == [1, 2, 3]
    assert await reattach.issue_resume(redis_client, redis_keys, SID, now=time.time()) == "resumed too often"
    other = "CA" + "6" * 32
    assert (
        await reattach.issue_resume(redis_client, redis_keys, other, now=time.time()) == "the call has ended"
    )
    await store.writer.stop(1)


async def test_a_resumed_stream_is_adopted_once_and_the_old_holder_lets_go(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    store = await _call_on(redis_client, redis_keys, "node-a")
    issued = await reattach.issue_resume(redis_client, redis_keys, SID, now=time.time())
    assert isinstance(issued, reattach.Resumable) and issued.number == 1
    # Two instances race to adopt the same stream (cannot happen behind the stream claim, but must not
    # adopt twice if it did): exactly one wins.
    results = await asyncio.gather(
        reattach.adopt(redis_client, redis_keys, SID, "node-b", 1),
        reattach.adopt(redis_client, redis_keys, SID, "node-c", 1),
    )
    winners = [r for r in results if r.adopted]
    assert len(winners) == 1 and winners[0].previous == "node-a"
    loser = next(r for r in results if not r.adopted)
    assert loser.why == "adopted already"
    holder = await redis_client.hget(redis_keys.call(SID), "instance_id")
    assert holder in ("node-b", "node-c")
    assert await redis_client.sismember(redis_keys.instance_calls(holder), SID)
    assert not await redis_client.sismember(redis_keys.instance_calls("node-a"), SID)
    # A stale number (an older stream) is refused.
    assert (await reattach.adopt(redis_client, redis_keys, SID, "node-d", 0)).why == "superseded"
    # node-a comes back to life and finishes its session: the call is not its to end any more.
    assert await reattach.release(redis_client, redis_keys, SID, "node-a") is False
    assert not await reattach.closed(redis_client, redis_keys, SID)
    # The holder ends it on purpose: closed, and no further stream is issued.
    assert await reattach.release(redis_client, redis_keys, SID, holder) is True
    assert await reattach.issue_resume(redis_client, redis_keys, SID, now=time.time()) == (
        "the call was ended on purpose"
    )
    await store.writer.stop(1)


async def test_a_killed_holder_is_told_apart_from_a_live_one_by_its_heartbeat(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    store = await _call_on(redis_client, redis_keys, "node-a")
    now = time.time()
    assert not await reattach.holder_alive(redis_client, redis_keys, SID, now=now, lost_after_s=15)
    await store.heartbeat({})
    assert await reattach.holder_alive(redis_client, redis_keys, SID, now=time.time(), lost_after_s=15)
    assert not await reattach.holder_alive(
        redis_client, redis_keys, SID, now=time.time() + 20, lost_after_s=15
    )
    await store.writer.stop(1)


def test_a_resumed_stream_token_binds_its_number() -> None:
    tokens = StreamTokens(b"k" * 32, ttl_s=60)
    now = time.time()
    binding = StreamBinding(SID, "desk", "+15550100001", "+1", resume=2)
    params = {**binding.parameters(), TOKEN_PARAMETER: tokens.issue(binding, now)}
    assert params[RESUME_PARAMETER] == "2" and params[TOKEN_PARAMETER].startswith("v2.")
    assert tokens.verify(params, SID, now) == binding
    # Another number under the same token: refused.
    bumped = tokens.verify({**params, RESUME_PARAMETER: "3"}, SID, now)
    assert isinstance(bumped, Refusal) and bumped.reason == "bad_token"
    # A v2 token without its number, or a first-stream (v1) token passed off as a resume: refused.
    missing = tokens.verify({k: v for k, v in params.items() if k != RESUME_PARAMETER}, SID, now)
    assert isinstance(missing, Refusal) and missing.reason == "malformed_token"
    first = StreamBinding(SID, "desk", "+15550100001", "+1")
    v1 = {**first.parameters(), TOKEN_PARAMETER: tokens.issue(first, now), RESUME_PARAMETER: "1"}
    verdict = tokens.verify(v1, SID, now)
    assert verdict == first and verdict.resume == 0  # the number is ignored: a v1 token admits stream 0 only


def test_the_replayed_history_follows_the_transcript_and_the_tool_results_in_order() -> None:
    transcript = [
        {"role": "agent", "text": "Hello, dental clinic.", "ts": 10.0},
        {"role": "caller", "text": "I'd like to book a cleaning.", "ts": 12.0},
        {"role": "agent", "text": "", "ts": 13.0},
        {"role": "agent", "text": "You're booked for Tuesday.", "ts": 20.0},
    ]
    events = [
        {
            "type": "tool.called",
            "ts": 15.0,
            "data": {"name": "book", "arguments": {"day": "tue"}, "ok": True, "output": {"booking_id": "B1"}},
        },
        {
            "type": "tool.called",
            "ts": 16.0,
            "data": {"name": "cancel", "arguments": {}, "ok": False, "error_type": "pending", "output": None},
        },
        {"type": "stage.changed", "ts": 17.0, "data": {}},
    ]
    history = history_from_store(transcript, events)
    assert [entry[0] for entry in history] == ["assistant", "user", "system", "system", "assistant"]
    assert "book" in history[2][1] and "B1" in history[2][1] and "succeeded" in history[2][1]
    assert "approve" in history[3][1]
    assert RESUMED_NOTICE in resumed_instructions()
