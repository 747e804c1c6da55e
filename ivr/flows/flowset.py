"""All flows of a deployment, and the choice of flow for an incoming call.

Routing is by exact E.164 match on Twilio's ``To``; a call to any other number gets the folder's default
flow, or a built-in polite assistant, so a misrouted number is still answered rather than dropped.
Rules that span files (unique ids, one flow per number, one default) are checked here, with both
locations named, because neither file is wrong on its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ivr.flows.compat import DIALECT_SETTING, MODEL_SETTING, choices_for, compat_issues, target_for
from ivr.flows.errors import FlowError, Problem
from ivr.flows.loader import flow_files, load_flow
from ivr.flows.model import (
    EndCallConfig,
    Flow,
    ToolConfig,
    Transfer,
    TransferToHumanConfig,
    dotted,
    normalise_number,
)

BUILTIN_FLOW_ID = "builtin-default"

_BUILTIN_INSTRUCTIONS = """\
You are the phone assistant of this line. Be warm, polite and brief: this is a phone call, so answer in
one or two short sentences and ask one question at a time. Find out what the caller needs and help with
general questions. Do not invent facts, prices, appointments or policies you were not given; if you do not
know, say so plainly.{transfer}
When the caller says goodbye or the conversation is finished, say a short goodbye and use end_call.
Today is {{{{ today }}}}."""

_BUILTIN_TRANSFER_HINT = """
If the caller asks for a person, or you cannot help, offer to connect them and use transfer_to_human."""


@dataclass(frozen=True)
class _Entry:
    flow: Flow
    source: str
    locate: Callable[[tuple[str | int, ...]], int | None]
    warnings: tuple[Problem, ...] = ()

    def at(self, path: tuple[str | int, ...]) -> str:
        line = self.locate(path)
        return self.source if line is None else f"{self.source}:{line}"


class FlowSet:
    """An immutable, validated collection of flows with number routing."""

    def __init__(self, flows: Iterable[Flow] = ()) -> None:
        """Build from flows made in code; raises :class:`FlowError` on cross-flow conflicts."""
        entries = [
            _Entry(
                flow,
                f"flow '{flow.id}'",
                lambda _path: None,
                tuple(Problem(f"flow '{flow.id}'", None, dotted(w.path), w.message) for w in flow.warnings()),
            )
            for flow in flows
        ]
        problems = _cross_problems(entries)
        if problems:
            raise FlowError(problems)
        self._init(entries)

    def _init(self, entries: Sequence[_Entry]) -> None:
        self._entries = {entry.flow.id: entry for entry in entries}
        self._by_number = {number: entry.flow for entry in entries for number in entry.flow.numbers}
        self._default = next((entry.flow for entry in entries if entry.flow.default), None)
        self._fallback = self._default or self.builtin_default()

    @classmethod
    def load(cls, folder: Path) -> FlowSet:
        """Load every ``*.yaml``/``*.yml`` in ``folder`` (or one file, if ``folder`` is a file).

        A missing folder gives a set with only the built-in default flow; the caller decides whether that
        deserves a warning. All problems from all files are raised together as one :class:`FlowError`.
        """
        if not folder.exists():
            return cls()
        paths = [folder] if folder.is_file() else flow_files(folder)
        problems: list[Problem] = []
        entries: list[_Entry] = []
        for path in paths:
            try:
                loaded = load_flow(path)
            except FlowError as exc:
                problems.extend(exc.problems)
                continue
            entries.append(_Entry(loaded.flow, loaded.document.source, loaded.document.line, loaded.warnings))
        problems.extend(_cross_problems(entries))
        if problems:
            raise FlowError(problems)
        flow_set = cls.__new__(cls)
        flow_set._init(entries)
        return flow_set

    @classmethod
    def builtin_default(cls, transfer_number: str | None = None) -> Flow:
        """A polite general assistant; it can transfer only when a transfer number is given."""
        tools: list[ToolConfig] = [EndCallConfig()]
        if transfer_number is not None:
            tools.append(TransferToHumanConfig())
        return Flow(
            id=BUILTIN_FLOW_ID,
            default=True,
            greeting="Hello, thanks for calling. How can I help you today?",
            instructions=_BUILTIN_INSTRUCTIONS.format(
                transfer=_BUILTIN_TRANSFER_HINT if transfer_number is not None else ""
            ),
            transfer=Transfer(number=transfer_number) if transfer_number is not None else None,
            tools=tools,
        )

    def for_number(self, to: str) -> Flow:
        """The flow answering calls to ``to`` (spaces and dashes ignored), else the default flow."""
        return self._by_number.get(normalise_number(to), self._fallback)

    @property
    def default(self) -> Flow | None:
        """The flow marked ``default: true``, if any (``for_number`` falls back to the built-in otherwise)."""
        return self._default

    def get(self, flow_id: str) -> Flow | None:
        entry = self._entries.get(flow_id)
        return entry.flow if entry else None

    def source_of(self, flow_id: str) -> str | None:
        """The file a flow came from (``flow 'id'`` for flows built in code)."""
        entry = self._entries.get(flow_id)
        return entry.source if entry else None

    def warnings(self) -> list[Problem]:
        """Problems that did not stop any flow from loading (unreachable stages, hours without a zone...)."""
        return [warning for entry in self._entries.values() for warning in entry.warnings]

    def model_problems(
        self,
        default_model: str,
        dialect_override: str = "auto",
        *,
        model_source: str = MODEL_SETTING,
        dialect_source: str = DIALECT_SETTING,
    ) -> tuple[list[Problem], list[Problem]]:
        """``(errors, warnings)``: settings each flow's model and dialect cannot take (or may not know), by
        file and line. ``default_model``/``dialect_override`` are the deployment's (``IVR_REALTIME_MODEL``,
        ``IVR_REALTIME_DIALECT``); see :mod:`ivr.flows.compat`."""
        errors: list[Problem] = []
        warnings: list[Problem] = []
        for entry in self._entries.values():
            issues = compat_issues(
                entry.flow,
                default_model=default_model,
                dialect_override=dialect_override,
                model_source=model_source,
                dialect_source=dialect_source,
            )
            for issue in issues:
                problem = Problem(entry.source, entry.locate(issue.path), dotted(issue.path), issue.message)
                (errors if issue.severity == "error" else warnings).append(problem)
        return errors, warnings

    def fitted_to(self, default_model: str, dialect_override: str = "auto") -> FlowSet:
        """This set, with the built-in assistant (numbers no flow claims, when there is no default flow)
        speaking a voice the deployment's model can take: its GA voice does not exist on beta models."""
        builtin = self._fallback
        if self._default is not None:
            return self
        target = target_for(builtin, default_model=default_model, dialect_override=dialect_override)
        voices = choices_for(target.dialect).voices
        if target.engine != "realtime" or builtin.model.voice in voices:
            return self
        model = builtin.model.model_copy(update={"voice": sorted(voices)[0]})
        fitted = copy.copy(self)
        fitted._fallback = builtin.model_copy(update={"model": model})
        return fitted

    def __iter__(self) -> Iterator[Flow]:
        return (entry.flow for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def missing_flows(path: Path) -> str | None:
    """Why ``path`` has no flows to load (it does not exist, or holds no ``*.yaml``), else None."""
    if not path.exists():
        return f"{path} does not exist"
    if path.is_dir() and not flow_files(path):
        return f"no flows in {path} (no *.yaml or *.yml files in that folder)"
    return None


def _cross_problems(entries: Sequence[_Entry]) -> list[Problem]:
    problems: list[Problem] = []
    ids: dict[str, _Entry] = {}
    numbers: dict[str, tuple[_Entry, int]] = {}
    default: _Entry | None = None
    for entry in entries:
        flow = entry.flow
        if flow.id in ids:
            first = ids[flow.id]
            problems.append(
                Problem(
                    entry.source,
                    entry.locate(("id",)),
                    "id",
                    f"{flow.id!r} is already the id of the flow in {first.at(('id',))} (ids must be unique)",
                )
            )
        else:
            ids[flow.id] = entry
        for i, number in enumerate(flow.numbers):
            if number in numbers:
                owner, j = numbers[number]
                problems.append(
                    Problem(
                        entry.source,
                        entry.locate(("numbers", i)),
                        f"numbers[{i}]",
                        f"{number} is already answered by flow {owner.flow.id!r} "
                        f"({owner.at(('numbers', j))}); a number may belong to one flow only",
                    )
                )
            else:
                numbers[number] = (entry, i)
        if flow.default:
            if default is not None:
                problems.append(
                    Problem(
                        entry.source,
                        entry.locate(("default",)),
                        "default",
                        f"flow {default.flow.id!r} ({default.at(('default',))}) is already the default "
                        "(only one flow may have default: true)",
                    )
                )
            else:
                default = entry
    return problems
