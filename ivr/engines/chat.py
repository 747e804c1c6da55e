"""The Chat Completions audio engine: ``gpt-audio-1.5``, ``gpt-audio``, ``gpt-4o-audio-preview…`` on a call.

These models are not reached over the Realtime WebSocket but one HTTP request per response
(``POST /v1/chat/completions``, streamed as server-sent events). :class:`ChatEngine` hides that behind the
in-process model socket (:class:`ivr.engines.base.InProcessModel`), so the call — barge-in, marks, tools,
approvals, the call record — runs exactly as with Realtime:

- **Caller turns** are cut here by a local VAD (:class:`ivr.speech.vad.TurnDetector` over the 8 kHz μ-law
  the call appends). Speech start → ``input_audio_buffer.speech_started`` (the call barges in); speech end →
  ``speech_stopped`` + ``committed``, the turn becomes a WAV ``input_audio`` user message, and a response
  starts by itself, like Realtime's server VAD with ``create_response``.
- **Responses** stream ``client.chat.completions.create(..., modalities=["text", "audio"],
  audio={"voice", "format": "pcm16"}, stream=True)`` with the official ``openai`` client. Audio deltas
  (PCM16, 24 kHz) are converted to 8 kHz μ-law as they arrive and sent on at once; the transcript follows
  along; tool calls are assembled from their fragments and reported as ``function_call`` items when the
  stream ends, so the call runs them through its tool runtime and approval gate; the usage chunk becomes the
  response's Realtime-shaped usage.
- **Barge-in**: ``response.cancel`` cancels the response task, which closes the HTTP stream at once; no delta
  follows ``response.done`` (``cancelled``).
- **Errors** (HTTP status, connection, timeout, a stream the SDK rejects) become an ``error`` event and a
  ``failed`` response; the call goes on, and the next caller turn tries again.

The conversation kept between requests, and how it is bounded, is in :mod:`ivr.engines.chat_state`.

Caller turns are sent as 8 kHz WAV by default — the audio exactly as heard. Upsampling cannot add anything
above the phone band's 4 kHz, and the service decodes the WAV at whatever rate its header states, so 8 kHz
keeps requests a third of the size (16 KB/s of PCM instead of 48 KB/s at 24 kHz) and the first byte of the
answer sooner. ``wav_rate=16000`` or ``24000`` upsamples with soxr, should a model ever do better with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import openai
from httpx2 import Timeout

from ..audio.convert import OutboundConverter
from ..logs import redact
from ..realtime.connection import RealtimeConnectError
from ..settings import DEFAULT_OPENAI_BASE_URL
from .base import ClientEvent, InProcessModel
from .chat_state import (
    AssistantTurn,
    ChatConversation,
    StreamAssembler,
    chat_tools,
    turn_wav,
    usage_to_realtime,
)
from .wire import ResponseState

if TYPE_CHECKING:
    from ..call.session import CallSession
    from ..speech.vad import TurnDetector

__all__ = ["ChatEngine"]

_log = logging.getLogger("ivr.engines.chat")

#: Connect quickly or give up; between streamed bytes the model may think for a while.
DEFAULT_TIMEOUT = Timeout(20.0, connect=5.0)
#: One quick retry (the SDK backs off and honours ``retry-after``); a caller will not wait for more.
DEFAULT_MAX_RETRIES = 1


class ChatEngine(InProcessModel):
    """A Chat Completions audio model behind the Realtime socket surface the call speaks."""

    engine = "chat"

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str = DEFAULT_OPENAI_BASE_URL,
        voice: str = "marin",
        strict: bool = False,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float | Timeout = DEFAULT_TIMEOUT,
        wav_rate: int = 8000,
        max_turns: int = 24,
        audio_turns: int = 8,
        turn_detector: TurnDetector | None = None,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        """``strict`` makes the SDK validate every response and chunk against its types (tests use it)."""
        super().__init__(model=model, id_prefix="chat")
        if not api_key:
            raise RealtimeConnectError(
                f"the chat engine for {model} needs an OpenAI API key: set OPENAI_API_KEY "
                "(or use IVR_ENGINE=local for the offline engine)"
            )
        turn_wav(b"", wav_rate)  # checks the rate now, not on the first caller turn
        self.voice = voice
        self.base_url = base_url
        self.wav_rate = wav_rate
        self.log = log or _log
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
            _strict_response_validation=strict,
        )
        self.conversation = ChatConversation(max_turns=max_turns, audio_turns=audio_turns, clock=clock)
        if turn_detector is None:
            from ..speech.vad import TurnDetector

            turn_detector = TurnDetector()
        self.vad = turn_detector
        self.requests = 0
        self._turn_item: str | None = None
        self._streams: dict[str, StreamAssembler] = {}
        self._usage: dict[str, dict[str, Any]] = {}
        self._client_closed = False
        self._closing_here = False
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    def for_call(cls, call: CallSession) -> ChatEngine:
        """The engine for one call: its model and voice, the deployment's key and base URL."""
        return cls(
            model=call.model,
            api_key=call.settings.openai_api_key,
            base_url=call.settings.openai_base_url,
            voice=call.flow.model.voice,
            log=call.log,
        )

    def effective_session(self) -> dict[str, Any]:
        return self.writer.session(
            model=self.model, instructions=self.instructions, voice=self.voice, tools=self.tools
        )

    # ---- closing ----------------------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closing_here = True
        self.shut()
        await self._close_client()

    def on_closed(self) -> None:
        # ``transport.abort()`` ends up here without awaiting: close the HTTP pool in the background.
        if not self._client_closed and not self._closing_here:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing left to close it with
                self._closing = asyncio.get_running_loop().create_task(self._close_client())

    async def _close_client(self) -> None:
        if not self._client_closed:
            self._client_closed = True
            await self.client.close()

    # ---- caller audio -------------------------------------------------------------------------------------

    async def _dispatch(self, event: ClientEvent) -> None:
        if event.type == "input_audio_buffer.append":
            audio = event.data.get("audio")
            try:
                raw = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
            except ValueError:
                raw = None
            if raw is None:
                self.emit(
                    self.writer.error("invalid_value", "input_audio_buffer.append: 'audio' must be base64")
                )
                return
            await self._hear(raw)
            return
        if event.type == "conversation.item.truncate":
            item_id, end_ms = event.data.get("item_id"), event.data.get("audio_end_ms")
            if isinstance(item_id, str) and isinstance(end_ms, int):
                self.conversation.truncate(item_id, end_ms)
        await super()._dispatch(event)

    async def _hear(self, mulaw: bytes) -> None:
        from ..speech.vad import SpeechStarted, SpeechStopped

        for vad_event in self.vad.feed_mulaw(mulaw):
            if isinstance(vad_event, SpeechStarted):
                self._turn_item = self.writer.new_id("item")
                self.emit(self.writer.speech_started(self._turn_item, vad_event.at_ms))
            elif isinstance(vad_event, SpeechStopped):
                await self._end_turn(vad_event.at_ms, vad_event.audio)

    async def _end_turn(self, at_ms: int, pcm16_8k: bytes) -> None:
        """The caller stopped talking: commit the turn as a user message and answer it."""
        item_id, self._turn_item = self._turn_item or self.writer.new_id("item"), None
        previous = self.writer.last_item_id
        self.emit(self.writer.speech_stopped(item_id, at_ms), self.writer.committed(item_id))
        self.conversation.add_user_audio(turn_wav(pcm16_8k, self.wav_rate), len(pcm16_8k) / 16.0)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.emit(
            self.writer.event("conversation.item.added", previous_item_id=previous, item=item),
            self.writer.event("conversation.item.done", previous_item_id=previous, item=item),
        )
        if self.responding:  # the call normally cancelled it at speech start; make sure
            await self.cancel_response()
        self._respond(None)

    def on_buffer(self, kind: str) -> None:
        if kind == "input_audio_buffer.clear":
            self.vad.reset()
            self._turn_item = None

    # ---- conversation items -------------------------------------------------------------------------------

    def on_item(self, item: dict[str, Any]) -> None:
        problem = self.conversation.add_item(item)
        if problem is not None:
            self.emit(self.writer.error("invalid_value", f"conversation.item.create: {problem}"))

    # ---- responses ----------------------------------------------------------------------------------------

    def on_response_create(self, instructions: str | None) -> None:
        self._respond(instructions)

    def _respond(self, instructions: str | None) -> ResponseState:
        messages = self.conversation.messages(self.instructions, instructions)  # the conversation as of now
        request = self.build_request(messages)

        async def produce(state: ResponseState) -> None:
            await self._stream(state, request)

        return self.start_response(produce)

    def build_request(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one response."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "modalities": ["text", "audio"],
            "audio": {"voice": self.voice, "format": "pcm16"},
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        tools = chat_tools(self.tools)
        if tools:
            request["tools"] = tools
            choice = self.session.get("tool_choice")
            request["tool_choice"] = choice if choice in ("auto", "none", "required") else "auto"
        limit = self.session.get("max_output_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool):
            request["max_completion_tokens"] = limit
        return request

    async def _stream(self, state: ResponseState, request: dict[str, Any]) -> None:
        if not request["messages"]:
            message = "chat engine: nothing to respond to yet (no instructions and no conversation)"
            self._fail(state, "invalid_request_error", "empty_conversation", message)
            return
        assembler = StreamAssembler()
        self._streams[state.response_id] = assembler
        converter = OutboundConverter()
        self.requests += 1
        try:
            stream = await self.client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            self._fail(state, *describe_error(exc, self.base_url))
            return
        try:
            async for chunk in stream:
                out = assembler.feed(chunk)
                if out.transcript:
                    self._open_message(state)
                    self.emit(self.writer.transcript_delta(state, out.transcript))
                if out.audio:
                    mulaw = converter.convert(out.audio)
                    if mulaw:
                        self._open_message(state)
                        await self._send_audio(state, mulaw)
        except (openai.OpenAIError, ValueError) as exc:
            self._fail(state, *describe_error(exc, self.base_url))
            return
        finally:
            await stream.close()  # on cancel (barge-in) too: the connection is dropped, generation stops
        for call in assembler.tool_calls():
            self.end_speech(state)
            self.emit(*self.writer.function_call(state, call.call_id, call.name, call.arguments))
        if assembler.usage is not None:
            self._usage[state.response_id] = usage_to_realtime(assembler.usage)

    def _open_message(self, state: ResponseState) -> None:
        if state.item_id is None:
            self.emit(*self.writer.begin_message(state))

    def _fail(self, state: ResponseState, kind: str, code: str, message: str) -> None:
        """Report a failed request as the Realtime service would: ``error``, then ``response.done`` failed."""
        self.log.warning("chat completions request failed: %s", redact(message))
        self.emit(self.writer.error(code, message, kind))
        if state.item_id is not None:
            self.emit(*self.writer.end_message(state, "incomplete"))
        done = self.writer.response_done(state, "failed", self.usage(state))
        done["response"]["status_details"] = {
            "type": "failed",
            "error": {"type": kind, "code": code, "message": message},
        }
        self.emit(done)
        self.on_response_finished(state, "failed")

    def usage(self, state: ResponseState) -> dict[str, Any] | None:
        return self._usage.pop(state.response_id, None)

    def on_response_finished(self, state: ResponseState, status: str) -> None:
        """Remember the response for later requests (:mod:`ivr.engines.chat_state` says what is kept)."""
        assembler = self._streams.pop(state.response_id, None)
        self._usage.pop(state.response_id, None)
        item_id = next((o["id"] for o in state.output if o.get("type") == "message"), None)
        turn = AssistantTurn(item_id=item_id, transcript=state.transcript, audio_ms=state.audio_ms)
        if status == "completed":
            if assembler is not None:
                turn.audio_id, turn.expires_at = assembler.audio_id, assembler.expires_at
            turn.calls = [
                call
                for call in (assembler.tool_calls() if assembler is not None else [])
                if any(o.get("call_id") == call.call_id for o in state.output)
            ]
        else:
            # Cut short: kept as the text said so far (a later truncate may shorten it), never as audio.
            turn.interrupted = True
        self.conversation.add_assistant(turn)


def describe_error(exc: Exception, base_url: str) -> tuple[str, str, str]:
    """``(type, code, message)`` of a failed request, for the ``error`` event and the logs."""
    where = f"{base_url.rstrip('/')}/chat/completions"
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        detail = error.get("message") if isinstance(error.get("message"), str) else exc.message
        code = error.get("code") if isinstance(error.get("code"), str) else f"http_{exc.status_code}"
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        hint = {
            401: "check OPENAI_API_KEY",
            403: "the key may not have access to this model",
            404: "check the model name and IVR_OPENAI_BASE_URL",
            429: "rate limited or out of quota; the next caller turn tries again",
        }.get(exc.status_code, "the next caller turn tries again")
        return kind, code, f"chat completions: HTTP {exc.status_code} from {where}: {detail} ({hint})"
    if isinstance(exc, openai.APITimeoutError):
        return (
            "server_error",
            "timeout",
            f"chat completions: {where} timed out; the next caller turn tries again",
        )
    if isinstance(exc, openai.APIConnectionError):
        return (
            "server_error",
            "connection_error",
            f"chat completions: could not reach {where} ({exc.__cause__ or exc}); check IVR_OPENAI_BASE_URL "
            "and the network",
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return (
            "server_error",
            "invalid_response",
            f"chat completions: {where} sent a response that does not match the API's schema: {exc}",
        )
    return (
        "server_error",
        "stream_error",
        f"chat completions: the stream from {where} broke off: {type(exc).__name__}: {exc}",
    )
