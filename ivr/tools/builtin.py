"""Tools every flow can declare without writing Python, and the table that builds them from a flow.

``end_call`` and ``transfer_to_human`` only *ask* the call runtime (through
:class:`~ivr.tools.registry.CallControl`) to act; the runtime decides when, so the goodbye or the
announcement is heard before the line closes or moves. Their results tell the model what to say next,
because the model keeps talking after a tool returns. A :class:`StageTransition` is the move-only tool a
stage transition creates: it does nothing itself; the runtime reports its success to the flow state.

:data:`BUILDERS` maps a flow tool ``type`` to the code that builds it; a new tool type adds one entry
(``booking``, ``lookup`` and ``http`` live in their own modules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ivr.flows.model import EndCallConfig, ToolConfig, TransferToHumanConfig
from ivr.flows.state import TRANSITION_PARAMETERS
from ivr.tools.booking import BookingTool
from ivr.tools.http_tool import HttpTool
from ivr.tools.lookup import LookupTool
from ivr.tools.registry import Tool, ToolContext, ToolError, ToolSpec

_REASON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "maxLength": 300,
            "description": "Short reason, for the call record (e.g. 'caller said goodbye').",
        }
    },
    "additionalProperties": False,
}


class EndCall:
    """Hang up after the agent's goodbye has played."""

    def __init__(
        self, name: str = "end_call", description: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.spec = ToolSpec(name, description or EndCallConfig().description, _REASON_SCHEMA, timeout_s)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        ctx.call.request_hangup(str(args.get("reason") or "ended by the assistant"))
        return {"status": "ending", "note": "Say a short goodbye now; the line will close after it plays."}


class TransferToHuman:
    """Hand the caller to a person: this tool's number, else the flow's ``transfer.number``."""

    def __init__(
        self,
        name: str = "transfer_to_human",
        description: str | None = None,
        number: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.spec = ToolSpec(
            name, description or TransferToHumanConfig().description, _REASON_SCHEMA, timeout_s
        )
        self.number = number

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        transfer = ctx.flow.transfer
        number = self.number or (transfer.number if transfer else None)
        if number is None:
            raise ToolError(
                "transfer_unavailable",
                "No one can take a transferred call on this line. Apologise, say a transfer is not possible "
                "right now, and offer to help another way or suggest calling back later.",
            )
        announcement = transfer.announcement if transfer else None
        ctx.call.request_transfer(number, announcement)
        if announcement:
            note = "The caller will hear the transfer announcement next; do not add anything."
        else:
            note = "Tell the caller in one short sentence that you are connecting them to a person now."
        return {"status": "transferring", "note": note}


class StageTransition:
    """A move-only tool from a stage transition: succeeds at once; the stage change is the runtime's."""

    def __init__(self, name: str, description: str) -> None:
        self.spec = ToolSpec(name, description, TRANSITION_PARAMETERS)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return {"status": "ok", "note": "Moving on; follow the updated instructions from now on."}


def _end_call(config: EndCallConfig) -> Tool:
    return EndCall(config.name, config.description, config.timeout_s)


def _transfer_to_human(config: TransferToHumanConfig) -> Tool:
    return TransferToHuman(config.name, config.description, config.number, config.timeout_s)


#: Flow tool ``type`` → builder of its implementation.
BUILDERS: dict[str, Callable[[Any], Tool]] = {
    "end_call": _end_call,
    "transfer_to_human": _transfer_to_human,
    "booking": BookingTool,
    "lookup": LookupTool,
    "http": HttpTool,
}


def build_tool(config: ToolConfig) -> Tool:
    """The implementation of one tool declared in a flow."""
    builder = BUILDERS.get(config.type)
    if builder is None:
        raise ValueError(f"no implementation for tool type {config.type!r} (known: {', '.join(BUILDERS)})")
    return builder(config)
