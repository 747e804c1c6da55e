"""Failures: a turn not heard, an answer that does not fit, or no matching intent; asked again, or given up.

Part of :class:`~ivr.dialogue.manager.Dialogue`: failed turns counted (a success, or talking over the agent,
resets or forgives them), the caller asked again (``reask`` lines in turn, ``no_match``, or the ``unclear``
phrase with the open question; the ``keypad`` line on the last try), and the giveup steps after
``max_reasks`` failures in a row (the default giveup, which ends the call, after a giveup that did not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ivr.dialogue.actions import Action
from ivr.dialogue.output import Output
from ivr.dialogue.state import Runner, Task
from ivr.dialogue.values import Missing, SlotValue
from ivr.flows.offline import Offline, Slot, Step

__all__ = ["Failures"]


class Failures(Output):
    """Failures (see the module docstring)."""

    # The state of Dialogue used here besides that of Output.
    _failures: int
    _forgive: bool
    _gave_up: bool
    _offline: Offline
    _reask_turn: int

    if TYPE_CHECKING:  # defined in the other parts of Dialogue, by module
        # readbacks
        def _check_text(self, slot: Slot, value: SlotValue) -> str: ...
        # slot_filling
        def _ask_text(self, task: Task, slot: Slot) -> str: ...
        # steps
        def _run(self, out: list[Action]) -> None: ...

    def _succeeded(self) -> None:
        self._failures = 0
        self._forgive = False
        self._gave_up = False

    def _count_failure(self, out: list[Action]) -> bool:
        """Count a failed turn; when it is one too many, run the giveup steps and return True.

        Giveup steps that leave the call open (the flow offers the keypad or another try) are followed, if
        the caller still cannot be understood, by the default giveup, which ends the call.
        """
        if self._forgive:
            self._forgive = False
        else:
            self._failures += 1
        if self._failures <= self._offline.max_reasks:
            return False
        self._give_up(out)
        return True

    def _give_up(self, out: list[Action]) -> None:
        """Run the giveup steps (the default giveup, which ends the call, after a giveup that did not)."""
        self._failures = 0
        self._task = None
        self._said = []
        steps = self._default_giveup() if self._gave_up else self._giveup_steps()
        self._gave_up = True
        self._runner = Runner(steps, "giveup")
        self._run(out)

    def _fail(self, out: list[Action], kind: Literal["low", "unclear", "no_match"]) -> None:
        if self._count_failure(out):
            return
        self._waiting = "caller"
        last_try = self._failures == self._offline.max_reasks and self._offline.keypad is not None
        if kind == "low":
            lines = self._offline.reask
            line = lines[self._reask_turn % len(lines)]
            self._reask_turn += 1
            self._say(out, self._render_or(line), remember=False)
        elif kind == "no_match":
            self._say(out, self._render_or(self._offline.no_match), remember=False)
        else:
            self._say(out, self._render_or(self._offline.phrases.unclear), remember=False)
        if last_try:
            assert self._offline.keypad is not None
            self._say(out, self._render_or(self._offline.keypad), remember=False)
        if kind == "unclear":
            question = self._pending_question()
            if question:
                self._say(out, question)

    def _render_or(self, text: str) -> str:
        try:
            return self._values().text(text)
        except Missing:
            return text

    def _pending_question(self) -> str | None:
        task = self._task
        try:
            if task is not None and task.checking is not None:
                return self._check_text(*task.checking)
            if task is not None and task.confirming and task.intent.confirm is not None:
                return self._values().text(task.intent.confirm)
            if task is not None and task.asking is not None:
                return self._ask_text(task, task.asking)
        except Missing:
            return None
        return self._prompt()

    def _giveup_steps(self) -> list[Step]:
        if self._offline.giveup is not None:
            return list(self._offline.giveup)
        return self._default_giveup()

    def _default_giveup(self) -> list[Step]:
        steps = [Step.model_validate({"say": self._offline.phrases.giveup})]
        if any(t.type == "end_call" for t in self.flow.tools):
            steps.append(Step.model_validate({"end_call": True}))
        return steps
