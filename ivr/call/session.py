"""One phone call: the async shell that moves data between Twilio, the model and the tools.

The protocol work happens in sans-I/O pieces — :mod:`ivr.telephony.media_stream` (Twilio messages),
:mod:`ivr.realtime.dialect` / :mod:`ivr.realtime.events` (model events), :mod:`ivr.call.playback` (what the
caller heard), :mod:`ivr.audio.convert` (μ-law ⇄ PCM). :class:`CallSession` owns the lifecycle: it opens the
model socket when Twilio's ``start`` arrives, and on ``stop``, socket close or hang-up it always closes the
model socket, cancels its tasks and finalises the call record. In between it routes messages to the helpers
it owns, one concern each:

- :class:`~ivr.call.model_link.ModelLink` — the model socket: reconnect with replay, roll-over before the
  provider's session cap, fallback to the local engine, caller audio in, the response in flight;
- :class:`~ivr.call.audio_out.AudioOut` — model audio and marks out to Twilio, barge-in, what was heard;
- :class:`~ivr.call.tools_runner.ToolRunner` — function calls through the stage check and approval gate;
- :class:`~ivr.call.control.CallActions` — hang-up and transfer, asked by tools, operators or the time limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from ..approvals.gate import ApprovalGate
from ..engines.factory import EngineKind, engine_kind
from ..flows import Flow
from ..flows.state import FlowState
from ..logs import call_logger, mask_number, redact, use_redactor
from ..metrics import Metrics
from ..realtime import events as ev
from ..realtime.dialect import dialect_for_model
from ..settings import Settings
from ..store.keys import KeySchema
from ..telephony import media_stream as tw
from ..telephony.rest import CallController
from ..tools.registry import ToolContext, registry_for_flow
from .audio_out import MARK_EVERY_MS, AudioOut
from .control import CallActions, CallControlRefused
from .meter import CallMeter
from .model_link import FALLBACK_AFTER_ATTEMPTS, FALLBACK_NOTICE, ModelLink, session_config
from .playback import MarkKind
from .pricing import estimate_cost_usd
from .registry import CallFeed, CallRecord
from .resume import Resumed
from .tools_runner import ToolRunner

__all__ = [
    "FALLBACK_AFTER_ATTEMPTS",
    "FALLBACK_NOTICE",
    "MARK_EVERY_MS",
    "CallControlRefused",
    "CallSession",
]


#: Seconds the end of a call waits for Redis to mark it closed (the caller already hung up or is being
#: hung up on; a Redis that does not answer must not hold the end of the call).
RELEASE_TIMEOUT_S = 0.5


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
        resumed: Resumed | None = None,
        release: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``metrics``: the app's Prometheus metrics (None in unit tests); ``started_at``: the
        ``time.perf_counter()`` reading when Twilio's ``start`` arrived (the greeting is timed from it).
        ``resumed``: the call was carried over from an instance that died (ivr.call.resume).
        ``release``: marks the call closed on purpose in Redis before it ends here; False when another
        instance holds the call now (ivr.store.reattach), and then its end is not written from here."""
        self.resumed = resumed
        self._release = release
        #: This instance is going away and let another carry the call on (:meth:`detach`).
        self.handed_over = False
        self.settings = settings
        self.flow = flow
        self.record = record
        self.feed = feed
        self._close_twilio = close_twilio
        self.controller = controller
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.log = call_logger("ivr.call", self.call_sid, self.stream_sid)
        # The flow's redact: rules, on every event (CallFeed.emit) and every log line of this call's tasks.
        self.redactor = flow.redactor()
        feed.redactor = record.redactor = self.redactor
        use_redactor(self.redactor)

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
        self.state = FlowState(
            flow,
            context,
            definitions=self.tools.realtime_tools(),
            stage=resumed.stage
            if resumed is not None and resumed.stage and flow.stage(resumed.stage)
            else None,
        )
        record.stage = self.state.stage
        self.session_config = session_config(flow, self.state)
        self.gate = gate
        self.tool_context = ToolContext(
            call_sid=self.call_sid,
            flow=flow,
            call=self,
            caller_number=context.get("caller_number", ""),
            redis=redis,
            keys=keys,
        )
        self._dtmf_count = 0
        self.ended = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
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

        self.link = ModelLink(self)
        if resumed is not None:
            self.link.resume_from(resumed.history)
        self.audio = AudioOut(self, send_twilio)
        self.runner = ToolRunner(self)
        self.actions = CallActions(self)

    # ------------------------------------------------------------------ lifecycle

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this call (cancelled when it ends; a failure is logged and counted)."""
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

    def call_later(self, delay: float, callback: Callable[[], Any]) -> None:
        """Run ``callback`` after ``delay`` seconds, unless the call has ended by then."""
        self._timers.append(asyncio.get_running_loop().call_later(delay, callback))

    async def begin(self) -> None:
        """Open the model session and greet. Called once, right after Twilio's ``start``."""
        resumed = self.resumed
        if resumed is None:
            self.feed.emit(
                "call.started",
                flow=self.flow.id,
                model=self.model,
                dialect=self.dialect,
                audio=self.audio_mode,
                caller=mask_number(self.record.caller),
            )
        else:
            self.feed.emit(
                "call.resumed",
                stream=resumed.number,
                previous_instance=resumed.previous,
                stream_sid=self.stream_sid,
                replayed=len(resumed.history),
            )
            self.log.warning(
                "call resumed here (stream %d) after instance %s dropped it; %d lines replayed",
                resumed.number,
                resumed.previous or "?",
                len(resumed.history),
            )
            self.spawn(self.runner.await_pending_approvals(), "approvals-resumed")
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
        limit = float(self.flow.limits.max_call_seconds or 0)
        if limit and resumed is not None and resumed.started_at:
            limit = max(1.0, limit - (time.time() - resumed.started_at))  # the call's limit, not the stream's
        if limit:
            self.call_later(limit, self.actions.on_time_limit)
        self.spawn(self.link.run(), "model")

    async def finish(self, outcome: str) -> None:
        """End the call: close the model socket (≤1 s), cancel tasks, finalise the record. Idempotent."""
        if self.ended.is_set():
            return
        self.ended.set()
        for timer in self._timers:
            timer.cancel()
        await self.link.close()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.audio.release_lines()
        if self.handed_over:
            self.log.info("call handed over: another instance resumes it from Redis")
            self.feed.emit("call.handed_over", stream_sid=self.stream_sid, reason="drain")
            return
        if not await self._still_ours():
            self.log.info("call ended here, but another instance carries it on: its end is not written here")
            self.feed.emit("call.handed_over", stream_sid=self.stream_sid, reason="resumed elsewhere")
            return
        await self.runner.abandon_pending()  # undecided approvals of this call can no longer be decided
        self.record.outcome = outcome if self.record.outcome == "in-progress" else self.record.outcome
        self.meter.call_ended(self.record.outcome)
        self.record.ended_at = time.time()
        self.record.duration_s = round(self.record.ended_at - self.record.started_at, 3)
        self.record.counters["stale_marks"] = self.audio.tracker.stale_marks
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

    async def _still_ours(self) -> bool:
        """Mark the call closed on purpose (no resume after this stream); False if another instance holds
        it now. Redis trouble counts as ours (the end is written as before)."""
        if self._release is None:
            return True
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                return await self._release()
        except Exception as exc:  # Redis down or slow: write the end as usual
            self.log.warning("could not mark the call closed in Redis (%s)", redact(repr(exc)))
            return True

    async def detach(self) -> None:
        """Stop carrying the call here without ending it (a drain ran out of time): the model socket and
        tasks stop, the call is not marked closed and its end is not written, its approvals stay pending.
        :meth:`close_stream` then ends the stream, and Twilio's ``<Connect action>`` has another instance
        resume the call."""
        self.handed_over = True
        await self.finish("handed-over")

    async def close_stream(self, code: int = 1000) -> None:
        """Close Twilio's socket (after :meth:`detach` or :meth:`finish`)."""
        await self._close_twilio(code)

    async def end(self, outcome: str, code: int = 1000) -> None:
        """Finish the call from our side and close Twilio's socket (which ends a ``<Connect><Stream>``)."""
        await self.finish(outcome)
        await self._close_twilio(code)

    # ------------------------------------------------------------------ call control (tools and operators)

    def request_hangup(self, reason: str) -> None:
        """A tool asks to hang up once the goodbye has played (:class:`~ivr.tools.registry.CallControl`)."""
        self.actions.request_hangup(reason)

    def request_transfer(self, number: str, announcement: str | None) -> None:
        """A tool asks to transfer the caller once the announcement has played."""
        self.actions.request_transfer(number, announcement)

    async def operator_hangup(self, by: str) -> None:
        """An operator hung up the call from the console; :class:`CallControlRefused` if it cannot be done."""
        await self.actions.operator_hangup(by)

    async def operator_transfer(self, by: str) -> None:
        """An operator transferred the call to the flow's human number; :class:`CallControlRefused` if not."""
        await self.actions.operator_transfer(by)

    # ------------------------------------------------------------------ Twilio side

    async def on_twilio(self, msg: tw.TwilioMessage) -> None:
        if isinstance(msg, tw.Media):
            await self.link.on_caller_audio(msg.payload)
        elif isinstance(msg, tw.Mark):
            result = self.audio.on_mark(msg.name)
            if result.kind is MarkKind.BARRIER and result.tag == "action":
                await self.actions.run()
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

    async def _on_dtmf(self, digit: str) -> None:
        self._dtmf_count += 1
        self.feed.emit("dtmf", digit=digit)
        # Keys may be a PIN or a card number: the log says a key was pressed, never which.
        self.log.info("caller pressed a keypad key (key %d of this call; digit not logged)", self._dtmf_count)
        action = self.state.on_key(digit)
        text = f"The caller pressed {digit} on the keypad."
        if action is not None and action.stage_change is not None:
            await self.apply_stage_change(action.stage_change)
            text += f" That moves the conversation to the {action.stage_change.stage!r} stage."
        if action is not None and action.tool:
            outcome = await self.runner.execute(action.tool, "{}", f"dtmf_{self._dtmf_count}")
            text = (
                f"The caller pressed {digit} on the keypad, which ran {action.tool}. Result: {outcome.output}"
            )
        self.link.history.append(("user", text))
        await self.link.send(self.link.client.user_text(text))
        await self.link.request_response()

    # ------------------------------------------------------------------ model side

    async def on_model_event(self, event: ev.ServerEvent) -> None:
        """One event from the model (called by :class:`~ivr.call.model_link.ModelLink`'s reader)."""
        if isinstance(event, ev.AudioDelta):
            await self.audio.on_audio_delta(event)
        elif isinstance(event, ev.SpeechStarted):
            await self.audio.on_speech_started()
        elif isinstance(event, ev.ResponseCreated):
            self.link.response_created(event.response_id)
        elif isinstance(event, ev.AudioDone):
            await self.audio.mark_played_so_far()
        elif isinstance(event, ev.ResponseDone):
            await self.audio.mark_played_so_far()
            await self._on_response_done(event)
        elif isinstance(event, ev.AgentTranscriptDone):
            if event.transcript:
                self.audio.agent_said(event)  # (the link's conversation follows model events itself)
        elif isinstance(event, ev.UserTranscript):
            if event.transcript:
                self.transcript("caller", event.transcript)
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
            self.audio.on_speech_stopped()

    async def _on_response_done(self, event: ev.ResponseDone) -> None:
        self.link.response_done()
        self.record.add_usage(event.usage)
        self.meter.response_done(event.usage)
        if event.status not in ("completed", "cancelled", None):
            self.log.warning("model response ended %s (%s)", event.status, event.status_reason or "no reason")
        if event.function_calls:
            self.spawn(self.runner.run(event.function_calls), "tools")
        elif self.actions.awaiting_goodbye:
            await self.actions.arm()
        elif self.link.need_response:
            await self.link.request_response()

    def transcript(self, role: str, text: str, **extra: Any) -> None:
        """A transcript line of the caller or the agent: into the record and the event feed."""
        event = self.feed.emit("transcript", role=role, text=text, **extra)  # redacted by the feed
        entry = {"role": role, "text": event["text"], "ts": event["ts"], **extra}
        self.record.transcript.append(entry)

    async def apply_stage_change(self, change: Any) -> None:
        """Move to another stage: new instructions and tools for the live session (audio keeps flowing)."""
        self.record.stage = change.stage
        self.session_config = session_config(self.flow, self.state)
        self.feed.emit("stage.changed", previous=change.previous, stage=change.stage, trigger=change.trigger)
        trigger = "key:*" if change.trigger.startswith("key:") else change.trigger  # keypad digits stay out
        self.log.info("stage %s → %s (%s)", change.previous, change.stage, trigger)
        await self.link.send(self.link.client.session_update(self.session_config))
