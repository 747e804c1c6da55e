"""Typed models of a call flow: what one phone number does.

A flow file is data written by people, so the models are strict (no silent coercion of ``"yes"`` into
``True``), reject unknown keys (a typo must not quietly fall back to a default), and check ranges that the
Realtime API only documents in prose (speed, token limits). Tools carry a ``type`` discriminator so new
kinds of tools slot in as new members of :data:`ToolConfig` without touching the rest.

Checks that span several fields (placeholders, tool names used by ``dtmf``, a transfer tool without a
number) live in :meth:`Flow.issues`. They run on every construction; the YAML loader collects them
through the validation context instead of stopping at the first one, so it can give each its own line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from ivr.flows import template
from ivr.flows.errors import FlowError

#: Voices the Realtime API offers; ``marin`` and ``cedar`` exist only on the GA (``gpt-realtime*``) models.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
GA_ONLY_VOICES = frozenset({"marin", "cedar"})

#: Placeholders every call fills in, whatever the flow says.
BUILTIN_PLACEHOLDERS = ("caller_number", "called_number", "call_sid", "flow_id", "today", "now")

#: Key of the list in the validation context where :class:`Flow` deposits cross-field issues.
ISSUES_CONTEXT_KEY = "ivr_flow_issues"

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-().]")
_FLOW_ID = re.compile(r"[a-z0-9-]{1,64}")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LANGUAGE = re.compile(r"[a-z]{2}")
_DTMF_KEYS = "0123456789*#"


def normalise_number(text: str) -> str:
    """Drop spaces, dashes, dots and parentheses: ``"+1 (555) 123-0001"`` → ``"+15551230001"``."""
    return _NUMBER_PUNCTUATION.sub("", text)


def dialect_for(model_name: str) -> Literal["ga", "beta"]:
    """The Realtime dialect a model speaks: beta for ``*-realtime-preview*`` models, GA otherwise."""
    return "beta" if "realtime-preview" in model_name else "ga"


# --- field types with messages a person can act on ------------------------------------------------------


def _in_range(low: float, high: float) -> AfterValidator:
    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range (use {low} to {high})")
        return value

    return AfterValidator(check)


def _phone_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value  # let the str type report the wrong type
    if isinstance(value, int):
        raise ValueError(f"{value} was read as a number; quote it so YAML keeps the '+' (e.g. \"+{value}\")")
    compact = normalise_number(value)
    if not _E164.fullmatch(compact):
        raise ValueError(
            f'{value!r} is not an E.164 number (use + country code and number, e.g. "+15551230001")'
        )
    return compact


def _flow_id(value: str) -> str:
    if not _FLOW_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id (use lowercase letters, digits and dashes, e.g. dental-clinic)"
        )
    return value


def _tool_name(value: str) -> str:
    if not _TOOL_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid tool name (use 1-64 letters, digits, '_' or '-')")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty (write some text or leave the key out)")
    return value


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


def _dtmf_key(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        value = str(value)
    if isinstance(value, str) and (len(value) != 1 or value not in _DTMF_KEYS):
        raise ValueError(f"{value!r} is not a keypad key (use one of 0-9, * or #, quoted)")
    return value


def _language(value: str) -> str:
    if not _LANGUAGE.fullmatch(value):
        raise ValueError(f"{value!r} is not an ISO-639-1 language code (e.g. en, de, es)")
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a known time zone (use an IANA name such as Europe/Berlin)"
        ) from None
    return value


def _max_tokens(value: object) -> object:
    if value == float("inf") or value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a token limit (use a whole number from 1 to 4096, or inf)")
    if not 1 <= value <= 4096:
        raise ValueError(f"{value} is out of range (use 1 to 4096, or inf)")
    return value


PhoneNumber = Annotated[str, BeforeValidator(_phone_number)]
FlowId = Annotated[str, AfterValidator(_flow_id)]
ToolName = Annotated[str, AfterValidator(_tool_name)]
Text = Annotated[str, AfterValidator(_non_empty)]
VariableName = Annotated[str, AfterValidator(_variable_name)]
VariableValue = Annotated[str, BeforeValidator(_variable_value)]
DtmfKey = Annotated[str, BeforeValidator(_dtmf_key)]
Voice = Literal["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]
MaxOutputTokens = Annotated[int | Literal["inf"], BeforeValidator(_max_tokens)]


class _Strict(BaseModel):
    """Base for every flow model: strict types, no unknown keys, immutable once loaded."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- model connection ------------------------------------------------------------------------------------


