"""The fake Realtime server, driven by the REAL openai SDK client over a real socket, behaves like the API.

Every client frame is validated by the strict oracle inside the fake and every frame the fake emits is
validated too, so the ``fake_realtime`` fixture's teardown (violations == []) is part of each test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.support import fixtures as _fixtures
from tests.support.fake_realtime import (
    FakeRealtimeServer,
    RealtimeEvents,
    Reply,
    encode_audio,
    merge_session,
    reply_plan,
    tone_pcm16,
)
from tests.support.oracles import check_server_event

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference G.711 codec, independent of the fake's own encoder

fake_realtime = _fixtures.fake_realtime

GA_MODEL = "gpt-realtime"
BETA_MODEL = "gpt-4o-realtime-preview"
GA_PCMU = {
    "type": "realtime",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "turn_detection": {"type": "server_vad", "create_response": True},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}
BETA_ULAW = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw", "voice": "alloy"}


@asynccontextmanager
async def _connect(
    fake: FakeRealtimeServer, dialect: str = "ga", api_key: str = "sk-test"
) -> AsyncIterator[Any]:
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=fake.base_url)
    try:
        if dialect == "ga":
            async with client.realtime.connect(model=GA_MODEL) as conn:
                yield conn
        else:
            async with client.beta.realtime.connect(model=BETA_MODEL) as conn:
                yield conn
    finally:
        await client.close()


async def _recv(conn: Any, timeout: float = 5.0) -> dict[str, Any]:
    event = await asyncio.wait_for(conn.recv(), timeout)
    return event.model_dump(mode="json", exclude_unset=True)


async def _recv_until(conn: Any, type_: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """All events up to and including the first of ``type_``."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            events.append(await _recv(conn))
            if events[-1]["type"] == type_:
                return events


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[int(np.argmax(spectrum))])


# ---------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------


