"""Steps: running a list of steps, and carrying on when a tool's result or an operator's decision comes.

Part of :class:`~ivr.dialogue.manager.Dialogue`: the ``say``, ``tool``, ``goto``, ``end_call`` and
``transfer`` steps of ``on_start``, a stage's ``on_enter``, an intent or the giveup, what follows once they
are done, and a tool's result (an error says the step's ``on_error``) or a denied approval.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ivr.dialogue.actions import Action
from ivr.dialogue.output import Output
from ivr.dialogue.state import Pending, Runner
from ivr.dialogue.values import Missing
from ivr.flows.offline import Offline, Phrases, Slot, Step

__all__ = ["Steps"]


class Steps(Output):
    """Steps (see the module docstring)."""

    # The state of Dialogue used here besides that of Output.
    _failures: int
    _offline: Offline

    if TYPE_CHECKING:  # defined in the other parts of Dialogue, by module
        # manager
        def _hear(self, out: list[Action], text: str, *, replay: bool) -> None: ...
        # slot_filling
        def _offer_result(self, out: list[Action], slot: Slot, data: Mapping[str, Any]) -> None: ...

    def _run(self, out: list[Action]) -> None:
        """Run steps until one waits for a tool, or they end."""
        while self._runner is not None:
            runner = self._runner
            if runner.index >= len(runner.steps):
                self._runner = None
                self._after(out, runner.after)
                return
            step = runner.steps[runner.index]
            runner.index += 1
            values = self._values()
            if step.when is not None and not values.condition(step.when):
                continue
            if step.unless is not None and values.condition(step.unless):
                continue
            if step.say is not None:
                try:
                    self._say(out, values.text(step.say))
                except Missing:
                    self._abort(out, self._offline.phrases.missing)
                    return
                continue
            self._act(out, step)
            return

    def _act(self, out: list[Action], step: Step) -> None:
        """A step that calls a tool (a declared tool, a stage move, hang-up or transfer)."""
        if step.tool is not None:
            try:
                arguments = self._arguments(step.arguments)
            except Missing:
                self._abort(out, self._offline.phrases.missing)
                return
            config = self.flow.tool(step.tool)
            ends = config is not None and config.type in ("end_call", "transfer_to_human")
            self._call(out, step.tool, arguments, "end" if ends else "step", step=step)
            if ends:
                self._waiting = "ended"
            return
        if step.goto is not None:
            if step.goto == self._stage:
                self._run(out)
                return
            tool = self._transition_tool(step.goto)
            if tool is None:  # the flow checks rule this out; stay safe anyway
                self._abort(out, self._offline.phrases.tool_error)
                return
            self._call(out, tool, {"reason": self._reason()}, "goto", step=step, target=step.goto)
            return
        kind = "end_call" if step.end_call else "transfer_to_human"
        name = next((t.name for t in self.flow.tools if t.type == kind), None)
        if name is None:
            self._abort(out, self._offline.phrases.tool_error)
            return
        self._call(out, name, {"reason": self._reason()}, "end", step=step)
        self._waiting = "ended"

    def _after(self, out: list[Action], after: str) -> None:
        if after == "start":
            self._runner = Runner(self._stage_offline_on_enter(), "enter")
            self._run(out)
        elif after == "enter":
            replay, self._replay = self._replay, None
            if replay is not None:
                self._hear(out, replay, replay=True)
            else:
                self._listen(out, prompt=True)
        elif after == "intent":
            self._task = None
            self._listen(out, prompt=False)
        else:  # giveup that did not end the call
            self._failures = 0
            self._task = None
            self._listen(out, prompt=True)

    def _resume(self, out: list[Action], pending: Pending, data: Mapping[str, Any]) -> None:
        """Carry on after a tool result (or an approved action's result)."""
        error = data.get("error") if isinstance(data.get("error"), Mapping) else None
        step = pending.step
        if pending.kind == "offer":
            assert pending.slot is not None
            self._offer_result(out, pending.slot, data)
        elif error is not None and not (step is not None and step.optional and pending.kind == "step"):
            self._waiting = "caller"
            text = self._offline.phrases.tool_error
            if step is not None and step.on_error is not None:
                with contextlib.suppress(Missing):
                    text = self._values({"error": error}).text(step.on_error)
            self._abort(out, text)
        elif pending.kind == "end":
            self._waiting = "ended"
        elif pending.kind == "goto":
            assert pending.target is not None
            self._task = None
            self._stage = pending.target
            self._runner = Runner(self._stage_offline_on_enter(), "enter")
            self._run(out)
        else:
            if error is None and step is not None and step.as_ is not None:
                self._results[step.as_] = dict(data)
            self._run(out)

    def _denied(self, out: list[Action], message: str) -> None:
        phrases = self._offline.phrases
        try:
            text = self._values({"message": message} if message.strip() else {}).text(phrases.not_approved)
        except Missing:
            text = Phrases().not_approved
        self._abort(out, text)

    def _transition_tool(self, target: str) -> str | None:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        if stage is None:
            return None
        return next((t.tool for t in stage.transitions if t.to == target), None)

    def _reason(self) -> str:
        return f"offline dialogue: {self._task.intent.id}" if self._task is not None else "offline dialogue"

    def _stage_offline_on_enter(self) -> Sequence[Step]:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        return stage.offline.on_enter if stage is not None and stage.offline is not None else ()
