"""The offline engine: local VAD, Whisper (or pocketsphinx), the rule-based dialogue and hibari's voice.

To the call it is one more model speaking the Realtime protocol (:class:`ivr.engines.base.InProcessModel`):

- caller audio (8 kHz μ-law) → :class:`ivr.speech.vad.TurnDetector`; a turn start is reported as
  ``input_audio_buffer.speech_started`` (so the call's barge-in clears the agent's audio), its end as
  ``speech_stopped`` + ``committed``; the turn is recognised by the process's shared recogniser
  (:func:`ivr.speech.recognizer.shared_recognizer`, through its bounded worker queue) and reported as the
  caller's transcript. The end of a turn adapts to what was said (:mod:`ivr.speech.endpointing`): at a 200 ms
  pause the turn so far is recognised early; "yes" or "7.30" ends it at once, "my name is" or "um" waits,
  and when the turn ends as it was at the pause that early result is the transcript (no second run);
- the transcript goes to :class:`ivr.dialogue.manager.Dialogue`, which answers with lines to say and tool
  calls; lines are synthesised sentence by sentence (the first sentence plays while the next is made) and
  sent as audio deltas; tool calls end the response as ``function_call`` items, so the call runs them
  through the same tool runtime and approval gate as for OpenAI, and sends their results back as
  ``function_call_output`` items, which go back into the dialogue;
- lines the call itself asks for (the greeting, the hold phrase, the fallback notice) arrive as
  ``response.create`` instructions made by :func:`ivr.call.notices.say_line`; operator decisions arrive as
  :func:`ivr.call.notices.approval_notice` system messages.

Models are loaded once per process (:class:`LocalResources`); the recogniser's language model is built from
the flow's own phrases (intent examples, choices) on top of a generic phone-call corpus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..call.notices import parse_approval_notice, quoted_line
from ..dialogue import soundalike
from ..dialogue.manager import Action, CallTool, Dialogue, Say
from ..speech.asr import Recognition
from ..speech.endpointing import EndpointingPolicy
from ..speech.recognizer import SharedRecognizer, shared_recognizer
from ..speech.tts import Synthesizer, shared_synthesizer
from ..speech.vad import (
    SpeechPaused,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    VadEvent,
    trim_leading_silence,
)
from .base import InProcessModel
from .wire import ResponseState

if TYPE_CHECKING:
    from ..call.session import CallSession
    from ..flows import Flow
    from ..flows.state import FlowState

log = logging.getLogger("ivr.engines.local")

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
#: Caller text the call sends itself (keypad presses), not words the caller said.
_KEYPAD = re.compile(r"^The caller pressed (?P<digit>[0-9*#]) on the keypad")


def flow_phrases(flow: Flow) -> list[str]:
    """What callers of this flow are likely to say: intent examples and keywords, slot choices."""
    phrases: list[str] = []

    def intents_of(section: Any) -> Iterable[Any]:
        return getattr(section, "intents", None) or () if section is not None else ()

    sections = [getattr(flow, "offline", None)] + [getattr(s, "offline", None) for s in flow.stages]
    for section in sections:
        for intent in intents_of(section):
            phrases.extend(getattr(intent, "examples", None) or ())
            phrases.extend(getattr(intent, "keywords", None) or ())
            for slot in getattr(intent, "slots", None) or ():
                for value, synonyms in (getattr(slot, "choices", None) or {}).items():
                    phrases.append(str(value))
                    phrases.extend(synonyms)
    return [p for p in phrases if p and p.strip()]


@dataclass
class LocalResources:
    """The speech models one flow needs, loaded once per process and shared by its calls."""

    recognizer: SharedRecognizer
    synthesizer: Synthesizer
    load_s: float = 0.0

    @classmethod
    def for_flow(cls, flow: Flow, on_status: Any = None) -> LocalResources:
        """Load (or reuse) the models for ``flow``. Blocking: call it from a worker thread."""
        key = flow.id
        with _LOCK:
            cached = _RESOURCES.get(key)
            if cached is not None:
                return cached
            started = time.perf_counter()
            offline = getattr(flow, "offline", None)
            synthesizer = shared_synthesizer(
                voice=getattr(offline, "voice", "heart") or "heart",
                speed=float(getattr(offline, "speed", 1.0) or 1.0),
                on_status=on_status,
            )
            synthesizer.load()
            # IVR_ASR picks the recogniser; Whisper is one model per process whatever the flow, pocketsphinx
            # (chosen, or the degraded fallback) gets a language model from the flow's phrases.
            recognizer = shared_recognizer(sentences=flow_phrases(flow), on_status=on_status)
            recognizer.load()
            soundalike.load()  # the pronunciation table, read here rather than on a call's first guess
            resources = cls(recognizer, synthesizer, time.perf_counter() - started)
            _RESOURCES[key] = resources
            log.info(
                "offline engine ready for flow %s in %.2f s (speech recogniser: %s%s)",
                flow.id,
                resources.load_s,
                recognizer.kind,
                ", DEGRADED" if recognizer.degraded else "",
            )
            return resources


_LOCK = threading.Lock()
_RESOURCES: dict[str, LocalResources] = {}


def _today(flow: Flow) -> date:
    zone = ZoneInfo(flow.timezone) if flow.timezone else None
    return datetime.now(zone).date()


class LocalEngine(InProcessModel):
    """One call's offline conversation. Create with :meth:`for_call`, then ``await engine.open()``."""

    engine = "local"

    def __init__(
        self,
        *,
        flow: Flow,
        context: dict[str, str],
        state: FlowState | None = None,
        resources: LocalResources | None = None,
        today: date | None = None,
        fallback: bool = False,
        call: CallSession | None = None,
    ) -> None:
        super().__init__(model="local", id_prefix="local")
        self.flow = flow
        self.context = context
        self.state = state
        self.resources = resources
        self.today = today or _today(flow)
        self.fallback = fallback
        self.call = call
        offline = getattr(flow, "offline", None)
        #: Adaptive end of turn (ivr/speech/endpointing.py): at a pause the turn so far is recognised early;
        #: its words decide how much more silence ends the turn, and the result is reused when it does.
        self.vad = TurnDetector(endpointing=EndpointingPolicy())
        self._early: tuple[bytes, asyncio.Task[Recognition | None]] | None = None
        self.dialogue: Dialogue | None = None
        self._pending: list[Action] = []
        self._issued: set[str] = set()
        self._started = False
        self._awaiting_create = False
        self._turn_item: str | None = None
        self._turn_started_at: int = 0
        self._turn_ended_at: float | None = None
        self._unsaid: list[CallTool] = []
        #: A tool result said "pending approval": the next quoted line the call asks for is the hold phrase.
        self._hold_due = False
        #: The hold phrase being said; its sentences are dropped once the approval is decided.
        self._hold: Say | None = None
        #: Set when an operator's decision arrives: the hold phrase stops between sentences.
        self._decided = asyncio.Event()
        self._open_turn: tuple[float, dict[str, Any]] | None = None
        self._voice = getattr(offline, "voice", "heart") if offline is not None else "heart"
        #: per caller turn: (recognition ms, confidence, ms from end of speech to first audio)
        self.turn_metrics: list[dict[str, Any]] = []

    @classmethod
    def for_call(cls, call: CallSession, *, fallback: bool = False) -> LocalEngine:
        return cls(
            flow=call.flow,
            context=call.context,
            state=call.state,
            fallback=fallback,
            call=call,
        )

    async def open(self) -> LocalEngine:
        if self.resources is None:
            cached = _RESOURCES.get(self.flow.id)
            self.resources = cached or await asyncio.to_thread(LocalResources.for_flow, self.flow)
        stage = self.state.stage if self.state is not None else None
        self.dialogue = Dialogue(self.flow, stage=stage, context=self.context, today=self.today)
        await super().open()
        return self

    def effective_session(self) -> dict[str, Any]:
        return self.writer.session(
            model=self.model, instructions=self.instructions, voice=self._voice, tools=self.tools
        )

    # ---- caller audio ---------------------------------------------------------------------------------

    def on_audio(self, mulaw: bytes) -> None:
        self._on_vad(self.vad.feed_mulaw(mulaw))

    def _on_vad(self, events: list[VadEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                self._early = None
                self._turn_item = self.writer.new_id("item")
                self._turn_started_at = event.at_ms
                self.emit(self.writer.speech_started(self._turn_item, event.at_ms))
                if self.responding and self.dialogue is not None:
                    self.dialogue.interrupted()
            elif isinstance(event, SpeechPaused):
                task = self.spawn(self._recognise_early(event.revision, event.audio), "asr-early")
                self._early = (event.audio, task)
            elif isinstance(event, SpeechStopped):
                item = self._turn_item or self.writer.new_id("item")
                self._turn_item = None
                self._turn_ended_at = time.perf_counter()
                self.emit(self.writer.speech_stopped(item, event.at_ms), self.writer.committed(item))
                early, self._early = self._early, None
                if early is not None and early[0] == event.audio:  # no new speech since the pause
                    self.spawn(self._reuse_early(item, event.audio, early[1], self._turn_ended_at), "asr")
                else:
                    self.spawn(self._recognise(item, event.audio, self._turn_ended_at), "asr")

    async def _recognise_early(self, revision: int, audio: bytes) -> Recognition | None:
        """The turn so far, recognised at a pause: its words tell the VAD how much more silence ends it.
        None when the recogniser failed (the turn then ends by silence alone and is recognised again)."""
        assert self.resources is not None
        try:
            result = await self.resources.recognizer.recognize_async(audio)
        except Exception as exc:
            log.warning("early recognition of a pause failed (%s: %s)", type(exc).__name__, exc)
            if not self.closed:
                self._on_vad(self.vad.judged(revision, None))
            return None
        if not self.closed:
            self._on_vad(self.vad.judged(revision, result.text, result.confidence))
        return result

    async def _reuse_early(
        self, item: str, audio: bytes, early: asyncio.Task[Recognition | None], ended_at: float
    ) -> None:
        """The turn ended as it was at the pause: answer with the early recognition (done or on its way)."""
        result = await early
        if result is None:  # it failed: recognise the turn the usual way
            await self._recognise(item, audio, ended_at)
            return
        self._answer_turn(item, result, ended_at, early=True)

    async def _recognise(self, item: str, audio: bytes, ended_at: float) -> None:
        assert self.resources is not None
        # Through the process-wide bounded queue: concurrent calls share the recogniser's workers.
        result = await self.resources.recognizer.recognize_async(audio)
        self._answer_turn(item, result, ended_at, early=False)

    def _answer_turn(self, item: str, result: Recognition, ended_at: float, *, early: bool) -> None:
        """Report what the caller said and hand it to the dialogue; the next audio sent answers this turn."""
        assert self.dialogue is not None
        self.emit(self.writer.transcription(item, result.text, result.audio_ms / 1000.0))
        log.debug(
            "heard %r (confidence %.2f, %.0f ms%s)",
            result.text,
            result.confidence,
            result.decode_ms,
            ", early" if early else "",
        )
        metrics: dict[str, Any] = {
            "asr_ms": round(result.decode_ms, 1),
            "confidence": round(result.confidence, 3),
        }
        if early:
            metrics["early"] = True
        self.turn_metrics.append(metrics)
        self._open_turn = (ended_at, metrics)
        self._queue(self.dialogue.heard(result.text, result.confidence, result.alternatives))

    # ---- items from the call ----------------------------------------------------------------------------

    def on_item(self, item: dict[str, Any]) -> None:
        if self.dialogue is None:
            return
        kind = item.get("type")
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id in self._issued:  # not a replayed call from another engine
                self._issued.discard(call_id)
                self._pending.extend(self.dialogue.tool_result(str(call_id), str(item.get("output", ""))))
                self._hold_due = self.dialogue.waiting == "approval"
            return
        if kind != "message":
            return
        text = " ".join(
            str(part.get("text", ""))
            for part in item.get("content") or ()
            if isinstance(part, dict) and part.get("type") == "input_text"
        ).strip()
        if not text:
            return
        if item.get("role") == "system":
            notice = parse_approval_notice(text)
            if notice is not None:
                self._decided.set()
                self._pending.extend(
                    self.dialogue.approval_decided(
                        notice.tool, notice.approved, notice.output, notice.message
                    )
                )
        elif item.get("role") == "user" and self._started:
            if _KEYPAD.match(text):
                self._sync_stage()
            else:  # typed text
                self._pending.extend(self.dialogue.heard(text, 1.0))

    def on_session_update(self) -> None:
        self._sync_stage()

    def _sync_stage(self) -> None:
        """The call changed stage by itself (a keypad shortcut): follow it."""
        if self.dialogue is None or self.state is None or not self._started:
            return
        if self.state.stage != self.dialogue.stage and self.dialogue.waiting == "caller":
            self._pending.extend(self.dialogue.stage_changed(self.state.stage))

    # ---- responses ----------------------------------------------------------------------------------------

    def on_response_create(self, instructions: str | None) -> None:
        self._awaiting_create = False
        lines: list[Action] = []
        quoted = quoted_line(instructions)
        if quoted:
            lines.append(Say(quoted))
            if self._hold_due:
                self._hold_due = False
                self._hold = lines[-1]
                if self.dialogue is not None and self.dialogue.waiting == "approval":
                    self._decided.clear()
        if not self._started and self.dialogue is not None:
            self._started = True
            self._pending.extend(self.dialogue.start())
        actions, self._pending = lines + self._pending, []
        self._respond(actions)

    def _queue(self, actions: list[Action]) -> None:
        """New actions from a caller turn: answer now, or after the response that is running."""
        self._pending.extend(actions)
        if self.responding or self._awaiting_create or not self._started:
            return
        actions, self._pending = self._pending, []
        self._respond(actions)

    def _respond(self, actions: list[Action]) -> None:
        async def produce(state: ResponseState) -> None:
            for index, action in enumerate(actions):
                self._unsaid = [a for a in actions[index:] if isinstance(a, CallTool)]
                if isinstance(action, Say):
                    played_s = 0.0  # of this line's audio so far (the hold phrase waits for it)
                    for sentence in _SENTENCE.split(action.text.strip()):
                        if not sentence or self._hold_outdated(action):
                            continue
                        if action is self._hold and await self._decided_within(played_s):
                            continue
                        assert self.resources is not None
                        audio = await asyncio.to_thread(self.resources.synthesizer.synthesize_mulaw, sentence)
                        if self._open_turn is not None:  # the first words answering the caller's turn
                            audio = trim_leading_silence(audio)
                            ended_at, metrics = self._open_turn
                            self._open_turn = None
                            metrics["reply_ms"] = round((time.perf_counter() - ended_at) * 1000, 1)
                            self._report(metrics)
                        played_s = len(audio) / 8000  # μ-law at 8 kHz: one byte a sample
                        await self.speak(state, sentence, [audio])
                elif isinstance(action, CallTool):
                    self._issued.add(action.call_id)
                    self._awaiting_create = True
                    self.add_function_call(state, action.call_id, action.name, action.arguments)
            self._unsaid = []

        self._unsaid = []
        self.start_response(produce)

    async def _decided_within(self, seconds: float) -> bool:
        """Before the next sentence of the hold phrase: wait while the previous one plays (``seconds``;
        audio goes out faster than it plays) or until the operator's decision arrives, whichever comes
        first. Whether the hold is outdated, so its rest is not queued in front of "You're booked"."""
        if seconds > 0 and not self._decided.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._decided.wait(), timeout=seconds)
        return self._hold is not None and self._hold_outdated(self._hold)

    def _hold_outdated(self, action: Say) -> bool:
        """Whether ``action`` is the hold phrase ("… a staff member needs to approve this") and the operator
        has decided since it was asked for: the decision came before (or while) it was spoken, and the
        caller would hear "please stay on the line" right before "You're booked"."""
        return action is self._hold and self.dialogue is not None and self.dialogue.waiting != "approval"

    def _report(self, metrics: dict[str, Any]) -> None:
        if self.call is not None:
            self.call.feed.emit("engine.turn", engine="local", **metrics)

    def on_response_finished(self, state: ResponseState, status: str) -> None:
        if status != "completed":
            # Cut short (barge-in): the rest of the speech is dropped, but a tool call the dialogue is waiting
            # for must still happen.
            unsaid = [a for a in self._unsaid if a.call_id not in self._issued]
            self._pending[:0] = unsaid
            self._unsaid = []
            if self._awaiting_create:
                return  # the call still runs the tools it was given
        if self._pending and not self._awaiting_create and not self.closed:
            actions, self._pending = self._pending, []
            loop = asyncio.get_running_loop()
            loop.call_soon(self._respond, actions)
