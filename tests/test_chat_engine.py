"""The Chat Completions audio engine against a protocol-faithful fake of ``POST /v1/chat/completions``.

The engine is driven exactly as the call drives it — Realtime client events in, Realtime GA server events
out — and every server event it emits goes through the strict Realtime oracle. On the other side the fake
checks every HTTP request against the ``openai`` SDK's request types plus the service's own rules, and the
engine's SDK client validates every chunk (``strict=True``). Caller audio is 8 kHz μ-law: 440 Hz tone bursts
(which WebRTC VAD classes as voiced) between silences.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from ivr.audio import ULAW_SILENCE, ulaw_to_pcm16
from ivr.call.pricing import estimate_cost_usd, prices_for
from ivr.engines.chat import ChatEngine
from ivr.engines.chat_state import (
    OLD_AUDIO_NOTE,
    PENDING_OUTPUT,
    AssistantTurn,
    ChatConversation,
    ToolCall,
    usage_to_realtime,
)
from ivr.engines.factory import engine_kind
from ivr.speech.vad import SpeechStopped, TurnDetector
from tests.support.calls import dominant_hz, mulaw_tone, place_call
from tests.support.fake_chat import (
    OUTPUT_RATE,
    ChatReply,
    FakeChatServer,
    check_chat_request,
    sample_wav_b64,
)
from tests.support.fixtures import OPENAI_TEST_KEY, format_violations
from tests.support.oracles import ProtocolViolation, check_server_event
from tests.support.server import make_settings, running_server

INSTRUCTIONS = "You answer the phone for a test desk."
LOOKUP_TOOL = {
    "type": "function",
    "name": "find_patient",
    "description": "Find a patient by phone number.",
    "parameters": {"type": "object", "properties": {"phone": {"type": "string"}}, "required": ["phone"]},
}
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 60,
    "total_tokens": 180,
    "prompt_tokens_details": {"audio_tokens": 20, "cached_tokens": 12},
    "completion_tokens_details": {"audio_tokens": 45, "reasoning_tokens": 0},
}


def silence(ms: int) -> bytes:
    return bytes([ULAW_SILENCE]) * (8 * ms)


def caller_turn(speech_ms: int = 800, lead_ms: int = 300, tail_ms: int = 900) -> bytes:
    """Silence, a 440 Hz burst the VAD hears as speech, then enough silence to end the turn."""
    return silence(lead_ms) + mulaw_tone(440.0, speech_ms, -12.0) + silence(tail_ms)


def frames(mulaw: bytes, size: int = 160) -> list[bytes]:
    return [mulaw[i : i + size] for i in range(0, len(mulaw), size)]


class Driver:
    """Plays the call's side of the model socket; every server event is checked by the GA oracle."""

    def __init__(self, engine: ChatEngine) -> None:
        self.engine = engine
        self.events: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.engine:
            try:
                check_server_event("ga", raw)
            except ProtocolViolation as exc:
                self.violations.append(f"{exc} in {raw[:200]!r}")
            self.events.append(orjson.loads(raw))
            self._changed.set()
            self._changed = asyncio.Event()

    async def send(self, type_: str, **fields: Any) -> None:
        await self.engine.send(orjson.dumps({"type": type_, **fields}))

    async def configure(self, tools: list[dict[str, Any]] | None = None) -> None:
        session = {"type": "realtime", "instructions": INSTRUCTIONS, "tools": tools or []}
        await self.send("session.update", session=session)

    async def say(self, mulaw: bytes) -> None:
        """Caller audio, as the call appends it: one 20 ms Twilio frame per event."""
        for frame in frames(mulaw):
            await self.send("input_audio_buffer.append", audio=base64.b64encode(frame).decode())

    async def wait_for(
        self,
        type_: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event["type"] == type_ and (where is None or where(event)):
                        return event
                changed = self._changed
                await changed.wait()

    async def done(self, *, after: int = 0) -> dict[str, Any]:
        return (await self.wait_for("response.done", after=after))["response"]

    def of(self, type_: str, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events[start:end] if e["type"] == type_]

    def index(self, event: dict[str, Any]) -> int:
        return next(i for i, e in enumerate(self.events) if e is event)

    async def close(self) -> None:
        await self.engine.close()
        await asyncio.wait_for(self._reader, 2.0)
        assert self.violations == [], format_violations("Realtime GA oracle", self.violations)


@pytest.fixture
async def fake_chat() -> AsyncIterator[FakeChatServer]:
    server = FakeChatServer(api_key=OPENAI_TEST_KEY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert server.violations == [], format_violations("fake Chat Completions", server.violations)


def make_engine(fake: FakeChatServer, **options: Any) -> ChatEngine:
    options.setdefault("max_retries", 0)
    return ChatEngine(
        model="gpt-audio-1.5",
        api_key=OPENAI_TEST_KEY,
        base_url=fake.base_url,
        voice="marin",
        strict=True,
        **options,
    )


@pytest.fixture
async def driver(fake_chat: FakeChatServer) -> AsyncIterator[Driver]:
    engine = await make_engine(fake_chat).open()
    drv = Driver(engine)
    try:
        yield drv
    finally:
        await drv.close()


def mulaw_audio(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


# ---- caller turns and replies ----------------------------------------------------------------------------


async def test_caller_turn_goes_out_as_one_wav_and_the_reply_streams_back_as_mulaw(
    fake_chat: FakeChatServer, driver: Driver
) -> None:
    fake_chat.script(
        ChatReply(transcript="Hello there, how can I help?", audio_ms=900, tone_hz=660.0, usage=USAGE)
    )
    await driver.configure([LOOKUP_TOOL])
    audio = caller_turn()
    await driver.say(audio)

    started = await driver.wait_for("input_audio_buffer.speech_started")
    stopped = await driver.wait_for("input_audio_buffer.speech_stopped")
    committed = await driver.wait_for("input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    response = await driver.done()
    assert response["status"] == "completed"

    # Exactly one request, carrying exactly the turn the VAD cut, as an 8 kHz mono 16-bit WAV.
    assert len(fake_chat.exchanges) == 1
    exchange = fake_chat.exchanges[0]
    expected = [e for e in TurnDetector().feed_mulaw(audio) if isinstance(e, SpeechStopped)]
    assert len(expected) == 1 and len(exchange.wavs) == 1
    wav = exchange.wavs[0]
    assert (wav.rate, wav.channels, wav.sample_width) == (8000, 1, 2)
    assert wav.pcm == expected[0].audio
    assert 800 <= wav.duration_ms <= 800 + 300 + 600  # the burst, its prefix, a little trailing silence
    body = exchange.body
    assert body["model"] == "gpt-audio-1.5"
    assert body["modalities"] == ["text", "audio"]
    assert body["audio"] == {"voice": "marin", "format": "pcm16"}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert body["messages"][-1]["role"] == "user"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "find_patient",
                "description": LOOKUP_TOOL["description"],
                "parameters": LOOKUP_TOOL["parameters"],
            },
        }
    ]
    assert body["tool_choice"] == "auto"

    # The reply: 900 ms at 24 kHz became ~900 ms of 8 kHz μ-law, in several deltas, still a 660 Hz tone.
    deltas = driver.of("response.output_audio.delta")
    assert len(deltas) >= 5
    mulaw = mulaw_audio(driver.events)
    assert abs(len(mulaw) - exchange.audio_bytes_sent // 6) <= 8
    pcm = ulaw_to_pcm16(mulaw)
    assert abs(dominant_hz(pcm[400:-400], 8000) - 660.0) < 10.0
    done = await driver.wait_for("response.output_audio_transcript.done")
    assert done["transcript"] == "Hello there, how can I help?"
    assert response["output"][0]["content"][0]["transcript"] == "Hello there, how can I help?"
    assert response["usage"] == usage_to_realtime_dict(USAGE)


def usage_to_realtime_dict(usage: dict[str, Any]) -> dict[str, Any]:
    from openai.types import CompletionUsage

    return usage_to_realtime(CompletionUsage.model_validate(usage))


def test_usage_maps_tokens_by_modality() -> None:
    usage = usage_to_realtime_dict(USAGE)
    assert usage["input_tokens"] == 120 and usage["output_tokens"] == 60 and usage["total_tokens"] == 180
    assert usage["input_token_details"]["audio_tokens"] == 20
    assert usage["input_token_details"]["text_tokens"] == 100
    assert usage["input_token_details"]["cached_tokens"] == 12
    assert usage["input_token_details"]["cached_tokens_details"]["audio_tokens"] == 2
    assert usage["output_token_details"] == {"audio_tokens": 45, "text_tokens": 15}
    # gpt-audio-1.5: text $2.50/$10, audio $32/$64 per million tokens (no cached rate: billed in full).
    flat = {
        "input_text_tokens": 100,
        "input_audio_tokens": 20,
        "output_text_tokens": 15,
        "output_audio_tokens": 45,
    }
    cost = estimate_cost_usd("gpt-audio-1.5", flat)
    assert cost == pytest.approx((100 * 2.5 + 20 * 32 + 15 * 10 + 45 * 64) / 1e6)
    assert prices_for("gpt-4o-audio-preview-2025-06-03") is not None
    assert prices_for("gpt-audio-mini-2025-12-15") is None  # its audio prices are not published


async def test_reply_audio_is_forwarded_before_the_stream_ends(
    fake_chat: FakeChatServer, driver: Driver
) -> None:
    fake_chat.script(ChatReply(transcript="One moment.", audio_ms=1500, pace_s=0.05))
    await driver.configure()
    await driver.send("response.create")
    await driver.wait_for("response.output_audio.delta")
    exchange = await fake_chat.wait_exchange(1)
    assert not exchange.ended.is_set()  # the first audio is out while the model is still streaming
    assert (await driver.done())["status"] == "completed"


async def test_turn_can_be_sent_upsampled_to_16khz(fake_chat: FakeChatServer) -> None:
    engine = await make_engine(fake_chat, wav_rate=16000).open()
    drv = Driver(engine)
    try:
        await drv.configure()
        audio = caller_turn()
        await drv.say(audio)
        await drv.done()
        (wav,) = fake_chat.exchanges[0].wavs
        expected = next(e for e in TurnDetector().feed_mulaw(audio) if isinstance(e, SpeechStopped))
        assert wav.rate == 16000 and wav.frames == 2 * len(expected.audio) // 2
    finally:
        await drv.close()


# ---- tools, instructions, history -------------------------------------------------------------------------


async def test_tool_call_round_trip_carries_tool_calls_and_results(
    fake_chat: FakeChatServer, driver: Driver
) -> None:
    arguments = {"phone": "+15550100001"}
    fake_chat.script(
        ChatReply(transcript="Let me look that up.", audio_ms=300, tool_calls=[("find_patient", arguments)]),
        ChatReply(transcript="I found your file, Maria.", audio_ms=300),
    )
    await driver.configure([LOOKUP_TOOL])
    await driver.say(caller_turn())
    first = await driver.done()
    assert first["status"] == "completed"
    calls = [o for o in first["output"] if o["type"] == "function_call"]
    assert len(calls) == 1 and calls[0]["name"] == "find_patient"
    assert json.loads(calls[0]["arguments"]) == arguments
    assert calls[0]["arguments"] == json.dumps(arguments)  # the model's text, passed on untouched
    call_id = calls[0]["call_id"]

    mark = len(driver.events)
    output = json.dumps({"first_name": "Maria"})
    await driver.send(
        "conversation.item.create",
        item={"type": "function_call_output", "call_id": call_id, "output": output},
    )
    await driver.send("response.create")
    second = await driver.done(after=mark)
    assert second["status"] == "completed"

    messages = fake_chat.exchanges[1].messages
    assistant, tool = messages[-2], messages[-1]
    audio_id = next(iter(fake_chat.audio_ids))
    assert assistant == {
        "role": "assistant",
        "audio": {"id": audio_id},
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "find_patient", "arguments": json.dumps(arguments)},
            }
        ],
    }
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": output}
    assert messages[-3]["role"] == "user" and messages[-3]["content"][0]["type"] == "input_audio"


