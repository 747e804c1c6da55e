"""What ``ivr call`` prints while a call runs, decided without any I/O.

By default a person sees the conversation: what the agent said, what it heard the caller say (the server's
recognition, so a mis-heard line shows as mis-heard), each tool call as one readable line, an approval as
*pending* until an operator decides (not as a failure), and how the call ended. ``--verbose`` adds the
protocol's chatter: every mark echoed when audio finished playing (about ten a second), the webhook and stream
set-up, latencies and the server's internal events.

Two inputs reach :class:`CallView`: the lines :class:`~ivr.caller.client.SimulatedCall` prints itself
(``"[mm:ss.s] text"``, protocol and errors) and the events of the server's live feed (``/api/calls/{sid}/
events``). The client prints its own rendering of feed events too; the view drops those and renders the
events itself, so each event appears once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CallView", "describe_tool_call", "summarise_output"]

_STAMPED = re.compile(r"^(\[\d+:\d\d\.\d\]) (.*)$", re.DOTALL)
#: The client's own lines (not feed events) shown by default: problems, set-up outcome, keys, barge-in, end.
_DEFAULT_PREFIXES = ("error:", "warning:", "server said ", "twilio says:", "→ dtmf", "← clear")
#: The client's own lines shown only with --verbose (how the call ended is in the summary anyway).
_VERBOSE_PREFIXES = ("← mark ", "webhook ", "connected, streamSid", "call ended", "call refused")
#: Tool results that mean "held or refused by the approval gate", not "the tool broke".
_GATED = {
    "pending": "pending: held until an operator approves it",
    "denied": "not run: the operator denied it",
    "expired": "not run: nobody decided in time",
    "abandoned": "not run: the call ended before anyone decided",
}
_MAX_ARGS = 100
_MAX_OUTPUT = 90


def _decode(value: Any) -> Any:
    """Tool outputs arrive as JSON text or as already-decoded values."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not re.search(r"[\s,=()]", value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return f"[{len(value)} item{'s' if len(value) != 1 else ''}]"
    if isinstance(value, dict):
        return "{…}"
    return json.dumps(value)


def _arguments(arguments: Any) -> str:
    arguments = _decode(arguments)
    if isinstance(arguments, Mapping):
        text = ", ".join(f"{key}={_scalar(value)}" for key, value in arguments.items())
    elif arguments in (None, ""):
        text = ""
    else:
        text = _scalar(arguments)
    return _short(text, _MAX_ARGS)


def summarise_output(output: Any) -> str:
    """A short, readable summary of a tool's result: its top-level values, lists counted."""
    output = _decode(output)
    if isinstance(output, Mapping):
        parts = [
            f"{key} {_scalar(value)}" if isinstance(value, list | dict) else f"{key}={_scalar(value)}"
            for key, value in output.items()
        ]
        return _short(", ".join(parts), _MAX_OUTPUT)
    if output in (None, ""):
        return ""
    return _short(_scalar(output), _MAX_OUTPUT)


def _error_message(output: Any) -> str:
    output = _decode(output)
    if isinstance(output, Mapping):
        error = output.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if output.get("message"):
            return str(output["message"])
    return ""


def describe_tool_call(event: Mapping[str, Any]) -> str:
    """``tool appointments(action=book, start=…) → pending: held until an operator approves it``."""
    name = event.get("name") or "?"
    head = f"tool {name}({_arguments(event.get('arguments'))})"
    error_type = event.get("error_type")
    output = event.get("output")
    if event.get("ok"):
        summary = summarise_output(output)
        return f"{head} → ok" + (f": {summary}" if summary else "")
    if error_type in _GATED:
        approval = _decode(output)
        approval_id = approval.get("approval_id") if isinstance(approval, Mapping) else None
        return f"{head} → {_GATED[str(error_type)]}" + (f" ({approval_id})" if approval_id else "")
    message = _short(_error_message(output), _MAX_OUTPUT)
    return (
        f"{head} → failed" + (f" ({error_type})" if error_type else "") + (f": {message}" if message else "")
    )


class CallView:
    """Decides each printed line of ``ivr call``; ``verbose`` adds the protocol's chatter."""

    def __init__(self, *, verbose: bool = False, console_url: str = "") -> None:
        self.verbose = verbose
        #: The server's operations console (``…/ops/``), named when an approval waits.
        self.console_url = console_url

    def client_line(self, line: str) -> str | None:
        """A line the simulated caller printed itself: kept, or None when it is chatter or a feed event."""
        match = _STAMPED.match(line)
        text = match.group(2) if match else line
        if text.startswith(_DEFAULT_PREFIXES):
            return line
        if self.verbose and text.startswith(_VERBOSE_PREFIXES):
            return line
        return None  # a feed event (rendered by event()) or chatter hidden without --verbose

    def event(self, event: Mapping[str, Any]) -> str | None:
        """One event of the server's live feed as a readable line, or None when it is not shown."""
        kind = event.get("type")
        if kind == "transcript":
            role = str(event.get("role") or "?")
            text = str(event.get("text") or "").strip()
            if role == "caller":
                return f"caller: {text}" if text else "caller: (nothing recognised)"
            return f"{role}:  {text}" if role == "agent" else f"{role}: {text}"
        if kind == "tool.called":
            return describe_tool_call(event)
        if kind == "approval.requested":
            approval_id = event.get("approval_id", "?")
            where = f", or in the console ({self.console_url})" if self.console_url else ""
            return (
                f"approval pending: {event.get('tool', 'a tool')} waits for an operator — "
                f"`ivr approvals approve {approval_id}` (or deny){where}"
            )
        if kind == "approval.decided":
            tool = f" ({event['tool']})" if event.get("tool") else ""
            return f"approval {event.get('approval_id', '?')}{tool}: {event.get('status', '?')}"
        if kind == "stage.changed":
            return f"stage: {event.get('previous') or '—'} → {event.get('stage') or '—'}"
        if kind == "dtmf":
            return f"server heard key {event.get('digit', '?')}"
        if kind == "barge_in":
            return "the caller interrupted the agent"
        if kind == "error":
            return f"server error: {event.get('message', '')}"
        if kind == "model.fallback":
            return (
                f"the model could not be reached: the call continues on the {event.get('engine', '?')} engine"
            )
        if kind == "operator.action":
            return f"operator: {event.get('action', '?')}"
        if kind == "call.ended":
            return f"server: call ended ({event.get('outcome', '?')})"
        if not self.verbose or kind == "usage.updated":
            return None
        if kind == "turn.latency":
            if event.get("kind") == "greeting":
                return f"server: greeting audio {event.get('latency_ms')} ms after the stream started"
            return (
                f"server: reply {event.get('turn')} audio {event.get('latency_ms')} ms after the caller "
                "stopped speaking"
            )
        return f"server: {kind}"
