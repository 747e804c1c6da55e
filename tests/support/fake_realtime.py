"""A local, protocol-faithful stand-in for the OpenAI Realtime WebSocket API (GA and beta dialects).

Why: every test of the phone bridge needs a model to talk to, and the real one is paid, remote and
non-deterministic. This fake speaks the exact wire protocol (event names, required fields, ids, ordering),
validates every client frame with the strict oracle and every frame it emits itself, and records each
protocol violation so tests can assert ``violations == []`` at teardown. Test code triggers server-side
behaviour (speech started, user said something, a response, an error, an abrupt drop) explicitly.

Layout: the event *content* is built by pure, synchronous code (:class:`RealtimeEvents`, :func:`reply_plan`,
the audio helpers); :class:`FakeSession` / :class:`FakeRealtimeServer` are the thin asyncio shell around a
``websockets`` 15 server on 127.0.0.1. Everything runs in the test's own event loop; no threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, get_args, get_origin
from urllib.parse import parse_qs, urlsplit

import numpy as np
from openai.types.beta.realtime.session import Session as _BetaSession
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.oracles import Dialect, ProtocolViolation, check_client_event, check_server_event

__all__ = [
    "SAMPLE_RATES",
    "FakeRealtimeServer",
    "FakeSession",
    "RealtimeEvents",
    "Reply",
    "audio_format_of",
    "bytes_per_ms",
    "encode_audio",
    "new_id",
    "reply_plan",
    "tone_pcm16",
]

AudioFormat = Literal["pcm", "pcmu", "pcma"]

#: Sample rate per format: GA ``audio/pcm`` (beta ``pcm16``) is 24 kHz PCM16 LE; G.711 is 8 kHz.
SAMPLE_RATES: dict[str, int] = {"pcm": 24000, "pcmu": 8000, "pcma": 8000}
_BYTES_PER_SAMPLE: dict[str, int] = {"pcm": 2, "pcmu": 1, "pcma": 1}
_GA_FORMATS: dict[str, AudioFormat] = {"audio/pcm": "pcm", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
_BETA_FORMATS: dict[str, AudioFormat] = {"pcm16": "pcm", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
_MIN_COMMIT_MS = 100  # the real API refuses to commit less than 100 ms of input audio


def _string_literals(annotation: Any) -> frozenset[str]:
    if get_origin(annotation) is Literal:
        return frozenset(a for a in get_args(annotation) if isinstance(a, str))
    return frozenset().union(*(_string_literals(a) for a in get_args(annotation)))


# The beta session model types ``model`` as a closed list of literals; other names cannot be echoed back.
_BETA_SESSION_MODELS = _string_literals(_BetaSession.model_fields["model"].annotation)


@dataclass
class Reply:
    """What the fake model "says" in one response."""

    text: str = "Hello, how can I help?"  # transcript of the assistant audio
    audio_ms: int = 1000  # how much audio to send
    tone_hz: float = 440.0  # the audio content: a sine at this frequency (-12 dBFS)
    chunk_ms: int = 100  # audio per delta
    delta_interval_s: float = 0.0  # pause between deltas (0 = as fast as possible, like OpenAI)
    first_audio_delay_s: float = 0.0  # a slow model: pause before the first audio delta (fault runs)
    # (name, arguments dict or raw JSON string) → a function_call output item instead of audio
    function_call: tuple[str, dict[str, Any] | str] | None = None
    # set: ``response.done`` waits until the test sets this event (everything before it is sent)
    hold_done: asyncio.Event | None = None


# --------------------------------------------------------------------------------------------------------
# Pure helpers: ids, audio synthesis and encoding
# --------------------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """An id shaped like OpenAI's (``resp_…``, ``item_…``, ``call_…``, ``event_…``)."""
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


def bytes_per_ms(fmt: str) -> int:
    """Bytes of audio per millisecond in a Realtime audio format (48 for 24 kHz PCM16, 8 for G.711)."""
    return SAMPLE_RATES[fmt] * _BYTES_PER_SAMPLE[fmt] // 1000


def tone_pcm16(freq_hz: float, n_samples: int, rate: int, dbfs: float = -12.0) -> np.ndarray:
    """A sine of ``n_samples`` int16 samples at ``dbfs`` peak level (phase starts at 0)."""
    amplitude = 32767.0 * 10.0 ** (dbfs / 20.0)
    t = np.arange(n_samples, dtype=np.float64) / rate
    return np.round(amplitude * np.sin(2.0 * np.pi * freq_hz * t)).astype(np.int16)


