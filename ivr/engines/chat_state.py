"""The sans-I/O half of the Chat Completions engine: the conversation it resends, and reading a stream.

Chat Completions is stateless: every response is one ``POST /v1/chat/completions`` carrying the whole
conversation. :class:`ChatConversation` keeps that conversation as the call builds it — caller turns as WAV
audio, the agent's turns, tool calls with their results, system notes — and turns it into the ``messages``
list of the next request (:meth:`ChatConversation.messages`). :class:`StreamAssembler` reads the streamed
``ChatCompletionChunk`` objects of one response: audio and transcript as they arrive, tool calls assembled
from their argument fragments, the audio id for later turns, and the token usage.

Bounds, so a long call does not send ever larger requests: only the last ``max_turns`` caller turns (and
whatever happened after the first of them) are kept; only the last ``audio_turns`` caller turns keep their
audio (older ones become a short text note), and only agent turns inside that window are referenced by audio
id (older ones, and any whose audio id is about to expire, are sent as their transcript text).

What the caller heard: an agent turn the caller cut short (``conversation.item.truncate`` at
``audio_end_ms``) is resent as text — the words of its transcript in proportion to the audio heard, followed
by "…" — never by audio id, which would carry all of it. A response cancelled (or failed) mid-stream is kept
the same way: the words received so far, shortened in proportion if it was also truncated. A turn of which
nothing was heard and which made no tool call is left out entirely.

Nothing here does I/O; the engine (:mod:`ivr.engines.chat`) owns the HTTP client and the clock.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import wave
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "OLD_AUDIO_NOTE",
    "PENDING_OUTPUT",
    "AssistantTurn",
    "ChatConversation",
    "ChunkOutput",
    "StreamAssembler",
    "ToolCall",
    "chat_tools",
    "turn_wav",
    "usage_to_realtime",
    "wav_bytes",
]

#: Sent instead of a caller turn whose audio is no longer kept (outside the ``audio_turns`` window).
OLD_AUDIO_NOTE = "(The caller spoke here; that recording is no longer kept.)"
#: Sent as the result of a tool call whose output has not arrived yet (the API needs one per call).
PENDING_OUTPUT = '{"status": "pending", "message": "The result is not available yet."}'
#: An audio id this close to its expiry is not used any more (the request might arrive after it).
AUDIO_ID_MARGIN_S = 60.0
#: Rates a caller turn's WAV may be sent at (8 kHz as heard, or upsampled).
WAV_RATES = (8000, 16000, 24000)


# ---- small conversions -----------------------------------------------------------------------------------


def wav_bytes(pcm16le: bytes, rate: int) -> bytes:
    """A mono 16-bit PCM WAV file holding ``pcm16le`` at ``rate`` Hz."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16le)
    return out.getvalue()


def turn_wav(pcm16_8k: bytes, rate: int = 8000) -> bytes:
    """A caller turn (8 kHz PCM16LE) as a WAV file at ``rate`` Hz (upsampled with soxr when above 8 kHz)."""
    if rate not in WAV_RATES:
        raise ValueError(f"WAV rate {rate} Hz is not supported; use one of {', '.join(map(str, WAV_RATES))}")
    if rate == 8000:
        return wav_bytes(pcm16_8k, 8000)
    import soxr

    samples = np.frombuffer(pcm16_8k[: len(pcm16_8k) & ~1], dtype="<i2")
    up = soxr.resample(samples, 8000, rate, quality="HQ")
    return wav_bytes(np.asarray(up, dtype="<i2").tobytes(), rate)


