"""Typed models of a call flow: what one phone number does.

A flow file is data written by people, so the models are strict (no silent coercion of ``"yes"`` into
``True``), reject unknown keys (a typo must not quietly fall back to a default), and check ranges that the
Realtime API only documents in prose (speed, token limits). Tools carry a ``type`` discriminator so new
kinds of tools slot in as new members of :data:`ToolConfig` (see :mod:`ivr.flows.tool_configs`) without
touching the rest.

A flow may be split into stages (reception → booking → wrap-up), each with its own instructions, allowed
tools, keypad shortcuts and transitions; :class:`ivr.flows.state.FlowState` walks them during a call. A flow
without stages is one implicit stage (:data:`IMPLICIT_STAGE`) with every tool.

Checks that span several fields (placeholders, tool names used by ``dtmf`` and stages, a transfer tool
without a number, unreachable stages) live in :meth:`Flow.issues`. They run on every construction; the
YAML loader collects them through the validation context instead of stopping at the first one, so it can
give each its own line. Issues with severity ``warning`` never stop a flow from loading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from ivr.flows import template
from ivr.flows.errors import FlowError
from ivr.flows.fields import (
    STAGE_TARGET,
    DtmfKey,
    DtmfTarget,
    FlowId,
    Issue,
    PhoneNumber,
    Slug,
    Text,
    TimeZoneName,
    ToolName,
    did_you_mean,
    dotted,
    in_range,
    is_time_zone,
    normalise_number,
)
from ivr.flows.fields import Strict as _Strict
from ivr.flows.hours import AfterHours, OpeningHours, describe_opening
from ivr.flows.http_env import http_env_issues
from ivr.flows.offline import Intent, Offline, Slot, StageOffline, Step
from ivr.flows.offline_checks import offline_issues
from ivr.flows.redact_config import RedactEntry, redactor_for
from ivr.flows.tool_configs import (
    BookingConfig,
    EndCallConfig,
    HttpConfig,
    LookupConfig,
    ToolConfig,
    TransferToHumanConfig,
)
from ivr.redaction import Redactor

__all__ = [
    "BUILTIN_PLACEHOLDERS",
    "GA_ONLY_VOICES",
    "IMPLICIT_STAGE",
    "ISSUES_CONTEXT_KEY",
    "VOICES",
    "AfterHours",
    "BookingConfig",
    "EndCallConfig",
    "Flow",
    "HttpConfig",
    "Intent",
    "Issue",
    "Limits",
    "LookupConfig",
    "ModelSettings",
    "Offline",
    "OpeningHours",
    "SemanticVad",
    "ServerVad",
    "Slot",
    "Stage",
    "StageOffline",
    "Step",
    "ToolConfig",
    "Transcription",
    "Transfer",
    "TransferToHumanConfig",
    "Transition",
    "dialect_for",
    "did_you_mean",
    "dotted",
    "normalise_number",
]

#: Voices the Realtime API offers; ``marin`` and ``cedar`` exist only on the GA (``gpt-realtime*``) models.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
GA_ONLY_VOICES = frozenset({"marin", "cedar"})

#: Placeholders every call fills in, whatever the flow says. ``stage`` is the current stage's id,
#: ``open_now`` is yes/no from the opening hours, ``next_opening`` says when the line opens next.
BUILTIN_PLACEHOLDERS = (
    "caller_number",
    "called_number",
    "call_sid",
    "flow_id",
    "today",
    "now",
    "stage",
    "open_now",
    "next_opening",
)

#: The id of the single stage of a flow that declares none.
IMPLICIT_STAGE = "main"

#: Key of the list in the validation context where :class:`Flow` deposits cross-field issues.
ISSUES_CONTEXT_KEY = "ivr_flow_issues"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LANGUAGE = re.compile(r"[a-z]{2}")


def dialect_for(model_name: str) -> Literal["ga", "beta"]:
    """The Realtime dialect a model speaks: beta for ``*-realtime-preview*`` models, GA otherwise."""
    return "beta" if "realtime-preview" in model_name else "ga"


# --- field types with messages a person can act on ------------------------------------------------------


def _variable_name(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid variable name (use letters, digits and '_', e.g. business_name)"
        )
    if value in BUILTIN_PLACEHOLDERS:
        raise ValueError(f"{value!r} is filled in at call time and cannot be set here (pick another name)")
    return value


def _variable_value(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f'{value} was read as a boolean; quote it if you mean text (e.g. "yes")')
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, date):  # YAML reads 2024-05-01 as a date
        return value.isoformat()
    return value


def _language(value: str) -> str:
    if not _LANGUAGE.fullmatch(value):
        raise ValueError(f"{value!r} is not an ISO-639-1 language code (e.g. en, de, es)")
    return value


def _max_tokens(value: object) -> object:
    if value == float("inf") or value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a token limit (use a whole number from 1 to 4096, or inf)")
    if not 1 <= value <= 4096:
        raise ValueError(f"{value} is out of range (use 1 to 4096, or inf)")
    return value


VariableName = Annotated[str, AfterValidator(_variable_name)]
VariableValue = Annotated[str, BeforeValidator(_variable_value)]
Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]
MaxOutputTokens = Annotated[int | Literal["inf"], BeforeValidator(_max_tokens)]


# --- model connection ------------------------------------------------------------------------------------


class ServerVad(_Strict):
    """Voice activity detection on loudness and silence; predictable, good on clean lines."""

    type: Literal["server_vad"] = "server_vad"
    threshold: Annotated[float, in_range(0.0, 1.0)] = 0.5
    prefix_padding_ms: Annotated[int, in_range(0, 5000)] = 300
    silence_duration_ms: Annotated[int, in_range(0, 10000)] = 500


class SemanticVad(_Strict):
    """Turn detection that judges whether the caller has finished their thought."""

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class Transcription(_Strict):
    """Caller-side transcription (for transcripts and dashboards; the model hears the audio itself)."""

    model: Text = "gpt-4o-mini-transcribe"
    language: Annotated[str, AfterValidator(_language)] | None = None
    prompt: str | None = None


class ModelSettings(_Strict):
    """How to talk to the speech model. Defaults suit a phone line."""

    #: Realtime model; ``None`` means the deployment default (``IVR_REALTIME_MODEL``).
    name: Text | None = None
    #: ``auto`` picks the dialect from the model name (see :func:`dialect_for`).
    dialect: Literal["auto", "ga", "beta"] = "auto"
    voice: Voice = "marin"
    speed: Annotated[float, in_range(0.25, 1.5)] = 1.0
    #: ``pcm``: 8 kHz μ-law is resampled to 24 kHz PCM16 (better recognition); ``pcmu``: passed through.
    audio: Literal["pcm", "pcmu"] = "pcm"
    turn_detection: TurnDetection = Field(default_factory=ServerVad)
    #: ``None`` (``null`` in YAML) disables caller transcripts.
    transcription: Transcription | None = Field(default_factory=Transcription)
    max_output_tokens: MaxOutputTokens = "inf"
    #: "local": when the model cannot be reached (or fails beyond its retries), the call carries on with the
    #: offline engine instead of ending with an apology.
    fallback: Literal["none", "local"] = "none"

    def dialect_with(self, default_model: str) -> Literal["ga", "beta"]:
        """The dialect actually used when the deployment's default model is ``default_model``."""
        if self.dialect != "auto":
            return self.dialect
        return dialect_for(self.name or default_model)


