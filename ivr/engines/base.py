"""The in-process model socket: what an engine looks like to :class:`ivr.call.session.CallSession`.

The call drives a model through a small surface — ``send(bytes)`` with a Realtime client event,
``async for raw in socket`` for server events, ``close()`` and ``transport.abort()`` — which
:class:`ivr.realtime.transport.RealtimeSocket` offers for the remote service. :class:`InProcessModel` offers
the same surface for a model that runs here: client events are parsed and handed to hooks, server events
(built by :class:`ivr.engines.wire.ServerEventWriter`) go through a queue the session reads. Engines work in
8 kHz μ-law (``audio/pcmu``) both ways, the phone's own format, so the call does no resampling for them.

Responses run as tasks: :meth:`InProcessModel.start_response` opens one, the engine's producer speaks and adds
function calls, and ``response.cancel`` (the call's barge-in) cancels the task and reports the response
``cancelled`` with what was said so far.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from .wire import ResponseState, ServerEventWriter

log = logging.getLogger("ivr.engines")

#: μ-law bytes per audio delta: 100 ms at 8 kHz (the Realtime service sends deltas of a similar size).
DELTA_BYTES = 800


@dataclass(frozen=True)
class ClientEvent:
    """One parsed client event: its type and its JSON object."""

    type: str
    data: dict[str, Any]


def parse_client_event(raw: bytes | str) -> ClientEvent | str:
    """Parse a client event; a string describing the problem when it is not one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if type(data) is not dict or type(data.get("type")) is not str:
        return "not a JSON object with a 'type' string"
    return ClientEvent(data["type"], data)


class _Transport:
    """Stands in for the TCP transport the call aborts when a close hangs."""

    def __init__(self, owner: InProcessModel) -> None:
        self._owner = owner

    def abort(self) -> None:
        self._owner.shut()


