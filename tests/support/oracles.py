"""Protocol oracles: strict validators for OpenAI Realtime events and Twilio Media Streams messages.

Why: the fakes that stand in for OpenAI and Twilio must not drift from the real wire protocols. The Realtime
oracle re-uses the pydantic models shipped in the pinned ``openai`` SDK (generated from OpenAI's API spec),
wrapped in a real tagged union, validated in strict mode, with unknown keys reported (PROTOCOLS.md §2.7).
The Twilio oracle is written from Twilio's "Media Streams – WebSocket Messages" page (PROTOCOLS.md §6.3),
because no Twilio package types those messages. Rules the types cannot express (PROTOCOLS.md §8 item 7)
are checked explicitly in :func:`check_client_event`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
from openai.types import realtime as _ga
from openai.types.beta import realtime as _beta
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

__all__ = [
    "BETA_CLIENT",
    "BETA_SERVER",
    "BUILTIN_VOICES",
    "GA_CLIENT",
    "GA_SERVER",
    "SERVER_SESSION_ALLOW_EXTRA",
    "Dialect",
    "FromTwilio",
    "ProtocolViolation",
    "ToTwilio",
    "TwilioCallSequence",
    "check",
    "check_client_event",
    "check_from_twilio",
    "check_server_event",
    "check_to_twilio",
    "event_type_names",
    "find_extras",
]

Dialect = Literal["ga", "beta"]


class ProtocolViolation(AssertionError):
    """A message broke the wire protocol. Subclasses AssertionError so pytest reports it as a test failure."""


# ----------------------------------------------------------------------------------------------------
# OpenAI Realtime (GA and beta) — strict oracles over the SDK's own models
# ----------------------------------------------------------------------------------------------------


def _union_members(alias: Any) -> tuple[type[BaseModel], ...]:
    """Member classes of an SDK union alias (``Annotated[Union[...], PropertyInfo(...)]``)."""
    if get_origin(alias) is Annotated:
        alias = get_args(alias)[0]
    return get_args(alias)


def _discriminated(alias: Any) -> TypeAdapter[Any]:
    """A real pydantic tagged union on ``type`` (pydantic ignores the SDK's own discriminator marker)."""
    members = _union_members(alias)
    return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])  # noqa: UP007


GA_CLIENT: TypeAdapter[Any] = _discriminated(_ga.RealtimeClientEvent)
GA_SERVER: TypeAdapter[Any] = _discriminated(_ga.RealtimeServerEvent)
BETA_CLIENT: TypeAdapter[Any] = _discriminated(_beta.RealtimeClientEvent)
BETA_SERVER: TypeAdapter[Any] = _discriminated(_beta.RealtimeServerEvent)

_ADAPTERS: dict[tuple[str, str], TypeAdapter[Any]] = {
    ("ga", "client"): GA_CLIENT,
    ("ga", "server"): GA_SERVER,
    ("beta", "client"): BETA_CLIENT,
    ("beta", "server"): BETA_SERVER,
}

_UNION_ALIASES: dict[tuple[str, str], Any] = {
    ("ga", "client"): _ga.RealtimeClientEvent,
    ("ga", "server"): _ga.RealtimeServerEvent,
    ("beta", "client"): _beta.RealtimeClientEvent,
    ("beta", "server"): _beta.RealtimeServerEvent,
}

BUILTIN_VOICES: frozenset[str] = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)

# The GA union types session.created/updated with the *request* model (no id/object/expires_at), while the
# real service sends the response model that has them (§2.7 caveat). Tolerated on server events only.
SERVER_SESSION_ALLOW_EXTRA: frozenset[str] = frozenset(
    {"$.session.id", "$.session.object", "$.session.expires_at"}
)


