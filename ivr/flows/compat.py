"""Does a flow fit the model it will run on? Sans-I/O checks of a flow against its model and dialect.

A flow file is valid on its own, but the model that answers its calls is chosen elsewhere: the flow's
``model.name`` or the deployment's ``IVR_REALTIME_MODEL``, in the dialect that name implies (GA for
``gpt-realtime*``, beta for ``*-realtime-preview*``) unless ``model.dialect`` or ``IVR_REALTIME_DIALECT``
forces one. A setting that dialect cannot take (a GA-only voice on a preview model, a transcription model it
does not offer) is refused by the service at the first call, so ``ivr serve`` and ``ivr flows check`` run
:func:`compat_issues` on every flow first and name the file, line and the choices that would work.

The valid choices come from the ``openai`` package's types for each dialect (``openai.types.realtime`` for
GA, ``openai.types.beta.realtime`` for beta), so a newer SDK that adds a voice widens them without a change
here. The built-in lists below are used only if those types move out from under us.
"""

from __future__ import annotations

import importlib
import types
import typing
from dataclasses import dataclass
from functools import cache
from inspect import isclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from ivr.engines.factory import is_chat_audio_model
from ivr.flows.fields import Issue
from ivr.flows.model import Flow
from ivr.realtime.dialect import Dialect, dialect_for_model, wire_audio_format

__all__ = ["DialectChoices", "ModelTarget", "choices_for", "compat_issues", "target_for"]

#: Where the deployment-wide model and dialect come from (the names shown in messages).
MODEL_SETTING = "IVR_REALTIME_MODEL"
DIALECT_SETTING = "IVR_REALTIME_DIALECT"