class InProcessModel:
    """Base class of the in-process engines. Subclasses implement the ``on_*`` hooks."""

    #: Shown in logs and the call record.
    engine = "in-process"

    def __init__(self, *, model: str, id_prefix: str = "local") -> None:
        self.model = model
        self.writer = ServerEventWriter(id_prefix)
        self.transport = _Transport(self)
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.response: ResponseState | None = None
        self._response_task: asyncio.Task[None] | None = None
        self.session: dict[str, Any] = {}
        self.instructions = ""
        self.tools: list[dict[str, Any]] = []

    # ---- the socket surface ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, data: bytes | str, text: bool | None = None) -> None:
        """Receive one client event from the call."""
        if self._closed:
            raise ConnectionClosedOK(Close(1000, "engine closed"), Close(1000, "engine closed"), True)
        event = parse_client_event(data)
        if isinstance(event, str):
            self.emit(self.writer.error("invalid_json", f"could not read a client event: {event}"))
            return
        try:
            await self._dispatch(event)
        except Exception as exc:  # an engine bug must not end the call: report it like the service would
            log.exception("engine %s failed on %s", self.engine, event.type)
            self.emit(
                self.writer.error("server_error", f"{self.engine}: {type(exc).__name__}", "server_error")
            )

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        item = await self._out.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.shut()

    def shut(self) -> None:
        """Stop everything now (idempotent): tasks cancelled, the reader sees the end of the stream."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._out.put_nowait(None)
        self.on_closed()

    # ---- helpers for subclasses ---------------------------------------------------------------------------

    def emit(self, *events: dict[str, Any]) -> None:
        if self._closed:
            return
        for event in events:
            self._out.put_nowait(orjson.dumps(event))

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.engine}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("engine task %s failed: %r", task.get_name(), exc, exc_info=exc)
            self.emit(
                self.writer.error("server_error", f"{self.engine}: {type(exc).__name__}", "server_error")
            )

    @property
    def responding(self) -> bool:
        return self.response is not None and not self.response.done

    def start_response(self, produce: Callable[[ResponseState], Awaitable[None]]) -> ResponseState:
        """Open a response and run ``produce`` in a task; ``response.done`` follows when it returns."""
        state = ResponseState(self.writer.new_id("resp"))
        self.response = state
        self.emit(self.writer.response_created(state))

        async def run() -> None:
            try:
                await produce(state)
            except asyncio.CancelledError:
                if not state.done:
                    self._finish_response(state, "cancelled")
                raise
            except Exception:
                if not state.done:
                    self._finish_response(state, "failed")
                raise
            if not state.done:
                self._finish_response(state, "completed")

        self._response_task = self.spawn(run(), "response")
        return state

    def _finish_response(self, state: ResponseState, status: str) -> None:
        if state.item_id is not None:
            self.emit(*self.writer.end_message(state, "completed" if status == "completed" else "incomplete"))
        self.emit(self.writer.response_done(state, status, self.usage(state)))
        self.on_response_finished(state, status)

    async def speak(
        self, state: ResponseState, text: str, chunks: Iterable[bytes] | AsyncIterator[bytes]
    ) -> None:
        """Say ``text`` as μ-law audio ``chunks`` in the response's (single) assistant audio item."""
        if state.item_id is None:
            self.emit(*self.writer.begin_message(state))
        if text:
            self.emit(self.writer.transcript_delta(state, text if not state.transcript else " " + text))
        if isinstance(chunks, AsyncIterator):
            async for chunk in chunks:
                await self._send_audio(state, chunk)
        else:
            for chunk in chunks:
                await self._send_audio(state, chunk)

    async def _send_audio(self, state: ResponseState, mulaw: bytes) -> None:
        for start in range(0, len(mulaw), DELTA_BYTES):
            piece = mulaw[start : start + DELTA_BYTES]
            self.emit(self.writer.audio_delta(state, base64.b64encode(piece).decode(), len(piece) / 8.0))
            await asyncio.sleep(0)  # let a barge-in's cancel through between deltas

    def end_speech(self, state: ResponseState) -> None:
        if state.item_id is not None:
            self.emit(*self.writer.end_message(state))

    def add_function_call(
        self, state: ResponseState, call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        self.end_speech(state)
        self.emit(*self.writer.function_call(state, call_id, name, orjson.dumps(arguments).decode()))

    # ---- dispatch -----------------------------------------------------------------------------------------

    async def _dispatch(self, event: ClientEvent) -> None:
        data = event.data
        if event.type == "input_audio_buffer.append":
            audio = data.get("audio")
            try:
                raw = base64.b64decode(audio, validate=True) if isinstance(audio, str) else None
            except ValueError:
                raw = None
            if raw is None:
                self.emit(
                    self.writer.error("invalid_value", "input_audio_buffer.append: 'audio' must be base64")
                )
                return
            self.on_audio(raw)
        elif event.type == "session.update":
            session = data.get("session")
            if isinstance(session, dict):
                self.instructions = session.get("instructions", self.instructions) or ""
                self.tools = session.get("tools", self.tools) or []
                self.session = session
            self.emit(self.writer.event("session.updated", session=self.effective_session()))
            self.on_session_update()
        elif event.type == "response.create":
            response = data.get("response")
            instructions = response.get("instructions") if isinstance(response, dict) else None
            if self.responding:
                self.emit(
                    self.writer.error(
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress.",
                    )
                )
                return
            self.on_response_create(instructions if isinstance(instructions, str) else None)
        elif event.type == "response.cancel":
            await self.cancel_response()
        elif event.type == "conversation.item.create":
            item = data.get("item")
            if isinstance(item, dict):
                self.on_item(item)
                if isinstance(item.get("id"), str):
                    self.emit(self.writer.item_added(item))
        elif event.type == "conversation.item.truncate":
            item_id, end_ms = data.get("item_id"), data.get("audio_end_ms")
            if isinstance(item_id, str) and isinstance(end_ms, int):
                self.emit(self.writer.truncated(item_id, end_ms))
        elif event.type in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
            self.on_buffer(event.type)

    async def cancel_response(self) -> None:
        task, state = self._response_task, self.response
        if task is None or state is None or state.done:
            self.emit(
                self.writer.error(
                    "response_cancel_not_active", "Cancellation failed: no active response found."
                )
            )
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    def effective_session(self) -> dict[str, Any]:
        return self.writer.session(
            model=self.model, instructions=self.instructions, voice="heart", tools=self.tools
        )

    async def open(self) -> InProcessModel:
        """Announce the session (``session.created``) and return self, like a socket that just connected."""
        self.emit(self.writer.event("session.created", session=self.effective_session()))
        return self

    # ---- hooks ------------------------------------------------------------------------------------------

    def on_audio(self, mulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law)."""

    def on_session_update(self) -> None:
        """Instructions or tools changed (a stage change)."""

    def on_response_create(self, instructions: str | None) -> None:
        """The call asks for a response (after tool results, for the greeting, the hold phrase…)."""
        self.start_response(self._empty_response)

    @staticmethod
    async def _empty_response(state: ResponseState) -> None:
        return None

    def on_item(self, item: dict[str, Any]) -> None:
        """A conversation item from the call: a function output, a system notice, typed user text."""

    def on_buffer(self, kind: str) -> None:
        """``input_audio_buffer.commit`` or ``.clear``."""

    def on_response_finished(self, state: ResponseState, status: str) -> None:
        """A response ended (``completed``, ``cancelled`` or ``failed``)."""

    def on_closed(self) -> None:
        """The call closed the engine."""

    def usage(self, state: ResponseState) -> dict[str, Any] | None:
        return None
