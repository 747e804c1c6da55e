"""Whole calls over real sockets: simulated Twilio (`ivr call`) ⇄ the app under uvicorn ⇄ fake model.

Every frame in every direction goes through a protocol oracle (Twilio's on the caller side, the openai
SDK's types inside the fake model); any violation fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.audio import ulaw_to_pcm16
from tests.support.calls import app_for, dominant_hz, mulaw_tone, place_call, rms_dbfs
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.server import OPERATOR_TOKEN

GREETING = Reply(text="Hello, test desk.", audio_ms=600, tone_hz=440.0)


def _agent_audio(media: list[dict]) -> np.ndarray:
    raw = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    return ulaw_to_pcm16(raw)


async def _record(server, call_sid: str) -> dict:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get(
            f"/api/calls/{call_sid}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        )
        response.raise_for_status()
        return response.json()


async def test_greeting_reaches_caller_as_mulaw_with_stream_sid(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        update = await session.wait_for("session.update")
        audio = update["session"]["audio"]
        assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert audio["output"]["voice"] == "marin"
        assert "+15550100001" in update["session"]["instructions"]  # {{ caller_number }} was filled
        assert {t["name"] for t in update["session"]["tools"]} == {"end_call", "transfer_to_human"}
        greet = await session.wait_for("response.create")
        assert "Hello, test desk." in greet["response"]["instructions"]

        media = await live.wait_media(6)
        assert {m["streamSid"] for m in media} == {live.call.stream_sid}
        pcm = _agent_audio(media)
        assert abs(len(pcm) - 600 * 8) <= 8 * 3  # 600 ms of audio (± the resampler's edge)
        assert abs(dominant_hz(pcm, 8000) - 440.0) < 8.0
        assert -15.0 < rms_dbfs(pcm[400:-400]) < -9.0  # the fake speaks at -12 dBFS
        # The app sends a mark after each chunk; Twilio echoes it once the audio before it has played.
        await live.call.wait_for(lambda m: m.get("event") == "mark", 2.0)
        await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)
        result = await live.hang_up()
        await asyncio.wait_for(session.closed.wait(), 1.0)  # `stop` closes the model socket within 1 s
    assert result.ended_by == "caller"
    assert result.marks_echoed >= 1


async def test_caller_tone_reaches_model_at_24khz(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server:
        live = await place_call(server, caller_audio=mulaw_tone(1004.0, 1200))
        session = await fake_realtime.next_session()
        await session.wait_input_audio(24000 * 2, timeout=5.0)  # one second of PCM16 at 24 kHz
        assert session.input_format == "pcm"
        pcm = np.frombuffer(bytes(session.input_audio[: 24000 * 2]), dtype="<i2")
        assert abs(dominant_hz(pcm[2400:], 24000) - 1004.0) < 3.0
        assert abs(rms_dbfs(pcm[2400:]) - (-9.0)) < 1.5  # -6 dBFS peak sine = -9 dBFS RMS
        # No energy above the phone band: the upsampler must not add images.
        spectrum = np.abs(np.fft.rfft(pcm[2400:].astype(float) * np.hanning(len(pcm) - 2400)))
        freqs = np.fft.rfftfreq(len(pcm) - 2400, 1 / 24000)
        assert spectrum[freqs > 4500].max() < spectrum.max() * 10 ** (-45 / 20)
        await live.hang_up()


async def test_beta_dialect_with_mulaw_passthrough(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server, to_number="+15550100003", caller_audio=mulaw_tone(700.0, 600))
        session = await fake_realtime.next_session()
        assert session.dialect == "beta"
        assert session.headers.get("openai-beta") == "realtime=v1"
        assert session.model == "gpt-4o-realtime-preview-2025-06-03"
        update = await session.wait_for("session.update")
        assert update["session"]["input_audio_format"] == "g711_ulaw"
        assert update["session"]["output_audio_format"] == "g711_ulaw"
        media = await live.wait_media(6)
        pcm = _agent_audio(media)
        assert abs(dominant_hz(pcm, 8000) - 440.0) < 8.0
        await session.wait_input_audio(8000 // 2)
        # Passthrough: the model receives the caller's μ-law bytes unchanged, in order.
        received = bytes(session.input_audio)
        assert received == bytes(live.call.sent_audio[: len(received)])
        await live.hang_up()


async def test_barge_in_clears_cancels_and_truncates_within_played_audio(
    fake_realtime: FakeRealtimeServer,
) -> None:
    # A long answer generated slowly enough that it is still in flight when the caller interrupts.
    fake_realtime.default_replies = [
        Reply(text="A long answer.", audio_ms=4000, chunk_ms=100, delta_interval_s=0.04)
    ]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await live.wait_media(8)
        await asyncio.wait_for(live.oracle.mark_echoed.wait(), 3.0)  # some audio has really played
        assert session.response_in_flight
        item_id = session.last_assistant_item_id
        await session.speech_started()
        await live.call.wait_for(lambda m: m.get("event") == "clear")
        media_before_clear = len(live.media())
        cancel = await session.wait_for("response.cancel")
        truncate = await session.wait_for("conversation.item.truncate")
        assert cancel["type"] == "response.cancel"
        assert truncate["item_id"] == item_id
        assert truncate["content_index"] == 0
        heard_ms = len(live.call.played_audio) / 8  # everything the caller's playback has played so far
        assert 0 < truncate["audio_end_ms"] <= session.audio_sent_ms(item_id)
        assert truncate["audio_end_ms"] <= heard_ms + 1
        done = await session.wait_response_done()
        assert done["response"]["status"] == "cancelled"
        # Round trip after the cancellation: any late delta would have been forwarded before this echo.
        live.call.press("5")
        await session.wait_for("conversation.item.create", lambda e: "pressed 5" in json.dumps(e))
        assert len(live.media()) == media_before_clear
        await live.hang_up()
    record_counters = session  # the fake has seen no protocol violation (checked by the fixture)
    assert record_counters.count("conversation.item.truncate") == 1


async def test_cancel_not_active_and_other_model_errors_are_harmless(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await live.wait_media(6)
        await session.send_error(
            "response_cancel_not_active", "Cancellation failed: no active response found."
        )
        await session.send_error("invalid_value", "Something was off.")
        before = len(session.input_audio)
        await session.wait_input_audio(before + 24000)  # caller audio keeps flowing: the call is alive
        record = await _record(server, live.call.call_sid)
        assert record["counters"]["model_errors"] == 2
        assert record["outcome"] == "in-progress"
        await live.hang_up()


async def test_end_call_tool_hangs_up_after_goodbye_played(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest
) -> None:
    fake_realtime.default_replies = [GREETING, Reply(text="Goodbye!", audio_ms=400, tone_hz=660.0)]
    async with app_for(fake_realtime, fake_twilio_rest) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        await session.respond(Reply(function_call=("end_call", {"reason": "caller said bye"})))
        output = await session.wait_for(
            "conversation.item.create", lambda e: e["item"].get("type") == "function_call_output"
        )
        assert json.loads(output["item"]["output"])["status"] == "ending"
        await session.wait_for("response.create", lambda e: True)
        update = await fake_twilio_rest.wait_for_update(timeout=10.0)
        assert update.call_sid == live.call.call_sid
        assert update.status == "completed"
        # The hang-up waited for the goodbye: its audio (660 Hz) reached the caller and was played.
        pcm = _agent_audio(live.media())
        assert abs(dominant_hz(pcm[-400 * 8 + 200 :], 8000) - 660.0) < 10.0
        result = await live.result()
    assert result.ended_by == "server"
    assert any(name.startswith("b") for name in live.oracle.marks_echoed)  # the barrier mark came back first
    record = live.call.transcript
    assert any(e["type"] == "tool.called" and e["name"] == "end_call" for e in record)


async def test_keypad_zero_transfers_to_the_flow_number(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest
) -> None:
    fake_realtime.default_replies = [GREETING, Reply(text="Transferring you.", audio_ms=300)]
    async with app_for(fake_realtime, fake_twilio_rest) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        live.call.press("0")
        note = await session.wait_for("conversation.item.create", lambda e: "pressed 0" in json.dumps(e))
        assert "transfer_to_human" in note["item"]["content"][0]["text"]
        update = await fake_twilio_rest.wait_for_update(timeout=10.0)
        assert "<Dial><Number>+15550009999</Number></Dial>" in update.twiml
        assert "Connecting you to a person now." in update.twiml
        result = await live.result()
    assert result.ended_by == "server"


async def test_unknown_tool_and_bad_arguments_go_back_to_the_model(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        await session.respond(Reply(function_call=("launch_rockets", {"count": 3})))
        out = await session.wait_for(
            "conversation.item.create", lambda e: e["item"].get("type") == "function_call_output"
        )
        error = json.loads(out["item"]["output"])["error"]
        assert error["type"] == "unknown_tool"
        assert "end_call" in error["message"]
        await session.wait_response_done()  # the response that made the call
        await session.wait_response_done()  # the model was asked to respond again, and did
        await session.respond(Reply(function_call=("end_call", '{"reason": 42')))
        out = await session.wait_for(
            "conversation.item.create",
            lambda e: (
                e["item"].get("type") == "function_call_output" and "invalid_arguments" in e["item"]["output"]
            ),
        )
        assert "JSON" in json.loads(out["item"]["output"])["error"]["message"]
        await live.hang_up()


async def test_dtmf_reaches_the_model_as_text(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING, Reply(text="You pressed seven.", audio_ms=200)]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        live.call.press("7")
        item = await session.wait_for("conversation.item.create", lambda e: "pressed 7" in json.dumps(e))
        assert item["item"]["role"] == "user"
        assert item["item"]["content"][0] == {
            "type": "input_text",
            "text": "The caller pressed 7 on the keypad.",
        }
        await session.wait_for(
            "response.create", lambda e: "response" not in e or "instructions" not in e["response"]
        )
        await live.hang_up()


async def test_malformed_frames_mid_call_are_counted_not_fatal(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_input_audio(24000)
        ws = live.call._ws
        assert ws is not None
        for junk in (
            "not json at all",
            '{"event":"media","media":{"payload":"@@@"}}',
            '{"event":"bogus"}',
            "[1,2]",
        ):
            await ws.send(junk)
        await ws.send(b"\x00\x01binary")
        before = len(session.input_audio)
        await session.wait_input_audio(before + 24000)  # audio still flows after the junk
        record = await _record(server, live.call.call_sid)
        assert record["counters"]["malformed_twilio"] == 5
        assert record["outcome"] == "in-progress"
        await live.hang_up()


async def test_model_socket_killed_mid_call_reconnects_and_replays(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await first.user_said("My name is Ada.")
        await live.call.wait_for(lambda m: True)  # the call is up
        await first.kill()
        second = await fake_realtime.next_session(timeout=5.0)
        await second.wait_for("session.update")
        user = await second.wait_for("conversation.item.create", lambda e: "My name is Ada." in json.dumps(e))
        assert user["item"]["role"] == "user"
        agent = await second.wait_for(
            "conversation.item.create", lambda e: "Hello, test desk." in json.dumps(e)
        )
        assert agent["item"]["role"] == "assistant"
        assert second.count("response.create") == 0  # no second greeting
        await second.wait_input_audio(24000)  # the caller's audio now reaches the new session
        record = await _record(server, live.call.call_sid)
        assert record["counters"]["model_reconnects"] == 1
        assert record["outcome"] == "in-progress"
        assert _event_types(server, live.call.call_sid).count("model.reconnected") == 1
        assert await _reconnects_metric(server) == 1
        result = await live.hang_up()
    assert result.ended_by == "caller"


async def test_model_session_rolls_over_before_the_cap(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime, model_session_max_s=0.5) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await asyncio.wait_for(first.closed.wait(), 3.0)  # the app retired the socket itself
        second = await fake_realtime.next_session()
        await second.wait_for("conversation.item.create", lambda e: "Hello, test desk." in json.dumps(e))
        # The caller's audio flows to the new socket (which itself retires after 0.5 s: ask for 100 ms).
        await second.wait_input_audio(4800)
        record = await _record(server, live.call.call_sid)
        assert record["counters"]["model_rollovers"] >= 1
        # A planned roll-over is not a reconnect: not counted, no model.reconnected, no Prometheus count.
        assert "model_reconnects" not in record["counters"]
        types = _event_types(server, live.call.call_sid)
        assert "model.rolled_over" in types and "model.reconnected" not in types
        assert await _reconnects_metric(server) == 0
        await live.hang_up()


def _event_types(server, call_sid: str) -> list[str]:
    feed = server.state.calls.get(call_sid)
    assert feed is not None
    return [e["type"] for e in feed.events]


async def _agent_line(server, call_sid: str, timeout: float = 5.0) -> dict:
    """The call's first agent transcript line (from its live event feed), once written."""
    feed = server.state.calls.get(call_sid)
    assert feed is not None
    async with asyncio.timeout(timeout):
        async for event in feed.follow():
            if event["type"] == "transcript" and event["role"] == "agent":
                return event
    raise AssertionError("the call ended without an agent line")


