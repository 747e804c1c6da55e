"""What a :class:`~ivr.dialogue.manager.Dialogue` puts out: lines said and tool calls.

:class:`Output` is the base of the dialogue's parts (:mod:`ivr.dialogue.readbacks`,
:mod:`ivr.dialogue.slot_filling`, :mod:`ivr.dialogue.steps`, :mod:`ivr.dialogue.failures`): templates
rendered with the call's values, a line said, a question asked, the stage prompt, a turn given up with an
apology, and a tool call; each appends to the :data:`~ivr.dialogue.actions.Action` list of the event being
handled. It uses nothing of the dialogue but the state declared on it (set by ``Dialogue.__init__``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

from ivr.dialogue.actions import Action, CallTool, Say, Waiting, clean_text
from ivr.dialogue.state import Pending, Runner, Task
from ivr.dialogue.values import Missing, Values
from ivr.flows.model import Flow
from ivr.flows.offline import Slot, Step

__all__ = ["Output"]


class Output:
    """Saying lines and calling tools (see the module docstring)."""

    # The state of Dialogue used here (set in Dialogue.__init__).
    flow: Flow
    _calls: int
    _context: dict[str, str]
    _pending: Pending | None
    _replay: str | None
    _results: dict[str, Any]
    _runner: Runner | None
    _said: list[str]
    _stage: str | None
    _task: Task | None
    _waiting: Waiting

    # -- speaking ---------------------------------------------------------------------------------------

    def _values(self, extra: Mapping[str, Any] | None = None) -> Values:
        context = dict(self._context)
        if self._stage is not None:
            context["stage"] = self._stage
        slots = self._task.values if self._task is not None else {}
        return Values(slots=slots, results=self._results, context=context, extra=extra)

    def _say(self, out: list[Action], text: str, *, remember: bool = True) -> None:
        text = clean_text(text)
        if not text:
            return
        out.append(Say(text))
        if remember:
            self._said.append(text)

    def _question(self, out: list[Action], text: str) -> None:
        self._say(out, text)
        self._replay = None
        self._waiting = "caller"

    def _prompt(self) -> str | None:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        if stage is None or stage.offline is None or stage.offline.prompt is None:
            return None
        try:
            return self._values().text(stage.offline.prompt)
        except Missing:
            return None

    def _listen(self, out: list[Action], *, prompt: bool) -> None:
        self._waiting = "caller"
        text = self._prompt() if prompt else None
        if text:
            self._question(out, text)

    def _abort(self, out: list[Action], text: str) -> None:
        """Say ``text``, drop the intent and any remaining steps, say the stage prompt and listen."""
        self._runner = None
        self._task = None
        self._pending = None
        with contextlib.suppress(Missing):
            text = self._values().text(text)
        self._say(out, text)
        self._listen(out, prompt=True)

    def _greeting(self) -> str | None:
        if self.flow.greeting is None:
            return None
        try:
            return clean_text(self.flow.render(self.flow.greeting, self._context))
        except ValueError:
            return None

    # -- tool calls -------------------------------------------------------------------------------------

    def _call(
        self,
        out: list[Action],
        name: str,
        arguments: dict[str, Any],
        kind: Literal["step", "offer", "goto", "end"],
        *,
        step: Step | None = None,
        slot: Slot | None = None,
        target: str | None = None,
    ) -> None:
        """Ask the engine to run a tool, and wait for its result."""
        self._calls += 1
        call_id = f"local_{self._calls}"
        self._pending = Pending(call_id, name, kind, step, slot, target)
        self._waiting = "tool"
        out.append(CallTool(call_id, name, arguments))

    def _arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        task = self._task
        optional = (
            frozenset(s.name for s in task.intent.slots if s.optional) if task is not None else frozenset()
        )
        rendered = self._values().argument(dict(arguments), optional)
        assert isinstance(rendered, dict)
        return rendered
