"""Scripted offline calls over the app on real sockets, spoken by independent voices.

Each :class:`ScriptedCall` is one ``run_demo`` call (:mod:`ivr.demo.runner`): the app serves on a real
socket, the Twilio-exact simulated caller dials the flow's number (the default flow through a number no flow
claims), and the scripted caller of :func:`ivr.demo.scripts.script_for` speaks with one of the voices of
:mod:`tests.support.voices`. :data:`CALLS` covers every scenario of every shipped flow, the voices in turn.
:func:`place_calls` runs them a few at a time. Used by tests/test_offline_scenarios.py and
benchmarks/bench_offline_calls.py.
"""

from __future__ import annotations

import asyncio
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.demo.runner import DemoOptions, run_demo
from ivr.demo.scripts import SCENARIOS
from tests.support.voices import VOICES, Voice, caller_voice, session_cache

__all__ = ["CALLS", "CallOutcome", "ScriptedCall", "place_calls", "summarize"]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    flow: str
    scenario: str
    voice: Voice
    variant: int = 0

    @property
    def name(self) -> str:
        return f"{self.flow}-{self.scenario}-v{self.variant}-{self.voice.name.replace(' ', '_')}"


def _calls() -> list[ScriptedCall]:
    calls: list[ScriptedCall] = []
    for flow, scenarios in SCENARIOS.items():
        for scenario in scenarios:
            calls.append(ScriptedCall(flow, scenario, VOICES[len(calls) % len(VOICES)]))
    # Second variants of the commonest calls (other phrasings, days, names), with the next voices.
    for flow, scenario in (("dental-clinic", "book"), ("restaurant", "book"), ("general-reception", "hours"),
                           ("dental-clinic", "cancel"), ("restaurant", "dish")):  # fmt: skip
        if scenario in SCENARIOS.get(flow, ()):
            calls.append(ScriptedCall(flow, scenario, VOICES[len(calls) % len(VOICES)], variant=1))
    return calls


CALLS: list[ScriptedCall] = _calls()


@dataclass(frozen=True, slots=True)
class CallOutcome:
    call: ScriptedCall
    exit_code: int
    summary: dict[str, Any]
    log: str

    @property
    def reached(self) -> bool:
        return bool(self.summary.get("goal_reached"))

    @property
    def turns(self) -> int:
        return int(self.summary.get("caller_turns") or 0)

    @property
    def latencies_ms(self) -> list[float]:
        return [float(x) for x in self.summary.get("turn_latency_ms") or ()]

    def describe(self) -> str:
        s = self.summary
        return (
            f"{self.call.name}: goal {'reached' if self.reached else 'MISSED'} ({s.get('goal_check')}); "
            f"{self.turns} turns, reasks {s.get('reasks')}, "
            f"heard {(s.get('recognition') or {}).get('agent_heard')}"
        )


async def _no_terminal(prompt: str) -> str:
    raise AssertionError(f"a scripted call asked a question: {prompt!r}")


async def _place(call: ScriptedCall, redis_url: str, out_dir: Path, timeout_s: float) -> CallOutcome:
    folder = out_dir / call.name
    folder.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    options = DemoOptions(
        flow_id=call.flow,
        scenario=call.scenario,
        variant=call.variant,
        approve=True,
        out_dir=folder,
        redis_url=redis_url,
        timeout_s=timeout_s,
        caller_voice=caller_voice(call.voice, session_cache()),
    )
    try:
        result = await run_demo(options, out, _no_terminal)
    except Exception as exc:  # one broken call is a failed call, not a stopped run
        crashed = {"goal_reached": False, "goal_check": f"crashed: {exc!r}"}
        return CallOutcome(call, 99, crashed, out.getvalue())
    return CallOutcome(call, result.exit_code, result.summary, out.getvalue())


async def place_calls(
    calls: Sequence[ScriptedCall],
    redis_url: str,
    out_dir: Path,
    *,
    at_once: int = 3,
    timeout_s: float = 180.0,
) -> list[CallOutcome]:
    """Place ``calls``, at most ``at_once`` at a time, and return their outcomes in order."""
    room = asyncio.Semaphore(at_once)

    async def one(call: ScriptedCall) -> CallOutcome:
        async with room:
            return await _place(call, redis_url, out_dir, timeout_s)

    return list(await asyncio.gather(*(one(c) for c in calls)))


def summarize(outcomes: Sequence[CallOutcome]) -> dict[str, Any]:
    """Task success, turns per task and the last-word → first-audio distribution over ``outcomes``."""
    latencies = sorted(x for o in outcomes for x in o.latencies_ms)

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    reached = [o for o in outcomes if o.reached]
    return {
        "calls": len(outcomes),
        "task_success": len(reached) / len(outcomes) if outcomes else 0.0,
        "turns_per_task": statistics.mean(o.turns for o in outcomes) if outcomes else 0.0,
        "turns_per_successful_task": statistics.mean(o.turns for o in reached) if reached else None,
        "latency_ms": {
            "turns": len(latencies),
            "p10": pct(10),
            "median": pct(50),
            "p90": pct(90),
            "max": latencies[-1] if latencies else None,
        },
    }
