"""Calls with Redis state, stages, the approval gate and Redis outages: real sockets, a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.server import OPERATOR_TOKEN

CLINIC = Path(__file__).parent / "data" / "flows-clinic"
CLOSED = Path(__file__).parent / "data" / "flows-closed"
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
GREETING = Reply(text="Hello, clinic.", audio_ms=200)


def _tomorrow_10() -> str:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return f"{day.isoformat()}T10:00"


def _book(start: str) -> tuple[str, dict[str, Any]]:
    return ("appointments", {"action": "book", "service": "checkup", "start": start, "name": "Ada Lovelace"})


def _outputs(session: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in session.received
        if e["type"] == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]


async def _output_of(session: Any, start: int = 0) -> dict[str, Any]:
    """The function_call_output number ``start`` (0-based) the app sent, waiting for it if need be."""
    await session.wait_for("conversation.item.create", lambda _e: len(_outputs(session)) > start)
    return json.loads(_outputs(session)[start]["item"]["output"])


async def _enter_booking_stage(session: Any) -> dict[str, Any]:
    await session.wait_response_done()  # the greeting
    await session.respond(Reply(function_call=("start_booking", {"reason": "wants a check-up"})))
    update = await session.wait_for("session.update", lambda e: "Book the appointment" in json.dumps(e))
    # Two responses end before the session is idle: the one that made the call, and the answer the call
    # asks for after sending the tool's output. Starting another before both are done races the second.
    await session.wait_response_done()
    await session.wait_response_done()
    return update


async def test_stage_change_updates_the_live_session_and_the_record(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING, Reply(text="Sure.", audio_ms=100)]
    async with app_for(
        fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix
    ) as server:
        live = await place_call(server, to_number="+15550100004")
        session = await fake_realtime.next_session()
        first = await session.wait_for("session.update")
        assert {t["name"] for t in first["session"]["tools"]} == {"end_call", "start_booking"}
        update = await _enter_booking_stage(session)
        assert {t["name"] for t in update["session"]["tools"]} == {"appointments", "end_call"}
        # A tool of another stage is refused with a structured error, and nothing runs.
        await session.respond(Reply(function_call=("start_booking", {})))
        refused = await _output_of(session, start=1)
        assert refused["error"]["type"] in {"not_allowed", "unknown_tool"}
        result = await live.hang_up()
        call_sid = live.call.call_sid
        # The caller saw call.ended on the live feed, so the app has queued its last write: flush the queue.
        assert any(e["type"] == "call.ended" for e in result.transcript)
        assert server.state.services.writer is not None
        assert await server.state.services.writer.flush(5.0)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        keys = KeySchema(redis_prefix)
        try:
            assert await client.hget(keys.call(call_sid), "outcome") == "completed"
            record = await client.hgetall(keys.call(call_sid))
            assert record["stage"] == "booking"
            events = [f["type"] for _, f in await client.xrange(keys.call_events(call_sid))]
            assert "stage.changed" in events and "tool.called" in events
            assert events[0] == "call.started" and "call.ended" in events
            transcript = await client.xrange(keys.transcript(call_sid))
            assert transcript[0][1]["text"] == "Hello, clinic."
            assert await client.zscore(keys.active_calls(), call_sid) is None
            assert await client.zscore(keys.recent_calls(), call_sid) is not None
            assert 0 < await client.ttl(keys.call(call_sid)) <= 30 * 86400
        finally:
            await client.aclose()
    assert result.ended_by == "caller"


async def _pending_booking(session: Any) -> tuple[str, dict[str, Any]]:
    """Drive the call to a gated `book` call; returns the start asked for and the pending tool output."""
    await _enter_booking_stage(session)
    start = _tomorrow_10()
    await session.respond(Reply(function_call=_book(start)))
    pending = await _output_of(session, start=1)
    assert pending["status"] == "pending_approval"
    return start, pending


async def test_gated_booking_waits_for_the_operator_then_runs_once(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with (
        app_for(fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
    ):
        live = await place_call(server, to_number="+15550100004")
        session = await fake_realtime.next_session()
        start, pending = await _pending_booking(session)
        hold = await session.wait_for(
            "response.create",
            lambda e: "Please hold while I check" in e.get("response", {}).get("instructions", ""),
        )
        assert hold
        listing = (await http.get("/api/approvals")).json()
        (approval,) = [a for a in listing["approvals"] if a["call_sid"] == live.call.call_sid]
        assert approval["id"] == pending["approval_id"]
        assert approval["arguments"]["start"] == start
        # Nothing was booked yet: the gate holds the tool until a decision is stored.
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        keys = KeySchema(redis_prefix)
        assert await client.zcard(keys.calendar_bookings("test-clinic")) == 0

        decided_at = time.monotonic()
        response = await http.post(
            f"/api/approvals/{approval['id']}", json={"decision": "approve", "operator": "alice"}
        )
        assert response.status_code == 200
        news = await session.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("role") == "system" and "approved" in json.dumps(e),
        )
        latency = time.monotonic() - decided_at
        print(f"approval round trip (POST → system message at the model): {latency * 1000:.1f} ms")
        assert latency < 1.0, f"the decision took {latency:.3f} s to reach the call"
        assert "booked" in news["item"]["content"][0]["text"]
        assert await client.zcard(keys.calendar_bookings("test-clinic")) == 1
        again = await http.post(f"/api/approvals/{approval['id']}", json={"decision": "deny"})
        assert again.status_code == 409  # a decision cannot be made twice
        audit = [f for _, f in await client.xrange(keys.approvals_audit())]
        assert [a["action"] for a in audit if a["approval_id"] == approval["id"]][:2] == [
            "requested",
            "approved",
        ]
        await client.aclose()
        await live.hang_up()


async def test_denied_action_stays_denied_and_new_arguments_need_a_new_approval(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with (
        app_for(fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
    ):
        live = await place_call(server, to_number="+15550100004")
        session = await fake_realtime.next_session()
        start, first = await _pending_booking(session)
        await session.wait_response_done()
        denied = await http.post(
            f"/api/approvals/{first['approval_id']}", json={"decision": "deny", "note": "full"}
        )
        assert denied.status_code == 200
        await session.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("role") == "system" and "full" in json.dumps(e),
        )
        await session.wait_response_done()
        # The model tries again with the same arguments: refused at once, no new request.
        await session.respond(Reply(function_call=_book(start)))
        repeat = await _output_of(session, start=2)
        assert repeat["status"] == "denied"
        await session.wait_response_done()
        # Changed arguments are a new action: a new approval request, still nothing booked.
        await session.respond(Reply(function_call=_book(start.replace("T10:00", "T11:00"))))
        changed = await _output_of(session, start=3)
        assert changed["status"] == "pending_approval"
        assert changed["approval_id"] != first["approval_id"]
        listing = (await http.get("/api/approvals")).json()["approvals"]
        assert [a["id"] for a in listing if a["call_sid"] == live.call.call_sid] == [changed["approval_id"]]
        await live.hang_up()


async def test_after_hours_calls_get_the_flow_message(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    from twilio.request_validator import RequestValidator

    from tests.support.server import AUTH_TOKEN

    async with app_for(
        fake_realtime, flows_dir=CLOSED, redis_url=redis_url, redis_prefix=redis_prefix
    ) as server:
        url = server.settings.public_url + "/twilio/voice"
        params = {"CallSid": "CA" + "8" * 32, "From": "+15550100001", "To": "+15550100002"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post(
                "/twilio/voice", data=params, headers={"X-Twilio-Signature": signature}
            )
    assert response.status_code == 200
    assert "We are closed right now." in response.text
    assert "<Hangup" in response.text and "<Connect" not in response.text
    assert fake_realtime.sessions == []
    # The call is in the history all the same: ended, with what it was told, the number masked beside it.
    keys = KeySchema(redis_prefix)
    sid = params["CallSid"]
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        record = await client.hgetall(keys.call(sid))
        lines = await client.xrange(keys.transcript(sid))
        active = await client.zscore(keys.active_calls(), sid)
        recent = await client.zscore(keys.recent_calls(), sid)
    finally:
        await client.aclose()
    assert record["outcome"] == "after-hours" and record["engine"] == "none", record
    assert record["caller_masked"] == "+1********01" and record["ended_at"], record
    assert [f["role"] for _id, f in lines] == ["agent"] and lines[0][1]["text"].startswith("We are closed")
    assert active is None and recent is not None


@pytest.mark.slow
async def test_redis_restart_mid_call_loses_no_transcript_line(
    fake_realtime: FakeRealtimeServer, redis_prefix: str
) -> None:
    """Redis (with its append-only file, as production runs it) restarts mid-call; every line arrives once."""
    fake_realtime.default_replies = [GREETING]
    embedded_redis = EmbeddedRedis(appendonly=True)
    await asyncio.to_thread(embedded_redis.start)
    try:
        await _restart_mid_call(fake_realtime, embedded_redis, redis_prefix)
    finally:
        await asyncio.to_thread(embedded_redis.stop)


async def _restart_mid_call(
    fake_realtime: FakeRealtimeServer, embedded_redis: EmbeddedRedis, redis_prefix: str
) -> None:
    lines = [f"Line number {i}." for i in range(12)]
    async with app_for(
        fake_realtime, flows_dir=CLINIC, redis_url=embedded_redis.url, redis_prefix=redis_prefix
    ) as server:
        live = await place_call(server, to_number="+15550100004")
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        for line in lines[:4]:
            await session.user_said(line)
        await asyncio.to_thread(embedded_redis.stop, cleanup=False)  # Redis goes away mid-call
        for line in lines[4:8]:
            await session.user_said(line)
        before = len(session.input_audio)
        await session.wait_input_audio(before + 8000)  # the conversation keeps running without Redis
        writer = server.state.services.writer
        assert writer is not None
        await writer.wait_until(lambda w: w.counters()["redis_down"], timeout=10.0)
        await asyncio.to_thread(embedded_redis.restart)
        for line in lines[8:]:
            await session.user_said(line)
        result = await live.hang_up()
        assert await writer.flush(10.0)
        counters = writer.counters()
        assert counters["dropped"] == 0 and counters["retries"] > 0
        client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
        keys = KeySchema(redis_prefix)
        try:
            transcript = [f for _, f in await client.xrange(keys.transcript(live.call.call_sid))]
        finally:
            await client.aclose()
    caller_lines = [t["text"] for t in transcript if t["role"] == "caller"]
    assert caller_lines == lines  # every line, once, in order
    assert result.ended_by == "caller"


async def test_unanswered_approval_expires_and_the_model_is_told_why(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """No operator decides before the deadline: the request expires (denied) and nothing is booked."""
    flow = (CLINIC / "clinic.yaml").read_text().replace("timeout_s: 60", "timeout_s: 5")
    (tmp_path / "clinic.yaml").write_text(flow)
    fake_realtime.default_replies = [GREETING]
    async with app_for(
        fake_realtime, flows_dir=tmp_path, redis_url=redis_url, redis_prefix=redis_prefix
    ) as server:
        live = await place_call(server, to_number="+15550100004")
        session = await fake_realtime.next_session()
        _, pending = await _pending_booking(session)
        news = await session.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("role") == "system" and "within 5 seconds" in json.dumps(e),
            timeout=10.0,
        )
        assert "not carried out" in news["item"]["content"][0]["text"]
        # …and asked to speak about it: a response.create follows the system message.
        after = next(i for i, e in enumerate(session.received) if e is news)
        await session.wait_for(
            "response.create", lambda e: any(x is e for x in session.received[after + 1 :])
        )
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        keys = KeySchema(redis_prefix)
        try:
            assert await client.hget(keys.approval(pending["approval_id"]), "status") == "expired"
            assert await client.zcard(keys.calendar_bookings("test-clinic")) == 0
        finally:
            await client.aclose()
        await live.hang_up()
