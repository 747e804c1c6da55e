"""Call records, event feeds and the per-process registry (ivr.call.registry).

Why: the operator event stream and ``ivr call``'s live transcript follow a call's feed from its first event
to ``call.ended``; a follower that misses an event, hangs after the end, or a registry that forgets a live
call (or never forgets ended ones) breaks operations in ways no other test would notice. Followers are
driven with tasks and queues; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ivr.call.registry import MAX_FEED_EVENTS, CallFeed, CallRecord, CallRegistry

TIMEOUT = 2.0


# ------------------------------------------------------------------------------------------------
# CallRecord
# ------------------------------------------------------------------------------------------------


def _usage(
    total: int, inp: int, out: int, in_audio: int, in_text: int, cached: int, out_audio: int
) -> dict[str, Any]:
    """A ``response.done`` usage block as the Realtime API sends it."""
    return {
        "total_tokens": total,
        "input_tokens": inp,
        "output_tokens": out,
        "input_token_details": {
            "audio_tokens": in_audio,
            "text_tokens": in_text,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": cached},
        },
        "output_token_details": {"audio_tokens": out_audio, "text_tokens": out - out_audio},
    }


def test_add_usage_sums_tokens_and_details_over_responses() -> None:
    record = CallRecord("CA1")
    record.add_usage(_usage(total=300, inp=200, out=100, in_audio=150, in_text=50, cached=64, out_audio=80))
    record.add_usage(_usage(total=30, inp=20, out=10, in_audio=15, in_text=5, cached=0, out_audio=7))
    assert record.usage == {
        "total_tokens": 330,
        "input_tokens": 220,
        "output_tokens": 110,
        "input_audio_tokens": 165,
        "input_text_tokens": 55,
        "input_cached_tokens": 64,
        "output_audio_tokens": 87,
        "output_text_tokens": 23,
        "responses": 2,
    }


def test_add_usage_ignores_missing_and_malformed_values() -> None:
    record = CallRecord("CA1")
    record.add_usage(None)
    record.add_usage({})
    assert record.usage == {}
    record.add_usage(
        {
            "total_tokens": "12",
            "input_tokens": None,
            "output_tokens": 4,
            "input_token_details": "n/a",
            "output_token_details": {"audio_tokens": 1.5, "text_tokens": 4},
        }
    )
    assert record.usage == {"output_tokens": 4, "output_text_tokens": 4, "responses": 1}


def test_count_accumulates() -> None:
    record = CallRecord("CA1")
    record.count("barge_in")
    record.count("barge_in")
    record.count("dtmf", 3)
    assert record.counters == {"barge_in": 2, "dtmf": 3}


def test_record_defaults_and_to_dict_is_json_ready() -> None:
    record = CallRecord("CA1", caller="+1********67", flow_id="support")
    record.transcript.append({"role": "user", "text": "hi"})
    data = record.to_dict()
    assert data["call_sid"] == "CA1"
    assert data["outcome"] == "in-progress"
    assert data["ended_at"] is None
    assert data["transcript"] == [{"role": "user", "text": "hi"}]
    assert json.loads(json.dumps(data)) == data
    # Mutable defaults are per record.
    assert CallRecord("CA2").transcript == []


# ------------------------------------------------------------------------------------------------
# CallFeed
# ------------------------------------------------------------------------------------------------


async def _follow_into(feed: CallFeed, queue: asyncio.Queue[dict[str, Any]]) -> int:
    count = 0
    async for event in feed.follow():
        count += 1
        await queue.put(event)
    return count


async def _next(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


async def test_emit_builds_events_with_type_time_and_call_sid() -> None:
    feed = CallFeed(CallRecord("CA1"))
    event = feed.emit("transcript", role="user", text="hello")
    assert event["type"] == "transcript"
    assert event["call_sid"] == "CA1"
    assert event["role"] == "user" and event["text"] == "hello"
    assert isinstance(event["ts"], float)
    assert feed.events == [event]
    assert not feed.ended
    feed.emit("call.ended", outcome="completed")
    assert feed.ended


async def test_follow_replays_then_follows_then_stops_after_call_ended() -> None:
    feed = CallFeed(CallRecord("CA1"))
    feed.emit("call.started")
    feed.emit("transcript", text="one")
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    follower = asyncio.create_task(_follow_into(feed, queue))

    assert (await _next(queue))["type"] == "call.started"
    assert (await _next(queue))["text"] == "one"
    assert not follower.done()

    feed.emit("transcript", text="two")
    assert (await _next(queue))["text"] == "two"
    feed.emit("dtmf", digit="5")
    feed.emit("call.ended", outcome="completed")
    assert (await _next(queue))["digit"] == "5"
    assert (await _next(queue))["type"] == "call.ended"

    assert await asyncio.wait_for(follower, TIMEOUT) == 5
    feed.emit("late", text="after the end")
    assert queue.empty()


async def test_events_emitted_in_a_burst_all_reach_the_follower() -> None:
    feed = CallFeed(CallRecord("CA1"))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    follower = asyncio.create_task(_follow_into(feed, queue))
    feed.emit("call.started")
    assert (await _next(queue))["type"] == "call.started"  # the follower is now waiting for more
    for n in range(50):
        feed.emit("transcript", n=n)
    feed.emit("call.ended")
    assert await asyncio.wait_for(follower, TIMEOUT) == 52
    received = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [e["n"] for e in received[:-1]] == list(range(50))


async def test_several_followers_each_see_everything() -> None:
    feed = CallFeed(CallRecord("CA1"))
    feed.emit("call.started")
    queues: list[asyncio.Queue[dict[str, Any]]] = [asyncio.Queue() for _ in range(3)]
    followers = [asyncio.create_task(_follow_into(feed, q)) for q in queues]
    for q in queues:
        assert (await _next(q))["type"] == "call.started"
    feed.emit("transcript", text="hi")
    feed.emit("call.ended")
    assert await asyncio.wait_for(asyncio.gather(*followers), TIMEOUT) == [3, 3, 3]


async def test_follow_of_an_ended_call_replays_and_returns() -> None:
    feed = CallFeed(CallRecord("CA1"))
    feed.emit("call.started")
    feed.emit("call.ended")
    feed.emit("after", text="not replayed")
    events = [event async for event in feed.follow()]
    assert [e["type"] for e in events] == ["call.started", "call.ended"]


async def test_follower_cancelled_while_waiting_does_not_disturb_the_feed() -> None:
    feed = CallFeed(CallRecord("CA1"))
    feed.emit("call.started")
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    follower = asyncio.create_task(_follow_into(feed, queue))
    await _next(queue)
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    assert follower.cancelled()
    feed.emit("call.ended")
    assert [e["type"] async for e in feed.follow()] == ["call.started", "call.ended"]


# ------------------------------------------------------------------------------------------------
# CallRegistry
# ------------------------------------------------------------------------------------------------


async def test_open_makes_a_call_live_and_close_makes_the_registry_idle() -> None:
    registry = CallRegistry()
    assert await registry.wait_idle(TIMEOUT)
    feed = registry.open(CallRecord("CA1"))
    assert registry.live == {"CA1"}
    assert registry.get("CA1") is feed
    assert registry.get("CA-unknown") is None
    registry.close("CA1")
    assert registry.live == set()
    assert registry.get("CA1") is feed  # kept as history
    assert await registry.wait_idle(TIMEOUT)


async def test_wait_idle_with_zero_timeout_is_true_when_idle() -> None:
    registry = CallRegistry()
    registry.open(CallRecord("CA1"))
    registry.close("CA1")
    assert await registry.wait_idle(0.0) is True


async def test_wait_idle_times_out_while_a_call_is_live() -> None:
    registry = CallRegistry()
    registry.open(CallRecord("CA1"))
    assert await registry.wait_idle(0.01) is False


async def test_wait_idle_returns_when_the_last_call_closes() -> None:
    registry = CallRegistry()
    registry.open(CallRecord("CA1"))
    registry.open(CallRecord("CA2"))
    waiter = asyncio.create_task(registry.wait_idle(TIMEOUT))
    registry.close("CA1")
    assert await registry.wait_idle(0.01) is False  # CA2 is still live
    assert not waiter.done()
    registry.close("CA2")
    assert await asyncio.wait_for(waiter, TIMEOUT) is True


async def test_close_of_unknown_or_twice_is_harmless() -> None:
    registry = CallRegistry()
    registry.open(CallRecord("CA1"))
    registry.close("CA-unknown")
    assert registry.live == {"CA1"}
    registry.close("CA1")
    registry.close("CA1")
    assert registry.live == set()
    assert await registry.wait_idle(TIMEOUT)


async def test_reopening_a_live_call_returns_the_same_feed() -> None:
    registry = CallRegistry()
    feed = registry.open(CallRecord("CA1"))
    feed.emit("call.started")
    assert registry.open(CallRecord("CA1")) is feed


async def test_reopening_an_ended_call_starts_a_fresh_feed() -> None:
    registry = CallRegistry()
    feed = registry.open(CallRecord("CA1"))
    feed.emit("call.ended")
    registry.close("CA1")
    again = registry.open(CallRecord("CA1"))
    assert again is not feed
    assert again.events == []
    assert registry.live == {"CA1"}


async def test_history_of_ended_calls_is_bounded() -> None:
    registry = CallRegistry(keep_ended=3)
    for n in range(10):
        feed = registry.open(CallRecord(f"CA{n}"))
        feed.emit("call.ended")
        registry.close(f"CA{n}")
    kept = [n for n in range(10) if registry.get(f"CA{n}") is not None]
    # Trimming happens on open; the newest ended calls survive.
    assert len(kept) <= 4
    assert kept[-3:] == [7, 8, 9]
    assert registry.get("CA0") is None


async def test_live_calls_are_never_trimmed() -> None:
    registry = CallRegistry(keep_ended=2)
    long_call = registry.open(CallRecord("CA-long"))
    for n in range(20):
        registry.open(CallRecord(f"CA{n}")).emit("call.ended")
        registry.close(f"CA{n}")
    assert registry.get("CA-long") is long_call
    assert registry.live == {"CA-long"}
    ended_kept = [n for n in range(20) if registry.get(f"CA{n}") is not None]
    assert len(ended_kept) <= 3
    assert 19 in ended_kept


async def test_many_live_calls_all_kept_even_past_the_history_bound() -> None:
    registry = CallRegistry(keep_ended=1)
    feeds = {f"CA{n}": registry.open(CallRecord(f"CA{n}")) for n in range(10)}
    assert all(registry.get(sid) is feed for sid, feed in feeds.items())
    assert len(registry.live) == 10


async def test_a_long_call_keeps_a_bounded_event_list_and_followers_carry_on() -> None:
    feed = CallFeed(CallRecord("CA1"))
    follower = feed.follow()
    feed.emit("call.started")
    assert (await anext(follower))["type"] == "call.started"
    for n in range(MAX_FEED_EVENTS * 2):
        feed.emit("transcript", n=n)
    assert len(feed.events) <= MAX_FEED_EVENTS
    assert feed.dropped + len(feed.events) == MAX_FEED_EVENTS * 2 + 1
    # The follower paused early skips what was dropped and resumes at the oldest event still kept.
    resumed = await anext(follower)
    assert resumed is feed.events[0] and resumed["n"] == feed.dropped - 1
    feed.emit("call.ended")
    rest = [e async for e in follower]
    assert rest[-1]["type"] == "call.ended" and len(rest) == len(feed.events) - 1
    # A new follower replays the kept events, in order.
    replay = [e.get("n") async for e in feed.follow()]
    assert replay[:-1] == list(range(feed.dropped - 1, MAX_FEED_EVENTS * 2))
