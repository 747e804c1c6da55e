"""A call outlives the instance carrying it: two `ivr serve` processes, one Redis, SIGKILL mid-answer.

The simulated caller stands for Twilio: when the media stream drops it requests the `<Connect action>` URL
(through the load balancer's pool, where the dead instance refuses connections) and follows the answer onto a
new stream. The surviving instance takes the call over and resumes it from Redis: the model session it opens
replays what was said, the agent says one sentence, and the conversation goes on; the call is ended once, by
the survivor, when the caller hangs up. The silence the caller heard is printed (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ivr.call.resume import RESUMED_NOTICE
from ivr.store.keys import KeySchema
from tests.support.calls import LiveCall, place_call
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply
from tests.support.process import ServerProcess, free_port, serve_env
from tests.support.redis import redis_prefix, redis_url
from tests.support.server import TEST_FLOWS
from tests.test_call_state_e2e import AUTH, CLINIC, _pending_booking
from tests.test_call_state_e2e import GREETING as CLINIC_GREETING

__all__ = ["redis_prefix", "redis_url"]

PUBLIC = "http://ivr.test"  # the load balancer's origin: Twilio signs its URLs; both instances sit behind it
GREETING = Reply(text="Hello, thanks for calling the desk.", audio_ms=600)
#: Paced like a real model (100 ms of audio every 100 ms): still speaking when its instance is killed.
LONG_ANSWER = Reply(
    text="We are open Monday to Friday from nine to five, and on Saturdays from ten until two.",
    audio_ms=6000,
    delta_interval_s=0.1,
)
QUESTION = "What are your opening hours?"


async def _start(
    fake: FakeRealtimeServer,
    redis_url: str,
    prefix: str,
    name: str,
    flows: Path = TEST_FLOWS,
    **extra: str,
) -> tuple[ServerProcess, str]:
    port = free_port()
    env = serve_env(
        fake.url,
        REDIS_URL=redis_url,
        IVR_REDIS_PREFIX=prefix,
        IVR_PUBLIC_URL=PUBLIC,
        IVR_INSTANCE_ID=name,
        IVR_STREAM_SECRET="s" * 40,
        **extra,
    )
    server = await ServerProcess.start(port, flows, env)
    await server.wait_line("Uvicorn running on", timeout=60)
    return server, f"http://127.0.0.1:{port}"


def _replayed(session: FakeSession) -> list[tuple[str, str]]:
    """(role, text) of every message item the app created on ``session``, in the order sent."""
    out = []
    for event in session.received:
        if event["type"] == "conversation.item.create" and event["item"]["type"] == "message":
            item = event["item"]
            out.append((item["role"], "".join(part.get("text", "") for part in item["content"])))
    return out


async def _until(what: str, check: Any, timeout: float = 10.0) -> Any:
    """Poll Redis-side state (written by another process: there is no event to await here)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_call_goes_on_after_its_instance_is_killed_mid_answer(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING, LONG_ANSWER]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await _run(fake_realtime, client, keys, redis_url, redis_prefix)
    finally:
        await client.aclose()