async def test_response_instructions_are_a_system_message_for_that_response_only(
    fake_chat: FakeChatServer, driver: Driver
) -> None:
    await driver.configure()
    greet = 'Greet the caller now by saying exactly: "Hello, test desk."'
    await driver.send("response.create", response={"instructions": greet})
    await driver.done()
    mark = len(driver.events)
    await driver.send("response.create")
    await driver.done(after=mark)
    first, second = fake_chat.exchanges[0].messages, fake_chat.exchanges[1].messages
    assert first == [{"role": "system", "content": INSTRUCTIONS}, {"role": "system", "content": greet}]
    assert greet not in json.dumps(second)
    assert second[-1]["role"] == "assistant"  # the greeting itself, referred to by its audio id


async def test_replayed_history_items_map_to_chat_messages(fake_chat: FakeChatServer, driver: Driver) -> None:
    await driver.configure([LOOKUP_TOOL])
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "I need my file."}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me check."}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "find_patient", "arguments": '{"phone": "1"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"found": true}'},
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Approved by staff."}],
        },
    ]
    for item in items:
        await driver.send("conversation.item.create", item=item)
    await driver.send("response.create")
    await driver.done()
    assert fake_chat.exchanges[0].messages == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "I need my file."},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "find_patient", "arguments": '{"phone": "1"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"found": true}'},
        {"role": "system", "content": "Approved by staff."},
    ]


