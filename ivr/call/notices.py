"""Messages the call sends to its model that are not the caller's words, built and parsed in one place.

An LLM reads these as prose; the offline engine (:mod:`ivr.engines.local`) parses them back, so the two
sides must agree. ``say_line`` wraps a sentence the model must say verbatim; ``approval_notice`` reports an
operator's decision with the tool's result as JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAY = re.compile(r'(?:Say to the caller|by saying exactly): "(?P<text>.*)"', re.DOTALL)
_NOTICE = re.compile(
    r"^Update on (?P<tool>[A-Za-z0-9_.-]+): (?P<status>approved|not approved)\. (?P<rest>.*)$", re.DOTALL
)
_RESULT = re.compile(r"^Result: (?P<output>\{.*\}|\[.*\]|\".*\"|\S+)\. Tell the caller\.$", re.DOTALL)


def say_line(text: str, then: str = "") -> str:
    """Response instructions that make the model say ``text`` word for word (``then``: extra guidance)."""
    return f'Say to the caller: "{text}"' + (f" {then}" if then else "")


def quoted_line(instructions: str | None) -> str | None:
    """The sentence a :func:`say_line` (or the greeting) asks for, or ``None``."""
    if not instructions:
        return None
    found = _SAY.search(instructions)
    return found.group("text").strip() if found else None


@dataclass(frozen=True)
class ApprovalNotice:
    tool: str
    approved: bool
    output: str | None  # the tool's result (JSON) when it ran
    message: str


def approval_notice(tool: str, approved: bool, *, output: str | None = None, message: str = "") -> str:
    """What the model hears when an operator decides on a held tool call."""
    if approved:
        return f"Update on {tool}: approved. Result: {output}. Tell the caller."
    return f"Update on {tool}: not approved. {message} Tell the caller; offer other help."


def parse_approval_notice(text: str) -> ApprovalNotice | None:
    found = _NOTICE.match(text)
    if found is None:
        return None
    rest = found.group("rest")
    if found.group("status") == "approved":
        result = _RESULT.match(rest)
        return ApprovalNotice(found.group("tool"), True, result.group("output") if result else None, "")
    message = rest.removesuffix(" Tell the caller; offer other help.").strip()
    return ApprovalNotice(found.group("tool"), False, None, message)