async def _run(
    fake_realtime: FakeRealtimeServer,
    client: aioredis.Redis,
    keys: KeySchema,
    redis_url: str,
    redis_prefix: str,
) -> None:
    a, a_url = await _start(fake_realtime, redis_url, redis_prefix, "node-a")
    b, b_url = await _start(fake_realtime, redis_url, redis_prefix, "node-b")
    live: LiveCall | None = None
    try:
        live = await place_call(
            SimpleNamespace(base_url=a_url),  # type: ignore[arg-type]
            public_url=PUBLIC,
            backends=(a_url, b_url),
            duration_s=60.0,
        )
        sid = live.call.call_sid
        first = await fake_realtime.next_session()
        await first.wait_response_done()  # the greeting
        await first.user_said(QUESTION)
        await first.respond()  # server VAD answers the turn: the long answer, paced like speech
        # The answer is playing; what was said so far has reached Redis (A's writer flushes in batches).
        await live.wait_media(len(live.media()) + 10, timeout=10)
        transcript = keys.transcript(sid)
        for line in (GREETING.text, QUESTION):  # an agent line is written once the caller heard it
            await _until(f"{line!r} in Redis", lambda line=line: _has_line(client, transcript, line))
        assert await client.hget(keys.call(sid), "instance_id") == "node-a"

        a.proc.kill()  # SIGKILL: no drain, no flush, no goodbye
        killed_at = time.monotonic()
        await a.proc.wait()

        try:
            leg = await live.call.wait_stream(2, timeout=20)
        except Exception:
            print("instance B said:", *b.lines[-30:], sep="\n  ")
            if live.task.done():
                print("caller:", live.task.result().errors, live.task.result().streams)
            raise
        resumed_after = time.monotonic() - killed_at
        second = await fake_realtime.next_session()
        create = await second.wait_for(
            "response.create", lambda e: RESUMED_NOTICE in str(e.get("response", {}).get("instructions", ""))
        )
        assert create is not None
        replayed = _replayed(second)
        assert ("user", QUESTION) in replayed, replayed
        assert ("assistant", GREETING.text) in replayed, replayed
        before = len(live.media())
        await live.wait_media(before + 5, timeout=10)  # the agent speaks again, on the new stream

        async def heard() -> bool:  # the caller's 20 ms playback ticks: no event to await
            return leg.first_heard_at is not None

        await _until("the caller hearing the agent on the new stream", heard)
        assert leg.stream_sid and live.call.current_stream_sid == leg.stream_sid

        record = await client.hgetall(keys.call(sid))
        assert record["instance_id"] == "node-b" and record["outcome"] == "in-progress", record
        assert await client.sismember(keys.instance_calls("node-b"), sid)
        assert not await client.sismember(keys.instance_calls("node-a"), sid)

        # The conversation goes on, on B.
        await second.wait_response_done(timeout=10)
        await second.user_said("Thanks, that's all.")
        result = await live.hang_up()
        live = None
    finally:
        if live is not None:
            await live.call.hang_up()
        for server in (a, b):
            await server.kill()

    assert len(result.streams) == 2, result.streams
    assert result.streams[0].stream_sid != result.streams[1].stream_sid
    gaps, heard_gaps = result.gaps_ms(), result.gaps_ms(heard=True)
    assert len(gaps) == 1 and 0 < gaps[0] < 5_000, (gaps, result.streams)
    assert len(heard_gaps) == 1 and 0 < heard_gaps[0] < 5_000, (heard_gaps, result.streams)
    print(
        f"\nSIGKILL → stream 2 after {resumed_after:.2f} s; the caller heard {heard_gaps[0]:.0f} ms silence "
        f"(agent audio received: last on stream 1 → first on stream 2, {gaps[0]:.0f} ms)"
    )
    ended = await _until("the call's end in Redis", lambda: _outcome(client, keys, sid), timeout=15)
    assert ended == "caller-hung-up" or ended == "completed", ended
    events = await client.xrange(keys.call_events(sid))
    kinds = [fields["type"] for _id, fields in events]
    assert kinds.count("call.started") == 1 and kinds.count("call.resumed") == 1, kinds
    assert kinds.count("call.ended") == 1, kinds
    lines = [fields["text"] for _id, fields in await client.xrange(keys.transcript(sid))]
    assert lines.count(QUESTION) == 1, lines  # not doubled by the move
    assert not any("Traceback" in line for line in b.lines), b.lines


async def _has_line(client: aioredis.Redis, key: str, text: str) -> bool:
    return any(fields.get("text") == text for _id, fields in await client.xrange(key))


async def _outcome(client: aioredis.Redis, keys: KeySchema, sid: str) -> str | None:
    outcome = await client.hget(keys.call(sid), "outcome")
    return outcome if outcome and outcome != "in-progress" else None


@pytest.mark.slow
async def test_an_approval_pending_when_the_instance_died_is_decided_and_run_once_on_the_survivor(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [CLINIC_GREETING]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    a, a_url = await _start(fake_realtime, redis_url, redis_prefix, "node-a", CLINIC)
    b, b_url = await _start(fake_realtime, redis_url, redis_prefix, "node-b", CLINIC)
    live: LiveCall | None = None
    try:
        live = await place_call(
            SimpleNamespace(base_url=a_url),  # type: ignore[arg-type]
            public_url=PUBLIC,
            backends=(a_url, b_url),
            to_number="+15550100004",
            duration_s=60.0,
        )
        sid = live.call.call_sid
        first = await fake_realtime.next_session()
        _start_at, pending = await _pending_booking(first)
        aid = pending["approval_id"]
        assert await client.hget(keys.approval(aid), "status") == "pending"

        async def tool_event_stored() -> bool:  # A's writer sends events in batches: no event to await
            events = await client.xrange(keys.call_events(sid))
            return any(f["type"] == "tool.called" and '"pending"' in f.get("data", "") for _id, f in events)

        await _until("the pending tool call in Redis", tool_event_stored)

        a.proc.kill()
        await a.proc.wait()
        try:
            await live.call.wait_stream(2, timeout=20)
        except Exception:
            print("instance B said:", *b.lines[-30:], sep="\n  ")
            if live.task.done():
                print("caller:", live.task.result().errors, live.task.result().streams)
            raise
        second = await fake_realtime.next_session()
        await second.wait_for(
            "response.create", lambda e: RESUMED_NOTICE in str(e.get("response", {}).get("instructions", ""))
        )
        notes = [text for role, text in _replayed(second) if role == "system"]
        assert any("approve" in note and "appointments" in note for note in notes), notes
        assert await client.hget(keys.call(sid), "instance_id") == "node-b"

        async with httpx.AsyncClient(base_url=b_url, headers=AUTH) as http:
            decided = await http.post(
                f"/api/approvals/{aid}", json={"decision": "approve", "operator": "alice"}
            )
        assert decided.status_code == 200, decided.text
        news = await second.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("role") == "system" and "approved" in json.dumps(e),
            timeout=10,
        )
        assert news
        approval = await _until(
            "the approved booking to run",
            lambda: _executed(client, keys, aid),
        )
        assert approval["outcome"] == "ok" and approval["claimed_by"] == "instance:node-b", approval
        assert await client.zcard(keys.calendar_bookings("test-clinic")) == 1  # booked once
        await live.hang_up()
        live = None
    finally:
        if live is not None:
            await live.call.hang_up()
        for server in (a, b):
            await server.kill()
        await client.aclose()


