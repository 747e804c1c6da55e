"""A local, protocol-faithful stand-in for OpenAI Chat Completions with audio (``POST /v1/chat/completions``).

Why: the chat engine (``ivr/engines/chat.py``) must send requests the real service accepts and must read the
streams it really sends, without a network or a paid key. This fake checks every request the way the
service would — the bearer key, the JSON body against the ``openai`` SDK's own request types
(``CompletionCreateParamsStreaming``, strict, with the two pitfalls of PROTOCOLS.md §4.3 handled: lazy
iterables are materialised, and keys the TypedDicts silently drop are found by diffing), plus the rules the
types cannot say (stream with ``pcm16`` output, text+audio modalities, every ``input_audio`` a real WAV,
assistant audio ids that exist, each tool call answered by a tool message) — and answers a violation with
HTTP 400 and an OpenAI-style error body, *and* records it so the test fails. Every chunk it streams is
checked against ``ChatCompletionChunk`` (strict, unknown keys reported) before it is sent.

Replies are scripted with :class:`ChatReply`: transcript + audio (a tone or given 24 kHz PCM16), tool calls
with their arguments split over several deltas, a usage chunk, HTTP errors (429, 500…), a paced stream for
barge-in tests, and ``[DONE]``. The request check is pure (:func:`check_chat_request`); the server around it
is HTTP/1.1 over ``asyncio.start_server`` on 127.0.0.1 with chunked server-sent events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from openai.types.chat import ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from pydantic import TypeAdapter, ValidationError

from tests.support.fake_realtime import tone_pcm16
from tests.support.oracles import BUILTIN_VOICES, ProtocolViolation, find_extras

__all__ = [
    "ChatExchange",
    "ChatReply",
    "FakeChatServer",
    "RequestCheck",
    "WavInfo",
    "check_chat_request",
    "check_chunk",
    "reply_chunks",
    "sample_wav_b64",
]

_REQUEST = TypeAdapter(CompletionCreateParamsStreaming)
_CHUNK = TypeAdapter(ChatCompletionChunk)
#: pydantic's lazy iterator (what an ``Iterable[...]`` field validates to); pydantic_core does not export it.
ValidatorIterator = type(TypeAdapter(Iterable[int]).validate_python([]))
_PATH = "/v1/chat/completions"
_MAX_BODY = 32 << 20
_AUDIO_MODEL = re.compile(r"^(gpt-audio|gpt-4o-audio-preview|gpt-4o-mini-audio-preview)([.-].*)?$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Output audio of Chat Completions in ``pcm16``: 24 kHz mono 16-bit little-endian.
OUTPUT_RATE = 24000


# ---- the request check (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WavInfo:
    """One ``input_audio`` WAV as the fake decoded it."""

    message_index: int
    rate: int
    channels: int
    sample_width: int
    frames: int
    pcm: bytes

    @property
    def duration_ms(self) -> float:
        return self.frames * 1000.0 / self.rate


@dataclass
class RequestCheck:
    """The verdict on one request: ``problem`` is None when the service would accept it."""

    problem: str | None = None
    status: int = HTTPStatus.OK
    code: str | None = None
    param: str | None = None
    body: dict[str, Any] | None = None
    wavs: list[WavInfo] = field(default_factory=list)


def _reject(status: int, code: str, problem: str, param: str | None = None) -> RequestCheck:
    return RequestCheck(problem=problem, status=status, code=code, param=param)


def _materialise(value: Any, path: str) -> Any:
    """Consume every lazy ``Iterable`` pydantic left behind, so errors inside it surface (§4.3 pitfall 1)."""
    if isinstance(value, ValidatorIterator):
        try:
            items = list(value)
        except ValidationError as exc:
            raise ProtocolViolation(_explain(exc, path)) from None
        return [_materialise(v, f"{path}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, dict):
        return {k: _materialise(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_materialise(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _explain(exc: ValidationError, path: str) -> str:
    """Pydantic's errors, without the union members that were ruled out by their ``type``/``role``."""
    errors = exc.errors()
    ruled_out = [
        e["loc"][:-1]
        for e in errors
        if e["type"] == "literal_error" and e["loc"] and e["loc"][-1] in ("type", "role")
    ]
    kept = [e for e in errors if not any(e["loc"][: len(m)] == m for m in ruled_out)] or errors
    lines = []
    for e in kept[:6]:
        where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        lines.append(f"{where}: {e['msg']} (got {str(e.get('input'))[:60]!r})")
    return "; ".join(lines)


