"""One phone call: the async shell that moves data between Twilio, the model and the tools.

The protocol work happens in sans-I/O pieces — :mod:`ivr.telephony.media_stream` (Twilio messages),
:mod:`ivr.realtime.dialect` / :mod:`ivr.realtime.events` (model events), :mod:`ivr.call.playback` (what the
caller heard), :mod:`ivr.audio.convert` (μ-law ⇄ PCM). This class owns the lifecycle: it opens the model
socket when Twilio's ``start`` arrives, keeps it alive (reconnect with replay, roll-over before the provider's
session cap), runs function calls, and on ``stop``, socket close or hang-up always closes the model socket,
cancels its tasks and finalises the call record.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from ..approvals.gate import ApprovalGate
from ..audio.convert import InboundConverter, OutboundConverter
from ..engines.base import InProcessModel
from ..engines.factory import EngineKind, engine_kind, open_engine
from ..flows import Flow
from ..flows.state import FlowState
from ..logs import call_logger, mask_number, redact
from ..metrics import Metrics
from ..realtime import events as ev
from ..realtime.connection import (
    Backoff,
    RealtimeConnectError,
    open_realtime,
    realtime_headers,
    realtime_ws_url,
)
from ..realtime.dialect import ClientEvents, SessionConfig, TurnDetection, dialect_for_model
from ..realtime.transport import RealtimeSocket
from ..settings import Settings
from ..store.keys import KeySchema
from ..telephony import media_stream as tw
from ..telephony.rest import CallController, TwilioRestError
from ..telephony.twiml import dial, say_and_hang_up
from ..tools.registry import ToolContext, ToolOutcome, registry_for_flow
from .heard import Cut, HeardLines, Line
from .meter import CallMeter
from .notices import approval_notice, say_line
from .playback import MarkKind, PlaybackTracker
from .pricing import estimate_cost_usd
from .registry import CallFeed, CallRecord

log = logging.getLogger("ivr.call")

#: Caller audio kept while the model socket is being replaced (then flushed to the new socket).
_MAX_BUFFERED_FRAMES = 150  # 3 s at 20 ms
#: How long a hang-up or transfer waits for the goodbye to finish playing before acting anyway.
_ACTION_TIMEOUT_S = 15.0
_APOLOGY = "Sorry, we are having technical difficulties. Please call again later. Goodbye."
#: Said when a call switches to the local engine (a flow's ``model.fallback: local``).
FALLBACK_NOTICE = "Sorry about the wait. I'm switching you to our automated assistant."
#: With a fallback, a call that never reached its model switches after this many failed attempts.
FALLBACK_AFTER_ATTEMPTS = 2
#: A mark after every ~100 ms of model audio (and at the end of each item): what the caller heard is known
#: to that precision, and marks stay a small share of the messages we send.
MARK_EVERY_MS = 100.0


class CallControlRefused(Exception):
    """An operator command cannot be carried out on this call; ``str()`` says why."""


def _b64_safe(payload: str) -> bool:
    """True when ``payload`` can be spliced into JSON as-is (base64 alphabet only)."""
    return '"' not in payload and "\\" not in payload


class CallSession:
    """Bridges one Twilio media stream to one model conversation."""

    def __init__(
        self,
        *,
        settings: Settings,
        flow: Flow,
        start: tw.Start,
        record: CallRecord,
        feed: CallFeed,
        send_twilio: Callable[[str], Awaitable[None]],
        close_twilio: Callable[[int], Awaitable[None]],
        controller: CallController,
        context: dict[str, str],
        gate: ApprovalGate | None = None,
        redis: Redis | None = None,
        keys: KeySchema | None = None,
        metrics: Metrics | None = None,
        started_at: float | None = None,
    ) -> None:
        """``metrics``: the app's Prometheus metrics (None in unit tests); ``started_at``: the
        ``time.perf_counter()`` reading when Twilio's ``start`` arrived (the greeting is timed from it)."""
        self.settings = settings
        self.flow = flow
        self.record = record
        self.feed = feed
        self._send_twilio = send_twilio
        self._close_twilio = close_twilio
        self.controller = controller
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.log = call_logger("ivr.call", self.call_sid, self.stream_sid)

        self.model = flow.model.name or settings.realtime_model
        self.engine: EngineKind = engine_kind(settings, self.model)
        if self.engine == "realtime":
            override = flow.model.dialect if flow.model.dialect != "auto" else settings.realtime_dialect
            self.dialect = dialect_for_model(self.model, override)
            self.audio_mode = flow.model.audio
        else:  # in-process engines speak GA events in the phone's own μ-law
            self.model = "local" if self.engine == "local" else self.model
            self.dialect, self.audio_mode = "ga", "pcmu"
        record.model, record.dialect, record.audio_mode = self.model, self.dialect, self.audio_mode
        record.engine = self.engine

        self.context = context
        self.tools = registry_for_flow(flow)
        self.state = FlowState(flow, context, definitions=self.tools.realtime_tools())
        record.stage = self.state.stage
        self.session_config = self._session_config()
        self.gate = gate
        self.tool_context = ToolContext(
            call_sid=self.call_sid,
            flow=flow,
            call=self,
            caller_number=context.get("caller_number", ""),
            redis=redis,
            keys=keys,
        )
        self._hold_requested = False

        self.writer = tw.StreamWriter(self.stream_sid)
        self.tracker = PlaybackTracker()
        self._unmarked_ms = 0.0
        self._unmarked_item: str | None = None
        self.inbound = InboundConverter() if self.audio_mode == "pcm" else None
        self.outbound = OutboundConverter() if self.audio_mode == "pcm" else None

        self.client = ClientEvents(self.dialect)
        self.parser = ev.ServerEventParser(self.dialect)
        self.ws: RealtimeSocket | InProcessModel | None = None
        self._connected = asyncio.Event()
        self._buffer: deque[str] = deque(maxlen=_MAX_BUFFERED_FRAMES)
        # Conversation so far, replayed into a new model session after a reconnect or roll-over.
        self.history: list[tuple[str, ...]] = []

        self.response_in_flight = False
        self.current_response: str | None = None
        self.cancel_sent = False
        self._discard: set[str] = set()
        self.need_response = False
        self._pending_action: tuple[str, str] | None = None
        self._transfer_announcement: str | None = None
        self._action_armed = False
        self._tool_calls = 0
        self._dtmf_count = 0
        self._rollover_due = False
        self._rolling = False
        self._ever_connected = False
        self._fell_back = False
        self._fallback_announced = False

        self.ended = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self.speech_started_at: float | None = None
        self.last_clear_latency_ms: float | None = None
        self.meter = CallMeter(
            metrics=metrics,
            record=record,
            feed=feed,
            flow_id=flow.id,
            model=self.model,
            engine=self.engine,
            started_at=time.perf_counter() if started_at is None else started_at,
            tool_names=frozenset(self.tools.names()),
        )
        self.heard = HeardLines()

    # ------------------------------------------------------------------ configuration

    def _session_config(self) -> SessionConfig:
        m = self.flow.model
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
            instructions=self.state.instructions(),
            voice=m.voice,
            speed=m.speed,
            audio=m.audio,
            turn_detection=td,
            transcription_model=tr.model if tr else None,
            transcription_language=tr.language if tr else None,
            tools=tuple(self.state.tools()),
            max_output_tokens=m.max_output_tokens,
            model=None,
        )

    # ------------------------------------------------------------------ lifecycle

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}:{self.call_sid}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("task %s failed: %s", task.get_name(), redact(repr(exc)), exc_info=exc)
            self.record.count("internal_errors")

    async def begin(self) -> None:
        """Open the model session and greet. Called once, right after Twilio's ``start``."""
        self.feed.emit(
            "call.started",
            flow=self.flow.id,
            model=self.model,
            dialect=self.dialect,
            audio=self.audio_mode,
            caller=mask_number(self.record.caller),
        )
        self.meter.call_started()
        self.log.info(
            "call started: flow=%s from=%s to=%s model=%s dialect=%s audio=%s",
            self.flow.id,
            mask_number(self.record.caller),
            mask_number(self.record.called),
            self.model,
            self.dialect,
            self.audio_mode,
        )
        loop = asyncio.get_running_loop()
        limit = self.flow.limits.max_call_seconds
        if limit:
            self._timers.append(loop.call_later(limit, self._on_time_limit))
        self._spawn(self._model_loop(), "model")

    async def _open_model(self, *, replay: bool) -> RealtimeSocket | InProcessModel:
        ws: RealtimeSocket | InProcessModel
        if self.engine == "realtime":
            url = realtime_ws_url(self.settings.realtime_url, self.model)
            headers = realtime_headers(self.settings.openai_api_key, self.dialect, url)
            ws = await open_realtime(url, headers)
        else:
            ws = await open_engine(self.engine, self, fallback=self._fell_back)
        client = ClientEvents(self.dialect)
        try:
            await ws.send(client.session_update(self.session_config), text=True)
            if replay:
                for entry in self.history:
                    await ws.send(self._replay_event(client, entry), text=True)
        except ConnectionClosed as exc:
            raise RealtimeConnectError(f"model socket closed during set-up: {exc}") from None
        self.client = client
        self.parser = ev.ServerEventParser(self.dialect)
        return ws

    @staticmethod
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

    async def _model_loop(self) -> None:
        """Connect, read events, reconnect on unexpected close; give up politely after bounded retries."""
        replay = False
        backoff = Backoff(max_attempts=self.settings.model_connect_attempts)
        failures = 0
        while not self.ended.is_set():
            try:
                ws = await self._open_model(replay=replay)
            except RealtimeConnectError as exc:
                self.record.count("model_connect_failures")
                failures += 1
                attempts = self.settings.model_connect_attempts
                if self._can_fall_back and not self._ever_connected:
                    attempts = min(attempts, FALLBACK_AFTER_ATTEMPTS)  # the caller is waiting in silence
                delay = backoff.next_delay() if failures < attempts else None
                self.log.warning("model connection failed: %s", exc)
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
            if self._fell_back and not self._fallback_announced:
                self._fallback_announced = True
                self._connected.set()
                await self._flush_buffer()
                await self._request_response(say_line(FALLBACK_NOTICE))
                if replay:
                    self._release_lines()
                    self.tracker.forget_items()
            elif replay:
                self.record.count("model_reconnects")
                self.meter.reconnected()
                self._release_lines()
                self.tracker.forget_items()
                self.response_in_flight = False
                self.current_response = None
                self.feed.emit("model.reconnected")
                self.log.info("model session re-established; replayed %d history items", len(self.history))
            else:
                self.log.info("model connected (%s)", self.dialect)
                self._ever_connected = True
                greeting = self.flow.render(self.flow.greeting, self.context) if self.flow.greeting else ""
                if greeting:
                    await self._send_model(
                        self.client.response_create(
                            instructions=f'Greet the caller now by saying exactly: "{greeting}"'
                        )
                    )
                    self.response_in_flight = True
            self._connected.set()
            await self._flush_buffer()
            if self.need_response and not self.response_in_flight:
                await self._request_response()
            self._schedule_rollover()
            how = await self._read_model(ws)
            self._connected.clear()
            self.ws = None
            if self.ended.is_set():
                return
            if not self._rolling:
                self.log.warning("model socket closed unexpectedly (%s); reconnecting", how)
            self._rolling = False
            replay = True

    async def _read_model(self, ws: RealtimeSocket | InProcessModel) -> str:
        try:
            async for raw in ws:
                await self._on_model_event(self.parser.parse(raw))
        except ConnectionClosed as exc:
            return f"code {exc.rcvd.code if exc.rcvd else 'none'}"
        return "closed by server"

    def _schedule_rollover(self) -> None:
        if self.engine != "realtime":
            return  # in-process engines have no provider session cap (and a roll-over would lose audio turns)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.settings.model_session_max_s, self._mark_rollover))

    def _mark_rollover(self) -> None:
        self._rollover_due = True
        if not self.response_in_flight:
            self._spawn(self._rollover(), "rollover")

    async def _rollover(self) -> None:
        """Retire the socket before the provider's session cap; the loop reopens one and replays history.

        Done between turns (no response in flight); caller audio arriving meanwhile is buffered and flushed.
        """
        old = self.ws
        if not self._rollover_due or old is None or self._rolling:
            return
        self.log.info("rolling the model session over to a fresh socket")
        self._rollover_due = False
        self._rolling = True
        self.record.count("model_rollovers")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), 1.0)

    @property
    def _can_fall_back(self) -> bool:
        return self.flow.model.fallback == "local" and self.engine != "local"

    async def _fall_back(self, reason: str) -> None:
        """The model cannot be reached: carry on with the offline engine (``model.fallback: local``)."""
        previous = self.engine
        self.log.warning(
            "model %s unreachable (%s); switching this call to the local engine", self.model, reason
        )
        self.engine, self._fell_back = "local", True
        self.dialect, self.audio_mode = "ga", "pcmu"
        self.inbound = self.outbound = None
        self._buffer.clear()  # buffered audio is in the old engine's format
        self.response_in_flight, self.current_response = False, None
        self.record.engine, self.record.audio_mode = "local", "pcmu"
        self.record.count("engine_fallbacks")
        self.meter.fell_back("local")
        self.feed.emit(
            "model.fallback", previous=previous, model=self.model, engine="local", reason=redact(reason)
        )

    async def _give_up(self, reason: str) -> None:
        self.log.error("model unreachable after retries; ending the call politely (%s)", reason)
        self.feed.emit("error", message="model unreachable")
        try:
            await self.controller.redirect(self.call_sid, say_and_hang_up(_APOLOGY))
        except TwilioRestError as exc:
            self.log.warning("could not play the apology through Twilio: %s", exc)
        await self.end("model-unavailable")

    async def finish(self, outcome: str) -> None:
        """End the call: close the model socket (≤1 s), cancel tasks, finalise the record. Idempotent."""
        if self.ended.is_set():
            return
        self.ended.set()
        for timer in self._timers:
            timer.cancel()
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 0.5)
            except (TimeoutError, Exception):
                ws.transport.abort()  # type: ignore[union-attr]
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._release_lines()
        self.record.outcome = outcome if self.record.outcome == "in-progress" else self.record.outcome
        self.meter.call_ended(self.record.outcome)
        self.record.ended_at = time.time()
        self.record.duration_s = round(self.record.ended_at - self.record.started_at, 3)
        self.record.counters["stale_marks"] = self.tracker.stale_marks
        self.record.cost_usd = estimate_cost_usd(self.model, self.record.usage)
        self.feed.emit(
            "call.ended",
            outcome=self.record.outcome,
            duration_s=self.record.duration_s,
            usage=self.record.usage,
        )
        self.log.info(
            "call ended: outcome=%s duration=%.1fs tokens=%s counters=%s",
            self.record.outcome,
            self.record.duration_s,
            self.record.usage.get("total_tokens", 0),
            self.record.counters,
        )

    async def end(self, outcome: str, code: int = 1000) -> None:
        """Finish the call from our side and close Twilio's socket (which ends a ``<Connect><Stream>``)."""
        await self.finish(outcome)
        await self._close_twilio(code)

    # ------------------------------------------------------------------ Twilio side

    async def on_twilio(self, msg: tw.TwilioMessage) -> None:
        if isinstance(msg, tw.Media):
            await self._on_caller_audio(msg.payload)
        elif isinstance(msg, tw.Mark):
            await self._on_mark(msg.name)
        elif isinstance(msg, tw.Dtmf):
            await self._on_dtmf(msg.digit)
        elif isinstance(msg, tw.Stop):
            self.log.info("Twilio sent stop")
            await self.finish("completed")
        elif isinstance(msg, tw.Malformed):
            self.record.count("malformed_twilio")
            self.log.warning("ignored a malformed Twilio message: %s (%.60s)", msg.reason, msg.excerpt)
        else:
            self.record.count("unexpected_twilio")
            self.log.warning("ignored an unexpected %s message mid-call", type(msg).__name__)

    async def _on_caller_audio(self, payload: str) -> None:
        raw = tw.decode_payload(payload)
        if raw is None or not raw:
            self.record.count("malformed_twilio")
            self.log.warning("ignored a media message whose payload is not base64 audio")
            return
        b64 = base64.b64encode(self.inbound.convert(raw)).decode() if self.inbound is not None else payload
        if self.ws is None or not self._connected.is_set():
            self._buffer.append(b64)
            return
        await self._send_model(self.client.append_audio(b64))

    async def _flush_buffer(self) -> None:
        while self._buffer and self.ws is not None:
            await self._send_model(self.client.append_audio(self._buffer.popleft()))

    async def _on_mark(self, name: str) -> None:
        result = self.tracker.on_mark(name)
        if result.kind is MarkKind.BARRIER and result.tag == "action":
            await self._run_action()
        elif self.heard.holding and result.kind is MarkKind.PLAYED:
            item = result.item_id
            line = self.heard.played(item, result.played_ms, self.tracker.sent_ms(item) if item else 0)
            if line is not None:
                self._write_line(line)

    async def _on_dtmf(self, digit: str) -> None:
        self._dtmf_count += 1
        self.feed.emit("dtmf", digit=digit)
        self.log.info("caller pressed %s", digit)
        action = self.state.on_key(digit)
        text = f"The caller pressed {digit} on the keypad."
        if action is not None and action.stage_change is not None:
            await self._apply_stage_change(action.stage_change)
            text += f" That moves the conversation to the {action.stage_change.stage!r} stage."
        if action is not None and action.tool:
            outcome = await self._execute(action.tool, "{}", f"dtmf_{self._dtmf_count}")
            text = (
                f"The caller pressed {digit} on the keypad, which ran {action.tool}. Result: {outcome.output}"
            )
        self.history.append(("user", text))
        await self._send_model(self.client.user_text(text))
        await self._request_response()

    # ------------------------------------------------------------------ model side

    async def _send_model(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        # On a closed socket the reader notices and reconnects; history replays what mattered.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data, text=True)

    async def _send_caller(self, text: str) -> None:
        try:
            await self._send_twilio(text)
        except Exception as exc:  # the Twilio socket went away; the endpoint will finish the call
            self.log.debug("send to Twilio failed: %s", exc)

    async def _request_response(self, instructions: str | None = None) -> None:
        if self.response_in_flight or self.ws is None:
            self.need_response = True
            return
        self.need_response = False
        self.response_in_flight = True
        await self._send_model(self.client.response_create(instructions=instructions))

    async def _on_model_event(self, event: ev.ServerEvent) -> None:
        if isinstance(event, ev.AudioDelta):
            await self._on_audio_delta(event)
        elif isinstance(event, ev.SpeechStarted):
            await self._on_speech_started()
        elif isinstance(event, ev.ResponseCreated):
            self.response_in_flight = True
            self.current_response = event.response_id
            self.cancel_sent = False
        elif isinstance(event, ev.AudioDone):
            await self._mark_played_so_far()
        elif isinstance(event, ev.ResponseDone):
            await self._mark_played_so_far()
            await self._on_response_done(event)
        elif isinstance(event, ev.AgentTranscriptDone):
            if event.transcript:
                self._agent_said(event)
                self.history.append(("assistant", event.transcript))
        elif isinstance(event, ev.UserTranscript):
            if event.transcript:
                self._transcript("caller", event.transcript)
                self.history.append(("user", event.transcript))
        elif isinstance(event, ev.ErrorEvent):
            self.record.count("model_errors")
            if event.code == "response_cancel_not_active":
                self.log.debug("model: no response to cancel (it had already stopped)")
            else:
                self.log.warning("model error %s: %s", event.code or event.type, redact(event.message or ""))
                self.feed.emit("error", message=f"model: {event.code or event.type}")
        elif isinstance(event, ev.MalformedEvent):
            self.record.count("malformed_model")
            self.log.warning("ignored a malformed model event: %s", event.reason)
        elif isinstance(event, ev.SpeechStopped):
            self.speech_started_at = None
            self.meter.speech_stopped()

    def _transcript(self, role: str, text: str, **extra: Any) -> None:
        entry = {"role": role, "text": text, "ts": round(time.time(), 3), **extra}
        self.record.transcript.append(entry)
        self.feed.emit("transcript", role=role, text=text, **extra)

    def _agent_said(self, event: ev.AgentTranscriptDone) -> None:
        """The model's transcript of an answer: written once the caller heard it, or was cut (heard.py)."""
        item = event.item_id
        sent = self.tracker.sent_ms(item) + (int(self._unmarked_ms) if self._unmarked_item == item else 0)
        line = self.heard.said(
            item,
            event.transcript,
            played_ms=self.tracker.played_ms(item),
            sent_ms=sent,
            cancelled=event.response_id in self._discard,
        )
        if line is not None:
            self._write_line(line)

    def _write_line(self, line: Line) -> None:
        self._transcript("agent", line.text, **line.fields())

    def _release_lines(self) -> None:
        for line in self.heard.release():
            self._write_line(line)

    async def _on_audio_delta(self, event: ev.AudioDelta) -> None:
        if event.response_id in self._discard:
            self.record.count("late_deltas_dropped")
            return
        if self.outbound is not None:
            try:
                pcm = base64.b64decode(event.delta)
            except ValueError:
                self.record.count("malformed_model")
                return
            mulaw = self.outbound.convert(pcm)
            if not mulaw:
                return
            payload = base64.b64encode(mulaw).decode()
            duration_ms = len(mulaw) / 8.0
        else:
            payload = event.delta
            if not _b64_safe(payload):
                self.record.count("malformed_model")
                return
            duration_ms = (len(payload) * 3 // 4 - payload.count("=", -2)) / 8.0
        if self._unmarked_item != event.item_id:
            await self._mark_played_so_far()
            self._unmarked_item = event.item_id
        await self._send_caller(self.writer.media(payload))
        if self.meter.timer.waiting:  # the first audio of a greeting or reply: once per turn
            self.meter.audio_sent()
        self._unmarked_ms += duration_ms
        if self._unmarked_ms >= MARK_EVERY_MS:
            await self._mark_played_so_far()

    async def _mark_played_so_far(self) -> None:
        """Send one mark covering the audio sent since the previous one."""
        if self._unmarked_ms and self._unmarked_item is not None:
            mark = self.tracker.on_audio_sent(self._unmarked_item, self._unmarked_ms)
            self._unmarked_ms = 0.0
            await self._send_caller(self.writer.mark(mark))

    async def _on_speech_started(self) -> None:
        """Barge-in: stop playback, cancel the response if one is running, truncate at what was heard."""
        self.speech_started_at = time.perf_counter()
        self.meter.speech_started()
        interrupting = self.tracker.playing or self.response_in_flight
        if not interrupting:
            return
        await self._send_caller(self.writer.clear())
        stop_s = time.perf_counter() - self.speech_started_at
        self.last_clear_latency_ms = stop_s * 1000
        self.meter.interrupted(stop_s)
        truncations = self.tracker.interrupt()
        self._unmarked_ms, self._unmarked_item = 0.0, None  # that audio was cleared with the rest
        if self.response_in_flight and self.current_response and not self.cancel_sent:
            self.cancel_sent = True
            self._discard.add(self.current_response)
            await self._send_model(self.client.response_cancel())
        for t in truncations:
            await self._send_model(self.client.truncate(t.item_id, t.audio_end_ms))
        if self.outbound is not None:
            self.outbound.reset()
        self.record.count("barge_ins")
        cuts = [Cut(t.item_id, t.audio_end_ms, t.sent_ms) for t in truncations]
        self.feed.emit(
            "barge_in",
            heard_ms=[t.audio_end_ms for t in truncations],
            items=[c.as_dict() for c in cuts],
            stop_ms=round(self.last_clear_latency_ms, 3),
        )
        for line in self.heard.cut(cuts):
            self._write_line(line)
        self.log.info(
            "caller barged in; cleared playback, truncated at %s ms", [t.audio_end_ms for t in truncations]
        )

    async def _on_response_done(self, event: ev.ResponseDone) -> None:
        self.response_in_flight = False
        if self._rollover_due:
            self._spawn(self._rollover(), "rollover")
        self.record.add_usage(event.usage)
        self.meter.response_done(event.usage)
        if event.status not in ("completed", "cancelled", None):
            self.log.warning("model response ended %s (%s)", event.status, event.status_reason or "no reason")
        if event.function_calls:
            self._spawn(self._run_tools(event.function_calls), "tools")
        elif self._pending_action and not self._action_armed:
            await self._arm_action()
        elif self.need_response:
            await self._request_response()

    async def _run_tools(self, calls: tuple[ev.FunctionCall, ...]) -> None:
        for fc in calls:
            self.history.append(("call", fc.call_id, fc.name, fc.arguments))
            self._tool_calls += 1
            if self._tool_calls > self.flow.limits.max_tool_calls:
                output = orjson.dumps(
                    {
                        "error": {
                            "type": "limit_reached",
                            "message": "No tool calls are left on this call; help the caller without tools.",
                        }
                    }
                )
                outcome = ToolOutcome(
                    name=fc.name,
                    call_id=fc.call_id,
                    ok=False,
                    output=output.decode(),
                    error_type="limit_reached",
                    duration_ms=0.0,
                    arguments=None,
                )
                self._record_tool(outcome)
            else:
                outcome = await self._execute(fc.name, fc.arguments, fc.call_id)
            self.history.append(("output", fc.call_id, outcome.output))
            await self._send_model(self.client.function_output(fc.call_id, outcome.output))
        # A hang-up/transfer requested by these tools arms after the response that says goodbye.
        if self._hold_requested:
            self._hold_requested = False
            await self._request_response(self._hold_instructions())
        else:
            await self._request_response()

    async def _execute(self, name: str, arguments_json: str, call_id: str) -> ToolOutcome:
        """Run one tool call through the stage check and the approval gate; record it; follow transitions."""

        async def guard(arguments: dict[str, Any]) -> tuple[Any, str] | None:
            if not self.state.allowed(name):
                return {"error": {"type": "not_allowed", "message": self.state.not_allowed_message(name)}}, (
                    "not_allowed"
                )
            config = self.flow.tool(name)
            policy = getattr(config, "approval", None) if config is not None else None
            if policy is None or not policy.requires_approval(arguments):
                return None
            if self.gate is None:
                return {
                    "error": {
                        "type": "unavailable",
                        "message": "This action needs a person's approval, and approvals are unavailable "
                        "right now. Tell the caller it cannot be done at the moment.",
                    }
                }, "unavailable"
            decision = await self.gate.check(
                call_sid=self.call_sid,
                flow_id=self.flow.id,
                tool=name,
                call_id=call_id,
                policy=policy,
                arguments=arguments,
            )
            if decision.kind == "run":
                return None
            if decision.kind == "pending" and decision.approval is not None:
                self._hold_requested = True
                self.feed.emit("approval.requested", approval_id=decision.approval.id, tool=name)
                self._spawn(self._await_approval(decision.approval), "approval")
            return decision.as_output(), decision.kind

        outcome = await self.tools.dispatch(name, arguments_json, call_id, self.tool_context, guard)
        self._record_tool(outcome)
        change = self.state.on_tool_result(name, outcome.ok)
        if change is not None:
            await self._apply_stage_change(change)
        return outcome

    def _hold_instructions(self) -> str:
        phrase = self.flow.hold_phrase or "One moment please."
        return say_line(
            f"{phrase} A staff member needs to approve this, so please stay on the line.",
            "Do not promise the outcome.",
        )

    async def _await_approval(self, approval: Any) -> None:
        """A gated tool call is pending: when the operator decides, run it (once) or tell the model no."""
        assert self.gate is not None
        decision = await self.gate.settle(approval)
        final = decision.approval or approval
        waited = (final.decided_at or time.time()) - final.created_at
        self.meter.approval(approval.tool, final.status if decision.approval else decision.kind, waited)
        if self.ended.is_set():
            return
        self.feed.emit(
            "approval.decided",
            approval_id=approval.id,
            tool=approval.tool,
            status=decision.approval.status if decision.approval else decision.kind,
        )
        if decision.kind == "run":
            arguments = orjson.dumps(decision.arguments({})).decode()
            outcome = await self.tools.dispatch(
                approval.tool, arguments, f"{approval.call_id}_approved", self.tool_context
            )
            self._record_tool(outcome)
            change = self.state.on_tool_result(approval.tool, outcome.ok)
            if change is not None:
                await self._apply_stage_change(change)
            text = approval_notice(approval.tool, True, output=outcome.output)
        else:
            text = approval_notice(approval.tool, False, message=decision.message)
        self.history.append(("system", text))
        await self._send_model(self.client.system_text(text))
        await self._request_response()

    async def _apply_stage_change(self, change: Any) -> None:
        """Move to another stage: new instructions and tools for the live session (audio keeps flowing)."""
        self.record.stage = change.stage
        self.session_config = self._session_config()
        self.feed.emit("stage.changed", previous=change.previous, stage=change.stage, trigger=change.trigger)
        self.log.info("stage %s → %s (%s)", change.previous, change.stage, change.trigger)
        await self._send_model(self.client.session_update(self.session_config))

    def _record_tool(self, outcome: ToolOutcome) -> None:
        entry = {
            "name": outcome.name,
            "call_id": outcome.call_id,
            "ok": outcome.ok,
            "error_type": outcome.error_type,
            "duration_ms": round(outcome.duration_ms, 1),
            "arguments": outcome.arguments,
            "output": outcome.output,
        }
        self.record.tool_calls.append(entry)
        self.record.count("tool_calls")
        self.meter.tool(outcome)
        self.feed.emit(
            "tool.called",
            name=outcome.name,
            arguments=outcome.arguments,
            ok=outcome.ok,
            error_type=outcome.error_type,
            duration_ms=round(outcome.duration_ms, 1),
            output=outcome.output,
        )
        level = logging.INFO if outcome.ok else logging.WARNING
        self.log.log(
            level,
            "tool %s %s in %.0f ms%s",
            outcome.name,
            "ok" if outcome.ok else "failed",
            outcome.duration_ms,
            f" ({outcome.error_type})" if outcome.error_type else "",
        )

    # ------------------------------------------------------------------ call control (tools call these)

    def request_hangup(self, reason: str) -> None:
        self._pending_action = ("hangup", reason or "")
        self._action_armed = False

    def request_transfer(self, number: str, announcement: str | None) -> None:
        self._pending_action = ("transfer", number)
        self._transfer_announcement = announcement
        self._action_armed = False

    # Operator commands (ivr.console.commands) act at once: the operator chose the moment, no goodbye first.

    async def operator_hangup(self, by: str) -> None:
        """An operator hung up the call from the console: Twilio REST hang-up (else close the stream)."""
        if self.ended.is_set():
            raise CallControlRefused(f"call {self.call_sid} has already ended")
        self.feed.emit("operator.action", action="hangup", by=by)
        self.log.info("operator %s hung up the call", by)
        self.record.outcome = "operator-hangup"
        try:
            await self.controller.hang_up(self.call_sid)
        except TwilioRestError as exc:
            self.log.warning("Twilio hang-up failed (%s); closing the stream instead", exc)
        await self.end("operator-hangup")

    async def operator_transfer(self, by: str) -> None:
        """An operator transferred the call to the flow's human number (``transfer`` in the flow YAML)."""
        if self.ended.is_set():
            raise CallControlRefused(f"call {self.call_sid} has already ended")
        transfer = self.flow.transfer
        if transfer is None:
            reason = f"flow {self.flow.id} has no transfer number (add transfer.number to its YAML)"
            self.feed.emit("operator.action", action="transfer", by=by, refused=reason)
            raise CallControlRefused(reason)
        self.feed.emit("operator.action", action="transfer", by=by, to=mask_number(transfer.number))
        self.log.info("operator %s transfers the call to %s", by, mask_number(transfer.number))
        # Set first: Twilio may end the stream (stop) before the REST request returns.
        self.record.outcome = "transferred"
        try:
            await self.controller.redirect(self.call_sid, dial(transfer.number, transfer.announcement))
        except TwilioRestError as exc:
            if not self.ended.is_set():
                self.record.outcome = "in-progress"
            self.log.error("operator transfer failed: %s", exc)
            self.feed.emit("error", message="transfer failed")
            self.record.count("transfer_failures")
            raise CallControlRefused(f"Twilio refused the transfer: {exc}") from None
        await self.end("transferred")

    def _on_time_limit(self) -> None:
        self.log.info("call reached its time limit")
        self.request_hangup("time limit")
        self._spawn(
            self._request_response(
                say_line("We have reached the time limit for this call. Thank you for calling. Goodbye.")
            ),
            "limit",
        )

    async def _arm_action(self) -> None:
        """The goodbye/announcement response is done: act once its audio has played (a barrier mark)."""
        self._action_armed = True
        await self._send_caller(self.writer.mark(self.tracker.barrier("action")))
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(_ACTION_TIMEOUT_S, lambda: self._spawn(self._run_action(), "action"))
        )

    async def _run_action(self) -> None:
        action, self._pending_action = self._pending_action, None
        if action is None or self.ended.is_set():
            return
        kind, arg = action
        if kind == "hangup":
            self.log.info("hanging up (%s)", arg or "agent ended the call")
            self.record.outcome = "agent-hangup"
            try:
                await self.controller.hang_up(self.call_sid)
            except TwilioRestError as exc:
                self.log.warning("Twilio hang-up failed (%s); closing the stream instead", exc)
        else:
            self.log.info("transferring the call to %s", mask_number(arg))
            try:
                await self.controller.redirect(self.call_sid, dial(arg, self._transfer_announcement))
            except TwilioRestError as exc:
                self.log.error("transfer failed: %s", exc)
                self.feed.emit("error", message="transfer failed")
                self.record.count("transfer_failures")
                await self._request_response(
                    say_line(
                        "Sorry, I couldn't connect you to a person. Is there anything else I can do?",
                        "The transfer to a person failed.",
                    )
                )
                return
            self.record.outcome = "transferred"
        await self.end(self.record.outcome)
