"""Scripted offline calls end to end: every shipped flow, every scenario, voices nobody on the project chose.

Each call runs the app on a real socket with the Twilio-exact simulated caller (signed webhook, then the
media stream) and the offline engine (VAD, Whisper, the flow's offline dialogue, the agent's voice). The
caller is the flow's scripted caller (:mod:`ivr.demo.scripts`: book, move, cancel, hours, dish, transfer,
deny, an unclear line then recovery) speaking with espeak-ng or a flite voice through the phone path. After
each call its goal is checked where it lives (the booking in Redis, the approval, the transfer, what the
agent said: :mod:`ivr.demo.goals`). Calls run three at a time to keep the run bounded.

Issue 10's goal is ≥ 90 % of calls reaching their goal; today's figure is 0.86 (19 of 22; docs/speech.md):
the misses are words Whisper base mishears beyond recovery from the robotic voices. The floor asserted here is
a regression floor under that figure, far above the shipped pocketsphinx path (whose dental call failed).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ivr.demo.scripts import SCENARIOS
from tests.support.scenarios import CALLS, place_calls, summarize
from tests.support.voices import VOICES, require_voice

#: A regression floor (the issue's goal, 0.9, is not met: see above).
TASK_SUCCESS_FLOOR = 0.75

pytestmark = [pytest.mark.speech, pytest.mark.slow]


def test_the_calls_cover_every_flow_scenario_and_voice() -> None:
    assert len(CALLS) >= 20
    assert {(c.flow, c.scenario) for c in CALLS} == {(f, s) for f, names in SCENARIOS.items() for s in names}
    per_voice = Counter(c.voice.name for c in CALLS)
    assert set(per_voice) == {v.name for v in VOICES}
    assert min(per_voice.values()) >= 4, per_voice


@pytest.mark.timeout(2400)
async def test_scripted_calls_reach_their_goal(tmp_path: Path, redis_url: str) -> None:
    for voice in VOICES:
        require_voice(voice)
    outcomes = await place_calls(CALLS, redis_url, tmp_path, at_once=3)
    figures = summarize(outcomes)
    report = "\n".join(o.describe() for o in outcomes)
    print(f"{figures}\n{report}")  # shown with -rP: the figures docs/speech.md quotes
    assert figures["calls"] == len(CALLS)
    assert figures["task_success"] >= TASK_SUCCESS_FLOOR, f"{figures}\n{report}"
    # A call that reached its goal talked with the agent: at least one caller turn each (unless the flow
    # was closed and answered with its after-hours message alone: the default flow after 5 pm New York).
    assert all(o.turns >= 1 for o in outcomes if o.reached and o.summary.get("media_stream")), report