def _unknown_keys(sent: Any, kept: Any, path: str) -> list[str]:
    """Keys present in what was sent but dropped by the TypedDicts (§4.3 pitfall 2)."""
    out: list[str] = []
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key, value in sent.items():
            if key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += _unknown_keys(value, kept[key], f"{path}.{key}")
    elif isinstance(sent, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(sent, kept, strict=False)):
            out += _unknown_keys(a, b, f"{path}[{i}]")
    return out


def _decode_wav(data: str, where: str) -> tuple[int, int, int, int, bytes]:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation(f"{where}.data is not base64") from None
    try:
        with wave.open(io.BytesIO(raw), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            frames = wav.getnframes()
            pcm = wav.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise ProtocolViolation(f"{where}.data is not a WAV file the wave module can read: {exc}") from None
    if frames == 0:
        raise ProtocolViolation(f"{where}: the WAV file holds no audio")
    if len(pcm) != frames * channels * width:
        raise ProtocolViolation(f"{where}: WAV header says {frames} frames but the data is {len(pcm)} bytes")
    return rate, channels, width, frames, pcm


def _check_messages(
    messages: list[dict[str, Any]], audio_ids: Mapping[str, int], now: float
) -> list[WavInfo]:
    """The conversation rules the service enforces beyond the types."""
    if not messages:
        raise ProtocolViolation("messages: must not be empty")
    wavs: list[WavInfo] = []
    open_calls: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message["role"]
        if role == "tool":
            if message["tool_call_id"] not in open_calls:
                raise ProtocolViolation(
                    f"{where}: tool message for {message['tool_call_id']!r}, which is not a tool call of the "
                    "preceding assistant message (or was already answered)"
                )
            open_calls.remove(message["tool_call_id"])
            continue
        if open_calls:
            raise ProtocolViolation(
                f"{where}: an assistant message with 'tool_calls' must be followed by tool messages "
                f"answering each 'tool_call_id'; missing {open_calls}"
            )
        content = message.get("content")
        if role == "assistant":
            audio, calls = message.get("audio"), message.get("tool_calls")
            if content is None and audio is None and not calls:
                raise ProtocolViolation(f"{where}: assistant message needs content, audio or tool_calls")
            if audio is not None:
                expires = audio_ids.get(audio["id"])
                if expires is None:
                    raise ProtocolViolation(
                        f"{where}.audio.id {audio['id']!r} was never issued by this server"
                    )
                if expires <= now:
                    raise ProtocolViolation(f"{where}.audio.id {audio['id']!r} has expired")
            for call in calls or []:
                if not _TOOL_NAME.match(call["function"]["name"]):
                    raise ProtocolViolation(f"{where}: bad tool call name {call['function']['name']!r}")
                open_calls.append(call["id"])
        if isinstance(content, list):
            for part_index, part in enumerate(content):
                if part.get("type") != "input_audio":
                    continue
                if role != "user":
                    raise ProtocolViolation(f"{where}: input_audio is only allowed in user messages")
                at = f"{where}.content[{part_index}].input_audio"
                if part["input_audio"]["format"] != "wav":
                    raise ProtocolViolation(f"{at}.format: this fake only decodes wav (the engine sends wav)")
                rate, channels, width, frames, pcm = _decode_wav(part["input_audio"]["data"], at)
                wavs.append(WavInfo(index, rate, channels, width, frames, pcm))
        elif content is not None and not isinstance(content, str):
            raise ProtocolViolation(f"{where}.content: must be a string or a list of parts")
    if open_calls:
        raise ProtocolViolation(f"messages: tool calls {open_calls} are never answered by a tool message")
    return wavs


def _check_rules(body: dict[str, Any]) -> None:
    model = body["model"]
    if not _AUDIO_MODEL.match(model):
        raise ProtocolViolation(f"model {model!r} is not a Chat Completions audio model")
    modalities = body.get("modalities")
    if not modalities or "audio" not in modalities or "text" not in modalities:
        raise ProtocolViolation(f"modalities {modalities!r}: audio output needs ['text', 'audio']")
    audio = body.get("audio")
    if audio is None:
        raise ProtocolViolation("audio: required when modalities include 'audio'")
    if audio["format"] != "pcm16":
        raise ProtocolViolation(
            f"Unsupported value: 'audio.format' does not support {audio['format']!r} when stream=true. "
            "Supported values are: 'pcm16'."
        )
    voice = audio["voice"]
    if isinstance(voice, str) and voice not in BUILTIN_VOICES:
        raise ProtocolViolation(f"audio.voice {voice!r} is not a built-in voice ({sorted(BUILTIN_VOICES)})")
    tools = body.get("tools")
    if "tool_choice" in body and not tools:
        raise ProtocolViolation("tool_choice is only allowed when 'tools' are specified")
    names = []
    for index, tool in enumerate(tools or []):
        if tool["type"] != "function":
            raise ProtocolViolation(f"tools[{index}]: only function tools are expected from the engine")
        function = tool["function"]
        if not _TOOL_NAME.match(function["name"]):
            raise ProtocolViolation(
                f"tools[{index}].function.name {function['name']!r} must match [a-zA-Z0-9_-]{{1,64}}"
            )
        names.append(function["name"])
        parameters = function.get("parameters")
        if parameters is not None and parameters.get("type") != "object":
            raise ProtocolViolation(
                f"tools[{index}].function.parameters must be a JSON schema of type 'object'"
            )
    if len(set(names)) != len(names):
        raise ProtocolViolation(f"tools: duplicate function names {names}")
    options = body.get("stream_options")
    if options is not None and options.get("include_usage") is not True:
        raise ProtocolViolation(
            "stream_options.include_usage should be true (the engine needs the usage chunk)"
        )


def check_chat_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    api_key: str,
    audio_ids: Mapping[str, int] | None = None,
    now: float | None = None,
) -> RequestCheck:
    """How the service would answer one HTTP request (pure): accepted, or the problem and its status."""
    if target.split("?")[0] != _PATH:
        return _reject(
            HTTPStatus.NOT_FOUND, "unknown_url", f"{method} {target}: unknown URL (expected {_PATH})"
        )
    if method != "POST":
        return _reject(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"{method} {_PATH}: use POST")
    if headers.get("authorization") != f"Bearer {api_key}":
        return _reject(
            HTTPStatus.UNAUTHORIZED, "invalid_api_key", "Authorization: Bearer <key> missing or wrong"
        )
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _reject(HTTPStatus.BAD_REQUEST, "invalid_request", "Content-Type must be application/json")
    try:
        body = json.loads(raw_body)
    except ValueError as exc:
        return _reject(HTTPStatus.BAD_REQUEST, "invalid_json", f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _reject(HTTPStatus.BAD_REQUEST, "invalid_request", "body must be a JSON object")
    try:
        validated = _materialise(_REQUEST.validate_python(body, strict=True), "$")
        unknown = _unknown_keys(body, validated, "$")
        if unknown:
            raise ProtocolViolation(f"unknown keys (the API rejects them): {unknown}")
        _check_rules(body)
        wavs = _check_messages(body["messages"], audio_ids or {}, time.time() if now is None else now)
    except ValidationError as exc:
        return _reject(HTTPStatus.BAD_REQUEST, "invalid_request", _explain(exc, "$"))
    except ProtocolViolation as exc:
        return _reject(HTTPStatus.BAD_REQUEST, "invalid_request", str(exc))
    return RequestCheck(body=body, wavs=wavs)


def check_chunk(chunk: Mapping[str, Any]) -> None:
    """Strict check of one stream chunk the fake is about to send (raises :class:`ProtocolViolation`)."""
    try:
        model = _CHUNK.validate_python(chunk, strict=True)
    except ValidationError as exc:
        raise ProtocolViolation(f"chat.completion.chunk: {_explain(exc, '$')}") from None
    extras = find_extras(model)
    if extras:
        raise ProtocolViolation(f"chat.completion.chunk: unknown keys {extras}")


# ---- scripted replies (pure) -----------------------------------------------------------------------------


@dataclass
class ChatReply:
    """What the fake model does for one request."""

    transcript: str = "Okay."
    audio_ms: int = 400  # tone length, when ``pcm`` is not given
    tone_hz: float = 440.0
    pcm: bytes | None = None  # PCM16LE 24 kHz to send instead of the tone
    chunk_ms: int = 100  # audio per data chunk
    pace_s: float = 0.0  # pause before every chunk after the first (a slow stream)
    # (name, arguments as a dict or raw JSON text); arguments are split over several deltas
    tool_calls: Sequence[tuple[str, dict[str, Any] | str]] = ()
    usage: dict[str, Any] | None = None  # the usage chunk's "usage"; None → derived from the request
    status: int = 200  # anything else: an error response with this status and no stream
    error_code: str | None = None
    error_message: str = "The server had an error while processing your request."
    expires_in_s: int = 3600
    # SSE data lines sent verbatim after the first chunk, unchecked: a broken server, to test the client.
    raw_events: Sequence[str] = ()

    def audio(self) -> bytes:
        if self.pcm is not None:
            return self.pcm
        return (
            tone_pcm16(self.tone_hz, OUTPUT_RATE * self.audio_ms // 1000, OUTPUT_RATE).astype("<i2").tobytes()
        )


def sample_wav_b64(ms: int = 200, rate: int = 8000) -> str:
    """A small valid WAV (a 440 Hz tone), base64, for request examples."""
    pcm = tone_pcm16(440.0, rate * ms // 1000, rate).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return base64.b64encode(out.getvalue()).decode()


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def default_usage(
    request: Mapping[str, Any], wavs: Sequence[WavInfo], reply: ChatReply, audio_ms: float
) -> dict[str, Any]:
    """Plausible token counts: ~10 tokens/s of caller audio, ~20/s of output audio, ~4 characters/token."""
    audio_in = round(sum(w.duration_ms for w in wavs) / 100)
    text_in = max(1, len(json.dumps([m for m in request["messages"] if m["role"] != "user"])) // 4)
    audio_out = round(audio_ms / 50)
    text_out = max(1, len(reply.transcript) // 4) + sum(len(str(a)) // 4 + 5 for _, a in reply.tool_calls)
    return {
        "prompt_tokens": audio_in + text_in,
        "completion_tokens": audio_out + text_out,
        "total_tokens": audio_in + text_in + audio_out + text_out,
        "prompt_tokens_details": {
            "audio_tokens": audio_in,
            "cached_tokens": 0,
            "text_tokens": text_in,
            "image_tokens": 0,
        },
        "completion_tokens_details": {
            "audio_tokens": audio_out,
            "reasoning_tokens": 0,
            "text_tokens": text_out,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def reply_chunks(
    reply: ChatReply, *, model: str, audio_id: str, expires_at: int, usage: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The chunks of one streamed reply, in the order the service sends them (without ``[DONE]``)."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fakechat",
            "usage": None,
        }
        if delta is None:
            base["choices"] = []
        else:
            base["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return base

    chunks = [chunk({"role": "assistant", "content": None, "refusal": None})]
    pcm = reply.audio()
    step = OUTPUT_RATE * 2 * reply.chunk_ms // 1000
    pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    words = reply.transcript.split(" ") if reply.transcript else []
    words = [w if i == 0 else " " + w for i, w in enumerate(words)]
    if pieces or words:
        # The transcript runs a little ahead of the audio, as in recorded streams.
        for i in range(max(len(pieces), len(words))):
            if i < len(words):
                chunks.append(chunk({"audio": {"id": audio_id, "transcript": words[i]}}))
            if i < len(pieces):
                data = base64.b64encode(pieces[i]).decode()
                chunks.append(chunk({"audio": {"id": audio_id, "data": data}}))
        chunks.append(chunk({"audio": {"expires_at": expires_at}}))
    for index, (name, arguments) in enumerate(reply.tool_calls):
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        first = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        chunks.append(chunk({"tool_calls": [first]}))
        for piece in _split(text, 3):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if usage is not None:
        last = chunk(None)
        last["usage"] = usage
        chunks.append(last)
    return chunks


def error_body(status: int, code: str | None, message: str, param: str | None = None) -> dict[str, Any]:
    """An error body shaped like OpenAI's (the SDK puts it on ``APIStatusError.body``)."""
    kind = {
        HTTPStatus.UNAUTHORIZED: "invalid_request_error",
        HTTPStatus.TOO_MANY_REQUESTS: "requests",
    }.get(HTTPStatus(status), "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---- the server (asyncio shell) --------------------------------------------------------------------------


@dataclass
class ChatExchange:
    """One request and what became of its stream."""

    index: int
    headers: dict[str, str]
    body: dict[str, Any]
    wavs: list[WavInfo]
    status: int = 200
    chunks_sent: int = 0
    audio_bytes_sent: int = 0
    done_sent: bool = False  # the stream ended with [DONE]
    closed_by_client: bool = False  # the client dropped the connection mid-stream
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]


class FakeChatServer:
    """``POST /v1/chat/completions`` on http://127.0.0.1:PORT/v1, checking requests and scripted replies."""

    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.base_url = ""
        self.replies: deque[ChatReply] = deque()
        self.default_reply = ChatReply()
        self.exchanges: list[ChatExchange] = []
        self.violations: list[str] = []
        self.audio_ids: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # the connection's reader sees the end and its task returns by itself
        pending = list(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeChatServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def script(self, *replies: ChatReply) -> None:
        """Queue replies for the next requests (then ``default_reply``)."""
        self.replies.extend(replies)

    async def wait_exchange(self, count: int = 1, timeout: float = 5.0) -> ChatExchange:
        """The ``count``-th request (1-based), once it has arrived."""
        await self._wait(lambda: len(self.exchanges) >= count, timeout, f"{count} request(s)")
        return self.exchanges[count - 1]

    async def wait_ended(self, exchange: ChatExchange, timeout: float = 5.0) -> ChatExchange:
        await asyncio.wait_for(exchange.ended.wait(), timeout)
        return exchange

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"fake chat: timed out after {timeout}s waiting for {what}; got {len(self.exchanges)} "
                f"request(s), violations {self.violations}"
            ) from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- HTTP/1.1 ---------------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader, writer)
                if request is None:
                    return
                method, target, headers, body = request
                keep = await self._answer(reader, writer, method, target, headers, body)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.violations.append(f"HTTP: malformed request line {lines[0]!r}")
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.violations.append("HTTP: chunked request body (the SDK sends Content-Length)")
            return None
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= _MAX_BODY:
            self.violations.append(f"HTTP: Content-Length {length} out of range")
            return None
        body = await reader.readexactly(length) if length else b""
        return parts[0], parts[1], headers, body

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: dict[str, str],
        raw: bytes,
    ) -> bool:
        verdict = check_chat_request(
            method, target, headers, raw, api_key=self.api_key, audio_ids=self.audio_ids
        )
        if verdict.problem is not None:
            self.violations.append(f"{method} {target}: {verdict.problem}")
            self._notify()
            body = error_body(verdict.status, verdict.code, verdict.problem, verdict.param)
            await self._write_json(writer, verdict.status, body)
            return True
        assert verdict.body is not None
        reply = self.replies.popleft() if self.replies else self.default_reply
        exchange = ChatExchange(
            len(self.exchanges) + 1, headers, verdict.body, verdict.wavs, status=reply.status
        )
        self.exchanges.append(exchange)
        self._notify()
        try:
            if reply.status != HTTPStatus.OK:
                body = error_body(reply.status, reply.error_code, reply.error_message)
                await self._write_json(writer, reply.status, body)
                return True
            return await self._stream(reader, writer, exchange, reply)
        finally:
            exchange.ended.set()
            self._notify()

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: ChatExchange,
        reply: ChatReply,
    ) -> bool:
        audio_id = f"audio_{uuid.uuid4().hex[:24]}"
        expires_at = int(time.time()) + reply.expires_in_s
        pcm = reply.audio()
        usage = (
            reply.usage
            if reply.usage is not None
            else default_usage(exchange.body, exchange.wavs, reply, len(pcm) / (OUTPUT_RATE * 2 / 1000))
        )
        chunks = reply_chunks(
            reply, model=exchange.body["model"], audio_id=audio_id, expires_at=expires_at, usage=usage
        )
        for chunk in chunks:
            try:
                check_chunk(chunk)
            except ProtocolViolation as exc:  # a bug in the fake itself
                self.violations.append(f"fake chat sent a bad chunk: {exc}")
                raise
        events: list[str] = [json.dumps(chunk) for chunk in chunks]
        if reply.raw_events:
            events = [events[0], *reply.raw_events]
        if pcm:
            self.audio_ids[audio_id] = expires_at
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/event-stream; charset=utf-8\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Cache-Control: no-cache\r\n"
            f"x-request-id: req_{uuid.uuid4().hex[:24]}\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        writer.write(head.encode("latin-1"))
        gone = asyncio.ensure_future(reader.read(1))  # b"" once the client closes the connection
        try:
            for index, event in enumerate(events):
                if index and reply.pace_s:
                    await asyncio.wait({gone}, timeout=reply.pace_s)
                if gone.done():
                    exchange.closed_by_client = True
                    return False
                await self._write_event(writer, event)
                exchange.chunks_sent += 1
                if index < len(chunks) and not reply.raw_events:
                    for choice in chunks[index]["choices"]:
                        data = (choice["delta"].get("audio") or {}).get("data")
                        if data:
                            exchange.audio_bytes_sent += len(base64.b64decode(data))
            # Stop watching before the last bytes: the client may send its next request right after them.
            await self._stop_watching(gone)
            if gone.done() and not gone.cancelled():
                exchange.closed_by_client = True
                return False
            await self._write_event(writer, "[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            exchange.done_sent = True
            return True
        except ConnectionError:
            exchange.closed_by_client = True
            return False
        finally:
            if not gone.done():
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)

    async def _stop_watching(self, gone: asyncio.Future[bytes]) -> None:
        if not gone.done():
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
        elif gone.exception() is None and gone.result():
            self.violations.append("HTTP: the client sent bytes while a response was streaming")

    @staticmethod
    async def _write_event(writer: asyncio.StreamWriter, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        writer.write(f"{len(payload):x}\r\n".encode("latin-1") + payload + b"\r\n")
        await writer.drain()

    @staticmethod
    async def _write_json(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            f"x-request-id: req_{uuid.uuid4().hex[:24]}",
            "Connection: keep-alive",
        ]
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            head += ["retry-after: 1", "retry-after-ms: 20"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        await writer.drain()
