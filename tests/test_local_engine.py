"""The offline engine driven the way the call drives a model, every server event checked against the GA types.

Caller audio is synthesized speech as 8 kHz μ-law; what comes back is Realtime GA events, validated by the
same oracle as the fake OpenAI server (tests/support/oracles.py).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from ivr.call.notices import say_line
from ivr.engines.local import LocalEngine, LocalResources
from ivr.flows import FlowSet
from ivr.realtime.dialect import ClientEvents
from tests.support.oracles import check_server_event

FLOWS = Path(__file__).resolve().parent.parent / "flows"


@pytest.fixture(scope="module")
def flow() -> Any:
    loaded = FlowSet.load(FLOWS).get("dental-clinic")
    assert loaded is not None
    return loaded


@pytest.fixture(scope="module")
def resources(flow: Any) -> LocalResources:
    return LocalResources.for_flow(flow)


class Driver:
    """Plays the call's side: sends client events, reads and checks server events."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self.client = ClientEvents("ga")
        self.events: list[dict[str, Any]] = []

    async def next(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            async for raw in self.engine:
                check_server_event("ga", raw)  # raises on anything the GA types refuse
                event = orjson.loads(raw)
                self.events.append(event)
                if event["type"] == type_:
                    return event
        raise AssertionError(f"the engine closed before {type_}")

    async def audio(self, mulaw: bytes) -> None:
        for start in range(0, len(mulaw), 160):
            frame = base64.b64encode(mulaw[start : start + 160]).decode()
            await self.engine.send(self.client.append_audio(frame))


async def _engine(flow: Any, resources: LocalResources) -> Driver:
    engine = LocalEngine(flow=flow, context={"caller_number": "+13125550101"}, resources=resources)
    driver = Driver(await engine.open())
    await driver.next("session.created")
    return driver


async def test_greeting_is_spoken_and_every_event_is_valid(flow: Any, resources: LocalResources) -> None:
    driver = await _engine(flow, resources)
    await driver.engine.send(driver.client.response_create(say_line("Thanks for calling.")))
    done = await driver.next("response.done")
    deltas = [e for e in driver.events if e["type"] == "response.output_audio.delta"]
    audio = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    assert 0.5 < len(audio) / 8000 < 3.0  # a short sentence of 8 kHz μ-law
    transcripts = [
        e["transcript"] for e in driver.events if e["type"] == "response.output_audio_transcript.done"
    ]
    assert transcripts[0] == "Thanks for calling."
    # After the greeting the flow's on_start step looks the caller up: a function call the call must run.
    calls = [item for item in done["response"]["output"] if item["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["find_patient"]
    assert orjson.loads(calls[0]["arguments"]) == {"key": "+13125550101"}
    await driver.engine.close()


async def test_a_spoken_turn_is_recognised_and_answered(flow: Any, resources: LocalResources) -> None:
    driver = await _engine(flow, resources)
    await driver.engine.send(driver.client.response_create(say_line("Hello.")))
    done = await driver.next("response.done")
    [call] = [item for item in done["response"]["output"] if item["type"] == "function_call"]
    await driver.engine.send(driver.client.function_output(call["call_id"], '{"found": false}'))
    await driver.engine.send(driver.client.response_create())
    await driver.next("response.done")

    line = resources.synthesizer.synthesize_mulaw("I would like to book a cleaning please.")
    await driver.audio(b"\xff" * 1600 + line + b"\xff" * 8000)
    started = await driver.next("input_audio_buffer.speech_started")
    assert 200 <= started["audio_start_ms"] <= 800  # 200 ms of line silence, then the voice
    await driver.next("input_audio_buffer.speech_stopped")
    heard = await driver.next("conversation.item.input_audio_transcription.completed")
    assert "book a cleaning" in heard["transcript"]
    # The dialogue moves to the booking stage through the flow's transition tool.
    done = await driver.next("response.done")
    names = [item["name"] for item in done["response"]["output"] if item["type"] == "function_call"]
    assert names == ["start_booking"]
    await driver.engine.close()


async def test_barge_in_cancels_the_response_and_stops_the_audio(
    flow: Any, resources: LocalResources
) -> None:
    driver = await _engine(flow, resources)
    long_line = " ".join(["This is a long announcement about our opening hours and our services."] * 6)
    await driver.engine.send(driver.client.response_create(say_line(long_line)))
    await driver.next("response.output_audio.delta")
    await driver.audio(resources.synthesizer.synthesize_mulaw("Sorry, can I ask something?"))
    await driver.next("input_audio_buffer.speech_started")
    await driver.engine.send(driver.client.response_cancel())
    done = await driver.next("response.done")
    assert done["response"]["status"] == "cancelled"
    sent = sum(
        len(base64.b64decode(e["delta"])) for e in driver.events if e["type"] == "response.output_audio.delta"
    )
    assert sent / 8000 < 20  # far less than the whole announcement (~30 s)
    index = driver.events.index(done)
    assert not [e for e in driver.events[index:] if e["type"] == "response.output_audio.delta"]
    await driver.engine.close()