async def test_unsupported_item_is_an_error_event(driver: Driver) -> None:
    await driver.send(
        "conversation.item.create", item={"type": "message", "role": "user", "content": "plain"}
    )
    error = await driver.wait_for("error")
    assert error["error"]["code"] == "invalid_value"
    assert "content" in error["error"]["message"]


# ---- barge-in ---------------------------------------------------------------------------------------------


async def test_barge_in_cancels_the_stream_at_once_and_keeps_only_what_was_heard(
    fake_chat: FakeChatServer, driver: Driver
) -> None:
    words = "one two three four five six seven eight nine ten"
    fake_chat.script(
        ChatReply(transcript=words, audio_ms=4000, chunk_ms=100, pace_s=0.04),
        ChatReply(transcript="Sorry, go ahead.", audio_ms=300),
    )
    await driver.configure()
    await driver.send("response.create")
    first_delta = await driver.wait_for("response.output_audio.delta")
    item_id = first_delta["item_id"]
    exchange = await fake_chat.wait_exchange(1)
    await driver.wait_for(
        "response.output_audio.delta", lambda _e: len(driver.of("response.output_audio.delta")) >= 6
    )

    # The caller talks over the reply: the engine reports speech; the call cancels, as on a real call.
    await driver.say(silence(100) + mulaw_tone(440.0, 300, -12.0))
    await driver.wait_for("input_audio_buffer.speech_started")
    await driver.send("response.cancel")
    done = await driver.done()
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    at_done = driver.index(await driver.wait_for("response.done"))

    # The fake saw the client drop the stream well before its end.
    await fake_chat.wait_ended(exchange, 2.0)
    assert exchange.closed_by_client and not exchange.done_sent
    sent_ms = exchange.audio_bytes_sent / (OUTPUT_RATE * 2 / 1000)
    assert sent_ms < 3000

    # The caller heard 200 ms of it; then the turn ends and the next request carries only what was heard.
    await driver.send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=200)
    await driver.wait_for("conversation.item.truncated")
    await driver.say(mulaw_tone(440.0, 400, -12.0) + silence(900))
    await driver.done(after=at_done + 1)
    # Nothing of the cancelled response came after its response.done.
    cancelled_id = done["id"]
    late = [e for e in driver.events[at_done + 1 :] if e.get("response_id") == cancelled_id]
    assert late == []

    messages = fake_chat.exchanges[1].messages
    assistant = next(m for m in messages if m["role"] == "assistant")
    turn = driver.engine.conversation.entries[0]
    assert isinstance(turn, AssistantTurn) and turn.interrupted and turn.heard_ms == 200
    expected_words = words.split()[: round(len(turn.transcript.split()) * 200 / turn.audio_ms)]
    assert expected_words  # some words were heard
    assert assistant == {"role": "assistant", "content": " ".join(expected_words) + "…"}
    assert "audio" not in assistant