async def _executed(client: aioredis.Redis, keys: KeySchema, aid: str) -> dict[str, str] | None:
    approval = await client.hgetall(keys.approval(aid))
    return approval if approval.get("executed_at") else None


@pytest.mark.slow
async def test_a_call_outlasting_the_drain_is_handed_over_not_cut(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    """A rolling upgrade with a short drain: SIGTERM to A, whose call is still going when IVR_DRAIN_TIMEOUT
    (1 s) runs out. A closes the stream without ending the call; the caller follows `<Connect action>` to B
    (A's /readyz says 503), B resumes the call; A exits cleanly; the call ends once, when the caller hangs
    up."""
    fake_realtime.default_replies = [GREETING, LONG_ANSWER]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    a, a_url = await _start(fake_realtime, redis_url, redis_prefix, "node-a", IVR_DRAIN_TIMEOUT="1")
    b, b_url = await _start(fake_realtime, redis_url, redis_prefix, "node-b")
    live: LiveCall | None = None
    try:
        live = await place_call(
            SimpleNamespace(base_url=a_url),  # type: ignore[arg-type]
            public_url=PUBLIC,
            backends=(a_url, b_url),
            duration_s=60.0,
        )
        sid = live.call.call_sid
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await first.user_said(QUESTION)
        await first.respond()
        await live.wait_media(len(live.media()) + 5, timeout=10)

        a.proc.send_signal(signal.SIGTERM)
        await a.wait_line("handing 1 live call(s) over", timeout=15)
        await live.call.wait_stream(2, timeout=20)
        second = await fake_realtime.next_session()
        await second.wait_for(
            "response.create", lambda e: RESUMED_NOTICE in str(e.get("response", {}).get("instructions", ""))
        )
        assert ("user", QUESTION) in _replayed(second)
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0  # A drained and exited on its own
        assert await client.hget(keys.call(sid), "instance_id") == "node-b"
        assert await client.hget(keys.call(sid), "outcome") == "in-progress"
        await second.wait_response_done(timeout=10)
        result = await live.hang_up()
        live = None
        assert len(result.streams) == 2 and result.streams[0].how_ended == "server-closed", result.streams
        ended = await _until("the call's end in Redis", lambda: _outcome(client, keys, sid), timeout=15)
        assert ended in ("caller-hung-up", "completed"), ended
        kinds = [fields["type"] for _id, fields in await client.xrange(keys.call_events(sid))]
        assert kinds.count("call.ended") == 1 and kinds.count("call.resumed") == 1, kinds
        assert not any("Traceback" in line for line in a.lines + b.lines)
    finally:
        if live is not None:
            await live.call.hang_up()
        for server in (a, b):
            await server.kill()
        await client.aclose()


@pytest.mark.slow
async def test_with_no_other_instance_the_drain_ends_the_call_and_answers_its_action(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    """Alone, a draining instance has nobody to hand its call to: it ends it (`server-shutdown`) and stays up
    until Twilio's `<Connect action>` request got its `<Hangup/>` (an unanswered action would make Twilio
    play an application error to the caller)."""
    fake_realtime.default_replies = [GREETING, LONG_ANSWER]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    a, a_url = await _start(fake_realtime, redis_url, redis_prefix, "node-a", IVR_DRAIN_TIMEOUT="1")
    try:
        live = await place_call(
            SimpleNamespace(base_url=a_url),  # type: ignore[arg-type]
            public_url=PUBLIC,
            backends=(a_url,),
            duration_s=60.0,
        )
        sid = live.call.call_sid
        await (await fake_realtime.next_session()).wait_response_done()
        a.proc.send_signal(signal.SIGTERM)
        await a.wait_line("ending 1 call(s) still live", timeout=15)
        result = await live.result(timeout=15)
        assert result.ended_by == "server" and len(result.streams) == 1, result
        assert result.streams[0].action_status == 200  # answered, by the instance still up for it
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0
        assert await client.hget(keys.call(sid), "outcome") == "server-shutdown"
    finally:
        await a.kill()
        await client.aclose()