def chat_tools(tools: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Realtime function tools (``{type, name, description, parameters}``) in Chat Completions form."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        if tool.get("type", "function") != "function" or not isinstance(tool.get("name"), str):
            continue
        function: dict[str, Any] = {"name": tool["name"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("parameters"), dict):
            function["parameters"] = tool["parameters"]
        out.append({"type": "function", "function": function})
    return out


def _count(details: Any, name: str) -> int | None:
    value = getattr(details, name, None) if details is not None else None
    return value if isinstance(value, int) else None


def usage_to_realtime(usage: Any) -> dict[str, Any]:
    """A Chat ``CompletionUsage`` as Realtime usage (what the call record and the cost estimate read).

    Text counts the API leaves out are derived (prompt − audio, completion − audio). Chat Completions does
    not say which modality a cached token was, so cached tokens are split in proportion to the input.
    """
    prompt, completion = int(usage.prompt_tokens), int(usage.completion_tokens)
    pd, cd = usage.prompt_tokens_details, usage.completion_tokens_details
    audio_in = _count(pd, "audio_tokens") or 0
    text_in = _count(pd, "text_tokens")
    text_in = max(prompt - audio_in, 0) if text_in is None else text_in
    cached = _count(pd, "cached_tokens") or 0
    cached_audio = round(cached * audio_in / prompt) if prompt else 0
    audio_out = _count(cd, "audio_tokens") or 0
    text_out = _count(cd, "text_tokens")
    text_out = max(completion - audio_out, 0) if text_out is None else text_out
    return {
        "total_tokens": int(usage.total_tokens),
        "input_tokens": prompt,
        "output_tokens": completion,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "cached_tokens": cached,
            "cached_tokens_details": {
                "text_tokens": cached - cached_audio,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def heard_words(transcript: str, fraction: float) -> str:
    """The first ``fraction`` of the words of ``transcript`` (what the caller heard of it)."""
    words = transcript.split()
    keep = round(len(words) * min(max(fraction, 0.0), 1.0))
    return " ".join(words[:keep])


# ---- the conversation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One function call the model made; ``arguments`` is its JSON text exactly as generated."""

    call_id: str
    name: str
    arguments: str


@dataclass
class UserTurn:
    """A caller turn: a base64 WAV (``audio_ms`` long), or text (keypad news, replayed transcripts)."""

    wav_b64: str | None = None
    audio_ms: float = 0.0
    text: str | None = None


@dataclass
class SystemNote:
    """News for the model that did not come from the caller (an operator's decision, a replayed note)."""

    text: str


@dataclass
class AssistantTurn:
    """One response of the agent: what it said, how it can be referred to later, and its tool calls."""

    item_id: str | None = None
    transcript: str = ""
    audio_id: str | None = None
    expires_at: int | None = None
    audio_ms: float = 0.0
    #: Milliseconds the caller heard, when less than all of it (a truncate, or a cancelled response).
    heard_ms: float | None = None
    #: The response was cancelled or failed mid-stream.
    interrupted: bool = False
    calls: list[ToolCall] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def cut_short(self) -> bool:
        """The caller did not hear all of it."""
        truncated = self.heard_ms is not None and self.heard_ms < self.audio_ms - 0.5
        return self.interrupted or truncated

    @property
    def heard_fraction(self) -> float:
        if self.heard_ms is None or self.audio_ms <= 0:
            return 1.0
        return min(self.heard_ms / self.audio_ms, 1.0)


Entry = UserTurn | SystemNote | AssistantTurn


class ChatConversation:
    """The conversation of one call, in the order it happened, and its rendering as Chat ``messages``."""

    def __init__(
        self,
        *,
        max_turns: int = 24,
        audio_turns: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_turns < 1 or audio_turns < 0:
            raise ValueError(f"max_turns={max_turns} must be >= 1 and audio_turns={audio_turns} >= 0")
        self.max_turns = max_turns
        self.audio_turns = audio_turns
        self._clock = clock
        self.entries: list[Entry] = []

    # ---- building --------------------------------------------------------------------------------------

    def add_user_audio(self, wav: bytes, audio_ms: float) -> None:
        self.entries.append(UserTurn(wav_b64=base64.b64encode(wav).decode(), audio_ms=audio_ms))
        self._trim()

    def add_user_text(self, text: str) -> None:
        self.entries.append(UserTurn(text=text))
        self._trim()

    def add_system(self, text: str) -> None:
        self.entries.append(SystemNote(text))

    def add_assistant(self, turn: AssistantTurn) -> None:
        self.entries.append(turn)

    def add_function_call(self, call: ToolCall) -> None:
        """A past call replayed as an item: it joins the agent turn just before it, if that has no results."""
        last = self.entries[-1] if self.entries else None
        if isinstance(last, AssistantTurn) and not last.outputs:
            last.calls.append(call)
        else:
            self.entries.append(AssistantTurn(calls=[call]))

    def add_function_output(self, call_id: str, output: str) -> bool:
        """Attach a tool result to its call; False when no call has that id (then it becomes a note)."""
        for entry in reversed(self.entries):
            if isinstance(entry, AssistantTurn) and any(c.call_id == call_id for c in entry.calls):
                entry.outputs[call_id] = output
                return True
        self.add_system(f"Result of an earlier tool call ({call_id}): {output}")
        return False

    def truncate(self, item_id: str, audio_end_ms: int) -> bool:
        """The caller heard only ``audio_end_ms`` of the agent's item ``item_id``."""
        for entry in reversed(self.entries):
            if isinstance(entry, AssistantTurn) and entry.item_id == item_id:
                entry.heard_ms = float(min(audio_end_ms, entry.audio_ms))
                return True
        return False

    def add_item(self, item: Mapping[str, Any]) -> str | None:
        """A Realtime conversation item from the call (``conversation.item.create``).

        Returns None when it was taken, else what was wrong with it (for an ``error`` event).
        """
        kind = item.get("type")
        if kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                return "function_call_output needs string 'call_id' and 'output'"
            self.add_function_output(call_id, output)
            return None
        if kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            if not all(isinstance(v, str) for v in (call_id, name, arguments)):
                return "function_call needs string 'call_id', 'name' and 'arguments'"
            self.add_function_call(ToolCall(str(call_id), str(name), str(arguments)))
            return None
        if kind != "message":
            return f"conversation item type {kind!r} is not supported by the chat engine"
        role, content = item.get("role"), item.get("content")
        if not isinstance(content, list):
            return "message item needs a 'content' list"
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("input_text", "output_text", "text")
            and isinstance(part.get("text"), str)
        ]
        if len(texts) != len(content) or not texts:
            return f"{role} message: only text content is supported by the chat engine"
        text = "\n".join(texts)
        if role == "user":
            self.add_user_text(text)
        elif role == "system":
            self.add_system(text)
        elif role == "assistant":
            self.add_assistant(AssistantTurn(transcript=text))
        else:
            return f"message role {role!r} is not supported"
        return None

    def _trim(self) -> None:
        """Keep the last ``max_turns`` caller turns and what followed the first of them."""
        starts = [i for i, e in enumerate(self.entries) if isinstance(e, UserTurn)]
        if len(starts) > self.max_turns:
            del self.entries[: starts[len(starts) - self.max_turns]]

    # ---- rendering -------------------------------------------------------------------------------------

    def messages(self, instructions: str, extra_instructions: str | None = None) -> list[dict[str, Any]]:
        """The ``messages`` of the next request: instructions, the conversation, this response's own note."""
        out: list[dict[str, Any]] = []
        if instructions:
            out.append({"role": "system", "content": instructions})
        users = [i for i, e in enumerate(self.entries) if isinstance(e, UserTurn)]
        audio_from = users[-self.audio_turns] if 0 < self.audio_turns <= len(users) else 0
        if self.audio_turns == 0:
            audio_from = len(self.entries)
        now = self._clock()
        for index, entry in enumerate(self.entries):
            recent = index >= audio_from
            if isinstance(entry, UserTurn):
                out.append(self._user(entry, recent))
            elif isinstance(entry, SystemNote):
                out.append({"role": "system", "content": entry.text})
            else:
                out.extend(self._assistant(entry, recent, now))
        if extra_instructions:
            out.append({"role": "system", "content": extra_instructions})
        return out

    @staticmethod
    def _user(entry: UserTurn, recent: bool) -> dict[str, Any]:
        if entry.wav_b64 is None:
            return {"role": "user", "content": entry.text or ""}
        if not recent:
            return {"role": "user", "content": OLD_AUDIO_NOTE}
        part = {"type": "input_audio", "input_audio": {"data": entry.wav_b64, "format": "wav"}}
        return {"role": "user", "content": [part]}

    @staticmethod
    def _assistant(entry: AssistantTurn, recent: bool, now: float) -> list[dict[str, Any]]:
        message: dict[str, Any] = {"role": "assistant"}
        if entry.cut_short:
            words = heard_words(entry.transcript, entry.heard_fraction)
            if words:
                message["content"] = words + "…"
        elif (
            recent
            and entry.audio_id is not None
            and (entry.expires_at is None or entry.expires_at - AUDIO_ID_MARGIN_S > now)
        ):
            message["audio"] = {"id": entry.audio_id}
        elif entry.transcript:
            message["content"] = entry.transcript
        if entry.calls:
            message["tool_calls"] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in entry.calls
            ]
        if len(message) == 1:
            return []  # nothing said that was heard, nothing done
        results = [
            {
                "role": "tool",
                "tool_call_id": c.call_id,
                "content": entry.outputs.get(c.call_id, PENDING_OUTPUT),
            }
            for c in entry.calls
        ]
        return [message, *results]


# ---- reading a stream ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkOutput:
    """What one chunk adds: model audio (PCM16LE, 24 kHz) and transcript text."""

    audio: bytes = b""
    transcript: str = ""


@dataclass
class _PartialCall:
    call_id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Reads the ``ChatCompletionChunk`` objects of one streamed response (choice 0)."""

    def __init__(self) -> None:
        self.audio_id: str | None = None
        self.expires_at: int | None = None
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.audio_bytes = 0
        self.chunks = 0
        self._calls: dict[int, _PartialCall] = {}

    def feed(self, chunk: Any) -> ChunkOutput:
        """Take one chunk; raises ValueError when its audio is not base64."""
        self.chunks += 1
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        audio, transcript = b"", ""
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.audio is not None:
                a = delta.audio
                if a.id:
                    self.audio_id = a.id
                if a.expires_at is not None:
                    self.expires_at = a.expires_at
                if a.transcript:
                    transcript += a.transcript
                if a.data:
                    try:
                        audio += base64.b64decode(a.data, validate=True)
                    except (binascii.Error, ValueError):
                        raise ValueError(f"chunk {self.chunks}: delta.audio.data is not base64") from None
            if delta.content:  # a reply in plain text (the caller cannot hear it, but it is logged)
                transcript += delta.content
            for tc in delta.tool_calls or ():
                partial = self._calls.setdefault(tc.index, _PartialCall())
                if tc.id:
                    partial.call_id = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        partial.name += tc.function.name
                    if tc.function.arguments:
                        partial.arguments.append(tc.function.arguments)
        self.audio_bytes += len(audio)
        return ChunkOutput(audio, transcript)

    def tool_calls(self) -> list[ToolCall]:
        """The finished tool calls, in index order (a call without an id gets one made up)."""
        calls: list[ToolCall] = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.name:
                continue
            call_id = partial.call_id or f"call_local{index}"
            calls.append(ToolCall(call_id, partial.name, "".join(partial.arguments)))
        return calls
