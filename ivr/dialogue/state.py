"""What a :class:`~ivr.dialogue.manager.Dialogue` keeps between events besides plain values: the intent in
progress (:class:`Task`), the steps being run (:class:`Runner`) and the tool call whose result it waits
for (:class:`Pending`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Literal

from ivr.dialogue.values import SlotValue
from ivr.flows.offline import Intent, Slot, Step

__all__ = ["Pending", "Runner", "Task"]


@dataclass
class Task:
    """An intent in progress: its filled slots, the question pending, options offered."""

    intent: Intent
    values: dict[str, SlotValue] = field(default_factory=dict)
    asking: Slot | None = None
    confirming: bool = False
    options: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    #: A time the caller mentioned, used to pick an offer without asking when exactly one option fits.
    hint: time | None = None
    #: A value heard with low confidence, being confirmed ("Tuesday the 10th, right?").
    checking: tuple[Slot, SlotValue] | None = None
    #: How often the caller said no to a read-back of each slot (a check or the confirmation).
    rejected: dict[str, int] = field(default_factory=dict)
    #: How often the caller said no to the confirmation of a request of several slots ("Shall I book it?").
    declined: int = 0


@dataclass
class Runner:
    """Steps being run, and what happens once they are done."""

    steps: Sequence[Step]
    after: Literal["start", "enter", "intent", "giveup"]
    index: int = 0


@dataclass(frozen=True)
class Pending:
    """The tool call whose result the dialogue waits for, and what the result is for."""

    call_id: str
    tool: str
    kind: Literal["step", "offer", "goto", "end"]
    step: Step | None = None
    slot: Slot | None = None
    target: str | None = None