async def test_speech_ending_during_a_response_replaces_it(fake_chat: FakeChatServer, driver: Driver) -> None:
    fake_chat.script(ChatReply(transcript="A long answer.", audio_ms=4000, pace_s=0.05), ChatReply())
    await driver.configure()
    await driver.send("response.create")
    await driver.wait_for("response.output_audio.delta")
    await driver.say(caller_turn(lead_ms=0))  # nobody sends response.cancel this time
    first = await driver.done()
    assert first["status"] == "cancelled"
    second = await driver.done(after=driver.index(await driver.wait_for("response.done")) + 1)
    assert second["status"] == "completed"
    assert fake_chat.exchanges[0].closed_by_client


# ---- failures ----------------------------------------------------------------------------------------------


async def test_http_500_is_an_error_and_a_failed_response_then_the_next_turn_works(
    fake_chat: FakeChatServer, driver: Driver
) -> None:
    fake_chat.script(ChatReply(status=500), ChatReply(transcript="Back again."))
    await driver.configure()
    await driver.say(caller_turn())
    error = await driver.wait_for("error")
    assert error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "http_500"
    assert "HTTP 500" in error["error"]["message"] and fake_chat.base_url in error["error"]["message"]
    failed = await driver.done()
    assert failed["status"] == "failed"
    assert failed["status_details"]["error"]["code"] == "http_500"
    assert driver.of("response.output_audio.delta") == []

    mark = len(driver.events)
    await driver.say(caller_turn())
    ok = await driver.done(after=mark)
    assert ok["status"] == "completed"
    assert ok["output"][0]["content"][0]["transcript"] == "Back again."
    # Both caller turns are in the retry; the failed response left nothing behind.
    messages = fake_chat.exchanges[1].messages
    assert [m["role"] for m in messages] == ["system", "user", "user"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        # A chunk without "created" and with numeric audio data: the strict SDK client refuses it.
        ('{"id": "x", "object": "chat.completion.chunk", "model": "m", "choices": []}', "invalid_response"),
        # An error object in the middle of the stream.
        ('{"error": {"message": "overloaded", "type": "server_error", "code": null}}', "stream_error"),
    ],
)
async def test_broken_stream_fails_the_response_without_ending_the_call(
    fake_chat: FakeChatServer, driver: Driver, raw: str, code: str
) -> None:
    fake_chat.script(ChatReply(raw_events=[raw]), ChatReply(transcript="Working again."))
    await driver.configure()
    await driver.send("response.create")
    error = await driver.wait_for("error")
    assert error["error"]["code"] == code
    assert (await driver.done())["status"] == "failed"
    mark = len(driver.events)
    await driver.send("response.create")
    assert (await driver.done(after=mark))["status"] == "completed"


