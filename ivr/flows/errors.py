"""The one error type flow loading raises, and the located problems it carries.

Someone editing a flow file at 2 a.m. needs the file, the line and the field, in the form editors and CI
logs turn into links (``path:line: field: what's wrong (what is expected)``). Every problem found in a
folder is collected into one :class:`FlowError`, so a single ``ivr flows check`` run shows them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow, located as precisely as we can."""

    #: Where the flow came from: a file path as given by the user, or ``flow 'id'`` for flows built in code.
    source: str
    #: 1-based line, when the flow came from a file.
    line: int | None
    #: Dotted field path such as ``model.speed`` or ``tools[1].name``; empty for file-level problems.
    field: str
    #: What is wrong and, in parentheses, what would be right.
    message: str
    #: 1-based column; only YAML syntax errors know it.
    column: int | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class FlowError(ValueError):
    """A flow (or a folder of flows) is invalid; ``str()`` lists every problem, one per line."""

    def __init__(self, problems: Sequence[Problem] | str) -> None:
        if isinstance(problems, str):
            self.problems: tuple[Problem, ...] = ()
            text = problems
        else:
            self.problems = tuple(problems)
            text = "\n".join(str(p) for p in self.problems)
        super().__init__(text)
