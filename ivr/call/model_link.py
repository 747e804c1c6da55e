"""A call's link to its model: open, configure, read, reconnect with replay, roll over, fall back.

One :class:`ModelLink` per call, owned by :class:`~ivr.call.session.CallSession`. It opens the model socket
(OpenAI Realtime, or an in-process engine from :mod:`ivr.engines`) and configures it; after an unexpected
close, or a roll-over before the provider's session cap, it opens a new one and replays the conversation so
far (:attr:`ModelLink.history`). A model that cannot be reached is retried with backoff, then the call either
switches to the local engine (a flow's ``model.fallback: local``) or ends with an apology. Caller audio that
arrives while no socket is open is buffered (bounded) and flushed to the next one.

It also keeps the state of the model's response (in flight, being cancelled, wanted next): everything that
asks the model to speak goes through :meth:`ModelLink.request_response`, so two responses never overlap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from ..audio.convert import InboundConverter
from ..engines.base import InProcessModel
from ..engines.factory import open_engine
from ..flows import Flow
from ..flows.state import FlowState
from ..logs import redact
from ..realtime import events as ev
from ..realtime.connection import (
    Backoff,
    RealtimeConnectError,
    open_realtime,
    realtime_headers,
    realtime_ws_url,
)
from ..realtime.dialect import ClientEvents, SessionConfig, TurnDetection
from ..realtime.transport import RealtimeSocket
from ..telephony import media_stream as tw
from ..telephony.rest import TwilioRestError
from ..telephony.twiml import say_and_hang_up
from .notices import say_line

if TYPE_CHECKING:
    from .session import CallSession

#: Caller audio kept while the model socket is being replaced (then flushed to the new socket).
_MAX_BUFFERED_FRAMES = 150  # 3 s at 20 ms
_APOLOGY = "Sorry, we are having technical difficulties. Please call again later. Goodbye."
#: Said when a call switches to the local engine (a flow's ``model.fallback: local``).
FALLBACK_NOTICE = "Sorry about the wait. I'm switching you to our automated assistant."
#: With a fallback, a call that never reached its model switches after this many failed attempts.
FALLBACK_AFTER_ATTEMPTS = 2


def session_config(flow: Flow, state: FlowState) -> SessionConfig:
    """The model session for the flow's current stage: instructions, voice, turn detection, tools…"""
    m = flow.model
    td = None
    if m.turn_detection is not None and m.turn_detection.type != "none":
        t = m.turn_detection
        td = TurnDetection(
            type=t.type,
            threshold=getattr(t, "threshold", None),
            prefix_padding_ms=getattr(t, "prefix_padding_ms", None),
            silence_duration_ms=getattr(t, "silence_duration_ms", None),
            eagerness=getattr(t, "eagerness", None),
        )
    tr = m.transcription
    return SessionConfig(
        instructions=state.instructions(),
        voice=m.voice,
        speed=m.speed,
        audio=m.audio,
        turn_detection=td,
        transcription_model=tr.model if tr else None,
        transcription_language=tr.language if tr else None,
        tools=tuple(state.tools()),
        max_output_tokens=m.max_output_tokens,
        model=None,
    )


def _replay_event(client: ClientEvents, entry: tuple[str, ...]) -> bytes:
    kind = entry[0]
    if kind == "user":
        return client.user_text(entry[1])
    if kind == "assistant":
        return client.assistant_text(entry[1])
    if kind == "system":
        return client.system_text(entry[1])
    if kind == "call":
        return client.function_call_item(entry[1], entry[2], entry[3])
    return client.function_output(entry[1], entry[2])