# --- call handling ---------------------------------------------------------------------------------------


class Transfer(_Strict):
    """Where a human can be reached."""

    number: PhoneNumber = Field(description='the E.164 number to transfer to, e.g. "+15550009999"')
    #: Said to the caller before the transfer; ``None`` lets the model say it in its own words.
    announcement: Text | None = None


class Limits(_Strict):
    """Guard rails that end runaway calls."""

    max_call_seconds: Annotated[int, in_range(10, 14400)] = 900
    max_tool_calls: Annotated[int, in_range(0, 1000)] = 20


# --- stages ----------------------------------------------------------------------------------------------


class Transition(_Strict):
    """A way out of a stage: a tool the model calls (declared, or new and made up for the move)."""

    to: Slug = Field(description="the id of the stage to move to")
    #: A declared tool (the stage changes after it succeeds) or a new name (a tool that only moves).
    tool: ToolName = Field(description="a tool name: a declared tool, or a new name for a move-only tool")
    #: Tells the model when to call a new (move-only) tool; ignored for declared tools.
    description: Text | None = None


class Stage(_Strict):
    """One part of the conversation with its own instructions, tools, keys and ways out."""

    id: Slug = Field(description="a stage id such as booking")
    #: Added after the flow's instructions while the call is in this stage.
    instructions: Text | None = None
    #: Tools the model may use here; ``None`` (left out) means every tool of the flow.
    tools: list[ToolName] | None = None
    #: Keypad key → tool name, or ``stage:<id>`` to move; overrides the flow's ``dtmf`` for the same key.
    dtmf: dict[DtmfKey, DtmfTarget] = Field(default_factory=dict)
    transitions: list[Transition] = Field(default_factory=list)
    #: How this stage runs on the local engine (no LLM); see :mod:`ivr.flows.offline`.
    offline: StageOffline | None = None