async def test_ga_pcmu_response_streams_mulaw_audio_and_completes(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [
        Reply(text="Hello there, caller.", audio_ms=1000, tone_hz=440.0, chunk_ms=100)
    ]
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        assert (await _recv(conn))["type"] == "session.created"
        await conn.session.update(session=GA_PCMU)
        updated = await _recv(conn)
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        await conn.response.create()
        events = await _recv_until(conn, "response.done")

    assert session.dialect == "ga" and session.model == GA_MODEL and session.path == "/v1/realtime"
    assert session.session_config == GA_PCMU
    assert session.input_format == "pcmu" and session.output_format == "pcmu"
    types = [e["type"] for e in events]
    assert types[:4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert types[-6:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == 10
    audio = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert len(audio) == 8000  # 1 s of 8 kHz μ-law
    pcm = np.frombuffer(audioop.ulaw2lin(audio, 2), dtype="<i2")
    assert abs(_dominant_hz(pcm, 8000) - 440.0) <= 2.0
    peak_dbfs = 20 * np.log10(np.max(np.abs(pcm)) / 32767)
    assert -12.5 <= peak_dbfs <= -11.5
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == "Hello there, caller."
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"] > 0
    assert done["output"][0]["content"][0]["transcript"] == "Hello there, caller."
    item_ids = {e["item_id"] for e in deltas}
    assert item_ids == {session.last_assistant_item_id}
    assert session.audio_sent_ms(session.last_assistant_item_id) == 1000
    assert not session.response_in_flight
    assert (await session.wait_response_done())["response"]["id"] == done["id"]


async def test_ga_default_format_is_pcm16_at_24khz(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        created = await _recv(conn)
        assert created["session"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        await conn.response.create()
        events = await _recv_until(conn, "response.done")
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert session.output_format == "pcm"
    assert len(audio) == 24000 * 2  # Reply() default: 1000 ms of 16-bit samples at 24 kHz
    assert abs(_dominant_hz(np.frombuffer(audio, dtype="<i2"), 24000) - 440.0) <= 2.0


async def test_beta_dialect_uses_beta_names_and_flat_session(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [
        Reply(audio_ms=300, chunk_ms=100),
        Reply(function_call=("lookup", {"id": 7})),
    ]
    async with _connect(fake_realtime, "beta") as conn:
        session = await fake_realtime.next_session()
        assert (await _recv(conn))["type"] == "session.created"
        await conn.session.update(session=BETA_ULAW)
        assert (await _recv(conn))["session"]["output_audio_format"] == "g711_ulaw"
        await conn.response.create()
        events = await _recv_until(conn, "response.done")
        await conn.response.create()
        calls = await _recv_until(conn, "response.done")
    assert session.dialect == "beta" and session.headers["openai-beta"] == "realtime=v1"
    types = {e["type"] for e in events}
    assert {"response.audio.delta", "response.audio_transcript.delta", "conversation.item.created"} <= types
    assert not any(t.startswith("response.output_audio") for t in types)
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
    assert len(audio) == 2400  # 300 ms of μ-law
    args_done = next(e for e in calls if e["type"] == "response.function_call_arguments.done")
    assert "name" not in args_done and json.loads(args_done["arguments"]) == {"id": 7}


async def test_function_call_reply_and_output_item(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        session.replies.append(Reply(function_call=("lookup_order", {"order_id": "42"})))
        session.replies.popleft()  # drop the default Reply() queued from default_replies
        await conn.response.create()
        events = await _recv_until(conn, "response.done")
        added = next(e for e in events if e["type"] == "response.output_item.added")
        assert added["item"]["type"] == "function_call" and added["item"]["name"] == "lookup_order"
        args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert done["name"] == "lookup_order" and done["arguments"] == args == '{"order_id": "42"}'
        assert done["call_id"] == added["item"]["call_id"] and done["call_id"].startswith("call_")
        assert not any(e["type"] == "response.output_audio.delta" for e in events)

        await conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": done["call_id"],
                "output": '{"status": "shipped"}',
            }
        )
        created = await _recv_until(conn, "conversation.item.done")
        assert [e["type"] for e in created] == [
            "conversation.item.created",
            "conversation.item.added",
            "conversation.item.done",
        ]
        assert created[0]["item"]["id"].startswith("item_")
        output = await session.wait_for(
            "conversation.item.create", lambda e: e["item"]["type"] == "function_call_output"
        )
        assert output["item"]["call_id"] == done["call_id"]


async def test_raw_string_function_arguments_are_passed_through(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await session.respond(Reply(function_call=("lookup_order", '{"order_id": ')))  # truncated JSON
        events = await _recv_until(conn, "response.done")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"order_id": '


# ---------------------------------------------------------------------------------------------------------
# Cancel, truncate, interruption
# ---------------------------------------------------------------------------------------------------------


async def test_cancel_stops_deltas_and_reports_cancelled(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [Reply(audio_ms=5000, chunk_ms=100, delta_interval_s=0.01)]
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await conn.response.create()
        await _recv_until(conn, "response.output_audio.delta")
        assert session.response_in_flight
        await conn.response.cancel()
        events = await _recv_until(conn, "response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        assert not session.response_in_flight
        # A marker round trip: nothing of the cancelled response may arrive after its response.done.
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        )
        after = await _recv_until(conn, "conversation.item.done")
        assert [e["type"] for e in after] == [
            "conversation.item.created",
            "conversation.item.added",
            "conversation.item.done",
        ]
    assert 100 <= session.audio_sent_ms(session.last_assistant_item_id) < 5000


async def test_cancel_of_a_function_call_response(fake_realtime: FakeRealtimeServer) -> None:
    slow_call = Reply(function_call=("lookup_order", {"order_id": "x" * 30}), delta_interval_s=0.05)
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await session.respond(slow_call)
        await _recv_until(conn, "response.function_call_arguments.delta")
        await conn.response.cancel()
        events = await _recv_until(conn, "response.done")
    assert not any(e["type"] == "response.function_call_arguments.done" for e in events)
    output = events[-1]["response"]["output"]
    assert output[0]["type"] == "function_call" and output[0]["status"] == "incomplete"


async def test_interrupting_a_response_at_once_reports_only_announced_output(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.auto_cancel_on_speech = True
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await session.respond(Reply(audio_ms=1000))
        await (
            session.speech_started()
        )  # usually before the response task has sent anything but response.created
        events = await _recv_until(conn, "response.done")
    announced = any(e["type"] == "response.output_item.added" for e in events)
    output = events[-1]["response"]["output"]
    assert events[-1]["response"]["status"] == "cancelled"
    assert len(output) == (1 if announced else 0)


async def test_cancel_without_response_is_an_error_but_not_a_violation(
    fake_realtime: FakeRealtimeServer,
) -> None:
    async with _connect(fake_realtime) as conn:
        await _recv(conn)
        await conn.response.cancel()
        error = await _recv(conn)
    assert error["type"] == "error" and error["error"]["code"] == "response_cancel_not_active"
    assert fake_realtime.violations == []


async def test_second_response_create_while_in_flight_is_a_violation(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.default_replies = [Reply(audio_ms=2000, delta_interval_s=0.01)]
    async with _connect(fake_realtime) as conn:
        await _recv(conn)
        await conn.response.create()
        await _recv_until(conn, "response.created")
        await conn.response.create(event_id="event_dup")
        error = next(e for e in await _recv_until(conn, "error") if e["type"] == "error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == "event_dup"
        await conn.response.cancel()
        await _recv_until(conn, "response.done")
    assert len(fake_realtime.violations) == 1 and "in flight" in fake_realtime.violations[0]
    fake_realtime.violations.clear()


async def test_truncate_within_and_beyond_sent_audio(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [Reply(audio_ms=600, chunk_ms=200)]
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await conn.response.create()
        await _recv_until(conn, "response.done")
        item_id = session.last_assistant_item_id
        assert item_id is not None and session.audio_sent_ms(item_id) == 600

        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=400)
        truncated = await _recv(conn)
        assert truncated == {
            "type": "conversation.item.truncated",
            "event_id": truncated["event_id"],
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 400,
        }
        await conn.conversation.item.truncate(item_id="item_unknown", content_index=0, audio_end_ms=0)
        assert (await _recv(conn))["error"]["code"] == "item_truncate_invalid_item_id"
        assert fake_realtime.violations == []

        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=601)
        error = await _recv(conn)
    assert error["type"] == "error"
    expected = "truncate beyond sent audio: audio_end_ms=601 but only 600 ms sent"
    assert fake_realtime.violations == [f"[session 0 ga] conversation.item.truncate: {expected}"]
    fake_realtime.violations.clear()


async def test_speech_started_auto_cancels_and_user_turn_is_committed(
    fake_realtime: FakeRealtimeServer,
) -> None:
    fake_realtime.auto_cancel_on_speech = True
    fake_realtime.default_replies = [Reply(audio_ms=5000, delta_interval_s=0.01)]
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await conn.input_audio_buffer.append(audio=base64.b64encode(b"\x00" * 4800).decode())
        await session.wait_input_audio(4800)
        response_id = await session.respond()
        await _recv_until(conn, "response.output_audio.delta")
        item_id = await session.speech_started()
        events = await _recv_until(conn, "response.done")
        started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
        assert (
            started["item_id"] == item_id and started["audio_start_ms"] == 100
        )  # 4800 bytes of 24 kHz PCM16
        assert events[-1]["response"]["id"] == response_id
        assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"

        await session.speech_stopped()
        assert (await _recv(conn))["item_id"] == item_id
        assert await session.user_said("I want to speak to a person") == item_id
        turn = await _recv_until(conn, "conversation.item.input_audio_transcription.completed")
    assert [e["type"] for e in turn] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert turn[-1]["transcript"] == "I want to speak to a person" and turn[0]["item_id"] == item_id


async def test_without_auto_cancel_speech_started_leaves_the_response_running(
    fake_realtime: FakeRealtimeServer,
) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await session.respond(Reply(audio_ms=300))
        await session.speech_started()
        events = await _recv_until(conn, "response.done")
    assert events[-1]["response"]["status"] == "completed"


# ---------------------------------------------------------------------------------------------------------
# Input audio, waiting, errors
# ---------------------------------------------------------------------------------------------------------


async def test_input_audio_is_decoded_and_waitable(fake_realtime: FakeRealtimeServer) -> None:
    chunk = bytes(range(160))
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await conn.session.update(session=GA_PCMU)
        waiter = asyncio.create_task(session.wait_input_audio(480))
        for _ in range(3):
            await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        await waiter
        assert bytes(session.input_audio) == chunk * 3
        assert session.count("input_audio_buffer.append") == 3
        await conn.input_audio_buffer.commit()  # 60 ms < 100 ms
        assert (await _recv_until(conn, "error"))[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
        with pytest.raises(TimeoutError, match=r"client event 'response\.create'"):
            await session.wait_for("response.create", timeout=0.05)
    assert fake_realtime.violations == []


async def test_invalid_client_event_is_recorded_and_answered_with_error(
    fake_realtime: FakeRealtimeServer,
) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await conn.send({"type": "input_audio_buffer.append", "audio": 123, "event_id": "event_bad"})
        error = await _recv(conn)
        await conn.send(
            {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"speed": 9.0}}}}
        )
        error2 = await _recv(conn)
    assert error["type"] == "error" and error["error"]["event_id"] == "event_bad"
    assert "string_type" in error["error"]["message"]
    assert error2["type"] == "error" and "outside 0.25..1.5" in error2["error"]["message"]
    assert session.received == []  # invalid events are not delivered as received
    assert len(fake_realtime.violations) == 2
    assert fake_realtime.violations[0].startswith("[session 0 ga] 'input_audio_buffer.append': ")
    fake_realtime.violations.clear()


async def test_send_error_reaches_the_client(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await session.send_error("rate_limit_exceeded", "Slow down", type="rate_limit_error")
        error = await _recv(conn)
    assert error["error"] == {
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
        "message": "Slow down",
        "param": None,
    }


# ---------------------------------------------------------------------------------------------------------
# Handshake and connection lifecycle
# ---------------------------------------------------------------------------------------------------------


async def test_ga_handshake_is_recorded(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime):
        session = await fake_realtime.next_session()
    assert session.query == {"model": GA_MODEL}
    assert session.headers["authorization"] == "Bearer sk-test"
    assert "openai-beta" not in session.headers


async def test_wrong_api_key_is_refused_with_401(fake_realtime: FakeRealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with _connect(fake_realtime, api_key="sk-wrong"):
            pass
    assert info.value.response.status_code == 401
    assert fake_realtime.sessions == []
    assert len(fake_realtime.violations) == 1 and "Authorization" in fake_realtime.violations[0]
    assert "sk-wrong" not in fake_realtime.violations[0]
    fake_realtime.violations.clear()


@pytest.mark.parametrize(
    ("path", "headers", "status", "problem"),
    [
        ("/v1/realtime", {"Authorization": "Bearer sk-test"}, 400, "'model' is missing"),
        (
            "/v1/chat?model=gpt-realtime",
            {"Authorization": "Bearer sk-test"},
            400,
            "does not end with /realtime",
        ),
        ("/v1/realtime?model=gpt-realtime", {}, 401, "Authorization header is missing"),
        (
            "/v1/realtime?model=gpt-realtime",
            {"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v2"},
            400,
            "OpenAI-Beta must be absent",
        ),
    ],
)
async def test_bad_handshakes_are_refused(
    fake_realtime: FakeRealtimeServer, path: str, headers: dict[str, str], status: int, problem: str
) -> None:
    url = fake_realtime.url.removesuffix("/v1/realtime") + path
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, additional_headers=headers):
            pass
    assert info.value.response.status_code == status
    assert len(fake_realtime.violations) == 1 and problem in fake_realtime.violations[0]
    fake_realtime.violations.clear()


async def test_reject_handshakes_refuses_then_accepts(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.reject_handshakes = 2
    for _ in range(2):
        with pytest.raises(InvalidStatus) as info:
            async with _connect(fake_realtime):
                pass
        assert info.value.response.status_code == 503
    async with _connect(fake_realtime) as conn:
        assert (await _recv(conn))["type"] == "session.created"
    assert len(fake_realtime.sessions) == 1
    assert fake_realtime.violations == []


async def test_kill_drops_the_connection_without_a_close_frame(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime) as conn:
        session = await fake_realtime.next_session()
        await _recv(conn)
        await session.kill()
        assert session.closed.is_set()
        with pytest.raises(ConnectionClosedError) as info:
            await _recv(conn)
        assert info.value.rcvd is None  # no close frame was received


async def test_close_with_code_and_next_session_order(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime) as first, _connect(fake_realtime, "beta") as second:
        one, two = await fake_realtime.next_session(), await fake_realtime.next_session()
        assert (one.dialect, two.dialect) == ("ga", "beta")
        await _recv(first)
        await two.close(4000)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await _recv(second)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000
        assert two.closed.is_set() and not one.closed.is_set()
    with pytest.raises(TimeoutError, match="Realtime connection #3"):
        await fake_realtime.next_session(timeout=0.05)


async def test_client_disconnect_sets_closed(fake_realtime: FakeRealtimeServer) -> None:
    async with _connect(fake_realtime):
        session = await fake_realtime.next_session()
    await asyncio.wait_for(session.closed.wait(), 5)


# ---------------------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------------------


def test_g711_encoders_match_the_reference_codec() -> None:
    ramp = np.linspace(-32768, 32767, 65536).astype(np.int16)
    assert encode_audio(ramp, "pcmu") == audioop.lin2ulaw(ramp.tobytes(), 2)
    assert encode_audio(ramp, "pcma") == audioop.lin2alaw(ramp.tobytes(), 2)
    assert encode_audio(ramp[:4], "pcm") == ramp[:4].astype("<i2").tobytes()
    with pytest.raises(ValueError, match="unknown Realtime audio format 'wav'"):
        encode_audio(ramp, "wav")


def test_tone_level_and_length() -> None:
    tone = tone_pcm16(1000.0, 8000, 8000)
    assert len(tone) == 8000
    assert int(np.max(np.abs(tone))) == round(32767 * 10 ** (-12 / 20))


def test_merge_session_replaces_tagged_variants() -> None:
    base = {
        "type": "realtime",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
    }
    merged = merge_session(base, {"audio": {"output": {"format": {"type": "audio/pcmu"}}}})
    assert merged["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert base["audio"]["output"]["format"]["rate"] == 24000  # input not mutated


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize(
    "reply",
    [Reply(), Reply(audio_ms=0), Reply(audio_ms=250, chunk_ms=100), Reply(function_call=("f", {"a": 1}))],
    ids=["default", "no-audio", "partial-chunk", "function"],
)
def test_every_planned_event_passes_the_server_oracle(dialect: str, reply: Reply) -> None:
    events = RealtimeEvents(dialect)  # type: ignore[arg-type]
    plan = list(
        reply_plan(
            events,
            reply,
            response_id="resp_1",
            item_id="item_1",
            previous_item_id=None,
            output_format="pcmu",
            input_audio_ms=0,
        )
    )
    for step in plan:
        check_server_event(dialect, step.event)  # type: ignore[arg-type]
    assert plan[0].event["type"] == "response.created" and plan[-1].event["type"] == "response.done"
    assert sum(s.audio_samples for s in plan) == (0 if reply.function_call else reply.audio_ms * 8)
    for model in (GA_MODEL, BETA_MODEL, "some-future-model"):
        session = events.default_session(model)
        check_server_event(dialect, events.event("session.created", session=session))  # type: ignore[arg-type]
