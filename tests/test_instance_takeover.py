"""A lost instance's calls are taken over by survivors: ended once (``instance-lost``), whoever races."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from ivr.store.keys import KeySchema
from ivr.store.store import LOST_OUTCOME, CallStore
from ivr.store.writer import ResilientWriter
from tests.support.redis import redis_keys, redis_prefix, redis_url

__all__ = ["redis_keys", "redis_prefix", "redis_url"]

RETENTION = 86400
LOST_AFTER = 15.0


def _clock(value: list[float]) -> Callable[[], float]:
    return lambda: value[0]


async def _instance(
    redis_client: aioredis.Redis, keys: KeySchema, iid: str, now: list[float], sids: list[str]
) -> CallStore:
    """An instance that started ``sids`` and sent one heartbeat at ``now``."""
    writer = ResilientWriter(redis_client)
    writer.start()
    store = CallStore(
        redis_client, keys, instance_id=iid, retention_s=RETENTION, writer=writer, clock=_clock(now)
    )
    for sid in sids:
        store.call_started(
            {"call_sid": sid, "started_at": now[0], "outcome": "in-progress", "flow_id": "desk"}
        )
        store.event(sid, "stage.changed", {"from": "a", "to": "b"})
    assert await writer.flush(5)
    await store.heartbeat({})
    return store


async def _global_ends(redis_client: aioredis.Redis, keys: KeySchema, sid: str) -> int:
    entries = await redis_client.xrange(keys.events())
    return sum(1 for _, fields in entries if fields["call_sid"] == sid and fields["type"] == "call.ended")


async def test_survivors_racing_end_each_lost_call_exactly_once(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    t0 = 1_767_225_600.0
    lost_now, alive_now = [t0], [t0]
    lost_sids = [f"CAlost{i:02d}" for i in range(12)]
    lost = await _instance(redis_client, redis_keys, "node-dead", lost_now, lost_sids)
    alive = await _instance(redis_client, redis_keys, "node-alive", alive_now, ["CAalive"])
    # The dead one ended one call itself before dying: it must not be ended again.
    lost.call_ended("CAlost00", {"outcome": "completed", "ended_at": t0 + 1})
    assert await lost.writer.flush(5)
    await lost.writer.stop(1)

    # 20 s later the survivors (node-alive still beats) look for lost peers at the same moment.
    later = [t0 + 20]
    alive_now[0] = later[0]
    await alive.heartbeat({})
    survivors = [
        CallStore(
            redis_client,
            redis_keys,
            instance_id=f"node-s{i}",
            retention_s=RETENTION,
            writer=ResilientWriter(redis_client),
            clock=_clock(later),
        )
        for i in range(4)
    ]
    results = await asyncio.gather(*(s.take_over_lost(LOST_AFTER) for s in survivors))

    taken = [sid for result in results for sids in result.values() for sid in sids]
    assert sorted(taken) == lost_sids[1:], "every in-progress call of the lost instance, once"
    assert all(set(result) <= {"node-dead"} for result in results), "a live instance is never taken over"
    for sid in lost_sids[1:]:
        call = await survivors[0].get_call(sid)
        assert call is not None and call["outcome"] == LOST_OUTCOME
        assert call["duration_s"] == 20.0
        events = await survivors[0].get_events(sid)
        assert [e["type"] for e in events] == ["call.started", "stage.changed", "call.ended"]
        assert events[-1]["data"]["instance_id"] == "node-dead"
        assert events[-1]["data"]["ended_by"] in {f"node-s{i}" for i in range(4)}
        assert await _global_ends(redis_client, redis_keys, sid) == 1
    done = await survivors[0].get_call("CAlost00")
    assert done is not None and done["outcome"] == "completed"
    assert await _global_ends(redis_client, redis_keys, "CAlost00") == 1
    assert await redis_client.smembers(redis_keys.instance_calls("node-dead")) == set()
    assert set(await survivors[0].active_calls()) == {"CAalive"}
    alive_call = await survivors[0].get_call("CAalive")
    assert alive_call is not None and alive_call["outcome"] == "in-progress"
    # A later pass finds nothing left to do.
    assert await survivors[1].take_over_lost(LOST_AFTER) == {}
    await alive.writer.stop(1)


async def test_an_instance_that_beats_again_is_not_taken_over(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    t0 = 1_767_225_600.0
    slow_now = [t0]
    slow = await _instance(redis_client, redis_keys, "node-slow", slow_now, ["CAslow"])
    survivor = CallStore(
        redis_client,
        redis_keys,
        instance_id="node-s",
        retention_s=RETENTION,
        writer=ResilientWriter(redis_client),
        clock=_clock([t0 + LOST_AFTER - 1]),
    )
    assert await survivor.take_over_lost(LOST_AFTER) == {}, "silent for less than the limit: still alive"
    call = await survivor.get_call("CAslow")
    assert call is not None and call["outcome"] == "in-progress"
    await slow.writer.stop(1)


async def test_a_restarted_instance_with_the_same_id_keeps_its_new_calls(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """node-a died at t0 with CAold; it restarts with the same id and takes CAnew at t0+30 before its first
    heartbeat; a survivor judging node-a by its old heartbeat ends CAold only."""
    t0 = 1_767_225_600.0
    old_run = await _instance(redis_client, redis_keys, "node-a", [t0], ["CAold"])
    await old_run.writer.stop(1)
    new_now = [t0 + 30]
    new_run = CallStore(
        redis_client, redis_keys, instance_id="node-a", retention_s=RETENTION,
        writer=ResilientWriter(redis_client), clock=_clock(new_now),
    )  # fmt: skip
    new_run.writer.start()
    new_run.call_started({"call_sid": "CAnew", "started_at": t0 + 30, "outcome": "in-progress"})
    assert await new_run.writer.flush(5)
    survivor = CallStore(
        redis_client, redis_keys, instance_id="node-s", retention_s=RETENTION,
        writer=ResilientWriter(redis_client), clock=_clock([t0 + 31]),
    )  # fmt: skip
    assert await survivor.take_over_lost(LOST_AFTER) == {"node-a": ["CAold"]}
    new = await survivor.get_call("CAnew")
    assert new is not None and new["outcome"] == "in-progress"
    assert await redis_client.smembers(redis_keys.instance_calls("node-a")) == {"CAnew"}
    await new_run.writer.stop(1)


async def test_a_restart_does_not_end_the_calls_its_own_run_took_while_redis_was_away(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """The restart reconciliation runs once Redis answers: by then this run's own calls (started while it
    was unreachable) are in the instance's set too, and they are live."""
    t0 = 1_767_225_600.0
    old_run = await _instance(redis_client, redis_keys, "node-a", [t0], ["CAold"])
    await old_run.writer.stop(1)
    now = [t0 + 60]
    restarted = CallStore(
        redis_client, redis_keys, instance_id="node-a", retention_s=RETENTION,
        writer=ResilientWriter(redis_client), clock=_clock(now),
    )  # fmt: skip
    restarted.writer.start()
    now[0] = t0 + 65
    restarted.call_started({"call_sid": "CAmine", "started_at": t0 + 65, "outcome": "in-progress"})
    assert await restarted.writer.flush(5)
    assert await restarted.reconcile(set()) == ["CAold"]
    mine = await restarted.get_call("CAmine")
    assert mine is not None and mine["outcome"] == "in-progress"
    await restarted.writer.stop(1)