# Used only when the openai types cannot be read (see the module docstring).
_FALLBACK: dict[str, dict[str, frozenset[str]]] = {
    "ga": {
        "voices": frozenset(
            {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
        ),
        "audio_formats": frozenset({"audio/pcm", "audio/pcmu", "audio/pcma"}),
        "transcription_models": frozenset({"whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-transcribe"}),
        "turn_detection": frozenset({"server_vad", "semantic_vad"}),
        "eagerness": frozenset({"low", "medium", "high", "auto"}),
    },
    "beta": {
        "voices": frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"}),
        "audio_formats": frozenset({"pcm16", "g711_ulaw", "g711_alaw"}),
        "transcription_models": frozenset({"whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-transcribe"}),
        "turn_detection": frozenset({"server_vad", "semantic_vad"}),
        "eagerness": frozenset({"low", "medium", "high", "auto"}),
    },
}

# Where each choice lives in the openai package: (module, class, field) per dialect and kind; ``type``
# fields of a tagged union's members are read when the field holds models rather than literals.
_SOURCES: dict[str, dict[str, tuple[tuple[str, str, str], ...]]] = {
    "ga": {
        "voices": (
            ("openai.types.realtime.realtime_audio_config_output", "RealtimeAudioConfigOutput", "voice"),
        ),
        "audio_formats": (
            ("openai.types.realtime.realtime_audio_config_output", "RealtimeAudioConfigOutput", "format"),
        ),
        "transcription_models": (
            ("openai.types.realtime.audio_transcription", "AudioTranscription", "model"),
        ),
        "turn_detection": (
            (
                "openai.types.realtime.realtime_audio_config_input",
                "RealtimeAudioConfigInput",
                "turn_detection",
            ),
        ),
        "eagerness": (
            ("openai.types.realtime.realtime_audio_input_turn_detection", "SemanticVad", "eagerness"),
        ),
    },
    "beta": {
        "voices": (("openai.types.beta.realtime.session_update_event", "Session", "voice"),),
        "audio_formats": (
            ("openai.types.beta.realtime.session_update_event", "Session", "input_audio_format"),
            ("openai.types.beta.realtime.session_update_event", "Session", "output_audio_format"),
        ),
        # The beta session types leave this an open string; its transcription types list the models.
        "transcription_models": (
            (
                "openai.types.beta.realtime.transcription_session_update",
                "SessionInputAudioTranscription",
                "model",
            ),
        ),
        "turn_detection": (
            ("openai.types.beta.realtime.session_update_event", "SessionTurnDetection", "type"),
        ),
        "eagerness": (
            ("openai.types.beta.realtime.session_update_event", "SessionTurnDetection", "eagerness"),
        ),
    },
}


@dataclass(frozen=True)
class DialectChoices:
    """What one Realtime dialect accepts, in its own wire names."""

    dialect: Dialect
    voices: frozenset[str]
    #: Wire names: ``audio/pcm``, ``audio/pcmu``… (GA); ``pcm16``, ``g711_ulaw``… (beta).
    audio_formats: frozenset[str]
    transcription_models: frozenset[str]
    turn_detection: frozenset[str]
    eagerness: frozenset[str]


def _strings(annotation: Any, seen: set[int] | None = None) -> set[str]:
    """Every string a type admits as a literal: walks unions, ``Optional``, ``Annotated``, and the ``type``
    field of the models in a tagged union."""
    seen = set() if seen is None else seen
    if id(annotation) in seen:
        return set()
    seen.add(id(annotation))
    origin = get_origin(annotation)
    if origin is Literal:
        return {arg for arg in get_args(annotation) if isinstance(arg, str)}
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        found: set[str] = set()
        for arg in get_args(annotation):
            found |= _strings(arg, seen)
        return found
    if isclass(annotation) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get("type")
        return _strings(field.annotation, seen) if field is not None else set()
    return set()


def _from_types(dialect: str, kind: str) -> frozenset[str]:
    found: set[str] = set()
    try:
        for module_name, class_name, field_name in _SOURCES[dialect][kind]:
            model = getattr(importlib.import_module(module_name), class_name)
            found |= _strings(model.model_fields[field_name].annotation)
    except (ImportError, AttributeError, KeyError):
        return _FALLBACK[dialect][kind]
    return frozenset(found) or _FALLBACK[dialect][kind]


@cache
def choices_for(dialect: Dialect) -> DialectChoices:
    """The voices, audio formats, transcription models and turn detection ``dialect`` accepts."""
    return DialectChoices(dialect, **{kind: _from_types(dialect, kind) for kind in _FALLBACK[dialect]})


@dataclass(frozen=True)
class ModelTarget:
    """The model a flow's calls will use, and why (for messages)."""

    model: str
    engine: Literal["realtime", "chat"]
    dialect: Dialect
    #: What named the model: ``model.name``, or the deployment setting (``IVR_REALTIME_MODEL``, ``--model``).
    model_from: str
    #: What forced the dialect (``model.dialect``, ``IVR_REALTIME_DIALECT``…); None: the name implies it.
    dialect_from: str | None

    def describe(self) -> str:
        """``gpt-4o-realtime-preview (beta dialect, from IVR_REALTIME_MODEL)``."""
        return f"{self.model} ({self.dialect} dialect, from {self.dialect_from or self.model_from})"


def target_for(
    flow: Flow,
    *,
    default_model: str,
    dialect_override: str = "auto",
    model_source: str = MODEL_SETTING,
    dialect_source: str = DIALECT_SETTING,
) -> ModelTarget:
    """The model and dialect a call of ``flow`` gets, decided exactly as the call session decides them."""
    model = flow.model.name or default_model
    model_from = "model.name" if flow.model.name else model_source
    if flow.model.dialect != "auto":
        override, dialect_from = flow.model.dialect, "model.dialect"
    else:
        override = dialect_override or "auto"
        dialect_from = dialect_source if override != "auto" else None
    engine: Literal["realtime", "chat"] = "chat" if is_chat_audio_model(model) else "realtime"
    return ModelTarget(model, engine, dialect_for_model(model, override), model_from, dialect_from)


def compat_issues(
    flow: Flow,
    *,
    default_model: str,
    dialect_override: str = "auto",
    model_source: str = MODEL_SETTING,
    dialect_source: str = DIALECT_SETTING,
) -> list[Issue]:
    """Settings of ``flow`` the model it will run on cannot take (errors) or may not know (warnings).

    ``default_model``/``dialect_override`` are the deployment's ``IVR_REALTIME_MODEL`` and
    ``IVR_REALTIME_DIALECT``; ``model_source``/``dialect_source`` name them in messages.
    """
    target = target_for(
        flow,
        default_model=default_model,
        dialect_override=dialect_override,
        model_source=model_source,
        dialect_source=dialect_source,
    )
    if target.engine == "chat":
        return []  # Chat Completions audio: the flow's voice list is the same, and audio/turns are local
    m = flow.model
    choices = choices_for(target.dialect)
    where = target.describe()
    issues: list[Issue] = []

    if m.voice not in choices.voices:
        hint = ""
        if target.dialect == "beta" and m.voice in choices_for("ga").voices:
            hint = f" ({m.voice} needs a GA model such as gpt-realtime: set model.name or {MODEL_SETTING})"
        issues.append(
            Issue(
                ("model", "voice"),
                f"{m.voice!r} is not offered by {where}; use one of: {_listed(choices.voices)}{hint}",
            )
        )

    wire = wire_audio_format(target.dialect, m.audio)
    if wire not in choices.audio_formats:
        usable = [a for a in ("pcm", "pcmu") if wire_audio_format(target.dialect, a) in choices.audio_formats]
        issues.append(
            Issue(
                ("model", "audio"),
                f"{m.audio!r} ({wire}) is not offered by {where}; use one of: {', '.join(usable) or 'none'}",
            )
        )

    turns = m.turn_detection
    if turns.type not in choices.turn_detection:
        issues.append(
            Issue(
                ("model", "turn_detection", "type"),
                f"{turns.type!r} is not offered by {where}; use one of: {_listed(choices.turn_detection)}",
            )
        )
    eagerness = getattr(turns, "eagerness", None)
    if eagerness is not None and eagerness not in choices.eagerness:
        issues.append(
            Issue(
                ("model", "turn_detection", "eagerness"),
                f"{eagerness!r} is not offered by {where}; use one of: {_listed(choices.eagerness)}",
            )
        )

    if m.transcription is not None:
        name = m.transcription.model
        known = _listed(choices.transcription_models)
        other: Dialect = "ga" if target.dialect == "beta" else "beta"
        if name in choices.transcription_models:
            pass
        elif name in choices_for(other).transcription_models:
            issues.append(
                Issue(
                    ("model", "transcription", "model"),
                    f"{name!r} is not offered by {where}; use one of: {known}",
                )
            )
        else:
            issues.append(
                Issue(
                    ("model", "transcription", "model"),
                    f"{name!r} is not a transcription model the openai package knows for "
                    f"{where}; the service may refuse it (known: {known})",
                    severity="warning",
                )
            )
    return issues


def _listed(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))