async def _reconnects_metric(server) -> float:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ivr_model_reconnects_total"
    )


async def test_a_greeting_still_playing_at_a_roll_over_is_written_once_heard(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, test desk.", audio_ms=1500)]
    async with app_for(fake_realtime, model_session_max_s=0.5) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()  # generated at once: it plays for 1.5 s at Twilio
        await asyncio.wait_for(first.closed.wait(), 3.0)  # rolled over while the caller listens
        line = await _agent_line(server, live.call.call_sid)
        types = _event_types(server, live.call.call_sid)
        # Released when its audio had played, after the roll-over — not at it, and not marked cut.
        assert types.index("model.rolled_over") < types.index("transcript")
        assert line["text"] == "Hello, test desk." and "interrupted" not in line
        await live.hang_up()


async def test_a_barge_in_over_audio_of_a_rolled_over_session_clears_it_and_cuts_the_line(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, test desk.", audio_ms=3000)]
    async with app_for(fake_realtime, model_session_max_s=0.5) as server:
        live = await place_call(server)
        first = await fake_realtime.next_session()
        await first.wait_response_done()
        await asyncio.wait_for(first.closed.wait(), 3.0)
        second = await fake_realtime.next_session()
        await second.wait_for("conversation.item.create", lambda e: "Hello, test desk." in json.dumps(e))
        await second.speech_started()  # the caller talks over the greeting the first session produced
        await live.call.wait_for(lambda m: m.get("event") == "clear", timeout=3.0)
        sid = live.call.call_sid
        line = await _agent_line(server, sid)
        assert line["interrupted"] is True and 0 <= line["heard_ms"] < line["total_ms"] <= 3000
        (barge,) = [e for e in server.state.calls.get(sid).events if e["type"] == "barge_in"]
        assert barge["items"][0]["item_id"] == line["item_id"]
        # The new session never had that item: nothing to truncate there (and no error back).
        assert second.count("conversation.item.truncate") == 0
        record = await _record(server, sid)
        assert "model_errors" not in record["counters"]
        await live.hang_up()


async def test_concurrent_calls_stay_independent(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    tones = {f"+1555020000{i}": 500.0 + 300.0 * i for i in range(4)}
    async with app_for(fake_realtime) as server:
        calls = await asyncio.gather(
            *(place_call(server, from_number=n, caller_audio=mulaw_tone(hz, 1500)) for n, hz in tones.items())
        )
        sessions = [await fake_realtime.next_session() for _ in tones]
        for session in sessions:
            update = await session.wait_for("session.update")
            number = next(n for n in tones if n in update["session"]["instructions"])
            await session.wait_input_audio(24000 * 2)
            pcm = np.frombuffer(bytes(session.input_audio[: 24000 * 2]), dtype="<i2")
            assert abs(dominant_hz(pcm[2400:], 24000) - tones[number]) < 3.0
        for live in calls:
            media = await live.wait_media(6)
            assert {m["streamSid"] for m in media} == {live.call.stream_sid}
        assert len({live.call.call_sid for live in calls}) == 4
        for live in calls:
            await live.hang_up()
        for session in sessions:
            await asyncio.wait_for(session.closed.wait(), 1.0)


async def test_record_is_finalised_with_transcripts_and_usage(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [GREETING]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        await session.user_said("What time do you open?")
        await live.call.wait_for(lambda m: True)
        result = await live.hang_up()
        record = await _record(server, live.call.call_sid)
    assert record["outcome"] == "completed"
    assert record["ended_at"] is not None
    assert record["usage"]["responses"] == 1
    assert record["usage"]["total_tokens"] > 0
    roles = [(t["role"], t["text"]) for t in record["transcript"]]
    assert ("agent", "Hello, test desk.") in roles
    assert ("caller", "What time do you open?") in roles
    types = [e["type"] for e in result.transcript]
    assert types[0] == "call.started" and types[-1] == "call.ended"


@pytest.mark.parametrize("payload", [b"{}", orjson.dumps({"event": "start"})])
async def test_media_socket_without_start_is_closed_cleanly(
    fake_realtime: FakeRealtimeServer, payload: bytes
) -> None:
    """A socket that never sends a valid start creates no call and opens no model session."""
    import websockets

    from tests.support.server import AUTH_TOKEN

    async with app_for(fake_realtime) as server:
        from twilio.request_validator import RequestValidator

        url = server.settings.media_stream_url
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
        async with websockets.connect(url, additional_headers={"x-twilio-signature": signature}) as ws:
            await ws.send(payload.decode())
            await ws.close()
        assert server.state.calls.live == set()
    assert fake_realtime.sessions == []