async def test_rate_limit_is_retried_once_by_the_sdk(fake_chat: FakeChatServer) -> None:
    fake_chat.script(ChatReply(status=429, error_code="rate_limit_exceeded"), ChatReply(transcript="Hi."))
    engine = await make_engine(fake_chat, max_retries=1).open()
    drv = Driver(engine)
    try:
        await drv.configure()
        await drv.send("response.create")
        assert (await drv.done())["status"] == "completed"
        assert len(fake_chat.exchanges) == 2 and drv.of("error") == []
    finally:
        await drv.close()


async def test_unreachable_endpoint_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: connection refused
    engine = await ChatEngine(
        model="gpt-audio-1.5", api_key=OPENAI_TEST_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
    ).open()
    drv = Driver(engine)
    try:
        await drv.configure()
        await drv.send("response.create")
        error = await drv.wait_for("error")
        assert error["error"]["code"] == "connection_error"
        assert "IVR_OPENAI_BASE_URL" in error["error"]["message"]
        assert (await drv.done())["status"] == "failed"
    finally:
        await drv.close()


async def test_nothing_to_answer_fails_locally(fake_chat: FakeChatServer, driver: Driver) -> None:
    await driver.send("response.create")  # no session.update yet, no conversation
    error = await driver.wait_for("error")
    assert error["error"]["code"] == "empty_conversation"
    assert (await driver.done())["status"] == "failed"
    assert fake_chat.exchanges == []


def test_missing_api_key_is_refused_with_a_hint() -> None:
    from ivr.realtime.connection import RealtimeConnectError

    with pytest.raises(RealtimeConnectError, match="OPENAI_API_KEY"):
        ChatEngine(model="gpt-audio-1.5", api_key="")


