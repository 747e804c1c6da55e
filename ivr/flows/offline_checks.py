"""Load-time checks of the ``offline:`` sections (:mod:`ivr.flows.offline`) against the rest of the flow.

Every tool a step or an offer names must be declared and usable in the stages where it can run; every
``goto`` needs a move-only transition out of each such stage; slot settings must fit the slot's type; and
every placeholder must name something that exists when it is rendered: a slot of the intent, a tool result
saved with ``as`` earlier (results saved by ``on_start`` and ``on_enter`` last for the whole call), a flow
variable or a call value. Each problem is an :class:`~ivr.flows.fields.Issue` whose path (and needle) the
loader turns into a file line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivr.flows.fields import Issue, did_you_mean
from ivr.flows.offline import FILTERS, Intent, Phrases, Slot, Step, malformed, references

if TYPE_CHECKING:
    from ivr.flows.model import Flow, Stage

__all__ = ["offline_issues"]

Path = tuple[str | int, ...]


@dataclass
class _Scope:
    """What a template may name at one spot of the flow."""

    #: Flow variables and call context names.
    context: frozenset[str]
    #: Tool results saved with ``as`` → the tool that produced them.
    results: dict[str, str] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    #: Names only valid here: ``error`` in on_error, ``options`` in an offer's ask, ``message``.
    extra: frozenset[str] = frozenset()
    #: Stages where these steps can run (``None``: a flow without stages).
    stages: tuple[str, ...] | None = None

    def names(self) -> list[str]:
        return sorted({*self.context, *self.results, *self.slots, *self.extra})

    def with_result(self, name: str, tool: str) -> _Scope:
        return _Scope(self.context, {**self.results, name: tool}, self.slots, self.extra, self.stages)

    def plus(self, *extra: str) -> _Scope:
        return _Scope(self.context, self.results, self.slots, self.extra | set(extra), self.stages)


class _Checker:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.issues: list[Issue] = []
        self.declared = {t.name: t for t in flow.tools}
        self.stage_ids = [s.id for s in flow.stages]

    # -- helpers ----------------------------------------------------------------------------------------

    def add(self, path: Path, message: str, needle: str | None = None) -> None:
        self.issues.append(Issue(path, message, needle))

    def allowed_tools(self, stage: Stage) -> set[str]:
        declared = list(self.declared)
        listed = set(declared if stage.tools is None else stage.tools)
        return listed | {t.tool for t in stage.transitions}

    def of_type(self, kind: str) -> str | None:
        return next((t.name for t in self.flow.tools if t.type == kind), None)

    def check_tool_available(self, path: Path, name: str, scope: _Scope) -> None:
        if name not in self.declared:
            moves = {t.tool: t.to for s in self.flow.stages for t in s.transitions}
            hint = f"; to move to a stage write goto: {moves[name]}" if name in moves else ""
            self.add(
                path,
                f"no tool named {name!r}{did_you_mean(name, list(self.declared))} "
                f"(tools of this flow: {', '.join(self.declared) or 'none declared'}){hint}",
            )
            return
        for stage_id in scope.stages or ():
            stage = self.flow.stage(stage_id)
            if stage is not None and name not in self.allowed_tools(stage):
                self.add(
                    path,
                    f"tool {name!r} is not available in stage {stage_id!r} (its tools: "
                    f"{', '.join(sorted(self.allowed_tools(stage))) or 'none'}); add it to that stage's "
                    "tools or move this to a stage that has it",
                )
                return

    def check_text(self, path: Path, text: str | None, scope: _Scope) -> None:
        if text is None:
            return
        for snippet in malformed(text):
            self.add(
                path,
                f"malformed placeholder {snippet!r} (write {{{{ name }}}} or {{{{ name.field }}}})",
                snippet,
            )
        for ref in references(text):
            for name in ref.filters:
                if name not in FILTERS:
                    self.add(
                        path,
                        f"unknown filter {name!r} in {ref.text}{did_you_mean(name, FILTERS)} "
                        f"(filters: {', '.join(FILTERS)})",
                        ref.text,
                    )
            problem = self.path_problem(ref.path, scope)
            if problem:
                self.add(path, f"{ref.text}: {problem}", ref.text)

    def check_value_path(self, path: Path, value: str | None, scope: _Scope) -> None:
        if value is None:
            return
        problem = self.path_problem(tuple(value.split(".")), scope)
        if problem:
            self.add(path, f"{value!r}: {problem}", value)

    def path_problem(self, parts: tuple[str, ...], scope: _Scope) -> str | None:
        name = parts[0]
        if name in scope.extra:
            return None
        if name in scope.slots:
            slot = scope.slots[name]
            if len(parts) > 1 and slot.type != "offer" and parts[1] not in ("value", "spoken"):
                fields = f"{name}, {name}.value or {name}.spoken"
                return f"a {slot.type} slot has no field {parts[1]!r} (use {fields})"
            return None
        if name in scope.results:
            tool = self.declared.get(scope.results[name])
            fields = getattr(tool, "fields", None) if tool is not None and tool.type == "lookup" else None
            if fields is not None and len(parts) > 1 and parts[1] not in ("found", *fields):
                known = ["found", *fields]
                return (
                    f"{scope.results[name]!r} returns no field {parts[1]!r}{did_you_mean(parts[1], known)} "
                    f"(it returns {', '.join(known)})"
                )
            return None
        if name in scope.context:
            if len(parts) > 1:
                return f"{name!r} is text and has no fields (write {{{{ {name} }}}})"
            return None
        known = scope.names()
        return (
            f"unknown name {name!r}{did_you_mean(name, known)} (known here: {', '.join(known)}; "
            "names are slots of the intent, results saved with 'as' earlier, flow variables and call values)"
        )

    # -- steps ------------------------------------------------------------------------------------------

    def check_steps(self, path: Path, steps: Sequence[Step], scope: _Scope) -> _Scope:
        """Check a step list; returns the scope after it (with the names it saved)."""
        ended_at: int | None = None
        for j, step in enumerate(steps):
            at = (*path, j)
            if ended_at is not None:
                self.add(
                    at,
                    f"nothing runs after the {steps[ended_at].action} step (steps[{ended_at}]); move this "
                    "step before it, or give that step a when:/unless:",
                )
                ended_at = None
            self.check_value_path((*at, "when"), step.when, scope)
            self.check_value_path((*at, "unless"), step.unless, scope)
            action = step.action
            if action == "say":
                self.check_text((*at, "say"), step.say, scope)
            elif action == "tool":
                assert step.tool is not None
                self.check_tool_available((*at, "tool"), step.tool, scope)
                self.check_arguments((*at, "arguments"), step.tool, step.arguments, scope)
                self.check_text((*at, "on_error"), step.on_error, scope.plus("error"))
                if step.as_ is not None:
                    if step.as_ in scope.slots or step.as_ in scope.context:
                        self.add(
                            (*at, "as"),
                            f"{step.as_!r} is already a slot or a call value here (pick another name)",
                        )
                    scope = scope.with_result(step.as_, step.tool)
                config = self.declared.get(step.tool)
                if config is not None and config.type in ("end_call", "transfer_to_human"):
                    action = "end_call"
            elif action == "goto":
                assert step.goto is not None
                self.check_goto((*at, "goto"), step.goto, scope)
            elif action in ("end_call", "transfer"):
                kind = "end_call" if action == "end_call" else "transfer_to_human"
                name = self.of_type(kind)
                if name is None:
                    self.add(
                        (*at, action),
                        f"this flow declares no {kind} tool (add one under tools: - {{type: {kind}}})",
                    )
                else:
                    self.check_tool_available((*at, action), name, scope)
            if action in ("goto", "end_call", "transfer") and step.when is None and step.unless is None:
                ended_at = j
        return scope

    def check_arguments(self, path: Path, tool: str, arguments: Mapping[str, Any], scope: _Scope) -> None:
        config = self.declared.get(tool)
        names = config.parameter_names() if config is not None else None
        for key, value in arguments.items():
            if names is not None and key not in names:
                self.add(
                    (*path, key),
                    f"{key!r} is not an argument of {tool}{did_you_mean(key, names)} "
                    f"(its arguments: {', '.join(sorted(names)) or 'none'})",
                )
            for text in _strings(value):
                self.check_text((*path, key), text, scope)

    def check_goto(self, path: Path, target: str, scope: _Scope) -> None:
        if not self.flow.stages:
            self.add(path, "this flow has no stages to go to (add stages, or remove this step)")
            return
        if target not in self.stage_ids:
            self.add(
                path,
                f"no stage named {target!r}{did_you_mean(target, self.stage_ids)} "
                f"(stages of this flow: {', '.join(self.stage_ids)})",
            )
            return
        for stage_id in scope.stages or ():
            if stage_id == target:
                continue
            stage = self.flow.stage(stage_id)
            assert stage is not None
            transition = next((t for t in stage.transitions if t.to == target), None)
            if transition is None:
                self.add(
                    path,
                    f"stage {stage_id} has no transition to {target}; add one with a tool name "
                    f"(transitions: - {{to: {target}, tool: go_{target}, description: ...}})",
                )
                return
            if transition.tool in self.declared:
                self.add(
                    path,
                    f"stage {stage_id} reaches {target} only through the declared tool {transition.tool!r}, "
                    "which needs its own arguments; add a transition with a new tool name for goto",
                )
                return

    # -- slots and intents ------------------------------------------------------------------------------

    def check_slot(self, path: Path, slot: Slot, scope: _Scope) -> None:
        if slot.ask is None and not slot.optional:
            self.add(path, f"slot {slot.name!r} has no ask (what to say to ask for it), and is not optional")
        if slot.type == "choice":
            if not slot.choices:
                self.add(path, "a choice slot needs choices (e.g. choices: {cleaning: [cleaning, clean]})")
            unknown = sorted(set(slot.times or {}) - set(slot.choices or {}))
            if unknown:
                self.add(
                    (*path, "times"), f"times names {', '.join(unknown)}, which is not one of the choices"
                )
        elif slot.choices is not None:
            self.add((*path, "choices"), f"choices only go with type: choice (this slot is a {slot.type})")
        if slot.type != "choice" and slot.times is not None:
            self.add((*path, "times"), f"times only go with type: choice (this slot is a {slot.type})")
        if slot.type != "number":
            for key in ("min", "max"):
                if getattr(slot, key) is not None:
                    self.add((*path, key), f"{key} only goes with type: number (this slot is a {slot.type})")
        elif slot.min is not None and slot.max is not None and slot.min > slot.max:
            self.add((*path, "min"), f"min {slot.min} is larger than max {slot.max}")
        offer_keys = ("tool", "options", "value", "label", "none")
        if slot.type == "offer":
            missing = [key for key in ("tool", "options", "value", "label") if getattr(slot, key) is None]
            if missing:
                self.add(
                    path,
                    f"an offer slot needs {', '.join(missing)} (tool: the tool to call, options: where its "
                    "list is, value/label: the option's fields to keep and to say)",
                )
            if slot.tool is not None:
                self.check_tool_available((*path, "tool"), slot.tool, scope)
                self.check_arguments((*path, "arguments"), slot.tool, slot.arguments, scope)
            self.check_text((*path, "ask"), slot.ask, scope.plus("options"))
            self.check_text((*path, "none"), slot.none, scope)
            if slot.default is not None:
                self.add(
                    (*path, "default"), "an offer slot cannot have a default (its options come from a tool)"
                )
            for k, name in enumerate(slot.none_clears):
                if name not in scope.slots:
                    self.add(
                        (*path, "none_clears", k),
                        f"{name!r} is not a slot of this intent{did_you_mean(name, list(scope.slots))}",
                    )
        else:
            for key in offer_keys:
                if getattr(slot, key) is not None:
                    self.add((*path, key), f"{key} only goes with type: offer (this slot is a {slot.type})")
            if slot.arguments:
                self.add(
                    (*path, "arguments"), f"arguments only go with type: offer (this slot is a {slot.type})"
                )
            if slot.none_clears:
                self.add(
                    (*path, "none_clears"),
                    f"none_clears only goes with type: offer (this slot is a {slot.type})",
                )
            self.check_text((*path, "ask"), slot.ask, scope)
            self.check_text((*path, "default"), slot.default, scope)

    def check_intents(self, path: Path, intents: Sequence[Intent], scope: _Scope) -> None:
        seen: dict[str, int] = {}
        for i, intent in enumerate(intents):
            at = (*path, i)
            if intent.id in seen:
                self.add((*at, "id"), f"{intent.id!r} is already the id of {path[-1]}[{seen[intent.id]}]")
            seen.setdefault(intent.id, i)
            if not intent.examples and not intent.keywords:
                self.add(at, f"intent {intent.id!r} has neither examples nor keywords, so it can never match")
            slots: dict[str, Slot] = {}
            for k, slot in enumerate(intent.slots):
                if slot.name in slots:
                    self.add((*at, "slots", k, "name"), f"{slot.name!r} is already a slot of this intent")
                if slot.name in scope.context:
                    self.add(
                        (*at, "slots", k, "name"),
                        f"{slot.name!r} is a flow variable or call value; name the slot differently",
                    )
                slots.setdefault(slot.name, slot)
            inner = _Scope(scope.context, dict(scope.results), slots, scope.extra, scope.stages)
            for k, slot in enumerate(intent.slots):
                self.check_slot((*at, "slots", k), slot, inner)
            self.check_text((*at, "confirm"), intent.confirm, inner)
            for k, name in enumerate(intent.confirm_no_clears or []):
                if name not in slots:
                    self.add(
                        (*at, "confirm_no_clears", k),
                        f"{name!r} is not a slot of this intent{did_you_mean(name, list(slots))}",
                    )
            if intent.confirm_no_clears is not None and intent.confirm is None:
                self.add(
                    (*at, "confirm_no_clears"), "has no effect without confirm (add confirm or remove it)"
                )
            self.check_steps((*at, "steps"), intent.steps, inner)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _saved(steps: Iterable[Step]) -> dict[str, str]:
    return {step.as_: step.tool for step in steps if step.as_ is not None and step.tool is not None}


def offline_issues(flow: Flow) -> list[Issue]:
    """Problems in the flow's and its stages' ``offline`` sections (tools, stages, templates, slots)."""
    offline = flow.offline
    staged = [(i, s) for i, s in enumerate(flow.stages) if s.offline is not None]
    if offline is None and not staged:
        return []
    checker = _Checker(flow)
    context = flow.placeholder_names()
    all_stages = tuple(s.id for s in flow.stages) if flow.stages else None
    # Results saved at the start of the call or on entering a stage are known for the rest of the call.
    call_wide: dict[str, str] = {}
    if offline is not None:
        call_wide.update(_saved(offline.on_start))
    for _, stage in staged:
        assert stage.offline is not None
        call_wide.update(_saved(stage.offline.on_enter))

    if offline is not None:
        start = (flow.start_stage_id,) if flow.stages else None
        checker.check_steps(
            ("offline", "on_start"), offline.on_start, _Scope(context, {}, {}, frozenset(), start)
        )
        wide = _Scope(context, dict(call_wide), {}, frozenset(), all_stages)
        if offline.giveup is not None:
            checker.check_steps(("offline", "giveup"), offline.giveup, wide)
        checker.check_text(("offline", "no_match"), offline.no_match, wide)
        for k, line in enumerate(offline.reask):
            checker.check_text(("offline", "reask", k), line, wide)
        checker.check_text(("offline", "keypad"), offline.keypad, wide)
        for name in Phrases.model_fields:
            extra = {"not_approved": ("message",), "check": ("value",)}.get(name, ())
            checker.check_text(
                ("offline", "phrases", name), getattr(offline.phrases, name), wide.plus(*extra)
            )
        checker.check_intents(("offline", "intents"), offline.intents, wide)

    for i, stage in staged:
        assert stage.offline is not None
        path: Path = ("stages", i, "offline")
        here = _Scope(context, dict(call_wide), {}, frozenset(), (stage.id,))
        checker.check_steps((*path, "on_enter"), stage.offline.on_enter, here)
        checker.check_text((*path, "prompt"), stage.offline.prompt, here)
        checker.check_intents((*path, "intents"), stage.offline.intents, here)
    return checker.issues
