"""Driving the shipped flows' offline dialogue in tests: the flows fixture and small helpers over actions.

Used by the tests of the offline dialogue (tests/test_dialogue_*.py). A test module takes the fixture by
assigning it (``flows = dialogues.flows``), so it stays module-scoped: the flows load once per module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ivr.dialogue import CallTool, Dialogue, Say
from ivr.dialogue.manager import Action
from ivr.flows import FlowSet

__all__ = ["DENTAL_OPEN", "calls", "dental_asking_day", "dialogue", "flows", "out", "says"]

ROOT = Path(__file__).resolve().parents[2]
#: 09:00 in Chicago on a Thursday: the dental clinic is open.
DENTAL_OPEN = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def flows() -> FlowSet:
    """The flows shipped in ``flows/``, as the server loads them."""
    return FlowSet.load(ROOT / "flows")


def dialogue(flows: FlowSet, flow_id: str, now: datetime) -> Dialogue:
    """A new dialogue for ``flow_id``, as a call from a fixed caller placed at ``now``."""
    flow = flows.get(flow_id)
    assert flow is not None
    context = flow.call_context(
        caller_number="+15550001111", called_number="+15551230001", call_sid="CA1", now=now
    )
    return Dialogue(flow, context=context, today=now.astimezone(flow.zone).date())


def says(actions: list[Action]) -> list[str]:
    """The texts of the ``Say`` actions, in order."""
    return [a.text for a in actions if isinstance(a, Say)]


def calls(actions: list[Action]) -> list[CallTool]:
    """The tool calls among ``actions``, in order."""
    return [a for a in actions if isinstance(a, CallTool)]


def out(data: Mapping[str, Any]) -> str:
    """A tool's output as the dialogue receives it (JSON text)."""
    return json.dumps(data)


def dental_asking_day(flows: FlowSet, now: datetime = DENTAL_OPEN) -> Dialogue:
    """The dental flow, an unknown caller who asked to book a cleaning; "Which day would suit you?" is
    open."""
    d = dialogue(flows, "dental-clinic", now)
    d.start()
    d.tool_result("local_1", out({"found": False}))
    [move] = calls(d.heard("hi i'd like to book a cleaning please", 0.9))
    assert says(d.tool_result(move.call_id, out({"status": "ok"}))) == ["Which day would suit you?"]
    return d
