"""``GET /metrics`` and per-turn latency after real calls: the app under uvicorn, the simulated Twilio caller,
the fake Realtime (and Chat Completions) model, a real Redis. The histograms must count exactly what
happened; the call hash must hold the turns; an interrupted agent line must say how much was heard."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from ivr.audio import ULAW_SILENCE
from ivr.store.keys import KeySchema
from tests.support.calls import LiveCall, app_for, mulaw_tone, place_call
from tests.support.fake_chat import ChatReply, FakeChatServer
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply
from tests.support.fixtures import OPENAI_TEST_KEY, format_violations
from tests.support.server import OPERATOR_TOKEN, RunningServer, make_settings, running_server

AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
LONG = "Our opening hours are nine to five on weekdays and ten to two on Saturdays, closed on Sundays."
DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "ivr-dashboard.json"
CLINIC = Path(__file__).parent / "data" / "flows-clinic"


class Events:
    """The live event feed of one call (``on_event``), awaitable by predicate."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        self.items.append(event)
        self._changed.set()

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.items:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def turn(self, n: int) -> dict[str, Any]:
        return await self.wait(lambda e: e["type"] == "turn.latency" and e["turn"] == n)

    async def agent_said(self, text: str) -> dict[str, Any]:
        return await self.wait(
            lambda e: e["type"] == "transcript" and e["role"] == "agent" and e["text"] == text
        )


async def _caller_turn(session: FakeSession, text: str) -> None:
    await session.speech_started()
    await session.speech_stopped()
    await session.user_said(text)


async def _conversation(server: RunningServer, fake: FakeRealtimeServer) -> tuple[LiveCall, Events]:
    """Greeting, a reply, a tool call the flow lacks, an answer cut short by the caller, a last reply."""
    events = Events()
    live = await place_call(server, on_event=events)
    session = await fake.next_session()
    await events.wait(lambda e: e["type"] == "turn.latency" and e["kind"] == "greeting")
    await events.agent_said("Hello, test desk.")  # written once heard: the greeting has played

    await _caller_turn(session, "What time do you open?")
    await session.respond(Reply(text="We open at nine.", audio_ms=200))
    await events.turn(1)
    await events.agent_said("We open at nine.")

    await _caller_turn(session, "Launch the rockets.")
    await session.respond(Reply(function_call=("launch_rockets", {"count": 3})))
    await events.turn(2)  # the reply after the tool's result (the fake's next queued reply)
    await events.agent_said("I cannot do that.")

    await _caller_turn(session, "Tell me everything.")
    await session.respond(Reply(text=LONG, audio_ms=2000))  # generated at once, played in real time
    await events.turn(3)
    for _ in range(2):  # some of the long answer was heard
        live.oracle.mark_echoed.clear()
        await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)
    await session.speech_started()  # the caller talks over it
    await events.wait(lambda e: e["type"] == "barge_in")
    await events.wait(lambda e: e["type"] == "transcript" and e.get("interrupted") is True)

    await session.speech_stopped()
    await session.user_said("Just the weekdays.")
    await session.respond(Reply(text="Nine to five.", audio_ms=200))
    await events.turn(4)
    await events.agent_said("Nine to five.")
    await live.hang_up()
    return live, events


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
    )


async def _idle(server: RunningServer) -> None:
    """Every call has finished on the server and its writes have reached Redis."""
    assert await server.state.calls.wait_idle(5.0)
    assert server.state.services.writer is not None
    assert await server.state.services.writer.flush(5.0)


