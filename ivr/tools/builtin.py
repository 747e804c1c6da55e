"""Tools every flow can declare without writing Python: ``end_call`` and ``transfer_to_human``.

Both only *ask* the call runtime (through :class:`~ivr.tools.registry.CallControl`) to act; the runtime
decides when, so the goodbye or the announcement is heard before the line closes or moves. Their results
tell the model what to say next, because the model keeps talking after a tool returns.

:data:`BUILDERS` maps a flow tool ``type`` to the code that builds it; a new tool type adds one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ivr.flows.model import EndCallConfig, ToolConfig, TransferToHumanConfig
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

    def __init__(self, name: str = "end_call", description: str | None = None) -> None:
        self.spec = ToolSpec(name, description or EndCallConfig().description, _REASON_SCHEMA)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        ctx.call.request_hangup(str(args.get("reason") or "ended by the assistant"))
        return {"status": "ending", "note": "Say a short goodbye now; the line will close after it plays."}


class TransferToHuman:
    """Hand the caller to a person: this tool's number, else the flow's ``transfer.number``."""

    def __init__(
        self, name: str = "transfer_to_human", description: str | None = None, number: str | None = None
    ) -> None:
        self.spec = ToolSpec(name, description or TransferToHumanConfig().description, _REASON_SCHEMA)
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


def _end_call(config: EndCallConfig) -> Tool:
    return EndCall(config.name, config.description)


def _transfer_to_human(config: TransferToHumanConfig) -> Tool:
    return TransferToHuman(config.name, config.description, config.number)


#: Flow tool ``type`` → builder of its implementation.
BUILDERS: dict[str, Callable[[Any], Tool]] = {
    "end_call": _end_call,
    "transfer_to_human": _transfer_to_human,
}


def build_tool(config: ToolConfig) -> Tool:
    """The implementation of one tool declared in a flow."""
    builder = BUILDERS.get(config.type)
    if builder is None:
        raise ValueError(f"no implementation for tool type {config.type!r} (known: {', '.join(BUILDERS)})")
    return builder(config)