def event_type_names(dialect: Dialect, direction: Literal["client", "server"]) -> list[str]:
    """Sorted ``type`` literals of one SDK union — the protocol-lock snapshot compares these."""
    names: list[str] = []
    for member in _union_members(_UNION_ALIASES[(dialect, direction)]):
        names.extend(get_args(member.model_fields["type"].annotation))
    return sorted(names)


def find_extras(obj: Any, path: str = "$") -> list[str]:
    """JSON paths of every key that no model declares (the SDK models all use ``extra="allow"``)."""
    out: list[str] = []
    if isinstance(obj, pydantic.BaseModel):
        out += [f"{path}.{key}" for key in (obj.__pydantic_extra__ or {})]
        for name in type(obj).model_fields:
            out += find_extras(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            out += find_extras(value, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out += find_extras(value, f"{path}.{key}")
    return out


def _load(raw: str | bytes | bytearray | Mapping[str, Any] | Any) -> Any:
    """Parse a JSON text frame; anything already decoded is passed through unchanged."""
    if isinstance(raw, str | bytes | bytearray):
        try:
            return json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            preview = bytes(raw[:80]) if not isinstance(raw, str) else raw[:80]
            raise ProtocolViolation(f"frame is not valid JSON ({exc}): {preview!r}") from None
    return raw


def check(
    adapter: TypeAdapter[Any],
    raw: Any,
    *,
    strict: bool = True,
    forbid_extra: bool = True,
    allow_extra: Iterable[str] = frozenset(),
) -> Any:
    """Validate one event against ``adapter``; return the model or raise :class:`ProtocolViolation`.

    ``strict`` refuses type coercion (``"0.5"`` is not a float); ``forbid_extra`` reports every undeclared key
    except the JSON paths listed in ``allow_extra``.
    """
    data = _load(raw)
    try:
        model = adapter.validate_python(data, strict=strict)
    except ValidationError as exc:
        raise ProtocolViolation(_describe(exc, data)) from None
    if forbid_extra:
        allowed = frozenset(allow_extra)
        extras = [p for p in find_extras(model) if p not in allowed]
        if extras:
            raise ProtocolViolation(f"{_event_label(data)}: unknown keys: {extras}")
    return model


def _describe(exc: ValidationError, data: Any) -> str:
    """Pydantic's message with its title (which lists every union member) replaced by the event name."""
    lines = str(exc).splitlines()
    lines[0] = f"{exc.error_count()} validation error(s) for event {_event_label(data)}"
    return "\n".join(lines)


def _event_label(data: Any) -> str:
    if isinstance(data, dict):
        return repr(data.get("type", data.get("event", "<no type>")))
    return f"<{type(data).__name__}>"


def _get(data: Any, *path: str) -> Any:
    """Nested dict lookup returning None when any step is missing or not a dict."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _check_voice(where: str, voice: Any) -> None:
    if voice is None:
        return
    if isinstance(voice, dict):
        if isinstance(voice.get("id"), str) and voice["id"]:
            return
        raise ProtocolViolation(f"{where}: custom voice object needs a non-empty 'id', got {voice!r}")
    if voice not in BUILTIN_VOICES:
        raise ProtocolViolation(
            f"{where}: unknown voice {voice!r}; built-in voices are {sorted(BUILTIN_VOICES)}"
        )


def _check_speed(where: str, speed: Any) -> None:
    if speed is not None and not 0.25 <= speed <= 1.5:
        raise ProtocolViolation(f"{where}: speed {speed!r} outside 0.25..1.5")


def _check_max_tokens(where: str, value: Any) -> None:
    if value is None or value == "inf":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ProtocolViolation(f"{where}: {value!r} must be an integer in 1..4096 or 'inf'")


def _check_modalities(where: str, modalities: Any) -> None:
    if isinstance(modalities, list) and "text" in modalities and "audio" in modalities:
        raise ProtocolViolation(f"{where}: {modalities!r} — text and audio together are not allowed")


def _semantic_rules(dialect: Dialect, data: dict[str, Any]) -> None:
    """Rules from the SDK docstrings and docs that the types cannot express (PROTOCOLS.md §8 item 7)."""
    kind = data["type"]
    if kind == "output_audio_buffer.clear":
        raise ProtocolViolation(
            "output_audio_buffer.clear is WebRTC/SIP only; on a WebSocket use response.cancel + "
            "conversation.item.truncate (and Twilio clear)"
        )
    if kind == "conversation.item.truncate":
        if data["content_index"] != 0:
            raise ProtocolViolation(
                f"conversation.item.truncate: content_index must be 0, got {data['content_index']}"
            )
        if data["audio_end_ms"] < 0:
            raise ProtocolViolation(
                f"conversation.item.truncate: audio_end_ms must be >= 0, got {data['audio_end_ms']}"
            )
    if dialect == "ga":
        if kind == "session.update":
            session = data["session"]
            _check_voice("session.audio.output.voice", _get(session, "audio", "output", "voice"))
            _check_speed("session.audio.output.speed", _get(session, "audio", "output", "speed"))
            _check_max_tokens("session.max_output_tokens", _get(session, "max_output_tokens"))
            _check_modalities("session.output_modalities", _get(session, "output_modalities"))
        elif kind == "response.create":
            response = data.get("response")
            _check_voice("response.audio.output.voice", _get(response, "audio", "output", "voice"))
            _check_max_tokens("response.max_output_tokens", _get(response, "max_output_tokens"))
            _check_modalities("response.output_modalities", _get(response, "output_modalities"))
    else:
        # beta: flat session; "modalities": ["text", "audio"] is the beta default, so only GA forbids both.
        if kind == "session.update":
            session = data["session"]
            _check_voice("session.voice", _get(session, "voice"))
            _check_speed("session.speed", _get(session, "speed"))
            _check_max_tokens(
                "session.max_response_output_tokens", _get(session, "max_response_output_tokens")
            )
        elif kind == "response.create":
            response = data.get("response")
            _check_voice("response.voice", _get(response, "voice"))
            _check_max_tokens(
                "response.max_response_output_tokens", _get(response, "max_response_output_tokens")
            )


def check_client_event(dialect: Dialect, raw: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Strict check of one event our client sends (no coercion, no unknown keys, plus §8.7 rules).

    Returns the parsed JSON dict (not the model) so callers can keep working with plain data.
    """
    data = _load(raw)
    check(_ADAPTERS[(dialect, "client")], data)
    _semantic_rules(dialect, data)
    return data


def check_server_event(
    dialect: Dialect, event: Mapping[str, Any] | str | bytes, *, allow_extra: Iterable[str] = ()
) -> Any:
    """Strict check of one server event (what a fake emits).

    The session ``id``/``object``/``expires_at`` keys are tolerated (§2.7 caveat), plus any ``allow_extra``.
    """
    return check(
        _ADAPTERS[(dialect, "server")],
        event,
        allow_extra=SERVER_SESSION_ALLOW_EXTRA | frozenset(allow_extra),
    )


# ----------------------------------------------------------------------------------------------------
# Twilio Media Streams (PROTOCOLS.md §6) — numbers travel as strings, except sampleRate and channels
# ----------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Base for the Twilio messages: unknown keys and type coercion are both errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


NumStr = Annotated[str, Field(pattern=r"^[0-9]+$")]
StreamSid = Annotated[str, Field(pattern=r"^MZ[0-9a-fA-F]{32}$")]
AccountSid = Annotated[str, Field(pattern=r"^AC[0-9a-fA-F]{32}$")]
CallSid = Annotated[str, Field(pattern=r"^CA[0-9a-fA-F]{32}$")]


def _decode_b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"payload is not valid base64: {exc}") from None


class MediaFormat(_Strict):
    encoding: Literal["audio/x-mulaw"]
    sampleRate: Literal[8000]
    channels: Literal[1]


class StartBody(_Strict):
    streamSid: StreamSid
    accountSid: AccountSid
    callSid: CallSid
    tracks: list[Literal["inbound", "outbound"]]
    customParameters: dict[str, str]
    mediaFormat: MediaFormat


class Connected(_Strict):
    event: Literal["connected"]
    protocol: Literal["Call"]
    version: str


class Start(_Strict):
    event: Literal["start"]
    sequenceNumber: NumStr
    start: StartBody
    streamSid: StreamSid


class InMediaBody(_Strict):
    track: Literal["inbound", "outbound"]
    chunk: NumStr
    timestamp: NumStr
    payload: str

    @field_validator("payload")
    @classmethod
    def _base64(cls, value: str) -> str:
        _decode_b64(value)
        return value


class InMedia(_Strict):
    event: Literal["media"]
    sequenceNumber: NumStr
    media: InMediaBody
    streamSid: StreamSid


class DtmfBody(_Strict):
    track: Literal["inbound_track"]
    digit: str


class Dtmf(_Strict):
    event: Literal["dtmf"]
    streamSid: StreamSid
    sequenceNumber: NumStr
    dtmf: DtmfBody


class MarkBody(_Strict):
    name: str


class InMark(_Strict):
    event: Literal["mark"]
    sequenceNumber: NumStr
    streamSid: StreamSid
    mark: MarkBody


class StopBody(_Strict):
    accountSid: AccountSid
    callSid: CallSid


class Stop(_Strict):
    event: Literal["stop"]
    sequenceNumber: NumStr
    stop: StopBody
    streamSid: StreamSid


class OutMediaBody(_Strict):
    payload: str

    @field_validator("payload")
    @classmethod
    def _raw_mulaw(cls, value: str) -> str:
        if _decode_b64(value)[:4] in (b"RIFF", b".snd"):
            raise ValueError("payload must be raw mu-law bytes, not a WAV/AU file")
        return value


class OutMedia(_Strict):
    event: Literal["media"]
    streamSid: StreamSid
    media: OutMediaBody


class OutMark(_Strict):
    event: Literal["mark"]
    streamSid: StreamSid
    mark: MarkBody


class Clear(_Strict):
    event: Literal["clear"]
    streamSid: StreamSid


InboundMessage = Annotated[Connected | Start | InMedia | Dtmf | InMark | Stop, Field(discriminator="event")]
OutboundMessage = Annotated[OutMedia | OutMark | Clear, Field(discriminator="event")]

FromTwilio: TypeAdapter[InboundMessage] = TypeAdapter(InboundMessage)
ToTwilio: TypeAdapter[OutboundMessage] = TypeAdapter(OutboundMessage)


def _check_twilio(adapter: TypeAdapter[Any], raw: str | bytes | Mapping[str, Any]) -> Any:
    data = _load(raw)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolViolation(_describe(exc, data)) from None


def check_from_twilio(raw: str | bytes | Mapping[str, Any]) -> InboundMessage:
    """Validate a message Twilio (or our fake Twilio) sends to the app; returns the typed message."""
    return _check_twilio(FromTwilio, raw)


def check_to_twilio(raw: str | bytes | Mapping[str, Any]) -> OutboundMessage:
    """Validate a message the app sends to Twilio on a bidirectional stream; returns the typed message."""
    return _check_twilio(ToTwilio, raw)


class TwilioCallSequence:
    """Checks one call's Twilio frames *in order*, across every media stream the call has.

    The models above check each frame alone; what they cannot see is the order Twilio keeps on each stream
    (PROTOCOLS.md §6): ``connected`` opens a stream (a new WebSocket), ``start`` follows with sequence
    number 1 and a stream sid never used before in the call, every later message numbers on by one, media
    ``chunk`` counts from 1 with non-decreasing ``timestamp``, nothing follows ``stop``, and every stream of
    the call carries the same CallSid and AccountSid. A call may have several streams (a ``<Connect action>``
    answering with another ``<Connect><Stream>``); each has its own numbering. Frames the app sends back must
    name the stream that is open. Feed it validated messages; it raises :class:`ProtocolViolation`.
    """

    def __init__(self) -> None:
        #: stream sids in the order their ``start`` was seen
        self.stream_sids: list[str] = []
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self._state = "none"  # none → connected → started → stopped, per stream
        self._sequence = 0
        self._chunk = 0
        self._timestamp = -1

    @property
    def current_stream_sid(self) -> str | None:
        return self.stream_sids[-1] if self._state in ("started", "stopped") else None

    def from_twilio(self, message: InboundMessage) -> None:
        """One message Twilio sent to the app (already validated by :func:`check_from_twilio`)."""
        if isinstance(message, Connected):
            self._state, self._sequence, self._chunk, self._timestamp = "connected", 0, 0, -1
            return
        if isinstance(message, Start):
            self._start(message)
            return
        if self._state != "started":
            raise ProtocolViolation(
                f"{message.event!r} on a stream that is {self._state!r}: "
                "Twilio sends it only between start and stop"
            )
        if message.streamSid != self.stream_sids[-1]:
            raise ProtocolViolation(
                f"{message.event!r} names stream {message.streamSid}, "
                f"but the open stream is {self.stream_sids[-1]}"
            )
        self._next_sequence(message.event, message.sequenceNumber)
        if isinstance(message, InMedia):
            chunk, timestamp = int(message.media.chunk), int(message.media.timestamp)
            if chunk != self._chunk + 1:
                raise ProtocolViolation(
                    f"media chunk {chunk} after chunk {self._chunk}: chunks count up by one"
                )
            if timestamp < self._timestamp:
                raise ProtocolViolation(f"media timestamp {timestamp} went back from {self._timestamp}")
            self._chunk, self._timestamp = chunk, timestamp
        elif isinstance(message, Stop):
            self._same_call(message.stop.callSid, message.stop.accountSid, "stop")
            self._state = "stopped"

    def to_twilio(self, message: OutboundMessage) -> None:
        """One message the app sent on the open stream (already validated by :func:`check_to_twilio`)."""
        current = self.current_stream_sid
        if current is None:
            raise ProtocolViolation(f"{message.event!r} from the app before any stream started")
        if message.streamSid != current:
            raise ProtocolViolation(
                f"{message.event!r} from the app names stream {message.streamSid}, "
                f"but the open stream is {current}"
            )

    def _start(self, message: Start) -> None:
        if self._state != "connected":
            raise ProtocolViolation(f"start on a stream that is {self._state!r}: it must follow connected")
        if message.sequenceNumber != "1":
            raise ProtocolViolation(f"start has sequenceNumber {message.sequenceNumber}; it is always 1")
        sid = message.start.streamSid
        if message.streamSid != sid:
            raise ProtocolViolation(
                f"start: streamSid {message.streamSid} differs from start.streamSid {sid}"
            )
        if sid in self.stream_sids:
            raise ProtocolViolation(f"start: stream sid {sid} was already used in this call")
        self._same_call(message.start.callSid, message.start.accountSid, "start")
        self.stream_sids.append(sid)
        self._state, self._sequence = "started", 1

    def _same_call(self, call_sid: str, account_sid: str, where: str) -> None:
        if self.call_sid is None:
            self.call_sid, self.account_sid = call_sid, account_sid
        elif (call_sid, account_sid) != (self.call_sid, self.account_sid):
            raise ProtocolViolation(
                f"{where}: call {call_sid} / account {account_sid} differs from this call's "
                f"{self.call_sid} / {self.account_sid}"
            )

    def _next_sequence(self, event: str, value: str) -> None:
        number = int(value)
        if number != self._sequence + 1:
            raise ProtocolViolation(f"{event!r} has sequenceNumber {number} after {self._sequence}")
        self._sequence = number