_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _pcm16_to_ulaw(samples: np.ndarray) -> bytes:
    """G.711 μ-law, bit-exact with the classic Sun/CCITT reference (and so with ``audioop.lin2ulaw``).

    Written here so the fake does not depend on the code under test.
    """
    v = samples.astype(np.int32) >> 2
    negative = v < 0
    mask = np.where(negative, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 0x21
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, v, side="left")
    code = (segment << 4) | ((v >> np.minimum(segment + 1, 8)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8).tobytes()


def _pcm16_to_alaw(samples: np.ndarray) -> bytes:
    """G.711 A-law, bit-exact with the classic reference (``audioop.lin2alaw``)."""
    v = samples.astype(np.int32) >> 3
    negative = v < 0
    mask = np.where(negative, 0x55, 0xD5)
    v = np.where(negative, -v - 1, v)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, v, side="left")
    shifted = np.where(segment < 2, v >> 1, v >> np.minimum(segment, 8))
    code = np.where(segment >= 8, 0x7F, (segment << 4) | (shifted & 0x0F))
    return (code ^ mask).astype(np.uint8).tobytes()


def encode_audio(samples: np.ndarray, fmt: str) -> bytes:
    """int16 samples (already at the format's rate) → wire bytes of that format."""
    if fmt == "pcm":
        return samples.astype("<i2").tobytes()
    if fmt == "pcmu":
        return _pcm16_to_ulaw(samples)
    if fmt == "pcma":
        return _pcm16_to_alaw(samples)
    raise ValueError(f"unknown Realtime audio format {fmt!r}; expected pcm, pcmu or pcma")


def audio_format_of(dialect: Dialect, session: dict[str, Any], direction: Literal["input", "output"]) -> str:
    """Our short format name ("pcm", "pcmu", "pcma") for one direction of an effective session config."""
    if dialect == "ga":
        fmt = ((session.get("audio") or {}).get(direction) or {}).get("format") or {}
        return _GA_FORMATS.get(fmt.get("type", "audio/pcm"), "pcm")
    return _BETA_FORMATS.get(session.get(f"{direction}_audio_format") or "pcm16", "pcm")


def merge_session(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge a ``session.update`` payload into a config: nested objects merge, tagged objects are replaced.

    An object carrying its own ``type`` (an audio format, a turn-detection variant, a tool choice) is a
    different variant, so its keys must not be mixed with the previous variant's.
    """
    out = dict(base)
    for key, value in update.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and "type" not in value:
            out[key] = merge_session(current, value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------------
# Pure event construction
# --------------------------------------------------------------------------------------------------------


class RealtimeEvents:
    """Builds server events as plain dicts in one dialect's shapes (GA names vs beta names)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        ga = dialect == "ga"
        self.audio_delta = "response.output_audio.delta" if ga else "response.audio.delta"
        self.audio_done = "response.output_audio.done" if ga else "response.audio.done"
        self.transcript_delta = (
            "response.output_audio_transcript.delta" if ga else "response.audio_transcript.delta"
        )
        self.transcript_done = (
            "response.output_audio_transcript.done" if ga else "response.audio_transcript.done"
        )

    @staticmethod
    def event(type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "event_id": new_id("event"), **fields}

    def default_session(self, model: str) -> dict[str, Any]:
        """The session reported in ``session.created`` before any update (PCM16 24 kHz both ways)."""
        common: dict[str, Any] = {"id": new_id("sess"), "object": "realtime.session", "model": model}
        if self.dialect == "beta" and model not in _BETA_SESSION_MODELS:
            del common["model"]  # the beta session type only knows a fixed list of model names
        if self.dialect == "ga":
            return {
                "type": "realtime",
                **common,
                "expires_at": int(time.time()) + 3600,
                "output_modalities": ["audio"],
                "instructions": "",
                "max_output_tokens": "inf",
                "tool_choice": "auto",
                "tools": [],
                "tracing": None,
                "truncation": "auto",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "noise_reduction": None,
                        "transcription": None,
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.5,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": 200,
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    },
                    "output": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "voice": "marin",
                        "speed": 1.0,
                    },
                },
            }
        return {
            **common,
            "modalities": ["text", "audio"],
            "instructions": "",
            "voice": "alloy",
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": None,
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 200,
                "create_response": True,
                "interrupt_response": True,
            },
            "tools": [],
            "tool_choice": "auto",
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
            "speed": 1.0,
        }

    def session_for_echo(self, effective: dict[str, Any]) -> dict[str, Any]:
        """The effective session as the server reports it (beta's ``client_secret`` is request-only)."""
        if self.dialect == "beta":
            return {k: v for k, v in effective.items() if k != "client_secret"}
        return effective

    def error(
        self, code: str, message: str, type_: str, client_event_id: str | None = None
    ) -> dict[str, Any]:
        err: dict[str, Any] = {"type": type_, "code": code, "message": message, "param": None}
        if client_event_id is not None:
            err["event_id"] = client_event_id
        return self.event("error", error=err)

    def assistant_item(self, item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
        part_type = "output_audio" if self.dialect == "ga" else "audio"
        content = [] if transcript is None else [{"type": part_type, "transcript": transcript}]
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    @staticmethod
    def function_call_item(
        item_id: str, call_id: str, name: str, arguments: str, status: str
    ) -> dict[str, Any]:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }

    @staticmethod
    def user_audio_item(item_id: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }

    def item_announcements(self, item: dict[str, Any], previous_item_id: str | None) -> list[dict[str, Any]]:
        """Events announcing an item the server itself added (output items, committed audio)."""
        name = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
        return [self.event(name, previous_item_id=previous_item_id, item=item)]

    def response(
        self,
        response_id: str,
        status: str,
        output: list[dict[str, Any]],
        *,
        status_details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": status_details,
            "output": output,
            "usage": usage,
        }

    def usage(self, input_audio_ms: int, output_audio_ms: int, output_text: str) -> dict[str, Any]:
        """Plausible token usage (≈10 tokens/s of input audio, ≈20 tokens/s of output audio)."""
        in_audio, in_text = input_audio_ms // 100, 40
        out_audio, out_text = output_audio_ms // 50, max(1, len(output_text) // 4)
        input_details: dict[str, Any] = {"text_tokens": in_text, "audio_tokens": in_audio, "cached_tokens": 0}
        if self.dialect == "ga":
            input_details["cached_tokens_details"] = {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}
        return {
            "total_tokens": in_audio + in_text + out_audio + out_text,
            "input_tokens": in_audio + in_text,
            "output_tokens": out_audio + out_text,
            "input_token_details": input_details,
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }


