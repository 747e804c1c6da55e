"""Twilio Media Streams messages, server side: parse what Twilio sends, build what we send. Sans-I/O.

Inbound JSON becomes one of a few small frozen dataclasses, once, here. The parser is tolerant of keys it
does not know (Twilio adds fields without notice) but strict about the fields we rely on; a message it
cannot use becomes :class:`Malformed` with a reason, never an exception. Outbound messages are built exactly
as Twilio documents them (``media``, ``mark``, ``clear``), as bytes ready for a text frame.

Reference: Twilio "Media Streams – WebSocket Messages"; ``shared/reference/PROTOCOLS.md`` §6.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    """One chunk of caller audio. ``payload`` stays base64 so passthrough never decodes it."""

    track: str
    chunk: int
    timestamp_ms: int
    payload: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    account_sid: str
    call_sid: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame we could not use; ``reason`` says what was wrong, ``excerpt`` shows the start of it."""

    reason: str
    excerpt: str


TwilioMessage = Connected | Start | Media | Dtmf | Mark | Stop | Malformed

_VALID_DIGITS = frozenset("0123456789*#ABCD")


def _excerpt(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else raw[:200].decode("utf-8", "replace")
    return text[:120]


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _Bad(f"{where}.{key} must be a non-empty string, got {type(value).__name__}")
    return value


def _int_str(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    # Twilio sends numbers as strings; accept ints too so a stand-in's sloppiness can't end a call.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise _Bad(f"{where}.{key} must be a number in a string, got {value!r:.40}")


def _obj(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _Bad(f"'{key}' object is missing")
    return value


class _Bad(Exception):
    pass


def parse(raw: str | bytes) -> TwilioMessage:
    """Parse one text frame from Twilio. Never raises."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Malformed(f"not JSON ({exc.msg} at char {exc.pos})", _excerpt(raw))
    if not isinstance(data, dict):
        return Malformed(f"expected a JSON object, got {type(data).__name__}", _excerpt(raw))
    event = data.get("event")
    try:
        if event == "media":  # the hot path first
            media = _obj(data, "media")
            payload = media.get("payload")
            if not isinstance(payload, str):
                raise _Bad("media.payload must be a base64 string")
            return Media(
                track=track if isinstance(track := media.get("track"), str) and track else "inbound",
                chunk=_int_str(media, "chunk", "media") if "chunk" in media else 0,
                timestamp_ms=_int_str(media, "timestamp", "media") if "timestamp" in media else 0,
                payload=payload,
            )
        if event == "mark":
            return Mark(_str(_obj(data, "mark"), "name", "mark"))
        if event == "dtmf":
            digit = _str(_obj(data, "dtmf"), "digit", "dtmf")
            if digit not in _VALID_DIGITS:
                raise _Bad(f"dtmf.digit {digit!r:.10} is not a keypad key")
            return Dtmf(digit)
        if event == "start":
            start = _obj(data, "start")
            fmt = start.get("mediaFormat") or {}
            if not isinstance(fmt, dict):
                raise _Bad("start.mediaFormat must be an object")
            params = start.get("customParameters") or {}
            if not isinstance(params, dict):
                raise _Bad("start.customParameters must be an object")
            tracks = start.get("tracks") or ["inbound"]
            return Start(
                stream_sid=_str(start, "streamSid", "start")
                if "streamSid" in start
                else _str(data, "streamSid", ""),
                account_sid=_str(start, "accountSid", "start"),
                call_sid=_str(start, "callSid", "start"),
                tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
                custom_parameters={str(k): str(v) for k, v in params.items()},
                encoding=str(fmt.get("encoding", "audio/x-mulaw")),
                sample_rate=int(fmt.get("sampleRate", 8000)),
                channels=int(fmt.get("channels", 1)),
            )
        if event == "stop":
            stop = data.get("stop") if isinstance(data.get("stop"), dict) else {}
            return Stop(str(stop.get("accountSid", "")), str(stop.get("callSid", "")))
        if event == "connected":
            return Connected(str(data.get("protocol", "")), str(data.get("version", "")))
    except _Bad as exc:
        return Malformed(f"{event} message: {exc}", _excerpt(raw))
    except (TypeError, ValueError) as exc:
        return Malformed(f"{event} message: {exc}", _excerpt(raw))
    if event is None:
        return Malformed("no 'event' field", _excerpt(raw))
    return Malformed(f"unknown event {event!r:.40}", _excerpt(raw))


def decode_payload(payload: str) -> bytes | None:
    """Base64 → raw μ-law bytes, or None when the payload is not valid base64."""
    try:
        return b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


class StreamWriter:
    """Builds the three messages we may send on a bidirectional stream, for one ``streamSid``."""

    __slots__ = ("_clear", "_media_prefix", "stream_sid")

    def __init__(self, stream_sid: str) -> None:
        self.stream_sid = stream_sid
        sid = orjson.dumps(stream_sid).decode()
        # The media message is built by string splicing around the base64 payload (which needs no escaping):
        # this is the hottest outbound path, and orjson.dumps of the dict would re-copy the payload twice.
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._clear = ('{"event":"clear","streamSid":' + sid + "}").encode()

    def media(self, payload_b64: str) -> str:
        return self._media_prefix + payload_b64 + '"}}'

    def mark(self, name: str) -> str:
        return orjson.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}).decode()

    def clear(self) -> str:
        return self._clear.decode()
