"""Server events of the OpenAI Realtime API, parsed once into small typed objects. Sans-I/O.

Each frame is decoded with one ``orjson.loads`` and turned into one frozen dataclass; the rest of the code
never indexes raw dicts. The GA and beta names of the same event map to the same class
(``response.output_audio.delta`` and ``response.audio.delta`` both give :class:`AudioDelta`), and both sets
of names are accepted whatever the connection's dialect, so a server that mixes them still works.

The parser is tolerant of keys it does not know (OpenAI adds fields) and of event types it does not use
(:class:`Ignored`), but strict about the fields we rely on: a frame that is not a JSON object, has no
``type``, or lacks a field we need becomes :class:`MalformedEvent` naming what was wrong. ``parse`` never
raises.

Audio deltas stay base64 ``str``: forwarding them to Twilio (pcmu passthrough) needs no decode/encode.

The only state: beta ``response.function_call_arguments.done`` carries no ``name``, so the name is taken
from the earlier ``response.output_item.added`` of the same item (entries are dropped once used, and all of
a response's entries at its ``response.done``, so the map never grows with the call).

Reference: ``shared/reference/PROTOCOLS.md`` §2.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ivr.realtime.dialect import Dialect

# -- event classes -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """The caller's turn became a user audio item, placed after ``previous_item_id`` (item order)."""

    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """An item joined the conversation after ``previous_item_id`` (``conversation.item.added`` in GA,
    ``conversation.item.created`` in beta and GA)."""

    item_id: str
    previous_item_id: str | None
    item_type: str
    role: str | None


