"""What a :class:`~ivr.dialogue.manager.Dialogue` takes from its flow besides the ``offline`` section: the
intents a flow without one understands (``builtin_intents``), and whether a time of day falls inside the
opening hours (``opening_check``), which makes a time the caller says plausible.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import time
from typing import Any

from ivr.flows.model import Flow
from ivr.flows.offline import Intent

__all__ = ["builtin_intents", "opening_check"]


def _intent(data: dict[str, Any]) -> Intent:
    return Intent.model_validate(data)


def builtin_intents(flow: Flow) -> list[Intent]:
    """What a flow without an ``offline`` section understands: a person, and goodbye."""
    types = {t.type for t in flow.tools}
    out = []
    if "transfer_to_human" in types:
        out.append(
            _intent(
                {
                    "id": "person",
                    "examples": [
                        "can I speak to a person",
                        "put me through to someone",
                        "a real person please",
                    ],
                    "keywords": ["person", "human", "operator", "someone", "agent", "representative"],
                    "steps": [{"transfer": True}],
                }
            )
        )
    if "end_call" in types:
        out.append(
            _intent(
                {
                    "id": "goodbye",
                    "examples": ["goodbye", "bye bye", "that's all thank you", "no thanks goodbye"],
                    "keywords": ["goodbye", "bye"],
                    "steps": [{"say": "Thank you for calling. Goodbye!"}, {"end_call": True}],
                }
            )
        )
    return out


def opening_check(flow: Flow) -> Callable[[time], bool] | None:
    """Whether a time of day falls inside the flow's weekly opening hours (on any day)."""
    hours = flow.opening_hours
    if hours is None:
        return None
    ranges: list[tuple[int, int]] = []
    for weekday in range(7):
        for text in hours.weekly(weekday):
            start, end = text.split("-")
            ranges.append((_minutes(start), _minutes(end)))
    if not ranges:
        return None
    return lambda moment: any(a <= moment.hour * 60 + moment.minute < b for a, b in ranges)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)
