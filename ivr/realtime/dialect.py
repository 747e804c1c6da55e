"""Client events for the OpenAI Realtime API, built exactly for one of its two wire dialects. Sans-I/O.

The Realtime API speaks two dialects over the same WebSocket:

* **GA** (``gpt-realtime``, ``gpt-realtime-1.5``, ``gpt-realtime-mini``, …): ``session.type = "realtime"``,
  nested ``audio.input`` / ``audio.output`` with tagged formats (``{"type": "audio/pcmu"}``),
  ``output_modalities``, ``max_output_tokens``, assistant text content ``output_text``.
* **beta** (``gpt-4o-realtime-preview*``, ``gpt-4o-mini-realtime-preview*``, header ``OpenAI-Beta:
  realtime=v1``): a flat session with ``input_audio_format`` / ``output_audio_format`` (``pcm16`` /
  ``g711_ulaw``), ``modalities``, ``max_response_output_tokens``, assistant text content ``text``.

Every builder returns ``bytes`` ready for ``ws.send``; the shape is checked in the tests against the strict
oracle built from the pinned ``openai`` SDK types (``shared/reference/PROTOCOLS.md`` §2.7). Rules the types
cannot express (speed range, voice list, token limits, VAD knobs per variant) are enforced here with a
``ValueError`` that names the field, because the service would otherwise reject the session mid-call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Dialect = Literal["ga", "beta"]

#: Built-in voices (SDK docstrings). ``marin`` and ``cedar`` exist only for the GA models.
VOICES: frozenset[str] = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
GA_ONLY_VOICES: frozenset[str] = frozenset({"marin", "cedar"})
EAGERNESS: frozenset[str] = frozenset({"low", "medium", "high", "auto"})
TOOL_CHOICES: frozenset[str] = frozenset({"auto", "none", "required"})
_TOOL_KEYS: frozenset[str] = frozenset({"type", "name", "description", "parameters"})
MIN_SPEED, MAX_SPEED = 0.25, 1.5
MAX_OUTPUT_TOKENS = 4096


def dialect_for_model(model: str, override: str = "auto") -> Dialect:
    """Pick the wire dialect: an explicit ``ga``/``beta`` override wins, else ``*-realtime-preview*`` is beta.

    Azure deployments carry arbitrary names, which is why the override exists (``IVR_REALTIME_DIALECT``).
    """
    choice = (override or "auto").strip().lower()
    if choice == "ga":
        return "ga"
    if choice == "beta":
        return "beta"
    if choice != "auto":
        raise ValueError(f"realtime dialect {override!r} is not one of auto, ga, beta")
    return "beta" if "realtime-preview" in model.lower() else "ga"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TurnDetection:
    """Server-side turn detection. ``None`` fields are omitted so the service default applies.

    ``threshold``, ``prefix_padding_ms`` and ``silence_duration_ms`` belong to ``server_vad`` only;
    ``eagerness`` to ``semantic_vad`` only (the GA schema has separate objects for the two).
    """

    type: Literal["server_vad", "semantic_vad"]
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    eagerness: str | None = None
    create_response: bool = True
    interrupt_response: bool = True

    def __post_init__(self) -> None:
        if self.type not in ("server_vad", "semantic_vad"):
            raise ValueError(f"turn_detection.type={self.type!r}: use 'server_vad' or 'semantic_vad'")
        if self.type == "server_vad":
            if self.eagerness is not None:
                raise ValueError("turn_detection.eagerness applies to semantic_vad only, not server_vad")
        else:
            for name in ("threshold", "prefix_padding_ms", "silence_duration_ms"):
                if getattr(self, name) is not None:
                    raise ValueError(f"turn_detection.{name} applies to server_vad only, not semantic_vad")
            if self.eagerness is not None and self.eagerness not in EAGERNESS:
                raise ValueError(
                    f"turn_detection.eagerness={self.eagerness!r}: use one of {', '.join(sorted(EAGERNESS))}"
                )
        if self.threshold is not None and (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float)
            or not 0.0 <= self.threshold <= 1.0
        ):
            raise ValueError(f"turn_detection.threshold={self.threshold!r} must be a number from 0.0 to 1.0")
        for name in ("prefix_padding_ms", "silence_duration_ms"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"turn_detection.{name}={value!r} must be a whole number of ms, >= 0")
        for name in ("create_response", "interrupt_response"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"turn_detection.{name} must be true or false")

    def to_wire(self) -> dict[str, Any]:
        """The object both dialects accept (GA ServerVad/SemanticVad, beta SessionTurnDetection)."""
        out: dict[str, Any] = {"type": self.type}
        if self.threshold is not None:
            out["threshold"] = float(self.threshold)
        if self.prefix_padding_ms is not None:
            out["prefix_padding_ms"] = self.prefix_padding_ms
        if self.silence_duration_ms is not None:
            out["silence_duration_ms"] = self.silence_duration_ms
        if self.eagerness is not None:
            out["eagerness"] = self.eagerness
        out["create_response"] = self.create_response
        out["interrupt_response"] = self.interrupt_response
        return out


@dataclass(frozen=True)
class SessionConfig:
    """Everything a ``session.update`` sets. Sent whole, so a replay after reconnect restores the session.

    ``audio`` is the format on the model socket both ways: ``"pcm"`` (PCM16 24 kHz) or ``"pcmu"`` (8 kHz
    μ-law, Twilio's own format, forwarded untouched). ``tools`` are function tools
    ``{"type": "function", "name", "description", "parameters"}``; an empty tuple clears them.
    ``noise_reduction`` (``near_field`` / ``far_field``) is an optional input filter; ``None`` omits it.
    """

    instructions: str
    voice: str = "marin"
    speed: float = 1.0
    audio: Literal["pcm", "pcmu"] = "pcm"
    turn_detection: TurnDetection | None = TurnDetection("server_vad")
    transcription_model: str | None = None
    transcription_language: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"
    model: str | None = None
    noise_reduction: Literal["near_field", "far_field"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.instructions, str):
            raise ValueError("session instructions must be a string")
        if not isinstance(self.voice, str) or self.voice not in VOICES:
            raise ValueError(
                f"voice={self.voice!r} is not a built-in voice; use one of {', '.join(sorted(VOICES))}"
            )
        if (
            isinstance(self.speed, bool)
            or not isinstance(self.speed, int | float)
            or not math.isfinite(self.speed)
            or not MIN_SPEED <= self.speed <= MAX_SPEED
        ):
            raise ValueError(
                f"speed={self.speed!r} is out of range; use a number from {MIN_SPEED} to {MAX_SPEED}"
            )
        if self.audio not in ("pcm", "pcmu"):
            raise ValueError(f"audio={self.audio!r}: use 'pcm' (PCM16 24 kHz) or 'pcmu' (8 kHz mu-law)")
        if self.turn_detection is not None and not isinstance(self.turn_detection, TurnDetection):
            raise ValueError("turn_detection must be a TurnDetection or None")
        if self.transcription_model is not None and (
            not isinstance(self.transcription_model, str) or not self.transcription_model
        ):
            raise ValueError("transcription_model must be a non-empty model name or None")
        if self.transcription_language is not None:
            if self.transcription_model is None:
                raise ValueError("transcription_language is set but transcription_model is not; set both")
            if not isinstance(self.transcription_language, str) or not self.transcription_language:
                raise ValueError("transcription_language must be an ISO-639-1 code such as 'en'")
        if self.tool_choice not in TOOL_CHOICES:
            raise ValueError(f"tool_choice={self.tool_choice!r}: use one of auto, none, required")
        mot = self.max_output_tokens
        if mot != "inf" and (not _is_int(mot) or not 1 <= mot <= MAX_OUTPUT_TOKENS):
            raise ValueError(
                f"max_output_tokens={mot!r}: use a whole number from 1 to {MAX_OUTPUT_TOKENS}, or 'inf'"
            )
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError("model must be a non-empty model name or None")
        if self.noise_reduction not in (None, "near_field", "far_field"):
            raise ValueError(
                f"noise_reduction={self.noise_reduction!r}: use 'near_field', 'far_field' or None"
            )
        if not isinstance(self.tools, tuple):
            raise ValueError("tools must be a tuple of function tool dicts")
        for index, tool in enumerate(self.tools):
            _check_tool(index, tool)


def _check_tool(index: int, tool: object) -> None:
    where = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise ValueError(f"{where} must be a dict like {{'type': 'function', 'name': ...}}")
    unknown = sorted(set(tool) - _TOOL_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {sorted(_TOOL_KEYS)}")
    if tool.get("type") != "function":
        raise ValueError(f"{where}.type must be 'function'")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string")
    if "description" in tool and not isinstance(tool["description"], str):
        raise ValueError(f"{where}.description ({name}) must be a string")
    if "parameters" in tool and not isinstance(tool["parameters"], dict):
        raise ValueError(f"{where}.parameters ({name}) must be a JSON-schema object")


_GA_FORMATS: dict[str, dict[str, Any]] = {
    "pcm": {"type": "audio/pcm", "rate": 24000},
    "pcmu": {"type": "audio/pcmu"},
}
_BETA_FORMATS: dict[str, str] = {"pcm": "pcm16", "pcmu": "g711_ulaw"}


def wire_audio_format(dialect: Dialect, audio: str) -> str:
    """What ``audio`` (``pcm``/``pcmu``) is called on the wire: ``audio/pcm``… (GA), ``pcm16``… (beta)."""
    return str(_GA_FORMATS[audio]["type"]) if dialect == "ga" else _BETA_FORMATS[audio]


class ClientEvents:
    """Builds the client events of one model connection in its dialect.

    With ``event_ids=True`` every event carries ``event_id`` ``"ivr_<n>"`` (1, 2, …), so a server ``error``
    can be traced to the event that caused it; :attr:`last_event_id` holds the id of the latest event.
    """

    __slots__ = ("_assistant_content", "_counter", "dialect", "event_ids", "last_event_id")

    def __init__(self, dialect: Dialect, *, event_ids: bool = False) -> None:
        if dialect not in ("ga", "beta"):
            raise ValueError(f"dialect={dialect!r}: use 'ga' or 'beta'")
        self.dialect: Dialect = dialect
        self.event_ids = event_ids
        self._counter = 0
        self.last_event_id: str | None = None
        self._assistant_content = "output_text" if dialect == "ga" else "text"

    def _dump(self, event: dict[str, Any]) -> bytes:
        if self.event_ids:
            self._counter += 1
            event_id = f"ivr_{self._counter}"
            event["event_id"] = event_id
            self.last_event_id = event_id
        return orjson.dumps(event)

    # -- session -------------------------------------------------------------------------------------

    def session_update(self, cfg: SessionConfig) -> bytes:
        """``session.update`` carrying the whole configuration in this connection's dialect."""
        session = self._ga_session(cfg) if self.dialect == "ga" else self._beta_session(cfg)
        return self._dump({"type": "session.update", "session": session})

    @staticmethod
    def _ga_session(cfg: SessionConfig) -> dict[str, Any]:
        audio_in: dict[str, Any] = {
            "format": dict(_GA_FORMATS[cfg.audio]),
            "turn_detection": cfg.turn_detection.to_wire() if cfg.turn_detection else None,
        }
        if cfg.transcription_model is not None:
            transcription: dict[str, Any] = {"model": cfg.transcription_model}
            if cfg.transcription_language is not None:
                transcription["language"] = cfg.transcription_language
            audio_in["transcription"] = transcription
        if cfg.noise_reduction is not None:
            audio_in["noise_reduction"] = {"type": cfg.noise_reduction}
        session: dict[str, Any] = {
            "type": "realtime",
            "instructions": cfg.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": audio_in,
                "output": {
                    "format": dict(_GA_FORMATS[cfg.audio]),
                    "voice": cfg.voice,
                    "speed": float(cfg.speed),
                },
            },
            "tools": [dict(tool) for tool in cfg.tools],
            "tool_choice": cfg.tool_choice,
            "max_output_tokens": cfg.max_output_tokens,
        }
        if cfg.model is not None:
            session["model"] = cfg.model
        return session

    @staticmethod
    def _beta_session(cfg: SessionConfig) -> dict[str, Any]:
        if cfg.voice in GA_ONLY_VOICES:
            raise ValueError(
                f"voice={cfg.voice!r} exists only for GA models (gpt-realtime*); beta models "
                f"(*-realtime-preview*) need one of {', '.join(sorted(VOICES - GA_ONLY_VOICES))}"
            )
        fmt = _BETA_FORMATS[cfg.audio]
        session: dict[str, Any] = {
            "instructions": cfg.instructions,
            "modalities": ["audio", "text"],
            "voice": cfg.voice,
            "speed": float(cfg.speed),
            "input_audio_format": fmt,
            "output_audio_format": fmt,
            "turn_detection": cfg.turn_detection.to_wire() if cfg.turn_detection else None,
            "tools": [dict(tool) for tool in cfg.tools],
            "tool_choice": cfg.tool_choice,
            "max_response_output_tokens": cfg.max_output_tokens,
        }
        if cfg.transcription_model is not None:
            transcription: dict[str, Any] = {"model": cfg.transcription_model}
            if cfg.transcription_language is not None:
                transcription["language"] = cfg.transcription_language
            session["input_audio_transcription"] = transcription
        if cfg.noise_reduction is not None:
            session["input_audio_noise_reduction"] = {"type": cfg.noise_reduction}
        if cfg.model is not None:
            session["model"] = cfg.model
        return session

    # -- audio in --------------------------------------------------------------------------------------

    def append_audio(self, b64: str) -> bytes:
        """``input_audio_buffer.append`` with the caller's audio, base64 as received (hot path: no copies
        beyond the one JSON encode, no decoding)."""
        if self.event_ids:
            return self._dump({"type": "input_audio_buffer.append", "audio": b64})
        return orjson.dumps({"type": "input_audio_buffer.append", "audio": b64})

    def commit_input(self) -> bytes:
        """``input_audio_buffer.commit``: end the user turn by hand (only needed without turn detection)."""
        return self._dump({"type": "input_audio_buffer.commit"})

    def clear_input(self) -> bytes:
        """``input_audio_buffer.clear``: drop audio appended but not yet committed."""
        return self._dump({"type": "input_audio_buffer.clear"})

    # -- responses -------------------------------------------------------------------------------------

    def response_create(self, instructions: str | None = None) -> bytes:
        """``response.create``; ``instructions`` overrides the session instructions for this response only."""
        event: dict[str, Any] = {"type": "response.create"}
        if instructions is not None:
            if not isinstance(instructions, str):
                raise ValueError("response instructions must be a string")
            event["response"] = {"instructions": instructions}
        return self._dump(event)

    def response_cancel(self) -> bytes:
        """``response.cancel`` for the response in flight (the server errors if there is none)."""
        return self._dump({"type": "response.cancel"})

    def truncate(self, item_id: str, audio_end_ms: int) -> bytes:
        """``conversation.item.truncate``: the caller heard only ``audio_end_ms`` of this assistant item."""
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("truncate: item_id must be a non-empty string")
        if not _is_int(audio_end_ms) or audio_end_ms < 0:
            raise ValueError(f"truncate: audio_end_ms={audio_end_ms!r} must be a whole number of ms, >= 0")
        return self._dump(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    # -- conversation items ----------------------------------------------------------------------------

    def user_text(self, text: str) -> bytes:
        """A user message with text content (typed input, or a transcript replayed after reconnect)."""
        _require_str("user_text: text", text)
        return self._item(
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        )

    def system_text(self, text: str) -> bytes:
        """A system message: news the model must act on that did not come from the caller (an operator's
        decision on an approval, a stage change), kept distinct from what the caller said."""
        _require_str("system_text: text", text)
        return self._item(
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}
        )

    def assistant_text(self, text: str) -> bytes:
        """An assistant message with text content, for replaying history into a fresh session.

        GA calls the content part ``output_text``; beta calls it ``text``.
        """
        _require_str("assistant_text: text", text)
        return self._item(
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": self._assistant_content, "text": text}],
            }
        )

    def function_call_item(self, call_id: str, name: str, arguments: str) -> bytes:
        """A past function call, for replaying history (its output follows via :meth:`function_output`)."""
        _require_str("function_call_item: call_id", call_id, nonempty=True)
        _require_str("function_call_item: name", name, nonempty=True)
        _require_str("function_call_item: arguments", arguments)
        return self._item({"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments})

    def function_output(self, call_id: str, output: str) -> bytes:
        """The result of a function call, as the string the model will read."""
        _require_str("function_output: call_id", call_id, nonempty=True)
        _require_str("function_output: output", output)
        return self._item({"type": "function_call_output", "call_id": call_id, "output": output})

    def _item(self, item: dict[str, Any]) -> bytes:
        return self._dump({"type": "conversation.item.create", "item": item})


def _require_str(what: str, value: object, *, nonempty: bool = False) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if nonempty and not value:
        raise ValueError(f"{what} must not be empty")
