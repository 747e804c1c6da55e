"""Where a call is in its flow: the current stage, what the model may do there, and how it moves on.

Sans-I/O: :class:`FlowState` takes tool results and key presses and answers with what changed; the call
runtime does the I/O (a Realtime ``session.update`` with :meth:`FlowState.instructions` and
:meth:`FlowState.tools` after each :class:`StageChange`, so the model's audio keeps flowing).

A stage's tools are its ``tools`` list (every declared tool when the list is left out), plus the declared
tools its transitions name, plus move-only tools its transitions create. A transition through a declared
tool fires after that tool *succeeds*; a move-only tool exists only to move. Keypad targets either name a
tool (the runtime runs it, then reports the result here like any other) or ``stage:<id>`` (moves at once).
A flow without stages is one stage, :data:`~ivr.flows.model.IMPLICIT_STAGE`, with every tool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ivr.flows.fields import STAGE_TARGET
from ivr.flows.model import Flow, Stage

#: Parameters of a move-only transition tool (an optional reason, for the call record).
TRANSITION_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "maxLength": 300,
            "description": "Short reason for moving on, for the call record.",
        }
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class StageChange:
    """The call moved from ``previous`` to ``stage``; ``trigger`` is ``tool:<name>`` or ``key:<digit>``."""

    previous: str
    stage: str
    trigger: str


@dataclass(frozen=True)
class KeyAction:
    """What a key press asks for: run ``tool`` (then report its result), and/or a stage change done already.

    Both are ``None`` for a ``stage:<id>`` key pressed while already in that stage.
    """

    tool: str | None = None
    stage_change: StageChange | None = None


class FlowState:
    """The stage machine of one call."""

    def __init__(
        self,
        flow: Flow,
        context: Mapping[str, str],
        *,
        definitions: Sequence[Mapping[str, Any]] | None = None,
        stage: str | None = None,
    ) -> None:
        """``context`` fills placeholders (``Flow.call_context``); ``stage`` resumes a call elsewhere.

        ``definitions`` are the Realtime function definitions of the declared tools (as
        ``ToolRegistry.realtime_tools()`` returns them); left out, they are built from the flow.
        """
        self.flow = flow
        self._context = dict(context)
        if definitions is None:
            from ivr.tools.registry import registry_for_flow  # the registry imports the flow models

            definitions = registry_for_flow(flow).realtime_tools()
        self._definitions = {str(d["name"]): dict(d) for d in definitions}
        start = stage if stage is not None else flow.start_stage_id
        if flow.stages and flow.stage(start) is None:
            known = ", ".join(s.id for s in flow.stages)
            raise ValueError(f"flow {flow.id!r} has no stage {start!r} (stages: {known})")
        self._stage = start
        self.history: list[StageChange] = []

    # -- what the model sees now ------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        """The current stage's id."""
        return self._stage

    @property
    def context(self) -> dict[str, str]:
        """Placeholder values, with ``stage`` kept current."""
        return {**self._context, "stage": self._stage}

    def instructions(self) -> str:
        """The flow's instructions followed by the current stage's, placeholders filled."""
        context = self.context
        text = self.flow.render(self.flow.instructions, context)
        current = self._current()
        if current is not None and current.instructions:
            text = f"{text.rstrip()}\n\n{self.flow.render(current.instructions, context)}"
        return text

    def tool_names(self) -> list[str]:
        """Names of the tools the model may call in this stage, in the order they are offered."""
        current = self._current()
        declared = [t.name for t in self.flow.tools]
        if current is None:
            return declared
        listed = set(declared if current.tools is None else current.tools)
        listed |= {t.tool for t in current.transitions}
        names = [name for name in declared if name in listed]
        names += [t.tool for t in current.transitions if t.tool not in declared]
        return names

    def tools(self) -> list[dict[str, Any]]:
        """Realtime function definitions for this stage (for ``session.update``)."""
        current = self._current()
        declared = {t.name for t in self.flow.tools}
        moves = (
            {t.tool: t for t in current.transitions if t.tool not in declared} if current is not None else {}
        )
        out = []
        for name in self.tool_names():
            if name not in moves:
                out.append(dict(self._definitions[name]))
            else:  # a move-only tool: described by this stage's transition
                transition = moves[name]
                out.append(
                    {
                        "type": "function",
                        "name": name,
                        "description": transition.description or f"Move on to the {transition.to} stage.",
                        "parameters": TRANSITION_PARAMETERS,
                    }
                )
        return out

    def allowed(self, name: str) -> bool:
        """Whether the model may call ``name`` in the current stage."""
        return name in self.tool_names()

    def not_allowed_message(self, name: str) -> str:
        """What to tell the model when it calls a tool this stage does not offer."""
        available = ", ".join(self.tool_names()) or "none"
        return (
            f"{name!r} is not available at this point of the call (stage {self._stage!r}). "
            f"Available now: {available}."
        )

    # -- events -----------------------------------------------------------------------------------------

    def on_tool_result(self, name: str, ok: bool) -> StageChange | None:
        """A tool finished; a successful call of a transition's tool moves the call on."""
        current = self._current()
        if not ok or current is None:
            return None
        for transition in current.transitions:
            if transition.tool == name:
                return self.enter(transition.to, f"tool:{name}")
        return None

    def on_key(self, digit: str) -> KeyAction | None:
        """A keypad key; ``None`` when neither the stage nor the flow maps it."""
        current = self._current()
        target = (current.dtmf.get(digit) if current is not None else None) or self.flow.dtmf.get(digit)
        if target is None:
            return None
        if target.startswith(STAGE_TARGET):
            return KeyAction(stage_change=self.enter(target[len(STAGE_TARGET) :], f"key:{digit}"))
        return KeyAction(tool=target)

    def enter(self, stage_id: str, trigger: str) -> StageChange | None:
        """Move to ``stage_id`` (``None`` if already there); raises ValueError for an unknown stage."""
        if self.flow.stage(stage_id) is None:
            known = ", ".join(s.id for s in self.flow.stages) or "none"
            raise ValueError(f"flow {self.flow.id!r} has no stage {stage_id!r} (stages: {known})")
        if stage_id == self._stage:
            return None
        change = StageChange(self._stage, stage_id, trigger)
        self._stage = stage_id
        self.history.append(change)
        return change

    def _current(self) -> Stage | None:
        return self.flow.stage(self._stage)
