"""What a :class:`~ivr.dialogue.manager.Dialogue` asks the engine to do: :class:`Say` a line or run a tool
(:class:`CallTool`), as :data:`Action` lists; what it waits for (:data:`Waiting`); and the two small helpers
at its edges: a line as it is said (``clean_text``) and a tool's output as it is read (``decode_output``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Action", "CallTool", "Say", "Waiting", "clean_text", "decode_output"]


@dataclass(frozen=True)
class Say:
    """Speak ``text`` to the caller."""

    text: str


@dataclass(frozen=True)
class CallTool:
    """Run tool ``name`` with ``arguments``; report its output with :meth:`Dialogue.tool_result`."""

    call_id: str
    name: str
    arguments: dict[str, Any]


Action = Say | CallTool
Waiting = Literal["caller", "tool", "approval", "ended"]


def decode_output(output: str | None) -> dict[str, Any]:
    """A tool output as a dict; unreadable output is an error result."""
    if output is None:
        return {"error": {"type": "tool_failed", "message": "The tool returned nothing."}}
    try:
        data = json.loads(output)
    except ValueError:
        return {"error": {"type": "tool_failed", "message": "The tool's result could not be read."}}
    if not isinstance(data, dict):
        return {"error": {"type": "tool_failed", "message": "The tool's result is not an object."}}
    return data


def clean_text(text: str) -> str:
    return " ".join(text.split())