@dataclass(frozen=True, slots=True)
class UserTranscript:
    """The caller's words (``conversation.item.input_audio_transcription.completed``)."""

    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """A chunk of the model's voice; ``delta`` is the base64 text exactly as received."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class AgentTranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class AgentTranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A completed ``function_call`` item, as listed in ``response.done``."""

    call_id: str
    name: str
    arguments: str
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The end of a response. ``status`` is completed / cancelled / failed / incomplete;
    ``status_reason`` is the server's reason (``turn_detected``, ``client_cancelled``, ``max_output_tokens``,
    ``content_filter``) or, for a failure, ``"<code or type>: <message>"`` of its error."""

    response_id: str
    status: str
    status_reason: str | None
    usage: dict[str, Any] | None
    function_calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str
    role: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class FunctionCallDone:
    call_id: str
    name: str
    arguments: str
    item_id: str
    response_id: str


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


#: ``error`` codes (or types) after which the model cannot serve this call however often it is redialled:
#: the account or key is refused, or the model does not exist for it. The call falls back or apologises.
FINAL_ERROR_CODES: frozenset[str] = frozenset(
    {
        "insufficient_quota",
        "invalid_api_key",
        "account_deactivated",
        "billing_not_active",
        "billing_hard_limit_reached",
        "organization_deactivated",
        "model_not_found",
        "unsupported_country_region_territory",
        "authentication_error",
        "permission_error",
    }
)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A server ``error``. ``event_id`` is the id of *our* client event that caused it, when known."""

    type: str
    code: str | None
    message: str
    param: str | None
    event_id: str | None

    @property
    def final(self) -> bool:
        """True when redialling cannot help (:data:`FINAL_ERROR_CODES`): a refused key, no quota…"""
        return self.code in FINAL_ERROR_CODES or self.type in FINAL_ERROR_CODES


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed event we have no use for (or do not know yet)."""

    type: str


@dataclass(frozen=True, slots=True)
class MalformedEvent:
    """A frame we could not use; ``reason`` says what was wrong, ``raw_excerpt`` shows its start."""

    reason: str
    raw_excerpt: str


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | ItemAdded
    | UserTranscript
    | AudioDelta
    | AudioDone
    | AgentTranscriptDelta
    | AgentTranscriptDone
    | ResponseCreated
    | ResponseDone
    | OutputItemAdded
    | FunctionCallDone
    | ItemTruncated
    | ErrorEvent
    | Ignored
    | MalformedEvent
)

# -- helpers -----------------------------------------------------------------------------------------------

_EXCERPT_CHARS = 160


def _excerpt(raw: object) -> str:
    if isinstance(raw, str):
        return raw[:_EXCERPT_CHARS]
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw[: _EXCERPT_CHARS * 4]).decode("utf-8", "replace")[:_EXCERPT_CHARS]
    return repr(raw)[:_EXCERPT_CHARS]


class _Bad(Exception):
    """Raised inside a handler; becomes a MalformedEvent with this message."""


def _str(d: dict[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if type(value) is str:
        return value
    if value is None:
        raise _Bad(f"{where}: missing '{key}'")
    raise _Bad(f"{where}: '{key}' must be a string, got {type(value).__name__}")


def _id(d: dict[str, Any], key: str, where: str) -> str:
    """An id (item, response, call): a non-empty string. An empty one would later be echoed back in a
    client event (``conversation.item.truncate``…) that the API and our own builders refuse."""
    value = _str(d, key, where)
    if not value:
        raise _Bad(f"{where}: '{key}' must not be empty")
    return value


def _int(d: dict[str, Any], key: str, where: str) -> int:
    value = d.get(key)
    if type(value) is int:
        return value
    if value is None:
        raise _Bad(f"{where}: missing '{key}'")
    raise _Bad(f"{where}: '{key}' must be an integer, got {type(value).__name__}")


def _dict(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = d.get(key)
    if type(value) is dict:
        return value
    if value is None:
        raise _Bad(f"{where}: missing '{key}'")
    raise _Bad(f"{where}: '{key}' must be an object, got {type(value).__name__}")


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if type(value) is str else None


# -- parser ------------------------------------------------------------------------------------------------

_Handler = Callable[["ServerEventParser", dict[str, Any], str], ServerEvent]


class ServerEventParser:
    """Turns raw server frames of one model connection into :data:`ServerEvent` objects."""

    __slots__ = ("_function_names", "dialect")

    def __init__(self, dialect: Dialect) -> None:
        if dialect not in ("ga", "beta"):
            raise ValueError(f"dialect={dialect!r}: use 'ga' or 'beta'")
        self.dialect: Dialect = dialect
        # response_id -> {item_id: function name}, filled by output_item.added (beta needs it).
        self._function_names: dict[str, dict[str, str]] = {}

    @property
    def pending_function_names(self) -> int:
        """How many function-call names are remembered (for tests and leak checks)."""
        return sum(len(items) for items in self._function_names.values())

    def parse(self, raw: bytes | str) -> ServerEvent:
        """Parse one frame. Never raises: bad input becomes :class:`MalformedEvent`."""
        try:
            data = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError) as exc:
            return MalformedEvent(f"not JSON: {exc}", _excerpt(raw))
        if type(data) is not dict:
            return MalformedEvent(f"not a JSON object but a {type(data).__name__}", _excerpt(raw))
        etype = data.get("type")
        if type(etype) is not str:
            return MalformedEvent("event has no 'type' string", _excerpt(raw))
        # Hot path first: the model's audio, ~50 frames a second per call.
        if etype == "response.output_audio.delta" or etype == "response.audio.delta":
            rid = data.get("response_id")
            iid = data.get("item_id")
            delta = data.get("delta")
            if type(rid) is str and type(iid) is str and type(delta) is str and rid and iid:
                return AudioDelta(rid, iid, delta)
        handler = _HANDLERS.get(etype)
        if handler is None:
            return Ignored(etype)
        try:
            return handler(self, data, etype)
        except _Bad as exc:
            return MalformedEvent(str(exc), _excerpt(raw))
        except Exception as exc:  # defensive: a handler bug must not end the call
            return MalformedEvent(f"{etype}: {type(exc).__name__}: {exc}", _excerpt(raw))

    # -- handlers ----------------------------------------------------------------------------------------

    def _session_created(self, d: dict[str, Any], t: str) -> ServerEvent:
        return SessionCreated(_dict(d, "session", t))

    def _session_updated(self, d: dict[str, Any], t: str) -> ServerEvent:
        return SessionUpdated(_dict(d, "session", t))

    def _speech_started(self, d: dict[str, Any], t: str) -> ServerEvent:
        return SpeechStarted(_id(d, "item_id", t), _int(d, "audio_start_ms", t))

    def _speech_stopped(self, d: dict[str, Any], t: str) -> ServerEvent:
        return SpeechStopped(_id(d, "item_id", t), _int(d, "audio_end_ms", t))

    def _committed(self, d: dict[str, Any], t: str) -> ServerEvent:
        return InputCommitted(_id(d, "item_id", t), _opt_str(d, "previous_item_id"))

    def _item_added(self, d: dict[str, Any], t: str) -> ServerEvent:
        item = _dict(d, "item", t)
        return ItemAdded(
            _id(item, "id", f"{t}.item"),
            _opt_str(d, "previous_item_id"),
            _str(item, "type", f"{t}.item"),
            _opt_str(item, "role"),
        )

    def _user_transcript(self, d: dict[str, Any], t: str) -> ServerEvent:
        return UserTranscript(_id(d, "item_id", t), _str(d, "transcript", t))

    def _audio_delta(self, d: dict[str, Any], t: str) -> ServerEvent:
        # Reached only when the fast path in parse() found a field missing or mistyped.
        return AudioDelta(_id(d, "response_id", t), _id(d, "item_id", t), _str(d, "delta", t))

    def _audio_done(self, d: dict[str, Any], t: str) -> ServerEvent:
        return AudioDone(_id(d, "response_id", t), _id(d, "item_id", t))

    def _transcript_delta(self, d: dict[str, Any], t: str) -> ServerEvent:
        return AgentTranscriptDelta(_id(d, "response_id", t), _id(d, "item_id", t), _str(d, "delta", t))

    def _transcript_done(self, d: dict[str, Any], t: str) -> ServerEvent:
        return AgentTranscriptDone(_id(d, "response_id", t), _id(d, "item_id", t), _str(d, "transcript", t))

    def _response_created(self, d: dict[str, Any], t: str) -> ServerEvent:
        response = _dict(d, "response", t)
        return ResponseCreated(_id(response, "id", f"{t}.response"))

    def _response_done(self, d: dict[str, Any], t: str) -> ServerEvent:
        where = f"{t}.response"
        response = _dict(d, "response", t)
        response_id = _id(response, "id", where)
        self._function_names.pop(response_id, None)
        status = _str(response, "status", where)
        usage = response.get("usage")
        if usage is not None and type(usage) is not dict:
            raise _Bad(f"{where}: 'usage' must be an object, got {type(usage).__name__}")
        return ResponseDone(
            response_id,
            status,
            _status_reason(response.get("status_details")),
            usage,
            _function_calls(response.get("output"), where),
        )

    def _output_item_added(self, d: dict[str, Any], t: str) -> ServerEvent:
        response_id = _id(d, "response_id", t)
        item = _dict(d, "item", t)
        item_id = _id(item, "id", f"{t}.item")
        item_type = _str(item, "type", f"{t}.item")
        name = _opt_str(item, "name")
        if item_type == "function_call" and name is not None:
            self._function_names.setdefault(response_id, {})[item_id] = name
        return OutputItemAdded(response_id, item_id, item_type, _opt_str(item, "role"), name)

    def _function_call_done(self, d: dict[str, Any], t: str) -> ServerEvent:
        response_id = _id(d, "response_id", t)
        item_id = _id(d, "item_id", t)
        call_id = _id(d, "call_id", t)
        arguments = _str(d, "arguments", t)
        names = self._function_names.get(response_id)
        remembered = names.pop(item_id, None) if names is not None else None
        if names is not None and not names:
            del self._function_names[response_id]
        name = d.get("name")
        if type(name) is not str:
            if name is not None:
                raise _Bad(f"{t}: 'name' must be a string, got {type(name).__name__}")
            if remembered is None:
                raise _Bad(
                    f"{t}: no 'name' and no earlier response.output_item.added for item {item_id!r} "
                    f"(call_id {call_id!r}), so the function is unknown"
                )
            name = remembered
        return FunctionCallDone(call_id, name, arguments, item_id, response_id)

    def _item_truncated(self, d: dict[str, Any], t: str) -> ServerEvent:
        return ItemTruncated(_id(d, "item_id", t), _int(d, "audio_end_ms", t))

    def _error(self, d: dict[str, Any], t: str) -> ServerEvent:
        error = _dict(d, "error", t)
        return ErrorEvent(
            _str(error, "type", "error.error"),
            _opt_str(error, "code"),
            _str(error, "message", "error.error"),
            _opt_str(error, "param"),
            _opt_str(error, "event_id"),
        )


def _status_reason(details: object) -> str | None:
    if type(details) is not dict:
        return None
    reason = details.get("reason")
    if type(reason) is str:
        return reason
    error = details.get("error")
    if type(error) is dict:
        label = _opt_str(error, "code") or _opt_str(error, "type")
        message = _opt_str(error, "message")
        if label and message:
            return f"{label}: {message}"
        return label or message
    return None


def _function_calls(output: object, where: str) -> tuple[FunctionCall, ...]:
    if output is None:
        return ()
    if type(output) is not list:
        raise _Bad(f"{where}: 'output' must be a list, got {type(output).__name__}")
    calls: list[FunctionCall] = []
    for index, item in enumerate(output):
        if type(item) is not dict or item.get("type") != "function_call":
            continue
        status = item.get("status")
        if status is not None and status != "completed":
            continue
        at = f"{where}.output[{index}]"
        calls.append(
            FunctionCall(
                _id(item, "call_id", at),
                _str(item, "name", at),
                _str(item, "arguments", at),
                _id(item, "id", at),
            )
        )
    return tuple(calls)


_P = ServerEventParser
_HANDLERS: dict[str, _Handler] = {
    "session.created": _P._session_created,
    "session.updated": _P._session_updated,
    "input_audio_buffer.speech_started": _P._speech_started,
    "input_audio_buffer.speech_stopped": _P._speech_stopped,
    "input_audio_buffer.committed": _P._committed,
    "conversation.item.input_audio_transcription.completed": _P._user_transcript,
    "response.output_audio.delta": _P._audio_delta,  # GA
    "response.audio.delta": _P._audio_delta,  # beta
    "response.output_audio.done": _P._audio_done,
    "response.audio.done": _P._audio_done,
    "response.output_audio_transcript.delta": _P._transcript_delta,
    "response.audio_transcript.delta": _P._transcript_delta,
    "response.output_audio_transcript.done": _P._transcript_done,
    "response.audio_transcript.done": _P._transcript_done,
    "response.created": _P._response_created,
    "response.done": _P._response_done,
    "response.output_item.added": _P._output_item_added,
    "response.function_call_arguments.done": _P._function_call_done,
    "conversation.item.truncated": _P._item_truncated,
    "conversation.item.added": _P._item_added,  # GA
    "conversation.item.created": _P._item_added,  # beta (GA sends it too for items the client creates)
    "error": _P._error,
}
del _P