@dataclass
class Step:
    """One event of a planned response, with the audio samples and transcript text it carries."""

    event: dict[str, Any]
    audio_samples: int = 0
    text: str = ""
    paced: bool = False  # wait Reply.delta_interval_s before sending (every delta after the first)


def _split_text(text: str, parts: int) -> list[str]:
    n = max(parts, 1)
    return [text[len(text) * i // n : len(text) * (i + 1) // n] for i in range(n)]


def reply_plan(
    events: RealtimeEvents,
    reply: Reply,
    *,
    response_id: str,
    item_id: str,
    previous_item_id: str | None,
    output_format: str,
    input_audio_ms: int,
) -> Iterator[Step]:
    """Every event of one response, in the order the real API sends them (pure; no I/O, no clock)."""
    ev = events.event
    yield Step(ev("response.created", response=events.response(response_id, "in_progress", [])))
    if reply.function_call is not None:
        yield from _function_call_plan(events, reply, response_id, item_id, previous_item_id, input_audio_ms)
        return

    where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
    yield Step(ev("response.output_item.added", response_id=response_id, output_index=0,
                  item=events.assistant_item(item_id, "in_progress", None)))  # fmt: skip
    for announcement in events.item_announcements(
        events.assistant_item(item_id, "in_progress", None), previous_item_id
    ):
        yield Step(announcement)
    yield Step(ev("response.content_part.added", **where, part={"type": "audio", "transcript": ""}))

    rate = SAMPLE_RATES[output_format]
    total = rate * reply.audio_ms // 1000
    per_chunk = max(1, rate * reply.chunk_ms // 1000)
    samples = tone_pcm16(reply.tone_hz, total, rate)
    starts = list(range(0, total, per_chunk))
    texts = _split_text(reply.text, len(starts)) if starts else [reply.text]
    for index, start in enumerate(starts):
        chunk = samples[start : start + per_chunk]
        payload = base64.b64encode(encode_audio(chunk, output_format)).decode("ascii")
        yield Step(ev(events.audio_delta, **where, delta=payload), audio_samples=len(chunk), paced=index > 0)
        if texts[index]:
            yield Step(ev(events.transcript_delta, **where, delta=texts[index]), text=texts[index])
    if not starts and reply.text:
        yield Step(ev(events.transcript_delta, **where, delta=reply.text), text=reply.text)

    done_item = events.assistant_item(item_id, "completed", reply.text)
    yield Step(ev(events.audio_done, **where))
    yield Step(ev(events.transcript_done, **where, transcript=reply.text))
    yield Step(ev("response.content_part.done", **where, part={"type": "audio", "transcript": reply.text}))
    yield Step(ev("response.output_item.done", response_id=response_id, output_index=0, item=done_item))
    if events.dialect == "ga":
        yield Step(ev("conversation.item.done", previous_item_id=previous_item_id, item=done_item))
    usage = events.usage(input_audio_ms, reply.audio_ms, reply.text)
    yield Step(
        ev("response.done", response=events.response(response_id, "completed", [done_item], usage=usage))
    )


def _function_call_plan(
    events: RealtimeEvents,
    reply: Reply,
    response_id: str,
    item_id: str,
    previous_item_id: str | None,
    input_audio_ms: int,
) -> Iterator[Step]:
    assert reply.function_call is not None
    ev = events.event
    name, args = reply.function_call
    arguments = args if isinstance(args, str) else json.dumps(args)
    call_id = new_id("call")
    started = events.function_call_item(item_id, call_id, name, "", "in_progress")
    yield Step(ev("response.output_item.added", response_id=response_id, output_index=0, item=started))
    for announcement in events.item_announcements(started, previous_item_id):
        yield Step(announcement)
    where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "call_id": call_id}
    for index, piece in enumerate(p for p in _split_text(arguments, 3) if p):
        yield Step(ev("response.function_call_arguments.delta", **where, delta=piece), paced=index > 0)
    done_fields: dict[str, Any] = {**where, "arguments": arguments}
    if events.dialect == "ga":
        done_fields["name"] = name  # beta's arguments.done has no name
    yield Step(ev("response.function_call_arguments.done", **done_fields))
    done_item = events.function_call_item(item_id, call_id, name, arguments, "completed")
    yield Step(ev("response.output_item.done", response_id=response_id, output_index=0, item=done_item))
    if events.dialect == "ga":
        yield Step(ev("conversation.item.done", previous_item_id=previous_item_id, item=done_item))
    usage = events.usage(input_audio_ms, 0, arguments)
    yield Step(
        ev("response.done", response=events.response(response_id, "completed", [done_item], usage=usage))
    )


def check_handshake(
    path_and_query: str, headers: Headers, api_key: str
) -> tuple[list[str], HTTPStatus, Dialect]:
    """Check the WebSocket upgrade the SDK sends (PROTOCOLS.md §3.2); returns (problems, status, dialect)."""
    problems: list[str] = []
    status = HTTPStatus.BAD_REQUEST
    url = urlsplit(path_and_query)
    if not url.path.endswith("/realtime"):
        problems.append(f"path {url.path!r} does not end with /realtime")
    if not parse_qs(url.query).get("model", [""])[0]:
        problems.append("query parameter 'model' is missing")
    beta_values = headers.get_all("OpenAI-Beta")
    dialect: Dialect = "ga"
    if beta_values == ["realtime=v1"]:
        dialect = "beta"
    elif beta_values:
        problems.append(f"OpenAI-Beta must be absent (GA) or 'realtime=v1' (beta), got {beta_values!r}")
    authorization = headers.get_all("Authorization")
    if authorization != [f"Bearer {api_key}"]:
        status = HTTPStatus.UNAUTHORIZED
        shown = "missing" if not authorization else "not 'Bearer <the configured API key>'"
        problems.append(f"Authorization header is {shown}")
    return problems, status, dialect


# --------------------------------------------------------------------------------------------------------
# asyncio shell
# --------------------------------------------------------------------------------------------------------


class _Signal:
    """Wakes every waiter when something changes; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, condition: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = condition()
                    if result:
                        return result
                    await self._event.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what()}") from None


@dataclass
class _ResponseRun:
    response_id: str
    item_id: str
    reply: Reply
    kind: Literal["audio", "function_call"]
    stopped: bool = False
    announced: bool = False  # response.output_item.added has been sent
    audio_started: bool = False  # the first audio delta has been sent (Reply.first_audio_delay_s)
    transcript: str = ""
    task: asyncio.Task[None] | None = None


@dataclass
class _Item:
    item: dict[str, Any]
    role: str | None
    output_format: str | None = None  # for assistant audio items: the format their audio was sent in
    samples_sent: int = 0


class FakeSession:
    """One accepted Realtime connection: protocol state plus test-triggered server behaviour."""

    def __init__(
        self,
        server: FakeRealtimeServer,
        ws: ServerConnection,
        index: int,
        dialect: Dialect,
    ) -> None:
        request = ws.request
        assert request is not None
        url = urlsplit(request.path)
        self._server = server
        self._ws = ws
        self.index = index
        self.dialect: Dialect = dialect
        self.path: str = url.path
        self.query: dict[str, str] = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.model: str = self.query.get("model", "")
        self.headers: dict[str, str] = {}
        for name, value in request.headers.raw_items():
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # every server event emitted, in order
        self.session_config: dict[str, Any] = {}
        self.input_audio = bytearray()
        self.replies: deque[Reply] = deque(server.default_replies)
        self.closed = asyncio.Event()
        #: ``time.monotonic()`` when the connection was accepted, and when it ended (None until then).
        self.opened_at: float = time.monotonic()
        self.closed_at: float | None = None
        self.last_assistant_item_id: str | None = None
        self._events = RealtimeEvents(dialect)
        self._effective = self._events.default_session(self.model)
        self._items: dict[str, _Item] = {}
        self._last_item_id: str | None = None
        self._active: _ResponseRun | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._signal = _Signal()
        self._done_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._uncommitted = 0
        self._pending_speech_item: str | None = None

    # ---- read-only views -------------------------------------------------------------------------------

    @property
    def input_format(self) -> str:
        return audio_format_of(self.dialect, self._effective, "input")

    @property
    def output_format(self) -> str:
        return audio_format_of(self.dialect, self._effective, "output")

    @property
    def response_in_flight(self) -> bool:
        return self._active is not None

    def count(self, type: str) -> int:
        return sum(1 for e in self.received if e["type"] == type)

    def audio_sent_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        if item is None or item.output_format is None:
            return 0
        return item.samples_sent * 1000 // SAMPLE_RATES[item.output_format]

    def _input_ms(self) -> int:
        return len(self.input_audio) // bytes_per_ms(self.input_format)

    # ---- waiting -----------------------------------------------------------------------------------------

    async def wait_for(
        self, type: str, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """First received client event of ``type`` matching ``predicate``, already received or future."""

        def find() -> dict[str, Any] | None:
            return next(
                (e for e in self.received if e["type"] == type and (predicate is None or predicate(e))), None
            )

        def what() -> str:
            return f"client event {type!r}; received so far: {[e['type'] for e in self.received]}"

        return await self._signal.until(find, timeout, what)

    async def wait_input_audio(self, nbytes: int, timeout: float = 5.0) -> None:
        await self._signal.until(
            lambda: len(self.input_audio) >= nbytes,
            timeout,
            lambda: f"{nbytes} bytes of input audio (have {len(self.input_audio)})",
        )

    async def wait_response_done(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next ``response.done`` this session emitted (each is returned once, in order)."""
        try:
            return await asyncio.wait_for(self._done_queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for response.done") from None

    # ---- test-triggered server behaviour ---------------------------------------------------------------

    async def speech_started(self) -> str:
        item_id = new_id("item")
        self._pending_speech_item = item_id
        await self._emit(
            self._events.event(
                "input_audio_buffer.speech_started", audio_start_ms=self._input_ms(), item_id=item_id
            )
        )
        if self._server.auto_cancel_on_speech and self._active is not None:
            await self._stop_active("turn_detected")
        return item_id

    async def speech_stopped(self) -> None:
        item_id = self._pending_speech_item or new_id("item")
        self._pending_speech_item = item_id
        await self._emit(
            self._events.event(
                "input_audio_buffer.speech_stopped", audio_end_ms=self._input_ms(), item_id=item_id
            )
        )

    async def user_said(self, text: str) -> str:
        """Commit the caller's turn as a user audio item whose transcription is ``text``."""
        item_id = self._pending_speech_item or new_id("item")
        self._pending_speech_item = None
        await self._commit(item_id)
        usage = {"type": "tokens", "input_tokens": 10, "output_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        await self._emit(
            self._events.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=text,
                usage=usage,
            )
        )
        return item_id

    async def commit_turn(self) -> str:
        """Commit the caller's turn as a user audio item, its transcription to come later
        (:meth:`transcribed`): the API does not promise transcripts in item order."""
        item_id = self._pending_speech_item or new_id("item")
        self._pending_speech_item = None
        await self._commit(item_id)
        return item_id

    async def transcribed(self, item_id: str, text: str) -> None:
        """The (late) transcription of a user audio item committed earlier."""
        usage = {"type": "tokens", "input_tokens": 10, "output_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        await self._emit(
            self._events.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=text,
                usage=usage,
            )
        )

    async def respond(self, reply: Reply | None = None) -> str:
        """Start a response unprompted, the way server VAD with ``create_response`` does."""
        if self._active is not None:
            raise RuntimeError(
                f"response {self._active.response_id} is still in flight; wait for response.done"
            )
        return self._start_response(reply)

    async def send_error(self, code: str, message: str, type: str = "invalid_request_error") -> None:
        await self._emit(self._events.error(code, message, type))

    async def kill(self) -> None:
        """Abrupt drop: abort the TCP connection without a close frame (the client sees 1006)."""
        self._ws.transport.abort()
        await self.closed.wait()

    async def close(self, code: int = 1000) -> None:
        await self._ws.close(code)
        await self.closed.wait()

    # ---- connection loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._emit(self._events.event("session.created", session=self._effective))
            if self._server.error_on_accept is not None:  # fault mode: a final error, then the close
                code, message = self._server.error_on_accept
                await self.send_error(code, message, type=code)
                await self._ws.close(1000)
                return
            async for frame in self._ws:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            if self._active is not None:
                self._active.stopped = True
                self._active = None
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self.closed_at = time.monotonic()
            self.closed.set()
            self._signal.fire()

    async def _on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self._violation(
                "<binary frame>", f"binary frame of {len(frame)} bytes; the API takes JSON text frames"
            )
            await self._emit(
                self._events.error(
                    "invalid_value", "Binary frames are not supported", "invalid_request_error"
                )
            )
            return
        try:
            event = check_client_event(self.dialect, frame)
        except ProtocolViolation as exc:
            label, client_id = _label_and_id(frame)
            self._violation(label, str(exc))
            await self._emit(
                self._events.error("invalid_value", str(exc)[:2000], "invalid_request_error", client_id)
            )
            return
        self.received.append(event)
        self._signal.fire()
        handler = self._handlers().get(event["type"])
        if handler is None:
            return
        try:
            await handler(event)
        except ConnectionClosed:
            raise
        except Exception as exc:  # a bug in the fake must surface as a violation, not a silent hang
            self._violation(event["type"], f"fake crashed handling it: {exc!r}")

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.truncate": self._on_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    # ---- client event handlers -------------------------------------------------------------------------

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        update = event["session"]
        self.session_config = merge_session(self.session_config, update)
        self._effective = merge_session(self._effective, update)
        echo = self._events.session_for_echo(self._effective)
        await self._emit(self._events.event("session.updated", session=echo))

    async def _on_append(self, event: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except binascii.Error as exc:
            self._violation(event["type"], f"audio is not valid base64: {exc}")
            await self._error("invalid_value", f"Invalid base64 audio: {exc}", event)
            return
        self.input_audio += audio
        self._uncommitted += len(audio)
        self._signal.fire()

    async def _on_commit(self, event: dict[str, Any]) -> None:
        have_ms = self._uncommitted // bytes_per_ms(self.input_format)
        if have_ms < _MIN_COMMIT_MS:
            msg = f"Error committing input audio buffer: expected at least 100ms of audio, have {have_ms}ms."
            await self._error("input_audio_buffer_commit_empty", msg, event)
            return
        await self._commit(self._pending_speech_item or new_id("item"))
        self._pending_speech_item = None

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._uncommitted = 0
        await self._emit(self._events.event("input_audio_buffer.cleared"))

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        item.setdefault("id", new_id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        previous = event.get("previous_item_id", self._last_item_id)
        self._remember(item)
        await self._emit(
            self._events.event("conversation.item.created", previous_item_id=previous, item=item)
        )
        if self.dialect == "ga":
            await self._emit(
                self._events.event("conversation.item.added", previous_item_id=previous, item=item)
            )
            await self._emit(
                self._events.event("conversation.item.done", previous_item_id=previous, item=item)
            )

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        known = self._items.get(event["item_id"])
        if known is None:
            await self._error(
                "item_retrieve_invalid_item_id", f"Item {event['item_id']!r} does not exist.", event
            )
            return
        await self._emit(self._events.event("conversation.item.retrieved", item=known.item))

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        if self._items.pop(event["item_id"], None) is None:
            await self._error(
                "item_delete_invalid_item_id", f"Item {event['item_id']!r} does not exist.", event
            )
            return
        await self._emit(self._events.event("conversation.item.deleted", item_id=event["item_id"]))

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        known = self._items.get(item_id)
        if known is None or known.role != "assistant" or known.output_format is None:
            await self._error(
                "item_truncate_invalid_item_id", f"Item {item_id!r} is not an assistant audio item.", event
            )
            return
        sent_ms = self.audio_sent_ms(item_id)
        if end_ms > sent_ms:
            self._violation(
                event["type"], f"truncate beyond sent audio: audio_end_ms={end_ms} but only {sent_ms} ms sent"
            )
            await self._error(
                "invalid_value", f"Audio content of {sent_ms}ms is already shorter than {end_ms}ms", event
            )
            return
        await self._emit(
            self._events.event(
                "conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end_ms
            )
        )

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._active is not None:
            self._violation(
                event["type"], f"response.create while response {self._active.response_id} is in flight"
            )
            msg = f"Conversation already has an active response in progress: {self._active.response_id}."
            await self._error("conversation_already_has_active_response", msg, event)
            return
        self._start_response(None)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self._active is None or (wanted is not None and wanted != self._active.response_id):
            # Legitimate race: the response may have finished just before the cancel arrived.
            await self._error(
                "response_cancel_not_active", "Cancellation failed: no active response found.", event
            )
            return
        await self._stop_active("client_cancelled")

    # ---- responses ---------------------------------------------------------------------------------------

    def _start_response(self, reply: Reply | None) -> str:
        reply = reply if reply is not None else (self.replies.popleft() if self.replies else Reply())
        kind: Literal["audio", "function_call"] = "function_call" if reply.function_call else "audio"
        run = _ResponseRun(new_id("resp"), new_id("item"), reply, kind)
        self._active = run
        if kind == "audio":
            self._items[run.item_id] = _Item(
                self._events.assistant_item(run.item_id, "in_progress", None), "assistant", self.output_format
            )
            self.last_assistant_item_id = run.item_id
        else:
            self._items[run.item_id] = _Item({"id": run.item_id, "type": "function_call"}, None)
        previous = self._last_item_id
        self._last_item_id = run.item_id
        plan = reply_plan(
            self._events,
            reply,
            response_id=run.response_id,
            item_id=run.item_id,
            previous_item_id=previous,
            output_format=self.output_format,
            input_audio_ms=self._input_ms(),
        )
        run.task = asyncio.get_running_loop().create_task(self._stream(run, plan))
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)
        return run.response_id

    async def _stream(self, run: _ResponseRun, plan: Iterator[Step]) -> None:
        try:
            for step in plan:
                if step.audio_samples and not run.audio_started:
                    run.audio_started = True
                    if run.reply.first_audio_delay_s > 0:  # a slow model (simulated), not synchronisation
                        await asyncio.sleep(run.reply.first_audio_delay_s)
                if step.event["type"] == "response.done" and run.reply.hold_done is not None:
                    await run.reply.hold_done.wait()
                if step.paced and run.reply.delta_interval_s > 0:
                    # simulated model pacing between deltas, not synchronisation
                    await asyncio.sleep(run.reply.delta_interval_s)
                if not await self._emit(step.event, run=run):
                    return
                if step.audio_samples:
                    self._items[run.item_id].samples_sent += step.audio_samples
                run.transcript += step.text
                item = step.event.get("item")
                if step.event["type"].startswith("response.output_item.") and item["id"] == run.item_id:
                    self._items[run.item_id].item = item
                    run.announced = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._violation("response", f"fake crashed streaming {run.response_id}: {exc!r}")

    async def _stop_active(self, reason: str) -> None:
        """Stop the in-flight response (no more deltas) and report it cancelled, like the real API."""
        run = self._active
        if run is None:
            return
        run.stopped = True
        self._active = None
        output: list[dict[str, Any]] = []
        if run.announced:  # the output item exists only once response.output_item.added went out
            if run.kind == "audio":
                item = self._events.assistant_item(run.item_id, "incomplete", run.transcript)
            else:
                item = self._items[run.item_id].item | {"status": "incomplete"}
            self._items[run.item_id].item = item
            output.append(item)
        details = {"type": "cancelled", "reason": reason}
        response = self._events.response(run.response_id, "cancelled", output, status_details=details)
        await self._emit(self._events.event("response.done", response=response))

    # ---- emitting ----------------------------------------------------------------------------------------

    async def _emit(self, event: dict[str, Any], *, run: _ResponseRun | None = None) -> bool:
        """Validate and send one server event; returns False when it was not sent (stopped run, closed)."""
        try:
            check_server_event(self.dialect, event)
        except ProtocolViolation as exc:
            self._violation(
                event.get("type", "?"), f"the FAKE emitted an invalid event (bug in the fake): {exc}"
            )
        async with self._send_lock:
            if run is not None and run.stopped:
                return False
            if run is not None and event["type"] == "response.done" and self._active is run:
                self._active = None  # before sending: the client may answer with response.create at once
            try:
                await self._ws.send(json.dumps(event))
            except ConnectionClosed:
                return False
        self.sent.append(event)
        if event["type"] == "response.done":
            self._done_queue.put_nowait(event)
        self._signal.fire()
        return True

    async def _error(self, code: str, message: str, client_event: dict[str, Any]) -> None:
        await self._emit(
            self._events.error(code, message, "invalid_request_error", client_event.get("event_id"))
        )

    async def _commit(self, item_id: str) -> None:
        previous = self._last_item_id
        self._uncommitted = 0
        item = self._events.user_audio_item(item_id)
        self._remember(item)
        await self._emit(
            self._events.event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        )
        for announcement in self._events.item_announcements(item, previous):
            await self._emit(announcement)
        if self.dialect == "ga":
            await self._emit(
                self._events.event("conversation.item.done", previous_item_id=previous, item=item)
            )

    def _remember(self, item: dict[str, Any]) -> None:
        self._items[item["id"]] = _Item(item, item.get("role"))
        self._last_item_id = item["id"]

    def _violation(self, label: str, reason: str) -> None:
        self._server.violations.append(f"[session {self.index} {self.dialect}] {label}: {reason}")


async def _drain(ws: ServerConnection) -> None:
    """Read and drop whatever the client still sends until the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def _label_and_id(frame: str) -> tuple[str, str | None]:
    try:
        data = json.loads(frame)
    except ValueError:
        return "<not JSON>", None
    if not isinstance(data, dict):
        return f"<{type(data).__name__}>", None
    event_id = data.get("event_id")
    return repr(data.get("type", "<no type>")), event_id if isinstance(event_id, str) else None


class FakeRealtimeServer:
    """A Realtime endpoint on ws://127.0.0.1:PORT/v1/realtime that tests drive and inspect."""

    def __init__(self, *, api_key: str = "sk-test", auto_cancel_on_speech: bool = False) -> None:
        self.api_key = api_key
        self.auto_cancel_on_speech = auto_cancel_on_speech
        self.url: str = ""
        self.violations: list[str] = []
        self.sessions: list[FakeSession] = []
        self.reject_handshakes: int = 0
        #: Fault modes. ``close_after_accept``: that many connections are accepted, then closed after the
        #: client's first event (no event back; quota exhausted or a bad key behind a proxy).
        #: ``error_on_accept``: every connection gets ``session.created``, then an ``error`` with this
        #: (code, message), then a close.
        self.close_after_accept: int = 0
        self.error_on_accept: tuple[str, str] | None = None
        #: ``stall_after_accept``: that many connections are accepted and then get nothing at all (a model
        #: that stalls): their frames are read and dropped until the client closes.
        self.stall_after_accept: int = 0
        #: WebSocket connections accepted (fault modes included).
        self.accepted: int = 0
        self.default_replies: list[Reply] = [Reply()]
        self._server: Server | None = None
        self._handed_out = 0
        self._signal: _Signal | None = None

    async def start(self) -> None:
        self._signal = _Signal()
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=None,  # the real API accepts appends of up to 15 MiB
            compression=None,
            ping_interval=None,
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``websocket_base_url`` for ``AsyncOpenAI`` (the SDK appends ``/realtime`` itself)."""
        return self.url.removesuffix("/realtime")

    async def next_session(self, timeout: float = 5.0) -> FakeSession:
        """The next connection not yet handed out by this method (the first call returns ``sessions[0]``)."""
        assert self._signal is not None, "call start() first"
        wanted = self._handed_out
        session = await self._signal.until(
            lambda: self.sessions[wanted] if len(self.sessions) > wanted else None,
            timeout,
            lambda: f"Realtime connection #{wanted + 1} (have {len(self.sessions)})",
        )
        self._handed_out += 1
        return session

    async def wait_accepted(self, count: int, timeout: float = 5.0) -> None:
        """Until ``count`` WebSocket connections have been accepted (fault modes included)."""
        assert self._signal is not None, "call start() first"
        await self._signal.until(
            lambda: self.accepted >= count, timeout, lambda: f"{count} accepted connections ({self.accepted})"
        )

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.reject_handshakes > 0:
            self.reject_handshakes -= 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service temporarily unavailable\n")
        problems, status, _ = check_handshake(request.path, request.headers, self.api_key)
        if problems:
            self.violations.append(f"[handshake {urlsplit(request.path).path}] " + "; ".join(problems))
            return connection.respond(status, "; ".join(problems) + "\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None and self._signal is not None
        _, _, dialect = check_handshake(ws.request.path, ws.request.headers, self.api_key)
        self.accepted += 1
        self._signal.fire()
        if self.close_after_accept > 0:
            self.close_after_accept -= 1
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()  # the client's set-up went through; then the server hangs up
            await asyncio.gather(ws.close(1000), _drain(ws))  # reading on, so the close handshake ends
            return
        if self.stall_after_accept > 0:
            self.stall_after_accept -= 1
            await _drain(ws)
            return
        session = FakeSession(self, ws, len(self.sessions), dialect)
        self.sessions.append(session)
        self._signal.fire()
        await session.run()