# --- the flow --------------------------------------------------------------------------------------------


def _inherit_time_zone(data: Any) -> Any:
    """Give ``opening_hours`` the flow's ``timezone`` when it names none, so its methods need no zone."""
    if not isinstance(data, dict) or not is_time_zone(data.get("timezone")):
        return data
    hours = data.get("opening_hours")
    if isinstance(hours, dict) and hours.get("timezone") is None:
        return {**data, "opening_hours": {**hours, "timezone": data["timezone"]}}
    if isinstance(hours, OpeningHours) and hours.timezone is None:
        return {**data, "opening_hours": hours.model_copy(update={"timezone": data["timezone"]})}
    return data


class Flow(_Strict):
    """One phone number's behaviour: prompt, voice, stages, tools, opening hours, transfer target, limits."""

    id: FlowId = Field(description="a unique id such as dental-clinic")
    #: The flow for numbers no other flow claims (at most one per folder).
    default: bool = False
    #: E.164 numbers (Twilio's ``To``) this flow answers.
    numbers: list[PhoneNumber] = Field(default_factory=list)
    model: ModelSettings = Field(default_factory=ModelSettings)
    #: What the assistant says first; ``None`` lets the model open in its own words.
    greeting: Text | None = None
    instructions: Text = Field(description="the system prompt for the model")
    #: Values for ``{{ placeholders }}``; a Twilio <Parameter> of the same name overrides one at call time.
    variables: dict[VariableName, VariableValue] = Field(default_factory=dict)
    #: IANA time zone for ``{{ today }}`` and ``{{ now }}``; ``None`` means UTC.
    timezone: TimeZoneName | None = None
    transfer: Transfer | None = None
    #: Said while a tool takes long.
    hold_phrase: Text = "One moment please."
    #: Keypad key → name of a tool (from ``tools``) to run directly, or ``stage:<id>``; in every stage.
    dtmf: dict[DtmfKey, DtmfTarget] = Field(default_factory=dict)
    tools: list[ToolConfig] = Field(default_factory=list)
    #: Stages of the conversation; none means one stage with every tool.
    stages: list[Stage] = Field(default_factory=list)
    #: Where calls begin; defaults to the first stage.
    start_stage: Slug | None = None
    #: When the line is open, in ``timezone``; ``None`` means always open.
    opening_hours: OpeningHours | None = None
    #: What a call gets while the line is closed.
    after_hours: AfterHours = Field(default_factory=AfterHours)
    limits: Limits = Field(default_factory=Limits)
    #: How calls run on the local engine (no LLM); ``None`` leaves only its built-in behaviour.
    offline: Offline | None = None
    #: Caller data masked in transcripts, events and logs: built-in detectors and/or {name, pattern}.
    redact: list[RedactEntry] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _inherit_zone(cls, data: Any) -> Any:
        return _inherit_time_zone(data)

    @model_validator(mode="after")
    def _check_across_fields(self, info: ValidationInfo) -> Flow:
        issues = self.issues()
        if not issues:
            return self
        sink = info.context.get(ISSUES_CONTEXT_KEY) if isinstance(info.context, dict) else None
        if isinstance(sink, list):
            sink.extend(issues)
            return self
        errors = [i for i in issues if i.severity == "error"]
        if errors:
            raise ValueError("; ".join(f"{dotted(i.path)}: {i.message}" for i in errors))
        return self

    # -- structure ---------------------------------------------------------------------------------------

    @property
    def zone(self) -> tzinfo:
        """The flow's time zone (UTC when none is set)."""
        return ZoneInfo(self.timezone) if self.timezone else UTC

    @property
    def start_stage_id(self) -> str:
        """The stage a call begins in: ``start_stage``, else the first stage, else :data:`IMPLICIT_STAGE`."""
        if self.start_stage is not None:
            return self.start_stage
        return self.stages[0].id if self.stages else IMPLICIT_STAGE

    def stage(self, stage_id: str) -> Stage | None:
        """The stage with this id (``None`` for an unknown id and for flows without stages)."""
        return next((s for s in self.stages if s.id == stage_id), None)

    def tool(self, name: str) -> ToolConfig | None:
        """The declared tool with this name."""
        return next((t for t in self.tools if t.name == name), None)

    def transition_tools(self) -> dict[str, str]:
        """Move-only tools the stages' transitions create: name → description (first one given)."""
        declared = {t.name for t in self.tools}
        out: dict[str, str] = {}
        for stage in self.stages:
            for transition in stage.transitions:
                if transition.tool not in declared and transition.tool not in out:
                    out[transition.tool] = transition.description or f"Move on to the {transition.to} stage."
        return out

    def warnings(self) -> list[Issue]:
        """Issues that do not stop the flow from loading (shown by ``ivr flows check``)."""
        return [i for i in self.issues() if i.severity == "warning"]

    # -- checks ------------------------------------------------------------------------------------------

    def redactor(self) -> Redactor:
        """What a call of this flow masks before its events reach Redis, the live feed or the logs."""
        return redactor_for(self.redact)

    def placeholder_names(self) -> frozenset[str]:
        """Names a placeholder may use in this flow (built-ins and ``variables``)."""
        return frozenset(BUILTIN_PLACEHOLDERS) | frozenset(self.variables)

    def issues(self) -> list[Issue]:
        """Problems that involve more than one field (the loader sorts them by line)."""
        issues: list[Issue] = []
        seen_numbers: dict[str, int] = {}
        for i, number in enumerate(self.numbers):
            if number in seen_numbers:
                issues.append(
                    Issue(("numbers", i), f"{number} is listed twice (also numbers[{seen_numbers[number]}])")
                )
            seen_numbers.setdefault(number, i)

        model = self.model
        beta = model.dialect == "beta" or (
            model.dialect == "auto" and model.name is not None and dialect_for(model.name) == "beta"
        )
        if beta and model.voice in GA_ONLY_VOICES:
            usable = ", ".join(v for v in VOICES if v not in GA_ONLY_VOICES)
            issues.append(
                Issue(
                    ("model", "voice"),
                    f"{model.voice!r} needs a gpt-realtime model (GA dialect); "
                    f"the beta dialect offers {usable}",
                )
            )

        issues.extend(self._placeholder_issues())
        issues.extend(self._tool_issues())
        stage_ids = {stage.id for stage in self.stages}
        declared = list(dict.fromkeys(tool.name for tool in self.tools))
        for key, target in self.dtmf.items():
            issues.extend(self._target_issues(("dtmf", key), target, declared, stage_ids))
        issues.extend(self._stage_issues(declared))
        issues.extend(self._hours_issues())
        issues.extend(offline_issues(self))
        issues.extend(http_env_issues(self.tools))
        return issues

    def _placeholder_issues(self) -> list[Issue]:
        issues: list[Issue] = []
        known = self.placeholder_names()
        spoken: list[tuple[tuple[str | int, ...], str | None]] = [
            (("greeting",), self.greeting),
            (("instructions",), self.instructions),
            (("hold_phrase",), self.hold_phrase),
            (("transfer", "announcement"), self.transfer.announcement if self.transfer else None),
            (("after_hours", "message"), self.after_hours.message),
        ]
        spoken.extend(
            (("stages", i, "instructions"), stage.instructions) for i, stage in enumerate(self.stages)
        )
        for path, text in spoken:
            if text is None:
                continue
            for snippet in template.malformed(text):
                issues.append(
                    Issue(path, f"malformed placeholder {snippet!r} (write {{{{ name }}}})", snippet)
                )
            for placeholder in template.placeholders(text):
                if placeholder.name not in known:
                    hint = did_you_mean(placeholder.name, known)
                    issues.append(
                        Issue(
                            path,
                            f"unknown placeholder {{{{ {placeholder.name} }}}}{hint} (use one of: "
                            f"{', '.join(sorted(known))}; or add it under variables)",
                            placeholder.text,
                        )
                    )
        return issues

    def _tool_issues(self) -> list[Issue]:
        issues: list[Issue] = []
        names: dict[str, int] = {}
        datasets: dict[str, tuple[int, LookupConfig]] = {}
        for i, tool in enumerate(self.tools):
            if tool.name in names:
                issues.append(
                    Issue(
                        ("tools", i, "name"),
                        f"{tool.name!r} is already used by tools[{names[tool.name]}] (names must be unique)",
                    )
                )
            names.setdefault(tool.name, i)
            issues.extend(issue.under("tools", i) for issue in tool.issues())
            if isinstance(tool, TransferToHumanConfig) and tool.number is None and self.transfer is None:
                issues.append(
                    Issue(
                        ("tools", i),
                        "transfer_to_human has no number to call (set number here or add transfer.number)",
                    )
                )
            if isinstance(tool, BookingConfig) and self.opening_hours is None:
                issues.append(
                    Issue(
                        ("tools", i),
                        "a booking tool offers times within the opening hours, and this flow has none "
                        '(add opening_hours, e.g. mon: ["09:00-17:00"])',
                    )
                )
            if isinstance(tool, LookupConfig):
                if tool.dataset in datasets:
                    j, first = datasets[tool.dataset]
                    same = (first.source, first.key_field, first.normalize) == (
                        tool.source,
                        tool.key_field,
                        tool.normalize,
                    )
                    if not same:
                        issues.append(
                            Issue(
                                ("tools", i, "dataset"),
                                f"dataset {tool.dataset!r} is also used by tools[{j}] with another "
                                "source, key_field or normalize (use another dataset id, or make them match)",
                            )
                        )
                datasets.setdefault(tool.dataset, (i, tool))
        return issues

    def _target_issues(
        self,
        path: tuple[str | int, ...],
        target: str,
        tools: list[str],
        stage_ids: set[str],
    ) -> list[Issue]:
        """A keypad target must name a usable tool or an existing stage."""
        if target.startswith(STAGE_TARGET):
            stage = target[len(STAGE_TARGET) :]
            if stage in stage_ids:
                return []
            if not self.stages:
                return [Issue(path, f"{target!r} moves to a stage, but this flow has no stages")]
            return [
                Issue(
                    path,
                    f"no stage named {stage!r}{did_you_mean(stage, stage_ids)} "
                    f"(stages of this flow: {', '.join(dict.fromkeys(s.id for s in self.stages))})",
                )
            ]
        if target in tools:
            return []
        available = ", ".join(tools) or "none declared"
        return [
            Issue(
                path,
                f"no tool named {target!r}{did_you_mean(target, tools)} (tools of this flow: {available})",
            )
        ]

    def _stage_issues(self, declared: list[str]) -> list[Issue]:
        issues: list[Issue] = []
        if not self.stages:
            if self.start_stage is not None:
                issues.append(
                    Issue(("start_stage",), "this flow has no stages (add stages or remove start_stage)")
                )
            return issues
        ids: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            if stage.id in ids:
                issues.append(
                    Issue(
                        ("stages", i, "id"),
                        f"{stage.id!r} is already the id of stages[{ids[stage.id]}] "
                        "(stage ids must be unique)",
                    )
                )
            ids.setdefault(stage.id, i)
        stage_ids = set(ids)
        if self.start_stage is not None and self.start_stage not in stage_ids:
            issues.append(
                Issue(
                    ("start_stage",),
                    f"no stage named {self.start_stage!r}{did_you_mean(self.start_stage, stage_ids)} "
                    f"(stages of this flow: {', '.join(ids)})",
                )
            )

        for i, stage in enumerate(self.stages):
            own_moves = {t.tool for t in stage.transitions if t.tool not in declared}
            for j, name in enumerate(stage.tools or []):
                if name not in declared and name not in own_moves:
                    issues.append(
                        Issue(
                            ("stages", i, "tools", j),
                            f"no tool named {name!r}{did_you_mean(name, declared)} "
                            f"(tools of this flow: {', '.join(declared) or 'none declared'})",
                        )
                    )
            seen: dict[str, int] = {}
            for j, transition in enumerate(stage.transitions):
                path = ("stages", i, "transitions", j)
                if transition.to not in stage_ids:
                    issues.append(
                        Issue(
                            (*path, "to"),
                            f"no stage named {transition.to!r}{did_you_mean(transition.to, stage_ids)} "
                            f"(stages of this flow: {', '.join(ids)})",
                        )
                    )
                elif transition.to == stage.id:
                    issues.append(
                        Issue((*path, "to"), f"a transition from {stage.id!r} cannot lead to itself")
                    )
                if transition.tool in seen:
                    issues.append(
                        Issue(
                            (*path, "tool"),
                            f"{transition.tool!r} already leads out of this stage "
                            f"(transitions[{seen[transition.tool]}])",
                        )
                    )
                seen.setdefault(transition.tool, j)
                if transition.tool not in declared:
                    hint = did_you_mean(transition.tool, declared)
                    typo = did_you_mean(transition.tool, declared, cutoff=0.85)
                    if transition.description is None:
                        issues.append(
                            Issue(
                                (*path, "tool"),
                                f"{transition.tool!r} is not a declared tool{hint}, so it becomes a new "
                                f"tool that moves to {transition.to!r}; add a description saying when the "
                                "model should call it",
                            )
                        )
                    elif typo:
                        issues.append(
                            Issue(
                                (*path, "tool"),
                                f"{transition.tool!r} is not a declared tool{typo}; it becomes a new "
                                f"tool that only moves to {transition.to!r}",
                                severity="warning",
                            )
                        )
            usable = [*declared, *own_moves]
            for key, target in stage.dtmf.items():
                issues.extend(self._target_issues(("stages", i, "dtmf", key), target, usable, stage_ids))

        start = self.start_stage_id
        if start in stage_ids:
            reached = self._reachable(start)
            for i, stage in enumerate(self.stages):
                if stage.id not in reached and ids.get(stage.id) == i:
                    issues.append(
                        Issue(
                            ("stages", i, "id"),
                            f"stage {stage.id!r} cannot be reached from the start stage {start!r} "
                            "(add a transition or a stage:<id> key that leads to it)",
                            severity="warning",
                        )
                    )
        return issues

    def _reachable(self, start: str) -> set[str]:
        """Stage ids reachable from ``start`` through transitions and ``stage:<id>`` keys."""
        everywhere = {t[len(STAGE_TARGET) :] for t in self.dtmf.values() if t.startswith(STAGE_TARGET)}
        reached = {start}
        frontier = [start]
        while frontier:
            stage = self.stage(frontier.pop())
            if stage is None:
                continue
            nexts = {t.to for t in stage.transitions} | everywhere
            nexts |= {t[len(STAGE_TARGET) :] for t in stage.dtmf.values() if t.startswith(STAGE_TARGET)}
            for stage_id in nexts - reached:
                reached.add(stage_id)
                frontier.append(stage_id)
        return reached

    def _hours_issues(self) -> list[Issue]:
        issues: list[Issue] = []
        hours = self.opening_hours
        after = self.after_hours
        if hours is None:
            if "after_hours" in self.model_fields_set:
                issues.append(
                    Issue(
                        ("after_hours",),
                        "has no effect without opening_hours (add opening_hours or remove after_hours)",
                        severity="warning",
                    )
                )
        else:
            issues.extend(issue.under("opening_hours") for issue in hours.issues())
            if hours.timezone is None:
                issues.append(
                    Issue(
                        ("opening_hours",),
                        "no timezone is set, so these hours are read as UTC (add timezone: to the flow, "
                        "e.g. timezone: America/New_York)",
                        severity="warning",
                    )
                )
            if not any(hours.weekly(day) for day in range(7)):
                issues.append(
                    Issue(
                        ("opening_hours",),
                        'no day has any hours, so the line is always closed (add e.g. mon: ["09:00-17:00"])',
                        severity="warning",
                    )
                )
        if after.action == "transfer" and after.number is None and self.transfer is None:
            issues.append(
                Issue(
                    ("after_hours", "action"),
                    "transfer has no number to call (set after_hours.number or add transfer.number)",
                )
            )
        if after.action == "continue" and after.message is not None:
            issues.append(
                Issue(
                    ("after_hours", "message"),
                    "is not said with action: continue (use message_and_hangup or transfer, or put it in "
                    "the instructions using {{ open_now }})",
                    severity="warning",
                )
            )
        return issues

    # -- call time ---------------------------------------------------------------------------------------

    def transfer_number(self, tool: TransferToHumanConfig | None = None) -> str | None:
        """The number a transfer goes to: the tool's own, else the flow's ``transfer.number``."""
        if tool is not None and tool.number is not None:
            return tool.number
        return self.transfer.number if self.transfer else None

    def call_context(
        self,
        *,
        caller_number: str,
        called_number: str,
        call_sid: str,
        now: datetime,
        parameters: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Values for placeholders at the start of a call.

        ``variables`` are overridden by Twilio <Parameter>s of the same name, and both by the built-ins
        (a parameter cannot spoof ``caller_number``). ``now`` is the call's start; a naive datetime is read
        as UTC. ``today``/``now`` are shown in the flow's time zone. ``stage`` is the start stage (a
        :class:`~ivr.flows.state.FlowState` keeps it current); ``open_now``/``next_opening`` come from the
        opening hours (a flow without hours is always open).
        """
        moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        local = moment.astimezone(self.zone)
        hours = self.opening_hours
        opening = hours.next_opening(moment) if hours is not None else moment
        context: dict[str, str] = dict(self.variables)
        context.update(parameters or {})
        context.update(
            caller_number=caller_number,
            called_number=called_number,
            call_sid=call_sid,
            flow_id=self.id,
            today=local.strftime("%Y-%m-%d"),
            now=local.strftime("%H:%M"),
            stage=self.start_stage_id,
            open_now="yes" if hours is None or hours.is_open(moment) else "no",
            next_opening=describe_opening(opening, moment),
        )
        return context

    def render(self, text: str, context: Mapping[str, str]) -> str:
        """Fill ``{{ placeholders }}`` in ``text``; :class:`FlowError` if one has no value."""
        try:
            return template.render(text, context)
        except ValueError as exc:
            raise FlowError(f"flow '{self.id}': {exc}") from None