class ServerVad(_Strict):
    """Voice activity detection on loudness and silence; predictable, good on clean lines."""

    type: Literal["server_vad"] = "server_vad"
    threshold: Annotated[float, _in_range(0.0, 1.0)] = 0.5
    prefix_padding_ms: Annotated[int, _in_range(0, 5000)] = 300
    silence_duration_ms: Annotated[int, _in_range(0, 10000)] = 500


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
    speed: Annotated[float, _in_range(0.25, 1.5)] = 1.0
    #: ``pcm``: 8 kHz μ-law is resampled to 24 kHz PCM16 (better recognition); ``pcmu``: passed through.
    audio: Literal["pcm", "pcmu"] = "pcm"
    turn_detection: TurnDetection = Field(default_factory=ServerVad)
    #: ``None`` (``null`` in YAML) disables caller transcripts.
    transcription: Transcription | None = Field(default_factory=Transcription)
    max_output_tokens: MaxOutputTokens = "inf"

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

    max_call_seconds: Annotated[int, _in_range(10, 14400)] = 900
    max_tool_calls: Annotated[int, _in_range(0, 1000)] = 20


class _ToolConfigBase(_Strict):
    name: ToolName
    description: Text


class EndCallConfig(_ToolConfigBase):
    """Lets the model hang up once the conversation is over."""

    type: Literal["end_call"] = "end_call"
    name: ToolName = "end_call"
    description: Text = (
        "Hang up the call. Use it when the caller says goodbye, asks to end the call, or the conversation "
        "is clearly finished."
    )


class TransferToHumanConfig(_ToolConfigBase):
    """Lets the model hand the caller to a person."""

    type: Literal["transfer_to_human"] = "transfer_to_human"
    name: ToolName = "transfer_to_human"
    description: Text = (
        "Transfer the caller to a human team member. Use it when the caller asks for a person or when you "
        "cannot help with their request."
    )
    #: Overrides ``transfer.number`` of the flow for this tool.
    number: PhoneNumber | None = None


#: Every tool type a flow may declare; add new members here (each with its own ``type`` literal).
ToolConfig = Annotated[EndCallConfig | TransferToHumanConfig, Field(discriminator="type")]


@dataclass(frozen=True)
class Issue:
    """A cross-field problem: the field path, what is wrong, and optionally the exact text to point at."""

    path: tuple[str | int, ...]
    message: str
    #: Text inside the field's value (e.g. a placeholder) whose line the loader should report.
    needle: str | None = None


def dotted(path: tuple[str | int, ...]) -> str:
    """``("tools", 1, "name")`` → ``tools[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, options: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Flow(_Strict):
    """One phone number's behaviour: prompt, voice, tools, transfer target and limits."""

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
    timezone: Annotated[str, AfterValidator(_time_zone)] | None = None
    transfer: Transfer | None = None
    #: Said while a tool takes long.
    hold_phrase: Text = "One moment please."
    #: Keypad key → name of a tool (from ``tools``) to run directly.
    dtmf: dict[DtmfKey, ToolName] = Field(default_factory=dict)
    tools: list[ToolConfig] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _check_across_fields(self, info: ValidationInfo) -> Flow:
        issues = self.issues()
        if not issues:
            return self
        sink = info.context.get(ISSUES_CONTEXT_KEY) if isinstance(info.context, dict) else None
        if isinstance(sink, list):
            sink.extend(issues)
            return self
        raise ValueError("; ".join(f"{dotted(i.path)}: {i.message}" for i in issues))

    # -- checks ------------------------------------------------------------------------------------------

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

        known = self.placeholder_names()
        spoken: list[tuple[tuple[str | int, ...], str | None]] = [
            (("greeting",), self.greeting),
            (("instructions",), self.instructions),
            (("hold_phrase",), self.hold_phrase),
            (("transfer", "announcement"), self.transfer.announcement if self.transfer else None),
        ]
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

        names: dict[str, int] = {}
        for i, tool in enumerate(self.tools):
            if tool.name in names:
                issues.append(
                    Issue(
                        ("tools", i, "name"),
                        f"{tool.name!r} is already used by tools[{names[tool.name]}] (names must be unique)",
                    )
                )
            names.setdefault(tool.name, i)
            if isinstance(tool, TransferToHumanConfig) and tool.number is None and self.transfer is None:
                issues.append(
                    Issue(
                        ("tools", i),
                        "transfer_to_human has no number to call (set number here or add transfer.number)",
                    )
                )

        for key, tool_name in self.dtmf.items():
            if tool_name not in names:
                available = ", ".join(names) or "none declared"
                issues.append(
                    Issue(
                        ("dtmf", key),
                        f"no tool named {tool_name!r}{did_you_mean(tool_name, tuple(names))} "
                        f"(tools of this flow: {available})",
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
        as UTC. ``today``/``now`` are shown in the flow's time zone.
        """
        zone: tzinfo = ZoneInfo(self.timezone) if self.timezone else UTC
        moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        local = moment.astimezone(zone)
        context: dict[str, str] = dict(self.variables)
        context.update(parameters or {})
        context.update(
            caller_number=caller_number,
            called_number=called_number,
            call_sid=call_sid,
            flow_id=self.id,
            today=local.strftime("%Y-%m-%d"),
            now=local.strftime("%H:%M"),
        )
        return context

    def render(self, text: str, context: Mapping[str, str]) -> str:
        """Fill ``{{ placeholders }}`` in ``text``; :class:`FlowError` if one has no value."""
        try:
            return template.render(text, context)
        except ValueError as exc:
            raise FlowError(f"flow '{self.id}': {exc}") from None
