"""The agent's goodbye is heard whole before the line closes, even when the caller talks over it.

A real call over sockets: the app on the offline engine (test-desk flow: its built-in goodbye intent says
"Thank you for calling. Goodbye!" and calls ``end_call``), the Twilio-exact simulated caller, and the local
stand-in for Twilio's REST API that receives the hang-up. The caller says goodbye, then — as people do —
says "bye bye" again while the agent's goodbye plays. Before the fix the caller's speech counted as a
barge-in: the call cleared Twilio's buffer, the clear echoed the hang-up's barrier mark at once, and the line
closed ~0.2 s into the goodbye.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from ivr.audio.g711 import ULAW_SILENCE
from ivr.engines.local import LocalResources
from ivr.flows import FlowSet
from ivr.speech.tts import Synthesizer
from tests.support.calls import place_call
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.server import TEST_FLOWS, make_settings, running_server

pytestmark = pytest.mark.slow

RATE = 8000


@pytest.fixture(scope="module")
def voice() -> Synthesizer:
    # The app loads the offline engine's models at start-up, before it answers the webhook; load them here
    # (once per process) so a busy machine does not make the caller's webhook request time out.
    for flow in FlowSet.load(TEST_FLOWS):
        LocalResources.for_flow(flow)
    synthesizer = Synthesizer(cache_size=0)
    synthesizer.load()
    return synthesizer


def _media_after(received: list[dict[str, Any]], start: int) -> bytes:
    return b"".join(
        base64.b64decode(m["media"]["payload"]) for m in received[start:] if m.get("event") == "media"
    )


@pytest.mark.timeout(120)
async def test_goodbye_plays_whole_when_the_caller_talks_over_it(
    voice: Synthesizer, fake_twilio_rest: FakeTwilioRest
) -> None:
    settings = make_settings(engine="local", twilio_api_base=fake_twilio_rest.base_url)
    async with running_server(settings) as server:
        live = await place_call(server, to_number="+15550100002", duration_s=60.0)
        call = live.call
        await call.wait_agent_quiet(600, timeout=60)  # the greeting has played

        silence = bytes([ULAW_SILENCE])
        call.say(voice.synthesize_mulaw("Goodbye.") + silence * RATE)
        before = len(call.received)
        # The agent's goodbye starts arriving: talk over it.
        await call.wait_for(lambda m: m.get("event") == "media" and call.received.index(m) >= before, 30)
        call.say(voice.synthesize_mulaw("Bye bye, thanks!") + silence * (RATE // 2))

        result = await live.result(timeout=30)
        update = await fake_twilio_rest.wait_for_update(timeout=5)

    assert update.status == "completed"  # the agent hung up (REST), after…
    assert result.ended_by == "server"
    goodbye = _media_after(call.received, before)
    assert len(goodbye) > RATE  # "Thank you for calling. Goodbye!" is more than a second of audio
    # …the caller heard every byte of it, in one piece: nothing was cleared from Twilio's buffer.
    assert result.clears == 0
    assert bytes(call.played_audio).find(goodbye) != -1, "the goodbye was cut before the line closed"
    agent = [e["text"] for e in call.transcript if e.get("type") == "transcript" and e["role"] == "agent"]
    assert any("Goodbye" in line for line in agent), agent
