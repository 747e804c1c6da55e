"""What a call resumed on another instance starts from: its conversation rebuilt from Redis. Sans-I/O.

When the instance carrying a call dies, Twilio asks the ``<Connect action>`` URL what next and gets a new
stream (ivr.store.reattach); the instance receiving it builds a :class:`Resumed` from the call's stored
transcript (as the caller heard it, after the flow's redaction) and tool events, replays that into a fresh
model session, and has the agent say :data:`RESUMED_NOTICE` before going on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .notices import say_line

__all__ = ["RESUMED_NOTICE", "Resumed", "history_from_store", "resumed_instructions"]

#: The one sentence the caller hears when their call comes back on another instance.
RESUMED_NOTICE = "Sorry, the line dropped for a moment. I'm back."
#: Characters of a tool's arguments or output kept in the replayed note.
_TOOL_TEXT_CHARS = 600


@dataclass(frozen=True, slots=True)
class Resumed:
    """A call taken over on its ``number``-th resumed stream from instance ``previous``."""

    number: int
    previous: str
    #: The conversation to replay, as ``Conversation.append`` tuples (oldest first).
    history: list[tuple[str, ...]] = field(default_factory=list)
    #: The flow stage the call was in (None: the flow's first).
    stage: str | None = None
    #: Wall-clock start of the call (its time limit counts from here, not from the new stream).
    started_at: float | None = None


def history_from_store(
    transcript: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]
) -> list[tuple[str, ...]]:
    """The replayable conversation: the caller's and the agent's lines, and what each tool call returned
    (as system notes: the function call ids of the dead instance's model session mean nothing to a new
    one), in the order they happened."""
    timeline: list[tuple[float, int, tuple[str, ...]]] = []
    for n, line in enumerate(transcript):
        text = str(line.get("text") or "").strip()
        role = line.get("role")
        if text and role in ("caller", "agent"):
            timeline.append((_ts(line.get("ts")), n, ("user" if role == "caller" else "assistant", text)))
    for n, event in enumerate(events):
        if event.get("type") != "tool.called":
            continue
        data = event.get("data") or {}
        if not isinstance(data, Mapping):
            continue
        name = str(data.get("name") or "a tool")
        if data.get("error_type") == "pending":
            note = (
                f"Earlier in this call you asked to run {name} with {_short(data.get('arguments'))}; a staff "
                "member has to approve it first, and their decision will come as a system message."
            )
        else:
            result = "succeeded" if data.get("ok") else f"failed ({data.get('error_type') or 'error'})"
            note = (
                f"Earlier in this call you called {name} with {_short(data.get('arguments'))}; it {result} "
                f"and returned {_short(data.get('output'))}."
            )
        timeline.append((_ts(event.get("ts")), 1_000_000 + n, ("system", note)))
    timeline.sort(key=lambda item: (item[0], item[1]))
    return [entry for _ts_, _n, entry in timeline]


def resumed_instructions() -> str:
    """The first response of a resumed call: the notice, then on from where the conversation was."""
    return say_line(
        RESUMED_NOTICE,
        "Then carry on the conversation from where it was, without greeting the caller again or repeating "
        "what they already heard.",
    )


def _ts(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _TOOL_TEXT_CHARS else text[: _TOOL_TEXT_CHARS - 1] + "…"
