"""``{{ name }}`` placeholders in prompts and spoken phrases.

Deliberately tiny (no expressions, filters or loops): prompts are written by non-programmers and a
placeholder that silently renders as nothing makes the model say odd things on a live call. So every
placeholder is checked against the names that will exist at call time when the flow is loaded, and
``render`` refuses to leave one unfilled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_OPENING = re.compile(r"\{\{")


@dataclass(frozen=True)
class Placeholder:
    """A placeholder as written: its name and its exact text (used to find its line in the source)."""

    name: str
    text: str


def placeholders(text: str) -> list[Placeholder]:
    """Every well-formed placeholder in ``text``, in order of appearance."""
    return [Placeholder(m.group(1), m.group(0)) for m in _PLACEHOLDER.finditer(text)]


def malformed(text: str) -> list[str]:
    """Snippets of ``{{`` openings that do not form a valid ``{{ name }}`` placeholder."""
    valid_starts = {m.start() for m in _PLACEHOLDER.finditer(text)}
    bad: list[str] = []
    position = 0
    for m in _OPENING.finditer(text):
        if m.start() < position:
            continue  # "{{{" overlaps an opening we already judged
        if m.start() in valid_starts:
            position = m.start() + 2
            continue
        end = text.find("}}", m.start())
        stop = min(end + 2 if end != -1 else len(text), m.start() + 40)
        bad.append(text[m.start() : stop].split("\n", 1)[0])
        position = m.start() + 2
    return bad


def render(text: str, context: Mapping[str, str]) -> str:
    """Replace each ``{{ name }}`` with ``context[name]``.

    Raises :class:`ValueError` naming the first placeholder without a value, so a missing call-time value
    is a loud bug rather than a blank in what the caller hears.
    """
    missing = [p.name for p in placeholders(text) if p.name not in context]
    if missing:
        raise ValueError(
            f"no value for placeholder {{{{ {missing[0]} }}}}; known: {', '.join(sorted(context))}"
        )
    return _PLACEHOLDER.sub(lambda m: str(context[m.group(1)]), text)
