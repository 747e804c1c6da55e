"""The model link under faults, over real sockets: simulated Twilio ⇄ the app under uvicorn ⇄ fake model.

Each test drives the fake Realtime server into one fault — an endpoint that accepts and closes at once, a
final ``error`` event, a flow the model cannot take, a drop in the middle of an answer, a slow first audio —
and checks what the caller gets: a bounded number of attempts, then the local engine or an apology (never
silence), the conversation carried over to the next socket as the caller heard it, the hold phrase while a
slow model thinks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from ivr.call.session import FALLBACK_NOTICE
from ivr.speech.tts import shared_synthesizer
from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.server import OPERATOR_TOKEN, TEST_FLOWS, make_settings, running_server

GREETING = Reply(text="Hello, test desk.", audio_ms=600)
#: A long answer, generated slowly enough to be cut in the middle (40 chunks of 100 ms, one every 50 ms).
LONG_TEXT = (
    "Our opening hours are nine to five on weekdays, and on Saturdays we open from ten until two, "
    "except on public holidays when the office stays closed all day long."
)
LONG = Reply(text=LONG_TEXT, audio_ms=4000, chunk_ms=100, delta_interval_s=0.05)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flows_with_fallback(folder: Path) -> Path:
    text = (TEST_FLOWS / "test-desk.yaml").read_text()
    text = text.replace("model:\n  voice: marin", "model:\n  fallback: local\n  voice: marin", 1)
    assert "fallback: local" in text
    folder.mkdir()
    (folder / "test-desk.yaml").write_text(text)
    return folder


async def _record(server: Any, call_sid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get(
            f"/api/calls/{call_sid}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        )
        response.raise_for_status()
        return response.json()


async def _feed_event(server: Any, call_sid: str, match: Any, timeout: float) -> dict[str, Any]:
    """The first event of the call's live feed (already emitted or to come) for which ``match`` is true."""
    feed = server.state.calls.get(call_sid)
    assert feed is not None
    async with asyncio.timeout(timeout):
        async for event in feed.follow():
            if match(event):
                return event
    raise AssertionError("the call's feed ended without the event")


def _replayed(session: FakeSession) -> list[tuple[str, str]]:
    """(role, text) of every message item the app created on ``session``, in the order sent."""
    out = []
    for event in session.received:
        if event["type"] != "conversation.item.create" or event["item"]["type"] != "message":
            continue
        item = event["item"]
        out.append((item["role"], "".join(part.get("text", "") for part in item["content"])))
    return out


# ---------------------------------------------------------------------------------------------- finding 2


async def test_an_endpoint_that_accepts_then_closes_is_retried_a_bounded_number_of_times(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest
) -> None:
    fake_realtime.close_after_accept = 1_000_000  # quota exhausted / bad key behind a proxy: every time
    async with app_for(fake_realtime, fake_twilio_rest) as server:
        live = await place_call(server, duration_s=30.0)
        # The caller hears the apology within a few seconds, not silence until they give up.
        update = await fake_twilio_rest.wait_for_update(timeout=8.0)
        assert update.twiml is not None and "technical difficulties" in update.twiml
        result = await live.result(timeout=5.0)
        assert result.ended_by == "server"
        record = await _record(server, live.call.call_sid)
    assert 2 <= fake_realtime.accepted <= 10, fake_realtime.accepted
    assert record["outcome"] == "model-unavailable"
    assert record["counters"]["model_drops"] == fake_realtime.accepted


async def test_a_final_error_event_ends_in_an_apology_without_retrying(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest
) -> None:
    fake_realtime.error_on_accept = ("invalid_api_key", "Incorrect API key provided: sk-te***.")
    async with app_for(fake_realtime, fake_twilio_rest) as server:
        live = await place_call(server, duration_s=30.0)
        update = await fake_twilio_rest.wait_for_update(timeout=5.0)
        assert update.twiml is not None and "technical difficulties" in update.twiml
        result = await live.result(timeout=5.0)
        assert result.ended_by == "server"
        record = await _record(server, live.call.call_sid)
    assert fake_realtime.accepted == 1  # final: no second attempt with a key that was refused
    assert record["outcome"] == "model-unavailable"