class ModelLink:
    """The model socket of one call, kept alive for the whole call (see the module docstring)."""

    def __init__(self, call: CallSession) -> None:
        self.call = call
        self.client = ClientEvents(call.dialect)
        self.parser = ev.ServerEventParser(call.dialect)
        self.ws: RealtimeSocket | InProcessModel | None = None
        self.connected = asyncio.Event()
        #: Caller μ-law → the model's PCM16 (None when the model takes the phone's μ-law as it is).
        self.inbound = InboundConverter() if call.audio_mode == "pcm" else None
        self._buffer: deque[str] = deque(maxlen=_MAX_BUFFERED_FRAMES)
        #: Conversation so far, replayed into a new model session after a reconnect or roll-over.
        self.history: list[tuple[str, ...]] = []

        self.response_in_flight = False
        self.current_response: str | None = None
        self.cancel_sent = False
        self.need_response = False
        #: True once the call switched to the local engine.
        self.fell_back = False
        self._rollover_due = False
        self._rolling = False
        self._ever_connected = False
        self._fallback_announced = False

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        # On a closed socket the reader notices and reconnects; history replays what mattered.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data, text=True)

    async def request_response(self, instructions: str | None = None) -> None:
        """Ask the model to speak now, or as soon as the response in flight is done."""
        if self.response_in_flight or self.ws is None:
            self.need_response = True
            return
        self.need_response = False
        self.response_in_flight = True
        await self.send(self.client.response_create(instructions=instructions))

    def response_created(self, response_id: str | None) -> None:
        self.response_in_flight = True
        self.current_response = response_id
        self.cancel_sent = False

    def response_done(self) -> None:
        """The response ended: a roll-over that waited for it may go ahead."""
        self.response_in_flight = False
        if self._rollover_due:
            self.call.spawn(self._rollover(), "rollover")

    async def on_caller_audio(self, payload: str) -> None:
        """One frame of caller audio (Twilio's base64 μ-law): to the model, or buffered while it has none."""
        raw = tw.decode_payload(payload)
        if raw is None or not raw:
            self.call.record.count("malformed_twilio")
            self.call.log.warning("ignored a media message whose payload is not base64 audio")
            return
        b64 = base64.b64encode(self.inbound.convert(raw)).decode() if self.inbound is not None else payload
        if self.ws is None or not self.connected.is_set():
            self._buffer.append(b64)
            return
        await self.send(self.client.append_audio(b64))

    async def _flush_buffer(self) -> None:
        while self._buffer and self.ws is not None:
            await self.send(self.client.append_audio(self._buffer.popleft()))

    # ------------------------------------------------------------------ the connection

    async def run(self) -> None:
        """Connect, read events, reconnect on unexpected close; give up politely after bounded retries."""
        call = self.call
        replay = planned = False  # planned: the last socket was retired on purpose (a roll-over)
        backoff = Backoff(max_attempts=call.settings.model_connect_attempts)
        failures = 0
        while not call.ended.is_set():
            try:
                ws = await self._open(replay=replay)
            except RealtimeConnectError as exc:
                call.record.count("model_connect_failures")
                failures += 1
                attempts = call.settings.model_connect_attempts
                if self._can_fall_back and not self._ever_connected:
                    attempts = min(attempts, FALLBACK_AFTER_ATTEMPTS)  # the caller is waiting in silence
                delay = backoff.next_delay() if failures < attempts else None
                call.log.warning("model connection failed: %s", exc)
                if delay is None:
                    if self._can_fall_back:
                        await self._fall_back(str(exc))
                        replay = self._ever_connected
                        continue
                    await self._give_up(str(exc))
                    return
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            failures = 0
            self.ws = ws
            if self.fell_back and not self._fallback_announced:
                self._fallback_announced = True
                self.connected.set()
                await self._flush_buffer()
                await self.request_response(say_line(FALLBACK_NOTICE))
                if replay:
                    await call.audio.new_session()
            elif replay:
                await call.audio.new_session()
                self.response_in_flight = False
                self.current_response = None
                if planned:  # counted in model_rollovers when it was retired
                    call.feed.emit("model.rolled_over")
                    call.log.info("model session rolled over; replayed %d history items", len(self.history))
                else:
                    call.record.count("model_reconnects")
                    call.meter.reconnected()
                    call.feed.emit("model.reconnected")
                    call.log.info(
                        "model session re-established; replayed %d history items", len(self.history)
                    )
            else:
                call.log.info("model connected (%s)", call.dialect)
                self._ever_connected = True
                greeting = call.flow.render(call.flow.greeting, call.context) if call.flow.greeting else ""
                if greeting:
                    await self.send(
                        self.client.response_create(
                            instructions=f'Greet the caller now by saying exactly: "{greeting}"'
                        )
                    )
                    self.response_in_flight = True
            self.connected.set()
            await self._flush_buffer()
            if self.need_response and not self.response_in_flight:
                await self.request_response()
            self._schedule_rollover()
            how = await self._read(ws)
            self.connected.clear()
            self.ws = None
            if call.ended.is_set():
                return
            planned, self._rolling = self._rolling, False
            if not planned:
                call.log.warning("model socket closed unexpectedly (%s); reconnecting", how)
            replay = True

    async def _open(self, *, replay: bool) -> RealtimeSocket | InProcessModel:
        call = self.call
        ws: RealtimeSocket | InProcessModel
        if call.engine == "realtime":
            url = realtime_ws_url(call.settings.realtime_url, call.model)
            headers = realtime_headers(call.settings.openai_api_key, call.dialect, url)
            ws = await open_realtime(url, headers)
        else:
            ws = await open_engine(call.engine, call, fallback=self.fell_back)
        client = ClientEvents(call.dialect)
        try:
            await ws.send(client.session_update(call.session_config), text=True)
            if replay:
                for entry in self.history:
                    await ws.send(_replay_event(client, entry), text=True)
        except ConnectionClosed as exc:
            raise RealtimeConnectError(f"model socket closed during set-up: {exc}") from None
        self.client = client
        self.parser = ev.ServerEventParser(call.dialect)
        return ws

    async def _read(self, ws: RealtimeSocket | InProcessModel) -> str:
        on_event = self.call.on_model_event
        try:
            async for raw in ws:
                await on_event(self.parser.parse(raw))
        except ConnectionClosed as exc:
            return f"code {exc.rcvd.code if exc.rcvd else 'none'}"
        return "closed by server"

    async def close(self) -> None:
        """Close the socket (≤0.5 s, else abort it); the call is ending."""
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 0.5)
            except (TimeoutError, Exception):
                ws.transport.abort()  # type: ignore[union-attr]

    # ------------------------------------------------------------------ roll-over

    def _schedule_rollover(self) -> None:
        if self.call.engine != "realtime":
            return  # in-process engines have no provider session cap (and a roll-over would lose audio turns)
        self.call.call_later(self.call.settings.model_session_max_s, self._mark_rollover)

    def _mark_rollover(self) -> None:
        self._rollover_due = True
        if not self.response_in_flight:
            self.call.spawn(self._rollover(), "rollover")

    async def _rollover(self) -> None:
        """Retire the socket before the provider's session cap; the loop reopens one and replays history.

        Done between turns (no response in flight); caller audio arriving meanwhile is buffered and flushed.
        """
        old = self.ws
        if not self._rollover_due or old is None or self._rolling:
            return
        self.call.log.info("rolling the model session over to a fresh socket")
        self._rollover_due = False
        self._rolling = True
        self.call.record.count("model_rollovers")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), 1.0)

    # ------------------------------------------------------------------ when the model is unreachable

    @property
    def _can_fall_back(self) -> bool:
        return self.call.flow.model.fallback == "local" and self.call.engine != "local"

    async def _fall_back(self, reason: str) -> None:
        """The model cannot be reached: carry on with the offline engine (``model.fallback: local``)."""
        call = self.call
        previous = call.engine
        call.log.warning(
            "model %s unreachable (%s); switching this call to the local engine", call.model, reason
        )
        call.engine, self.fell_back = "local", True
        call.dialect, call.audio_mode = "ga", "pcmu"
        self.inbound = call.audio.outbound = None
        self._buffer.clear()  # buffered audio is in the old engine's format
        self.response_in_flight, self.current_response = False, None
        call.record.engine, call.record.audio_mode = "local", "pcmu"
        call.record.count("engine_fallbacks")
        call.meter.fell_back("local")
        call.feed.emit(
            "model.fallback", previous=previous, model=call.model, engine="local", reason=redact(reason)
        )

    async def _give_up(self, reason: str) -> None:
        call = self.call
        call.log.error("model unreachable after retries; ending the call politely (%s)", reason)
        call.feed.emit("error", message="model unreachable")
        try:
            await call.controller.redirect(call.call_sid, say_and_hang_up(_APOLOGY))
        except TwilioRestError as exc:
            call.log.warning("could not play the apology through Twilio: %s", exc)
        await call.end("model-unavailable")