# ---- the conversation kept between requests (sans-I/O) --------------------------------------------------


def test_history_is_bounded_and_old_audio_becomes_text() -> None:
    now = 1_000_000.0
    conv = ChatConversation(max_turns=3, audio_turns=2, clock=lambda: now)
    for n in range(5):
        conv.add_user_audio(b"RIFF" + bytes([n]), 500)
        conv.add_assistant(
            AssistantTurn(item_id=f"i{n}", transcript=f"answer {n}", audio_id=f"audio_{n}", audio_ms=400)
        )
    messages = conv.messages("sys")
    assert messages[0] == {"role": "system", "content": "sys"}
    users = [m for m in messages if m["role"] == "user"]
    assistants = [m for m in messages if m["role"] == "assistant"]
    assert len(users) == 3 and len(assistants) == 3  # turns 2, 3, 4
    assert users[0] == {"role": "user", "content": OLD_AUDIO_NOTE}
    assert [u["content"][0]["type"] for u in users[1:]] == ["input_audio", "input_audio"]
    assert assistants[0] == {"role": "assistant", "content": "answer 2"}  # outside the audio window
    assert assistants[1:] == [
        {"role": "assistant", "audio": {"id": "audio_3"}},
        {"role": "assistant", "audio": {"id": "audio_4"}},
    ]


def test_expiring_audio_id_falls_back_to_the_transcript() -> None:
    clock = [1000.0]
    conv = ChatConversation(clock=lambda: clock[0])
    conv.add_assistant(
        AssistantTurn(item_id="a", transcript="Hello.", audio_id="audio_x", expires_at=2000, audio_ms=300)
    )
    assert conv.messages("")[0] == {"role": "assistant", "audio": {"id": "audio_x"}}
    clock[0] = 1990.0  # within the safety margin of the expiry
    assert conv.messages("")[0] == {"role": "assistant", "content": "Hello."}


def test_tool_call_without_result_yet_gets_a_pending_result() -> None:
    conv = ChatConversation()
    conv.add_assistant(AssistantTurn(calls=[ToolCall("call_9", "find_patient", "{}")]))
    conv.add_user_audio(b"RIFF", 300)  # the caller spoke while the tool was still running
    messages = conv.messages("")
    assert messages[1] == {"role": "tool", "tool_call_id": "call_9", "content": PENDING_OUTPUT}
    assert messages[2]["role"] == "user"
    conv.add_function_output("call_9", "done")
    assert conv.messages("")[1]["content"] == "done"


def test_truncated_reply_is_sent_as_the_words_heard() -> None:
    conv = ChatConversation()
    conv.add_assistant(
        AssistantTurn(item_id="i", transcript="a b c d e f g h", audio_id="audio_1", audio_ms=800)
    )
    assert conv.truncate("i", 200)
    assert conv.messages("") == [{"role": "assistant", "content": "a b…"}]
    assert conv.truncate("i", 0)
    assert conv.messages("") == []  # nothing heard, nothing done: left out
    assert not conv.truncate("unknown", 10)


# ---- the fake is an oracle: it refuses what the service would refuse --------------------------------------


def _request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-audio-1.5",
        "modalities": ["text", "audio"],
        "audio": {"voice": "marin", "format": "pcm16"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": sample_wav_b64(), "format": "wav"}}
                ],
            },
        ],
    }
    body.update(changes)
    return body


def _verdict(body: dict[str, Any], key: str = OPENAI_TEST_KEY) -> str | None:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    return check_chat_request(
        "POST", "/v1/chat/completions", headers, json.dumps(body).encode(), api_key=OPENAI_TEST_KEY
    ).problem