async def test_an_entry_queued_before_a_later_writers_entry_is_still_stored_once(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """A stream's top can be another writer's later entry (a survivor's call.ended after a Redis outage).
    An id below it is not proof the entry is there: it must be stored (once), not counted as a duplicate."""
    t0 = 1_767_225_600.0
    writer = ResilientWriter(redis_client)
    store = CallStore(
        redis_client,
        redis_keys,
        instance_id="node-a",
        retention_s=RETENTION,
        writer=writer,
        clock=_clock([t0]),
    )
    sid = "CAlate"
    store.event(sid, "stage.changed", {"from": "a", "to": "b"})  # queued at t0 while Redis is away
    store.transcript(sid, "caller", "hello", ts=t0)
    later = f"{int((t0 + 100) * 1000)}-0"
    await redis_client.xadd(redis_keys.call_events(sid), {"type": "call.ended", "call_sid": sid}, id=later)
    await redis_client.xadd(redis_keys.transcript(sid), {"role": "agent", "text": "bye"}, id=later)
    writer.start()
    assert await writer.flush(5)
    assert writer.duplicates == 0 and writer.failed == 0
    events = await redis_client.xrange(redis_keys.call_events(sid))
    assert [f["type"] for _, f in events] == ["call.ended", "stage.changed"]
    lines = await redis_client.xrange(redis_keys.transcript(sid))
    assert [f["text"] for _, f in lines] == ["bye", "hello"]
    global_entries = [f for _, f in await redis_client.xrange(redis_keys.events()) if f["call_sid"] == sid]
    assert [f["type"] for f in global_entries] == ["stage.changed"]
    assert global_entries[0]["event_id"] == events[1][0]
    await writer.stop(1)


async def test_calls_started_just_after_the_last_heartbeat_are_taken_over_too(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """Killed 3 s after its last heartbeat, with a call it took 2 s after that beat: the call is the dead
    run's (it started before the next beat was due) and must be ended, not left in progress forever."""
    t0 = 1_767_225_600.0
    now = [t0]
    dead = await _instance(redis_client, redis_keys, "node-d", now, [])
    dead.call_started({"call_sid": "CAjust", "started_at": t0 + 2, "outcome": "in-progress"})
    assert await dead.writer.flush(5)
    await dead.writer.stop(1)
    survivor = CallStore(
        redis_client, redis_keys, instance_id="node-s", retention_s=RETENTION,
        writer=ResilientWriter(redis_client), clock=_clock([t0 + 20]),
    )  # fmt: skip
    assert await survivor.take_over_lost(LOST_AFTER) == {"node-d": ["CAjust"]}


async def test_a_call_another_instance_carries_now_is_not_ended_with_its_old_owner(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """CAmoved's record names node-b as its holder (the call moved there); node-a dies holding CAstay and a
    stale entry for CAmoved. The takeover ends CAstay, frees its context, and leaves CAmoved running."""
    t0 = 1_767_225_600.0
    old = await _instance(redis_client, redis_keys, "node-a", [t0], ["CAstay", "CAmoved"])
    for sid in ("CAstay", "CAmoved"):
        await old.save_context(sid, {"caller": "+15550100001", "flow_id": "desk"})
    await redis_client.hset(redis_keys.call("CAmoved"), "instance_id", "node-b")
    await old.writer.stop(1)
    survivor = CallStore(
        redis_client,
        redis_keys,
        instance_id="node-s",
        retention_s=RETENTION,
        writer=ResilientWriter(redis_client),
        clock=_clock([t0 + 20]),
    )
    assert await survivor.take_over_lost(LOST_AFTER) == {"node-a": ["CAstay"]}
    stay, moved = await survivor.get_call("CAstay"), await survivor.get_call("CAmoved")
    assert stay is not None and stay["outcome"] == LOST_OUTCOME
    assert moved is not None and moved["outcome"] == "in-progress" and moved["instance_id"] == "node-b"
    assert await survivor.load_context("CAstay") is None, "the ended call's context (numbers) is freed"
    assert await survivor.load_context("CAmoved") is not None
    assert await redis_client.smembers(redis_keys.instance_calls("node-a")) == set()
    assert await _global_ends(redis_client, redis_keys, "CAmoved") == 0