async def test_without_twilio_rest_the_apology_is_said_on_the_stream(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.error_on_accept = ("invalid_api_key", "Incorrect API key provided.")
    apology = shared_synthesizer().synthesize_mulaw(
        "Sorry, we are having technical difficulties. Please call again later. Goodbye."
    )
    # Twilio's REST API is unreachable (a closed port): the caller must still hear why the call ends.
    async with app_for(fake_realtime, twilio_api_base=f"http://127.0.0.1:{_closed_port()}") as server:
        live = await place_call(server, duration_s=30.0)
        result = await live.result(timeout=10.0)
    assert result.ended_by == "server"
    heard = b"".join(base64.b64decode(m["media"]["payload"]) for m in live.media())
    assert heard == apology


@pytest.mark.slow
async def test_insufficient_quota_falls_back_to_the_local_engine_when_the_flow_allows(
    tmp_path: Path, fake_realtime: FakeRealtimeServer
) -> None:
    flows = _flows_with_fallback(tmp_path / "flows")
    fake_realtime.error_on_accept = ("insufficient_quota", "You exceeded your current quota.")
    async with app_for(fake_realtime, flows_dir=flows) as server:
        live = await place_call(server, duration_s=60.0)
        await fake_realtime.next_session()  # the call is registered and its model task has begun
        fallback = await _feed_event(server, live.call.call_sid, lambda e: e["type"] == "model.fallback", 5.0)
        assert "insufficient_quota" in fallback["reason"]
        line = await _feed_event(
            server,
            live.call.call_sid,
            lambda e: e["type"] == "transcript" and e["role"] == "agent",
            30.0,
        )
        assert line["text"] == FALLBACK_NOTICE
        await live.hang_up()
    assert fake_realtime.accepted == 1


# ---------------------------------------------------------------------------------------------- finding 3


async def test_a_flow_the_model_cannot_take_ends_in_an_apology_not_silence(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest
) -> None:
    # The test desk's voice "marin" exists only for GA models; the preview model speaks the beta dialect.
    async with app_for(
        fake_realtime, fake_twilio_rest, realtime_model="gpt-4o-realtime-preview-2025-06-03"
    ) as server:
        live = await place_call(server, duration_s=30.0)
        update = await fake_twilio_rest.wait_for_update(timeout=5.0)
        assert update.twiml is not None and "technical difficulties" in update.twiml
        result = await live.result(timeout=5.0)
        assert result.ended_by == "server"
        record = await _record(server, live.call.call_sid)
    assert record["outcome"] == "model-unavailable"
    assert record["counters"]["internal_errors"] == 1


# ---------------------------------------------------------------------------------------------- finding 4


async def test_an_answer_cut_by_a_drop_is_replayed_as_heard_and_the_model_goes_on(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [LONG]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await live.wait_media(10)  # a second of the answer has reached the caller
        item_id = first.last_assistant_item_id
        assert item_id is not None and first.response_in_flight
        await first.kill()
        sent_ms = first.audio_sent_ms(item_id)
        second = await fake_realtime.next_session()
        create = await second.wait_for("response.create")
        replayed = _replayed(second)
        assert [role for role, _ in replayed] == ["assistant"], replayed
        heard = replayed[0][1]
        # The part of the answer that reached the caller, no more: a prefix, in proportion to the audio.
        assert heard and LONG_TEXT.startswith(heard) and len(heard) < len(LONG_TEXT)
        assert len(heard) <= len(LONG_TEXT) * (sent_ms + 100) / 4000
        assert len(heard) >= len(LONG_TEXT) * (1000 - 200) / 4000
        instructions = create["response"]["instructions"]
        assert "continue" in instructions.lower() and heard.split()[-1] in instructions
        await live.hang_up()


async def test_after_a_barge_in_the_heard_part_survives_a_drop(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [LONG]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await live.wait_media(8)
        await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)  # some audio has really played
        await first.speech_started()
        truncate = await first.wait_for("conversation.item.truncate")
        done = await first.wait_response_done()
        assert done["response"]["status"] == "cancelled"
        heard_ms = truncate["audio_end_ms"]
        await first.kill()
        second = await fake_realtime.next_session()
        item = await second.wait_for(
            "conversation.item.create", lambda e: e["item"].get("role") == "assistant"
        )
        heard = item["item"]["content"][0]["text"]
        assert heard and LONG_TEXT.startswith(heard)
        # Cut where the caller stopped hearing it (± one 100 ms chunk of text and a word boundary).
        assert len(heard) <= len(LONG_TEXT) * (heard_ms + 200) / 4000, (heard, heard_ms)
        # The caller interrupted on purpose: the model is not asked to carry on with that answer.
        assert second.count("response.create") == 0
        await live.hang_up()


async def test_replay_follows_item_order_not_transcript_arrival(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await live.call.wait_agent_quiet(200)  # the caller heard the whole greeting
        await first.speech_started()
        await first.speech_stopped()
        question = await first.commit_turn()
        await first.respond(Reply(text="We open at nine.", audio_ms=300))
        await first.wait_response_done()
        await first.transcribed(question, "When do you open?")  # after the answer: the API allows it
        # Round trip: the transcript has reached the app once a later event of ours has been answered.
        live.call.press("5")
        await first.wait_for("conversation.item.create", lambda e: "pressed 5" in json.dumps(e))
        await first.kill()
        second = await fake_realtime.next_session()
        await second.wait_for("conversation.item.create", lambda e: "pressed 5" in json.dumps(e))
        texts = [text for _, text in _replayed(second)]
        assert texts[:3] == ["Hello, test desk.", "When do you open?", "We open at nine."], texts
        await live.hang_up()


# ---------------------------------------------------------------------------------------------- slow model


async def test_a_slow_model_gets_the_hold_phrase_in_the_local_voice(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [GREETING]
    hold = shared_synthesizer().synthesize_mulaw("One moment please.")  # the test desk's hold_phrase
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        greeting_media = len(await live.wait_media(6))
        await first.speech_started()
        await first.speech_stopped()
        await first.user_said("What are your opening hours?")
        response_id = await first.respond(Reply(text="Nine to five.", audio_ms=600, first_audio_delay_s=5.0))
        # Within ~3 s of the end of the caller's turn: the hold phrase, while the model has sent no audio.
        await live.call.wait_for(lambda _m: len(live.media()) > greeting_media, timeout=4.5)
        assert not any(
            e["type"].endswith("audio.delta") and e["response_id"] == response_id for e in first.sent
        )
        event = await _feed_event(server, live.call.call_sid, lambda e: e["type"] == "hold_phrase", 2.0)
        assert event["text"] == "One moment please."
        await first.wait_response_done(timeout=8.0)
        await live.call.wait_agent_quiet(300, timeout=8.0)
        after = b"".join(base64.b64decode(m["media"]["payload"]) for m in live.media()[greeting_media:])
        assert after.startswith(hold)  # the phrase, whole, in the local voice, before the answer
        assert len(after) > len(hold)  # …and then the model's answer
        await live.hang_up()


# ---------------------------------------------------------------------------------------------- review 2


class _BlackHole:
    """A TCP listener that accepts connections and never answers (a black-holed model endpoint)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        await reader.read()  # the HTTP upgrade request is read and never answered, until the client leaves

    async def __aenter__(self) -> _BlackHole:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._writers:
            writer.transport.abort()
        self._server.close()
        await self._server.wait_closed()


async def test_a_black_holed_endpoint_ends_in_an_apology_within_about_eight_seconds(
    fake_twilio_rest: FakeTwilioRest,
) -> None:
    loop = asyncio.get_running_loop()
    async with _BlackHole() as hole:
        settings = make_settings(realtime_url=hole.url, twilio_api_base=fake_twilio_rest.base_url)
        async with running_server(settings) as server:
            live = await place_call(server, duration_s=30.0)
            started = loop.time()
            # The model never answered on this call: short connect attempts, then the apology (not 18 s).
            update = await fake_twilio_rest.wait_for_update(timeout=10.0)
            waited = loop.time() - started
            assert update.twiml is not None and "technical difficulties" in update.twiml
            result = await live.result(timeout=5.0)
            assert result.ended_by == "server"
            record = await _record(server, live.call.call_sid)
    assert waited <= 9.5, waited  # ~8 s: the outage limit, counted from the start of the call
    assert hole.accepted >= 2
    assert record["outcome"] == "model-unavailable"


async def test_a_model_that_accepts_and_then_says_nothing_is_given_up_on(
    tmp_path: Path, fake_realtime: FakeRealtimeServer
) -> None:
    flows = _flows_with_fallback(tmp_path / "flows")
    fake_realtime.stall_after_accept = 1_000_000  # the socket opens, and then no event ever comes
    loop = asyncio.get_running_loop()
    async with app_for(fake_realtime, flows_dir=flows) as server:
        live = await place_call(server, duration_s=60.0)
        started = loop.time()
        await fake_realtime.wait_accepted(1)  # the call is registered and its model task has begun
        fallback = await _feed_event(
            server, live.call.call_sid, lambda e: e["type"] == "model.fallback", 10.0
        )
        waited = loop.time() - started
        assert "no event" in fallback["reason"], fallback
        await live.hang_up()
    assert waited <= 9.5, waited
    assert fake_realtime.accepted == 2


async def test_a_reconnect_brings_no_early_roll_over(fake_realtime: FakeRealtimeServer) -> None:
    max_s = 2.0
    # A greeting that takes about a second: the first socket drops after it, a second into its life.
    fake_realtime.default_replies = [
        Reply(text="Hello, test desk.", audio_ms=1000, chunk_ms=100, delta_interval_s=0.1)
    ]
    async with app_for(fake_realtime, model_session_max_s=max_s) as server:
        live = await place_call(server, duration_s=30.0)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await first.kill()
        second = await fake_realtime.next_session()
        third = await fake_realtime.next_session(timeout=max_s + 2.0)  # the second one rolled over
        fourth = await fake_realtime.next_session(timeout=max_s + 2.0)  # …and the third one
        record = await _record(server, live.call.call_sid)
        await live.hang_up()
    for session in (second, third):
        assert session.closed_at is not None
        assert session.closed_at - session.opened_at >= max_s - 0.05, session.closed_at - session.opened_at
    assert fourth.index == 3
    assert record["counters"]["model_rollovers"] == 2
    assert record["counters"]["model_reconnects"] == 1


async def test_no_roll_over_closes_the_local_engine_after_a_fallback(
    tmp_path: Path, fake_realtime: FakeRealtimeServer
) -> None:
    flows = _flows_with_fallback(tmp_path / "flows")
    fake_realtime.close_after_accept = 1_000_000
    async with app_for(fake_realtime, flows_dir=flows, model_session_max_s=1.0) as server:
        live = await place_call(server, duration_s=60.0)
        await fake_realtime.wait_accepted(1)  # the call is registered and its model task has begun
        await _feed_event(server, live.call.call_sid, lambda e: e["type"] == "model.fallback", 5.0)
        # The roll-over timers of the model sockets that failed would fire within a second.
        with pytest.raises(TimeoutError):
            await _feed_event(server, live.call.call_sid, lambda e: e["type"] == "model.rolled_over", 2.5)
        record = await _record(server, live.call.call_sid)
        await live.hang_up()
    assert record["counters"].get("model_rollovers", 0) == 0
    assert record["engine"] == "local"


class _SlowBackend:
    """An HTTP server whose one endpoint answers only when the test releases it."""

    def __init__(self) -> None:
        self.hit = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.hit.set()
        await self.release.wait()
        body = b'{"status": "shipped"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> _SlowBackend:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/orders"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.release.set()
        self._server.close()
        await self._server.wait_closed()


def _flows_with_http_tool(folder: Path, url: str) -> Path:
    text = (TEST_FLOWS / "test-desk.yaml").read_text()
    text += (
        '  - {type: http, name: order_status, description: "Status of an order.", url: "' + url + '", '
        "timeout_s: 10, retries: 0, parameters: {type: object, properties: {order: {type: string}}, "
        "additionalProperties: false}}\n"
    )
    folder.mkdir()
    (folder / "test-desk.yaml").write_text(text)
    return folder


async def test_a_tool_result_survives_a_reconnect_while_the_tool_runs(
    tmp_path: Path, fake_realtime: FakeRealtimeServer
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with _SlowBackend() as backend:
        flows = _flows_with_http_tool(tmp_path / "flows", backend.url)
        async with app_for(fake_realtime, flows_dir=flows) as server:
            live = await place_call(server)
            first = await fake_realtime.next_session()
            await first.wait_response_done()
            await first.respond(Reply(function_call=("order_status", {"order": "A17"})))
            done = await first.wait_response_done()
            call_id = done["response"]["output"][0]["call_id"]
            await asyncio.wait_for(backend.hit.wait(), 5.0)  # the tool is running
            await first.kill()
            second = await fake_realtime.next_session()
            await second.wait_for("session.update")
            backend.release.set()
            await second.wait_for(
                "conversation.item.create", lambda e: e["item"]["type"] == "function_call_output"
            )
            await second.wait_for("response.create")
            await live.hang_up()
    items = [e["item"] for e in second.received if e["type"] == "conversation.item.create"]
    tool_items = [i for i in items if i["type"] in ("function_call", "function_call_output")]
    assert [i["type"] for i in tool_items] == ["function_call", "function_call_output"], tool_items
    assert {i["call_id"] for i in tool_items} == {call_id}
    assert tool_items[0]["name"] == "order_status"
    assert "shipped" in tool_items[1]["output"]


async def test_a_drop_after_the_answer_was_said_asks_for_no_new_answer(
    fake_realtime: FakeRealtimeServer,
) -> None:
    release = asyncio.Event()
    # The whole greeting and its transcript are sent; response.done is not (yet) when the socket drops.
    fake_realtime.default_replies = [Reply(text="Hello, test desk.", audio_ms=300, hold_done=release)]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        fake_realtime.default_replies = [GREETING]
        await _feed_event(
            server,
            live.call.call_sid,
            lambda e: e["type"] == "transcript" and e["role"] == "agent",
            5.0,
        )  # the app has the whole transcript, and the caller heard it
        assert first.response_in_flight
        await first.kill()
        second = await fake_realtime.next_session()
        live.call.press("5")
        pressed = await second.wait_for("conversation.item.create", lambda e: "pressed 5" in json.dumps(e))
        create = await second.wait_for("response.create")
        release.set()
        await live.hang_up()
    # Nothing was cut, so nothing is resumed: the first response asked for is the one the key press asks for.
    assert second.received.index(create) > second.received.index(pressed)


async def test_an_answer_cancelled_before_its_first_mark_is_not_replayed(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await live.call.wait_agent_quiet(200)  # the caller heard the whole greeting
        greeting_media = len(live.media())
        await first.speech_started()
        await first.speech_stopped()
        await first.user_said("What are your opening hours?")
        # 40 ms of audio and its words, then a pause: no mark (one every 100 ms) has gone out yet.
        await first.respond(Reply(text=LONG_TEXT, audio_ms=400, chunk_ms=40, delta_interval_s=1.0))
        await live.wait_media(greeting_media + 1)
        await first.speech_started()  # the caller speaks over it
        done = await first.wait_response_done()
        assert done["response"]["status"] == "cancelled"
        await first.kill()
        second = await fake_realtime.next_session()
        live.call.press("5")
        await second.wait_for("conversation.item.create", lambda e: "pressed 5" in json.dumps(e))
        await live.hang_up()
    texts = [text for _, text in _replayed(second)]
    # The caller heard none of the cancelled answer: it is not in the new session's conversation.
    assert texts == [
        "Hello, test desk.",
        "What are your opening hours?",
        "The caller pressed 5 on the keypad.",
    ]