def _user_audio(data: str, fmt: str = "wav") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": fmt}}]}
    ]


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [
        (_request(), "sk-wrong", "Authorization"),
        (_request(messages=_user_audio(sample_wav_b64(), "pcm16")), OPENAI_TEST_KEY, "'wav' or 'mp3'"),
        (_request(messages=_user_audio(base64.b64encode(b"not a wav").decode())), OPENAI_TEST_KEY, "WAV"),
        (_request(audio={"voice": "marin", "format": "wav"}), OPENAI_TEST_KEY, "stream=true"),
        (
            _request(audio={"voice": "marin", "format": "pcm16", "rate": 8000}),
            OPENAI_TEST_KEY,
            "$.audio.rate",
        ),
        (_request(modalities=["audio"]), OPENAI_TEST_KEY, "modalities"),
        (_request(stream=False), OPENAI_TEST_KEY, "stream"),
        (_request(tool_choice="auto"), OPENAI_TEST_KEY, "tool_choice"),
        (
            _request(messages=[{"role": "assistant", "audio": {"id": "audio_never"}}]),
            OPENAI_TEST_KEY,
            "never issued",
        ),
        (
            _request(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    {"role": "user", "content": "hello"},
                ]
            ),
            OPENAI_TEST_KEY,
            "tool messages",
        ),
    ],
)
def test_fake_refuses_what_the_service_refuses(body: dict[str, Any], key: str, needle: str) -> None:
    assert _verdict(_request(), OPENAI_TEST_KEY) is None
    problem = _verdict(body, key)
    assert problem is not None and needle in problem, problem


# ---- end to end: a phone call on gpt-audio-1.5 ------------------------------------------------------------

CHAT_FLOW = """\
id: chat-desk
default: true
numbers: ["+15550100002"]
model:
  name: gpt-audio-1.5
  voice: marin
greeting: "Hello, chat desk."
instructions: |
  You answer the phone for a chat desk. The caller's number is {{ caller_number }}.
tools:
  - {type: end_call, name: end_call, description: "Hang up after saying goodbye."}
"""


async def test_phone_call_on_gpt_audio_runs_through_the_chat_engine(
    fake_chat: FakeChatServer, fake_twilio_rest: Any, tmp_path: Path
) -> None:
    (tmp_path / "chat-desk.yaml").write_text(CHAT_FLOW)
    greeting = ChatReply(transcript="Hello, chat desk.", audio_ms=600, tone_hz=440.0)
    goodbye = ChatReply(
        transcript="Goodbye!", audio_ms=400, tone_hz=660.0, tool_calls=[("end_call", {"reason": "done"})]
    )
    fake_chat.script(greeting, goodbye, ChatReply(transcript="Bye.", audio_ms=300, tone_hz=660.0))
    settings = make_settings(
        flows_dir=tmp_path, openai_base_url=fake_chat.base_url, twilio_api_base=fake_twilio_rest.base_url
    )
    assert engine_kind(settings, "gpt-audio-1.5") == "chat"
    async with running_server(settings) as server:
        live = await place_call(
            server, caller_audio=silence(1200) + caller_turn(900, 0, 1200), duration_s=12.0
        )
        first = await fake_chat.wait_exchange(1)
        assert first.messages[-1]["content"].startswith(
            'Greet the caller now by saying exactly: "Hello, chat desk."'
        )
        assert "+15550100001" in first.messages[0]["content"]
        assert first.body["tools"][0]["function"]["name"] == "end_call"
        # The caller's turn goes out as a WAV; the agent answers and calls end_call.
        second = await fake_chat.wait_exchange(2, timeout=8.0)
        assert len(second.wavs) == 1 and 900 <= second.wavs[0].duration_ms <= 900 + 900
        update = await fake_twilio_rest.wait_for_update(timeout=10.0)
        assert update.status == "completed" and update.call_sid == live.call.call_sid
        result = await live.result(timeout=10.0)
    assert result.ended_by == "server"
    pcm = ulaw_to_pcm16(b"".join(base64.b64decode(m["media"]["payload"]) for m in live.media()))
    assert len(pcm) >= (600 + 400) * 8 - 80  # greeting and goodbye reached the caller
    assert abs(dominant_hz(pcm[200 : 600 * 8 - 200], 8000) - 440.0) < 10.0
    assert any(e["type"] == "tool.called" and e["name"] == "end_call" for e in live.call.transcript)
    # After end_call ran, the call asked for one more response: it carries the tool call and its result.
    assert len(fake_chat.exchanges) == 3
    *_, assistant, tool = fake_chat.exchanges[2].messages
    assert assistant["tool_calls"][0]["function"]["name"] == "end_call"
    assert tool["role"] == "tool" and tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert json.loads(tool["content"])["status"] == "ending"