async def test_metrics_count_every_turn_greeting_interruption_and_tool(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [
        Reply(text="Hello, test desk.", audio_ms=300),
        Reply(text="I cannot do that.", audio_ms=200),
    ]
    async with app_for(fake_realtime, redis_url=redis_url, redis_prefix=redis_prefix) as server:
        calls = [await _conversation(server, fake_realtime) for _ in range(2)]
        await _idle(server)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            refused = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
            response = await http.get("/metrics", headers=AUTH)
    assert refused.status_code == 401 and wrong.status_code == 401
    assert refused.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = _samples(text)
    flow = {"flow": "test-desk"}

    assert _value(samples, "ivr_calls_started_total", **flow, engine="realtime") == 2
    assert _value(samples, "ivr_calls_ended_total", **flow, outcome="completed") == 2
    assert _value(samples, "ivr_calls_ended_total") == 2
    assert _value(samples, "ivr_live_calls") == 0
    assert _value(samples, "ivr_greeting_first_audio_seconds_count", **flow, engine="realtime") == 2
    assert _value(samples, "ivr_turn_latency_seconds_count", **flow, engine="realtime") == 8
    assert _value(samples, "ivr_interruption_stop_seconds_count", **flow, engine="realtime") == 2
    # Every interruption stopped playback within a second (the last finite bucket holds them all).
    assert _value(samples, "ivr_interruption_stop_seconds_bucket", **flow, le="1.0") == 2
    assert _value(samples, "ivr_tool_duration_seconds_count") == 2
    assert _value(samples, "ivr_tool_duration_seconds_count", tool="unknown", outcome="unknown_tool") == 2
    assert _value(samples, "ivr_model_tokens_total", model="gpt-realtime", kind="input") > 0
    assert _value(samples, "ivr_model_tokens_total", model="gpt-realtime", kind="output") > 0
    assert _value(samples, "ivr_model_cost_usd_total", model="gpt-realtime") > 0
    assert _value(samples, "ivr_redis_writer_dropped_total") == 0
    assert _value(samples, "ivr_redis_writer_written_total") > 0
    assert ("ivr_redis_writer_pending", ()) in samples
    # Bounded labels: no call sid, account sid or phone number anywhere in the exposition.
    assert not re.search(r"\b(CA|AC|MZ)[0-9a-f]{32}\b", text)
    assert not re.search(r"\+\d{6,}", text)
    assert "launch_rockets" not in text  # a tool the model made up is "unknown"
    allowed = {"flow", "engine", "outcome", "tool", "status", "model", "kind", "le"}
    assert {k for (_n, ls) in samples for k, _v in ls} <= allowed

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = KeySchema(redis_prefix)
    try:
        for live, events in calls:
            sid = live.call.call_sid
            record = await client.hgetall(keys.call(sid))
            json_fields = record["_json"].split(",")
            assert {"turns", "greeting_ms", "usage", "cost_usd"} <= set(json_fields)
            turns = json.loads(record["turns"])
            assert [t["n"] for t in turns] == [1, 2, 3, 4]
            assert all(0 <= t["latency_ms"] < 5000 and t["at"] > 0 for t in turns)
            assert 0 < json.loads(record["greeting_ms"]) < 5000
            assert json.loads(record["usage"])["input_tokens"] > 0 and json.loads(record["cost_usd"]) > 0
            measured = [e["latency_ms"] for e in events.items if e["type"] == "turn.latency" and e["turn"]]
            assert [t["latency_ms"] for t in turns] == measured

            lines = [f for _id, f in await client.xrange(keys.transcript(sid))]
            agent = [f for f in lines if f["role"] == "agent"]
            assert [f["text"] for f in agent] == [
                "Hello, test desk.",
                "We open at nine.",
                "I cannot do that.",
                LONG,
                "Nine to five.",
            ]
            (cut,) = [f for f in agent if f.get("interrupted") == "true"]
            assert cut["text"] == LONG
            assert 0 <= int(cut["heard_ms"]) < int(cut["total_ms"]) and int(cut["total_ms"]) >= 1900
            assert all("interrupted" not in f and f["item_id"] for f in agent if f is not cut)
            barge = [
                json.loads(f["data"])
                for _id, f in await client.xrange(keys.call_events(sid))
                if f["type"] == "barge_in"
            ]
            (item,) = barge[0]["items"]
            assert item == {
                "item_id": cut["item_id"],
                "heard_ms": int(cut["heard_ms"]),
                "sent_ms": item["sent_ms"],
            }
            assert item["sent_ms"] == int(cut["total_ms"]) and barge[0]["stop_ms"] >= 0
    finally:
        await client.aclose()


async def test_a_caller_who_hangs_up_mid_answer_has_the_line_cut_where_they_stopped_hearing(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, test desk.", audio_ms=200)]
    async with app_for(fake_realtime, redis_url=redis_url, redis_prefix=redis_prefix) as server:
        events = Events()
        live = await place_call(server, on_event=events)
        session = await fake_realtime.next_session()
        await events.agent_said("Hello, test desk.")
        await _caller_turn(session, "Tell me everything.")
        await session.respond(Reply(text=LONG, audio_ms=3000))  # generated at once, played in real time
        await events.turn(1)
        for _ in range(2):  # some of it was heard…
            live.oracle.mark_echoed.clear()
            await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)
        await live.hang_up()  # …then the caller hung up
        await _idle(server)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            keys = KeySchema(redis_prefix)
            lines = [f for _id, f in await client.xrange(keys.transcript(live.call.call_sid))]
        finally:
            await client.aclose()
    agent = {f["text"]: f for f in lines if f["role"] == "agent"}
    assert "interrupted" not in agent["Hello, test desk."]
    cut = agent[LONG]
    assert cut["interrupted"] == "true"
    assert 0 < int(cut["heard_ms"]) < int(cut["total_ms"]) and int(cut["total_ms"]) >= 2900


async def test_approval_wait_and_tool_outcomes_are_measured(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, clinic.", audio_ms=200)]
    async with (
        app_for(fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
    ):
        live = await place_call(server, to_number="+15550100004")
        session = await fake_realtime.next_session()
        await session.wait_response_done()  # the greeting
        await session.respond(Reply(function_call=("start_booking", {"reason": "wants a check-up"})))
        await session.wait_for("session.update", lambda e: "Book the appointment" in json.dumps(e))
        await session.wait_response_done()  # the response that made the call
        await session.wait_response_done()  # the answer after the tool's output
        args = {"action": "book", "service": "checkup", "start": _tomorrow_10(), "name": "Ada Lovelace"}
        await session.respond(Reply(function_call=("appointments", args)))
        output = await session.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("type") == "function_call_output" and "pending" in e["item"]["output"],
        )
        approval_id = json.loads(output["item"]["output"])["approval_id"]
        decided = await http.post(f"/api/approvals/{approval_id}", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        await session.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("role") == "system" and "approved" in json.dumps(e),
        )
        await live.hang_up()
        await _idle(server)
        samples = _samples((await http.get("/metrics")).text)
    assert _value(samples, "ivr_approval_wait_seconds_count", tool="appointments", status="approved") == 1
    assert _value(samples, "ivr_tool_duration_seconds_count", tool="start_booking", outcome="ok") == 1
    assert _value(samples, "ivr_tool_duration_seconds_count", tool="appointments", outcome="pending") == 1
    assert _value(samples, "ivr_tool_duration_seconds_count", tool="appointments", outcome="ok") == 1


def _tomorrow_10() -> str:
    return f"{(datetime.now(UTC).date() + timedelta(days=1)).isoformat()}T10:00"


# ---- the Chat Completions engine: its transcript comes after the cut ---------------------------------

CHAT_FLOW = """\
id: chat-desk
default: true
numbers: ["+15550100002"]
model:
  name: gpt-audio-1.5
  voice: marin
greeting: "Hello, chat desk."
instructions: "You answer the phone for a chat desk."
tools:
  - {type: end_call, name: end_call, description: "Hang up after saying goodbye."}
"""


@pytest.fixture
async def fake_chat() -> AsyncIterator[FakeChatServer]:
    server = FakeChatServer(api_key=OPENAI_TEST_KEY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert server.violations == [], format_violations("fake Chat Completions", server.violations)


def _silence(ms: int) -> bytes:
    return bytes([ULAW_SILENCE]) * (8 * ms)


async def test_chat_engine_turns_and_a_greeting_cut_while_it_was_generated(
    fake_chat: FakeChatServer, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    (tmp_path / "chat-desk.yaml").write_text(CHAT_FLOW)
    words = "Hello and welcome to the chat desk where we answer every question you may have today"
    fake_chat.script(
        ChatReply(transcript=words, audio_ms=4000, chunk_ms=100, pace_s=0.08),  # in flight when cut
        ChatReply(transcript="Sorry, go ahead.", audio_ms=300),
    )
    settings = make_settings(
        flows_dir=tmp_path, openai_base_url=fake_chat.base_url, redis_url=redis_url, redis_prefix=redis_prefix
    )
    async with running_server(settings) as server:
        events = Events()
        live = await place_call(server, on_event=events, duration_s=15.0)
        await events.wait(lambda e: e["type"] == "turn.latency" and e["kind"] == "greeting")
        await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)  # the caller hears the greeting…
        live.call.say(mulaw_tone(440.0, 600, -12.0) + _silence(1500))  # …and talks over it
        barge = await events.wait(lambda e: e["type"] == "barge_in", timeout=8.0)
        cut = await events.wait(lambda e: e["type"] == "transcript" and e.get("interrupted") is True)
        await events.turn(1)
        await events.agent_said("Sorry, go ahead.")
        await live.hang_up()
        await _idle(server)
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http:
            samples = _samples((await http.get("/metrics")).text)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            keys = KeySchema(redis_prefix)
            stored = [f for _id, f in await client.xrange(keys.transcript(live.call.call_sid))]
            record = await client.hgetall(keys.call(live.call.call_sid))
        finally:
            await client.aclose()
    # The engine finished the cut item only after the truncation: the line still carries the cut.
    assert barge["items"] and barge["items"][0]["item_id"] == cut["item_id"]
    assert 0 <= cut["heard_ms"] <= cut["total_ms"] < 4000
    assert cut["text"].split()[0] == "Hello" and len(cut["text"]) < len(words)
    (line,) = [f for f in stored if f.get("interrupted") == "true"]
    assert int(line["heard_ms"]) == cut["heard_ms"] and line["item_id"] == cut["item_id"]
    assert [t["n"] for t in json.loads(record["turns"])] == [1]
    chat = {"flow": "chat-desk", "engine": "chat"}
    assert _value(samples, "ivr_greeting_first_audio_seconds_count", **chat) == 1
    assert _value(samples, "ivr_turn_latency_seconds_count", **chat) == 1
    assert _value(samples, "ivr_interruption_stop_seconds_count", **chat) == 1
    assert _value(samples, "ivr_model_tokens_total", model="gpt-audio-1.5") > 0


# ---- public metrics and the Grafana dashboard ----------------------------------------------------------


def _exposed_names(text: str) -> set[str]:
    """Every series name /metrics can produce (families are listed even before their first sample)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


async def test_metrics_are_public_when_configured_and_the_dashboard_matches_them(
    redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(redis_url=redis_url, redis_prefix=redis_prefix, metrics_public=True)
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    exposed = _exposed_names(response.text)
    assert {"ivr_live_calls", "ivr_turn_latency_seconds_bucket", "ivr_redis_writer_pending"} <= exposed

    dashboard = json.loads(DASHBOARD.read_text())
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    panels = [p for p in _panels(dashboard) if p.get("type") != "row"]
    assert len(panels) >= 11
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bivr_[a-z0-9_]+", target["expr"]))
            assert names, f"{panel['title']}: no ivr metric in {target['expr']!r}"
            assert names <= exposed, f"{panel['title']}: {sorted(names - exposed)} not exposed by /metrics"
            used |= names
    families = {n.removesuffix("_bucket") for n in used if n.endswith("_bucket")}
    assert {
        "ivr_turn_latency_seconds",
        "ivr_greeting_first_audio_seconds",
        "ivr_interruption_stop_seconds",
        "ivr_tool_duration_seconds",
        "ivr_approval_wait_seconds",
    } <= families
