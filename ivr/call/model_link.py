"""A call's link to its model: open, configure, read, reconnect with replay, roll over, fall back.

One :class:`ModelLink` per call, owned by :class:`~ivr.call.session.CallSession`. It opens the model socket
(OpenAI Realtime, or an in-process engine from :mod:`ivr.engines`) and configures it; after an unexpected
close, or a roll-over before the provider's session cap, it opens a new one and replays the conversation as
the caller heard it (:class:`~ivr.call.conversation.Conversation`, :attr:`ModelLink.history`), and asks the
model to go on with an answer the drop cut. Caller audio that arrives while no socket is open is buffered
(bounded) and flushed to the next one.

Failures are counted per call over a window, whether or not a handshake succeeded
(:class:`~ivr.realtime.connection.LinkFailures`): an endpoint that accepts and hangs up is redialled a few
times with backoff, not thousands of times a second. An ``error`` event that no redial can cure (a refused
key, no quota: :attr:`~ivr.realtime.events.ErrorEvent.final`) and any exception inside this task end the same
way as a model that cannot be reached: the call switches to the local engine (a flow's
``model.fallback: local``) or the caller hears an apology and the call ends — never silence.

It also keeps the state of the model's response (in flight, being cancelled, wanted next): everything that
asks the model to speak goes through :meth:`ModelLink.request_response`, so two responses never overlap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
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
    LinkFailures,
    RealtimeConnectError,
    open_realtime,
    realtime_headers,
    realtime_ws_url,
)
from ..realtime.dialect import ClientEvents, SessionConfig, TurnDetection
from ..realtime.transport import RealtimeSocket
from ..telephony import media_stream as tw
from ..telephony.twiml import say_and_hang_up
from .conversation import Conversation
from .notices import say_line
from .resume import resumed_instructions

if TYPE_CHECKING:
    from .session import CallSession

#: Caller audio kept while the model socket is being replaced (then flushed to the new socket).
_MAX_BUFFERED_FRAMES = 150  # 3 s at 20 ms
APOLOGY = "Sorry, we are having technical difficulties. Please call again later. Goodbye."
#: Said when a call switches to the local engine (a flow's ``model.fallback: local``).
FALLBACK_NOTICE = "Sorry about the wait. I'm switching you to our automated assistant."
#: With a fallback, a call whose model never answered switches after this many failures.
FALLBACK_AFTER_ATTEMPTS = 2
#: Connect timeout of one attempt (shortened during an outage so the caller's wait stays bounded).
_OPEN_TIMEOUT_S = 10.0
#: Connect timeout while the model has not yet served this call: the caller is waiting in silence, so a
#: black-holed endpoint must not cost them 10 s per attempt.
_FIRST_OPEN_TIMEOUT_S = 3.5
#: A model socket on which no event at all arrives within this time of opening counts as failed.
_FIRST_EVENT_TIMEOUT_S = 4.0
#: Events that show the model serves this socket (a handshake alone does not).
_ALIVE = (ev.SessionUpdated, ev.ResponseCreated, ev.AudioDelta)


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


def resume_instructions(said: str) -> str:
    """Asks the model to go on with an answer a dropped connection cut after ``said``."""
    tail = said[-240:]
    return (
        "The phone line to you dropped while you were answering. The caller heard you say, up to: "
        f'"{tail}". Continue your answer from exactly that point, without repeating what they heard '
        "and without mentioning the interruption."
    )


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
        #: Conversation so far as the caller heard it, replayed into a new model session.
        self.history = Conversation()
        self.failures = LinkFailures(call.settings.model_connect_attempts)

        self.response_in_flight = False
        self.current_response: str | None = None
        self.cancel_sent = False
        self.need_response = False
        #: True once the call switched to the local engine.
        self.fell_back = False
        self._rollover_due = False
        self._rolling = False
        #: The roll-over timer of the current socket (cancelled whenever the socket changes).
        self._rollover_timer: asyncio.TimerHandle | None = None
        #: Sockets opened so far (the next one replays the conversation).
        self._opened = 0
        #: The current socket showed that the model serves it; some socket ever did.
        self._alive = False
        self._ever_worked = False
        self._greeted = False
        self._fallback_announced = False
        #: Why the model cannot serve this call (a final ``error`` event), until handled.
        self._final: str | None = None
        #: At a drop while the model was answering: what it had said (None: it was not answering).
        self._resume: str | None = None
        #: Function calls whose call and output the current socket got in its replay.
        self._replayed_calls: set[str] = set()
        #: Tool outputs that came while no socket was open: (call_id, name, arguments, output).
        self._pending_outputs: list[tuple[str, str, str, str]] = []
        #: A call resumed here after its instance died: the first socket replays and says the notice.
        self._resumed_notice = False

    def resume_from(self, history: list[tuple[str, ...]]) -> None:
        """Start from a conversation rebuilt from Redis (a call resumed on this instance): the first socket
        replays it, and the agent says the resumed notice instead of the greeting."""
        for entry in history:
            self.history.append(entry)
        self._opened = 1
        self._greeted = True
        self._resumed_notice = True

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        # On a closed socket the reader notices and reconnects; history replays what mattered.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data, text=True)

    @property
    def session(self) -> int:
        """Which model socket is current (a new number for each socket opened)."""
        return self._opened

    async def send_tool_output(
        self, call_id: str, name: str, arguments: str, output: str, session: int
    ) -> None:
        """A function call's output: into the conversation, and to the model.

        ``session``: :attr:`session` when the model made the call. A socket opened since then does not
        know the call (its replay had the call only with an output), so it gets the call first, then the
        output; with no socket open, the next one gets both (in its replay, or right after it).
        """
        self.history.append(("output", call_id, output))
        if self.ws is None:
            self._pending_outputs.append((call_id, name, arguments, output))
            return
        if session != self._opened:
            await self.send(self.client.function_call_item(call_id, name, arguments))
        await self.send(self.client.function_output(call_id, output))

    async def _send_pending_outputs(self) -> None:
        """Tool outputs that came while the socket was being replaced, unless its replay had them."""
        pending, self._pending_outputs = self._pending_outputs, []
        for call_id, name, arguments, output in pending:
            if call_id not in self._replayed_calls:
                await self.send(self.client.function_call_item(call_id, name, arguments))
                await self.send(self.client.function_output(call_id, output))

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
        self._greeted = True  # the first response is the greeting: it is under way

    def response_done(self) -> None:
        """The response ended: a roll-over that waited for it may go ahead."""
        self.response_in_flight = False
        if self._rollover_due and self.ws is not None:
            self.call.spawn(self._rollover(self.ws), "rollover")

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
        """The model task: connect, read, reconnect; whatever fails in it ends in a fallback or an apology."""
        call = self.call
        if not self._ever_worked:  # the caller waits in silence from now until the model answers
            self.failures.outage_from(asyncio.get_running_loop().time())
        while not call.ended.is_set():
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                call.record.count("internal_errors")
                reason = f"internal error {type(exc).__name__}: {exc}"
                call.log.error("the model task failed: %s", redact(reason), exc_info=exc)
                await self._discard_socket()
                if not await self._cannot_go_on(reason):
                    return

    async def _run(self) -> None:
        call = self.call
        planned = False  # the last socket was retired on purpose (a roll-over)
        while not call.ended.is_set():
            if self._final is not None:
                reason, self._final = self._final, None
                if not await self._cannot_go_on(reason):
                    return
                continue
            replay = self._opened > 0
            default = _OPEN_TIMEOUT_S if self._ever_worked else _FIRST_OPEN_TIMEOUT_S
            timeout = self.failures.time_left(asyncio.get_running_loop().time(), default)
            try:
                ws = await self._open(replay=replay, timeout=timeout)
            except RealtimeConnectError as exc:
                call.record.count("model_connect_failures")
                call.log.warning("model connection failed: %s", exc)
                if not await self._failed(str(exc)):
                    return
                continue
            self._opened += 1
            self.ws = ws
            self._alive = False
            self._rollover_due = False  # a roll-over due on the previous socket is done by this one
            if call.engine != "realtime":
                self._proved_alive()  # an in-process engine is there once open
            resume, self._resume = self._resume, None
            if replay:
                await call.audio.new_session()
                self.response_in_flight, self.current_response = False, None
                if self._resumed_notice:
                    call.log.info("resumed call: replayed %d history items", len(self.history))
                elif planned:  # counted in model_rollovers when it was retired
                    call.feed.emit("model.rolled_over")
                    call.log.info("model session rolled over; replayed %d history items", len(self.history))
                elif not self.fell_back or self._fallback_announced:
                    call.record.count("model_reconnects")
                    call.meter.reconnected()
                    call.feed.emit("model.reconnected")
                    call.log.info(
                        "model session re-established; replayed %d history items", len(self.history)
                    )
            else:
                call.log.info("model connected (%s)", call.dialect)
            self.connected.set()
            await self._send_pending_outputs()
            await self._flush_buffer()
            if self.fell_back and not self._fallback_announced:
                self._fallback_announced = self._greeted = True  # the local engine opens the conversation
                await self.request_response(say_line(FALLBACK_NOTICE))
            elif self._resumed_notice:
                self._resumed_notice = False
                await self.request_response(resumed_instructions())
            elif not self._greeted:
                await self._greet()
            elif resume is not None and not self.response_in_flight:
                await self.request_response(resume_instructions(resume) if resume else None)
            elif self.need_response and not self.response_in_flight:
                await self.request_response()
            self._schedule_rollover(ws)
            how = await self._read(ws)
            self._cancel_rollover()
            self.connected.clear()
            self.ws = None
            if call.ended.is_set():
                return
            planned, self._rolling = self._rolling, False
            if self._final is not None:
                await self._discard_socket(ws)
                continue
            if planned:
                continue
            said = self.history.drop(self.current_response if self.response_in_flight else None)
            # Ask the model to go on only with an answer the drop cut, or to give one nothing has answered
            # yet (an answer said in full whose response.done was lost needs nothing more).
            if self.response_in_flight and not self.cancel_sent and (said or self.history.unanswered()):
                self._resume = said or ""
            call.record.count("model_drops")
            call.log.warning("model socket closed unexpectedly (%s)", how)
            if not await self._failed(f"the model socket closed unexpectedly ({how})"):
                return

    async def _greet(self) -> None:
        call = self.call
        greeting = call.flow.render(call.flow.greeting, call.context) if call.flow.greeting else ""
        if greeting:
            await self.send(
                self.client.response_create(
                    instructions=f'Greet the caller now by saying exactly: "{greeting}"'
                )
            )
            self.response_in_flight = True
        else:
            self._greeted = True

    async def _failed(self, reason: str) -> bool:
        """A connect error or a drop: wait and go on (True), or fall back / give up (False: the task ends)."""
        now = asyncio.get_running_loop().time()
        delay = self.failures.failed(now)
        if (
            delay is not None
            and self._can_fall_back
            and not self._ever_worked
            and self.failures.count(now) >= FALLBACK_AFTER_ATTEMPTS
        ):
            delay = None  # the caller has heard nothing yet: switch rather than keep them waiting
        if delay is None:
            n = self.failures.count(now)
            return await self._cannot_go_on(f"{reason}; {n} failure(s) in {self.failures.window_s:g} s")
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    async def _cannot_go_on(self, reason: str) -> bool:
        """The model cannot serve the call: switch to the local engine (True: go on) or apologise and end."""
        if self._can_fall_back:
            await self._fall_back(reason)
            self.failures = LinkFailures(self.call.settings.model_connect_attempts)
            return True
        await self._give_up(reason)
        return False

    async def _open(
        self, *, replay: bool, timeout: float = _OPEN_TIMEOUT_S
    ) -> RealtimeSocket | InProcessModel:
        call = self.call
        ws: RealtimeSocket | InProcessModel
        if call.engine == "realtime":
            url = realtime_ws_url(call.settings.realtime_url, call.model)
            headers = realtime_headers(call.settings.openai_api_key, call.dialect, url)
            ws = await open_realtime(url, headers, open_timeout=timeout)
        else:
            ws = await open_engine(call.engine, call, fallback=self.fell_back)
        client = ClientEvents(call.dialect)
        entries = self.history.replay() if replay else []
        try:
            await ws.send(client.session_update(call.session_config), text=True)
            for entry in entries:
                await ws.send(_replay_event(client, entry), text=True)
        except ConnectionClosed as exc:
            # Closed by the server already: what it said first (an ``error`` event, say) is still to be
            # read, and the reader then counts the drop.
            call.log.debug("model socket closed during set-up: %s", exc)
        except BaseException:
            await self._discard_socket(ws)  # e.g. a session the model cannot take: do not leave it open
            raise
        self.client = client
        self.parser = ev.ServerEventParser(call.dialect)
        self._replayed_calls = {entry[1] for entry in entries if entry[0] == "call"}
        return ws

    async def _read(self, ws: RealtimeSocket | InProcessModel) -> str:
        on_event = self.call.on_model_event
        history = self.history
        # A model that accepts the socket and then says nothing must not leave the caller in silence: no
        # event within a few seconds of opening fails the socket (the reader then counts the failure).
        watchdog: asyncio.TimerHandle | None = None
        stalled: list[float] = []
        if self.call.engine == "realtime":
            loop = asyncio.get_running_loop()
            limit = self.failures.time_left(loop.time(), _FIRST_EVENT_TIMEOUT_S)
            watchdog = loop.call_later(limit, self._stalled, ws, limit, stalled)
        try:
            async for raw in ws:
                if watchdog is not None:
                    watchdog.cancel()
                    watchdog = None
                event = self.parser.parse(raw)
                if not self._alive and isinstance(event, _ALIVE):
                    self._proved_alive()
                history.on_event(event)
                await on_event(event)
                if type(event) is ev.ErrorEvent and event.final:
                    self._final = (
                        f"the model refused the session ({event.code or event.type}: {event.message})"
                    )
                    return "final error"
        except ConnectionClosed as exc:
            if stalled:
                return f"no event from the model within {stalled[0]:.1f} s of opening the socket"
            return f"code {exc.rcvd.code if exc.rcvd else 'none'}"
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if stalled:
            return f"no event from the model within {stalled[0]:.1f} s of opening the socket"
        return "closed by server"

    def _stalled(self, ws: RealtimeSocket | InProcessModel, limit: float, stalled: list[float]) -> None:
        """No event on ``ws`` since it opened: abort it (its reader ends and reports why)."""
        stalled.append(limit)
        self.call.log.warning(
            "no event from the model within %.1f s of opening the socket; dropped it", limit
        )
        with contextlib.suppress(Exception):
            ws.transport.abort()  # type: ignore[union-attr]

    def _proved_alive(self) -> None:
        self._alive = self._ever_worked = True
        self.failures.healthy()

    async def _discard_socket(self, ws: RealtimeSocket | InProcessModel | None = None) -> None:
        """Close ``ws`` (default: the current socket) within 0.5 s, else abort it."""
        if ws is None:
            ws, self.ws = self.ws, None
            self.connected.clear()
        if ws is None:
            return
        try:
            await asyncio.wait_for(ws.close(), 0.5)
        except (TimeoutError, Exception):
            with contextlib.suppress(Exception):
                ws.transport.abort()  # type: ignore[union-attr]

    async def close(self) -> None:
        """Close the socket (≤0.5 s, else abort it); the call is ending."""
        self._cancel_rollover()
        await self._discard_socket()

    # ------------------------------------------------------------------ roll-over

    def _schedule_rollover(self, ws: RealtimeSocket | InProcessModel) -> None:
        """Roll ``ws`` over when it reaches the provider's session cap (one timer, for this socket only)."""
        self._cancel_rollover()
        if self.call.engine != "realtime" or self.call.ended.is_set():
            return  # in-process engines have no provider session cap (and a roll-over would lose audio turns)
        self._rollover_timer = asyncio.get_running_loop().call_later(
            self.call.settings.model_session_max_s, functools.partial(self._mark_rollover, ws)
        )

    def _cancel_rollover(self) -> None:
        timer, self._rollover_timer = self._rollover_timer, None
        if timer is not None:
            timer.cancel()
        self._rollover_due = False

    def _mark_rollover(self, ws: RealtimeSocket | InProcessModel) -> None:
        self._rollover_timer = None
        if ws is not self.ws or self.call.engine != "realtime" or self.call.ended.is_set():
            return  # a timer of a socket already replaced (a cancelled handle cannot fire; belt and braces)
        self._rollover_due = True
        if not self.response_in_flight:
            self.call.spawn(self._rollover(ws), "rollover")

    async def _rollover(self, old: RealtimeSocket | InProcessModel) -> None:
        """Retire the socket before the provider's session cap; the loop reopens one and replays history.

        Done between turns (no response in flight); caller audio arriving meanwhile is buffered and flushed.
        Only a model socket is rolled over, and only the one that was due (not the local engine after a
        fallback, not a socket opened since).
        """
        if not self._rollover_due or old is not self.ws or self._rolling or self.call.engine != "realtime":
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
        """The model cannot serve the call: carry on with the offline engine (``model.fallback: local``)."""
        call = self.call
        previous = call.engine
        call.log.warning(
            "model %s cannot serve the call (%s); switching it to the local engine",
            call.model,
            redact(reason),
        )
        self._cancel_rollover()  # the model socket's roll-over must not close the local engine
        call.engine, self.fell_back = "local", True
        call.dialect, call.audio_mode = "ga", "pcmu"
        self.inbound = call.audio.outbound = None
        self._buffer.clear()  # buffered audio is in the old engine's format
        self.response_in_flight, self.current_response = False, None
        self._resume = None
        call.record.engine, call.record.audio_mode = "local", "pcmu"
        call.record.count("engine_fallbacks")
        call.meter.fell_back("local")
        call.feed.emit(
            "model.fallback", previous=previous, model=call.model, engine="local", reason=redact(reason)
        )

    async def _give_up(self, reason: str) -> None:
        """Apologise and end the call: through Twilio (``<Say>``), else in the local voice on the stream."""
        call = self.call
        call.log.error("the model cannot serve the call; ending it politely (%s)", redact(reason))
        call.feed.emit("error", message="model unreachable")
        try:
            await call.controller.redirect(call.call_sid, say_and_hang_up(APOLOGY))
        except Exception as exc:  # TwilioRestError, or anything else: the caller must still hear it
            call.log.warning("could not play the apology through Twilio (%s); saying it on the stream", exc)
            with contextlib.suppress(Exception):
                await call.audio.say_local(APOLOGY, wait=True)
        await call.end("model-unavailable")
