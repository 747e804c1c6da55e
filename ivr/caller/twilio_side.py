"""Twilio's side of a call, as pure data transformations (sans-I/O).

Why: ``ivr call`` must behave exactly like Twilio so the server can be exercised without a phone line. Keeping
the protocol here — message shapes, sequence numbers, the playback queue that decides when a ``mark`` is
echoed, TwiML parsing — free of sockets and clocks makes every rule testable in microseconds; the async driver
in :mod:`ivr.caller.client` only moves bytes and ticks the clock.

Wire facts come from PROTOCOLS.md §5.1 (TwiML) and §6 (Media Streams messages): every number travels as a
string except ``sampleRate``/``channels``; ``connected`` has no sequence number; ``start`` is sequence 1; the
sequence number increases across *all* later messages; media ``chunk`` counts from 1. All of these are per
stream: when a ``<Connect action>`` answers with another ``<Connect><Stream>``, the same call gets a new
stream (new ``MZ…`` sid) whose numbering starts again — one :class:`TwilioStreamSimulator` per stream.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

__all__ = [
    "ACTION_METHODS",
    "BYTES_PER_MS",
    "DTMF_DIGITS",
    "FRAME_BYTES",
    "FRAME_MS",
    "MULAW_SILENCE",
    "Clear",
    "Mark",
    "Media",
    "PlaybackBuffer",
    "SayHangup",
    "ServerMessage",
    "ServerMessageError",
    "StreamInstruction",
    "TwilioStreamSimulator",
    "TwimlError",
    "new_sid",
    "parse_server_message",
    "parse_twiml",
]

#: μ-law 8 kHz: one byte per sample, 8 samples per millisecond.
BYTES_PER_MS = 8
#: Twilio sends inbound audio in 20 ms frames of 160 bytes.
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
#: μ-law code for digital silence (positive zero).
MULAW_SILENCE = 0xFF
#: Keys Twilio reports in ``dtmf`` messages.
DTMF_DIGITS = frozenset("0123456789*#")


def new_sid(prefix: str) -> str:
    """A fresh Twilio-style SID: two-letter prefix + 32 lowercase hex characters (e.g. ``CA3f…``)."""
    if len(prefix) != 2 or not prefix.isalpha() or not prefix.isupper():
        raise ValueError(f"SID prefix must be two upper-case letters such as 'CA', got {prefix!r}")
    return prefix + secrets.token_hex(16)


def _check_sid(kind: str, prefix: str, sid: str) -> None:
    ok = (
        isinstance(sid, str)
        and len(sid) == 34
        and sid.startswith(prefix)
        and all(c in "0123456789abcdefABCDEF" for c in sid[2:])
    )
    if not ok:
        raise ValueError(f"{kind} must be {prefix} followed by 32 hex characters, got {sid!r}")


# ----------------------------------------------------------------------------------------------------------
# Messages Twilio sends (the simulator)
# ------------------------------------------------------------------------------------------------------------


class TwilioStreamSimulator:
    """Builds the exact JSON text of each message Twilio sends on a bidirectional Media Stream.

    The object is a small state machine — ``connected`` → ``start`` → ``media``/``dtmf``/``mark`` echoes →
    ``stop`` — and refuses out-of-order calls with :class:`RuntimeError`, so a driver bug cannot produce a
    stream that real Twilio never would.
    """

    def __init__(
        self,
        account_sid: str,
        call_sid: str,
        stream_sid: str,
        custom_parameters: Mapping[str, str] | None = None,
    ) -> None:
        _check_sid("account_sid", "AC", account_sid)
        _check_sid("call_sid", "CA", call_sid)
        _check_sid("stream_sid", "MZ", stream_sid)
        params = dict(custom_parameters or {})
        for key, value in params.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"custom parameter {key!r}={value!r}: names and values must be strings")
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.custom_parameters = params
        self._state = "new"  # new → connected → started → stopped
        self._sequence = 0  # last sequence number sent
        self._chunk = 0  # last media chunk number sent
        self._last_timestamp = -1

    @property
    def sequence_number(self) -> int:
        """The last sequence number used (0 before ``start``)."""
        return self._sequence

    @property
    def chunks_sent(self) -> int:
        return self._chunk

    @property
    def stopped(self) -> bool:
        return self._state == "stopped"

    def _require(self, *states: str, building: str) -> None:
        if self._state not in states:
            raise RuntimeError(f"cannot build {building!r} in state {self._state!r} (allowed in {states})")

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    @staticmethod
    def _dump(message: dict[str, Any]) -> str:
        return json.dumps(message, separators=(",", ":"))

    def connected(self) -> str:
        """The first message of every stream (it carries no sequence number)."""
        self._require("new", building="connected")
        self._state = "connected"
        return self._dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        """Stream metadata with the TwiML ``<Parameter>`` values; always sequence number 1."""
        self._require("connected", building="start")
        self._state = "started"
        return self._dump(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(self.custom_parameters),
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, mulaw: bytes, timestamp_ms: int) -> str:
        """One inbound audio chunk; ``timestamp_ms`` is milliseconds since the stream started."""
        self._require("started", building="media")
        if not mulaw:
            raise ValueError("media payload is empty; Twilio never sends an empty chunk")
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be a non-negative int, got {timestamp_ms!r}")
        if timestamp_ms < self._last_timestamp:
            raise ValueError(f"timestamp_ms went backwards: {timestamp_ms} after {self._last_timestamp}")
        self._last_timestamp = timestamp_ms
        self._chunk += 1
        return self._dump(
            {
                "event": "media",
                "sequenceNumber": self._next_sequence(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(bytes(mulaw)).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )

    def dtmf(self, digit: str) -> str:
        """A key press on the caller's phone."""
        self._require("started", building="dtmf")
        if digit not in DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9, * or #, got {digit!r}")
        return self._dump(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        """The echo of a server ``mark`` once the audio queued before it has played (or was cleared)."""
        self._require("started", building="mark")
        if not isinstance(name, str):
            raise ValueError(f"mark name must be a string, got {name!r}")
        return self._dump(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        """The last message, sent when the caller hangs up."""
        self._require("started", building="stop")
        self._state = "stopped"
        return self._dump(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )


# ----------------------------------------------------------------------------------------------------------
# Twilio's playback queue
# ------------------------------------------------------------------------------------------------------------


class PlaybackBuffer:
    """Twilio's outbound queue: audio plays in order, a ``mark`` is echoed once everything before it played.

    ``advance(ms)`` is the clock: it plays ``ms`` worth of audio (silence where the queue ran dry) and returns
    the marks that became due. A mark with nothing before it is due on the next ``advance`` (even
    ``advance(0)``).
    ``clear()`` drops the queued audio and hands back every pending mark at once, as Twilio does.
    """

    def __init__(self) -> None:
        self._queue: deque[bytes | str] = deque()  # bytes = audio, str = mark name
        self._offset = 0  # bytes already played from the audio chunk at the front
        self._queued_bytes = 0
        #: total agent audio (not silence) that has played, in bytes
        self.played_bytes = 0
        #: total time advanced, in ms
        self.elapsed_ms = 0

    @property
    def queued_bytes(self) -> int:
        """Audio waiting to play."""
        return self._queued_bytes

    @property
    def queued_ms(self) -> float:
        return self._queued_bytes / BYTES_PER_MS

    @property
    def pending_marks(self) -> list[str]:
        return [item for item in self._queue if isinstance(item, str)]

    def push_media(self, mulaw: bytes) -> None:
        if not mulaw:
            return
        self._queue.append(bytes(mulaw))
        self._queued_bytes += len(mulaw)

    def push_mark(self, name: str) -> None:
        self._queue.append(name)

    def clear(self) -> list[str]:
        """Drop all queued audio; return the names of all pending marks (echoed immediately), in order."""
        marks = self.pending_marks
        self._queue.clear()
        self._offset = 0
        self._queued_bytes = 0
        return marks

    def advance(self, ms: int) -> tuple[bytes, list[str]]:
        """Play ``ms`` milliseconds; return (μ-law heard, marks whose preceding audio has fully played)."""
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            raise ValueError(f"advance() takes a non-negative whole number of milliseconds, got {ms!r}")
        need = ms * BYTES_PER_MS
        out = bytearray()
        marks: list[str] = []
        while True:
            while self._queue and isinstance(self._queue[0], str):
                marks.append(self._queue.popleft())  # type: ignore[arg-type]
            if need == 0 or not self._queue:
                break
            chunk = self._queue[0]
            assert isinstance(chunk, bytes)
            take = min(need, len(chunk) - self._offset)
            out += chunk[self._offset : self._offset + take]
            self._offset += take
            need -= take
            self._queued_bytes -= take
            self.played_bytes += take
            if self._offset == len(chunk):
                self._queue.popleft()
                self._offset = 0
        out += bytes([MULAW_SILENCE]) * need
        self.elapsed_ms += ms
        return bytes(out), marks


# ----------------------------------------------------------------------------------------------------------
# Messages the server sends
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """Agent audio to queue for playback (raw μ-law 8 kHz)."""

    stream_sid: str
    payload: bytes


@dataclass(frozen=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True)
class Clear:
    stream_sid: str


@dataclass(frozen=True)
class ServerMessageError:
    """A server frame Twilio would not accept; ``reason`` says what was wrong and where."""

    reason: str
    raw: str  # the start of the offending frame, for the log

    def __str__(self) -> str:
        return f"{self.reason} (frame: {self.raw})"


ServerMessage = Media | Mark | Clear | ServerMessageError


def _preview(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else raw[:200].decode("utf-8", "replace")
    return text[:200] + ("…" if len(text) > 200 else "")


def parse_server_message(raw: str | bytes, expected_stream_sid: str | None = None) -> ServerMessage:
    """Parse one frame from the server into :class:`Media`, :class:`Mark` or :class:`Clear`.

    Never raises: anything Twilio would reject comes back as :class:`ServerMessageError`. Unknown extra keys
    are tolerated (the strict check belongs to the test oracle), but a wrong ``streamSid`` is an error when
    ``expected_stream_sid`` is given, because Twilio routes by it.
    """
    if isinstance(raw, bytes | bytearray):
        return ServerMessageError("binary frame; Twilio only accepts JSON text frames", _preview(bytes(raw)))
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return ServerMessageError(f"frame is not valid JSON ({exc})", _preview(raw))
    if not isinstance(data, dict):
        return ServerMessageError(f"frame is a JSON {type(data).__name__}, expected an object", _preview(raw))
    event = data.get("event")
    if event not in ("media", "mark", "clear"):
        return ServerMessageError(
            f"unknown event {event!r}; a server may send only media, mark or clear", _preview(raw)
        )
    stream_sid = data.get("streamSid")
    if not isinstance(stream_sid, str):
        return ServerMessageError(f"{event}: streamSid is missing or not a string", _preview(raw))
    if expected_stream_sid is not None and stream_sid != expected_stream_sid:
        return ServerMessageError(
            f"{event}: streamSid {stream_sid!r} does not match this stream ({expected_stream_sid})",
            _preview(raw),
        )
    if event == "clear":
        return Clear(stream_sid)
    body = data.get(event)
    if not isinstance(body, dict):
        return ServerMessageError(f"{event}: the {event!r} object is missing", _preview(raw))
    if event == "mark":
        name = body.get("name")
        if not isinstance(name, str):
            return ServerMessageError("mark: mark.name is missing or not a string", _preview(raw))
        return Mark(stream_sid, name)
    payload = body.get("payload")
    if not isinstance(payload, str):
        return ServerMessageError("media: media.payload is missing or not a string", _preview(raw))
    try:
        audio = base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        return ServerMessageError(f"media: media.payload is not valid base64 ({exc})", _preview(raw))
    if audio[:4] in (b"RIFF", b".snd"):
        return ServerMessageError("media: payload is a WAV/AU file; send raw μ-law bytes", _preview(raw))
    return Media(stream_sid, audio)


# ----------------------------------------------------------------------------------------------------------
# TwiML
# ------------------------------------------------------------------------------------------------------------


class TwimlError(ValueError):
    """The webhook's TwiML is not something Twilio would act on as a media stream."""


#: HTTP methods Twilio accepts for a ``<Connect action>`` request.
ACTION_METHODS = ("POST", "GET")


@dataclass(frozen=True)
class StreamInstruction:
    """``<Connect><Stream url=…>`` with its ``<Parameter>`` values (and any ``<Say>`` spoken before).

    ``action`` is the ``<Connect action=…>`` URL, made absolute, that Twilio requests with ``method`` once the
    stream ends (None: the ``<Connect>`` has no action and the call ends with the stream).
    """

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    says: tuple[str, ...] = ()
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True)
class SayHangup:
    """TwiML without a stream: what Twilio would say before hanging up.

    E.g. a draining server's ``<Say>…<Hangup/>``, a ``<Hangup/>`` answer to a ``<Connect action>`` request,
    or an empty ``<Response/>`` (nothing left to do ends the call: ``text`` is empty).
    """

    text: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_twiml(xml: str | bytes, document_url: str | None = None) -> StreamInstruction | SayHangup:
    """Interpret a webhook (or ``<Connect action>``) response the way Twilio does for a bidirectional stream.

    ``document_url`` is the URL the TwiML was fetched from: a relative ``<Connect action>`` is resolved
    against it, as Twilio does. An empty ``<Response/>`` ends the call (a :class:`SayHangup` with no text).

    Raises :class:`TwimlError` naming the problem: not XML, no ``<Response>``, no ``<Connect><Stream>`` (and
    nothing to say), a stream URL Twilio refuses (scheme other than wss/ws, a query string), a ``<Connect>``
    track other than ``inbound_track``, a ``<Parameter>`` without name/value, a ``<Connect method>`` other
    than POST or GET, or an action URL that is not http(s) (or is relative with no ``document_url`` to
    resolve it against).
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TwimlError(f"webhook response is not XML TwiML ({exc})") from None
    if _local(root.tag) != "Response":
        raise TwimlError(f"TwiML root element is <{_local(root.tag)}>, expected <Response>")
    says: list[str] = []
    verbs: list[str] = []
    for verb in root:
        name = _local(verb.tag)
        verbs.append(name)
        if name == "Say":
            says.append((verb.text or "").strip())
        elif name == "Connect":
            streams = [child for child in verb if _local(child.tag) == "Stream"]
            if not streams:
                raise TwimlError("<Connect> has no <Stream>; a media stream needs <Connect><Stream url=…>")
            action, method = _connect_action(verb, document_url)
            return _stream_instruction(streams[0], tuple(says), action, method)
        elif name == "Hangup":
            break
    if says or "Hangup" in verbs or not verbs:
        return SayHangup(" ".join(s for s in says if s))
    found = ", ".join(f"<{v}>" for v in verbs)
    raise TwimlError(f"TwiML has no <Connect><Stream> (found {found} inside <Response>)")


def _connect_action(connect: ET.Element, document_url: str | None) -> tuple[str | None, str]:
    """The ``<Connect>``'s absolute ``action`` URL (or None) and its upper-case ``method``."""
    raw_method = connect.get("method")
    method = "POST" if raw_method is None else raw_method.strip().upper()
    if method not in ACTION_METHODS:
        raise TwimlError(f"<Connect method={raw_method!r}>: Twilio requests the action with POST or GET only")
    action = connect.get("action")
    if action is None:
        return None, method
    action = action.strip()
    if not action:
        raise TwimlError("<Connect action=''> is empty; leave the attribute out or give a URL")
    if not urlsplit(action).scheme:
        if document_url is None:
            raise TwimlError(
                f"<Connect action={action!r}> is relative and the TwiML's own URL is unknown to resolve it"
            )
        action = urljoin(document_url, action)
    parts = urlsplit(action)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TwimlError(f"<Connect action={action!r}> must be an http(s) URL")
    return action, method


def _stream_instruction(
    stream: ET.Element, says: tuple[str, ...], action: str | None, method: str
) -> StreamInstruction:
    url = stream.get("url")
    if not url:
        raise TwimlError("<Stream> has no url attribute")
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        raise TwimlError(f"<Stream url={url!r}> must be a wss:// URL (ws:// only for a local server)")
    if parts.query:
        raise TwimlError(
            f"<Stream url={url!r}> has a query string; Twilio refuses it, use <Parameter> instead"
        )
    track = stream.get("track")
    if track is not None and track != "inbound_track":
        raise TwimlError(
            f"<Connect><Stream track={track!r}>: only inbound_track is allowed (Twilio error 31941)"
        )
    parameters: dict[str, str] = {}
    for child in stream:
        if _local(child.tag) != "Parameter":
            continue
        name, value = child.get("name"), child.get("value")
        if name is None or value is None:
            raise TwimlError(f"<Parameter> needs both name and value, got {child.attrib!r}")
        parameters[name] = value
    return StreamInstruction(url, parameters, says, action, method)
