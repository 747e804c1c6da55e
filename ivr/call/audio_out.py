"""The model's voice on the phone: audio and marks to Twilio, barge-in, and what the caller actually heard.

One :class:`AudioOut` per call, owned by :class:`~ivr.call.session.CallSession`. Model audio deltas become
Twilio ``media`` messages (converted to μ-law 8 kHz when the model speaks PCM16), with a named ``mark`` after
every ~100 ms so that Twilio's echo tells how much was played (:class:`~ivr.call.playback.PlaybackTracker`).
When the caller starts speaking over the agent, :meth:`AudioOut.on_speech_started` clears Twilio's buffer,
cancels the response in flight, truncates each item at the milliseconds confirmed played, and drops the late
audio of the cancelled response. The agent's transcript lines are written once the caller heard them, or
marked where they were cut (:mod:`ivr.call.heard`); the cut also shapes the conversation replayed after a
reconnect (:mod:`ivr.call.conversation`).

When the model is slow — no reply audio :data:`HOLD_AFTER_S` seconds after the caller's turn ended — the
caller hears the flow's ``hold_phrase`` once, in the local voice (:mod:`ivr.speech.tts`), instead of
silence; :meth:`AudioOut.say_local` is also how an apology reaches the caller when Twilio's REST API cannot.

Per-frame path: :meth:`AudioOut.on_audio_delta` — keep it lean (no Redis, no metrics, no extra layers).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..audio.convert import OutboundConverter
from ..realtime import events as ev
from ..speech.tts import Synthesizer, shared_synthesizer
from ..telephony import media_stream as tw
from .heard import Cut, HeardLines, Line
from .playback import MarkKind, MarkResult, PlaybackTracker

if TYPE_CHECKING:
    from .session import CallSession

#: A mark after every ~100 ms of model audio (and at the end of each item): what the caller heard is known
#: to that precision, and marks stay a small share of the messages we send.
MARK_EVERY_MS = 100.0
#: Sentences already synthesised in the local voice, by (synthesizer, text); bounded, oldest dropped first.
_SPOKEN: dict[tuple[int, str], bytes] = {}
_SPOKEN_MAX = 64


def flow_synthesizer(flow: Any) -> Synthesizer:
    """The process-wide local voice a flow speaks with (its offline voice and speed)."""
    offline = getattr(flow, "offline", None)
    return shared_synthesizer(
        voice=getattr(offline, "voice", None) or "heart",
        speed=float(getattr(offline, "speed", None) or 1.0),
    )


def prepare_local_lines(flow: Any, texts: list[str]) -> None:
    """Synthesise ``texts`` in the flow's local voice now (blocking: run it in a worker thread at start-up),
    so the first hold phrase or apology of a call costs no voice loading and no synthesis."""
    synthesizer = flow_synthesizer(flow)
    for text in texts:
        key = (id(synthesizer), text)
        if text and key not in _SPOKEN and len(_SPOKEN) < _SPOKEN_MAX:
            _SPOKEN[key] = synthesizer.synthesize_mulaw(text)


#: The caller's turn ended this long ago and no reply audio yet: play the flow's hold phrase (once per turn).
HOLD_AFTER_S = 2.5


def _b64_safe(payload: str) -> bool:
    """True when ``payload`` can be spliced into JSON as-is (base64 alphabet only)."""
    return '"' not in payload and "\\" not in payload


class AudioOut:
    """What goes to the caller's ear, and what of it was heard (see the module docstring)."""

    def __init__(self, call: CallSession, send_twilio: Callable[[str], Awaitable[None]]) -> None:
        self.call = call
        self._send_twilio = send_twilio
        self._record = call.record
        self._meter = call.meter
        self.writer = tw.StreamWriter(call.stream_sid)
        self.tracker = PlaybackTracker()
        self.heard = HeardLines()
        #: The model's PCM16 → μ-law 8 kHz (None when the model already speaks the phone's μ-law).
        self.outbound = OutboundConverter() if call.audio_mode == "pcm" else None
        self._unmarked_ms = 0.0
        self._unmarked_item: str | None = None
        #: Responses cancelled by a barge-in: their late audio deltas are dropped.
        self._discard: set[str] = set()
        #: The pending hold phrase of this turn (cancelled by the first reply audio or by speech).
        self._hold: asyncio.Task[None] | None = None
        self._local_lines = 0

    async def send(self, text: str) -> None:
        """One message to Twilio; a socket that went away is the endpoint's business (it ends the call)."""
        try:
            await self._send_twilio(text)
        except Exception as exc:
            self.call.log.debug("send to Twilio failed: %s", exc)

    # ------------------------------------------------------------------ audio and marks

    async def on_audio_delta(self, event: ev.AudioDelta) -> None:
        if event.response_id in self._discard:
            self._record.count("late_deltas_dropped")
            return
        if self.outbound is not None:
            try:
                pcm = base64.b64decode(event.delta)
            except ValueError:
                self._record.count("malformed_model")
                return
            mulaw = self.outbound.convert(pcm)
            if not mulaw:
                return
            payload = base64.b64encode(mulaw).decode()
            duration_ms = len(mulaw) / 8.0
        else:
            payload = event.delta
            if not _b64_safe(payload):
                self._record.count("malformed_model")
                return
            duration_ms = (len(payload) * 3 // 4 - payload.count("=", -2)) / 8.0
        if self._unmarked_item != event.item_id:
            await self.mark_played_so_far()
            self._unmarked_item = event.item_id
        await self.send(self.writer.media(payload))
        if self._meter.timer.waiting:  # the first audio of a greeting or reply: once per turn
            self._meter.audio_sent()
            if self._hold is not None:
                self._cancel_hold()
        self._unmarked_ms += duration_ms
        if self._unmarked_ms >= MARK_EVERY_MS:
            await self.mark_played_so_far()

    async def mark_played_so_far(self) -> None:
        """Send one mark covering the audio sent since the previous one."""
        if self._unmarked_ms and self._unmarked_item is not None:
            mark = self.tracker.on_audio_sent(self._unmarked_item, self._unmarked_ms)
            self._unmarked_ms = 0.0
            await self.send(self.writer.mark(mark))

    async def barrier(self, tag: str) -> None:
        """A mark that Twilio echoes once everything sent before it has played."""
        await self.send(self.writer.mark(self.tracker.barrier(tag)))

    def on_mark(self, name: str) -> MarkResult:
        """Twilio echoed a mark: note what was played (and write the lines now heard in full)."""
        result = self.tracker.on_mark(name)
        if result.kind is MarkKind.PLAYED and self.heard.holding:
            item = result.item_id
            line = self.heard.played(item, result.played_ms, self.tracker.sent_ms(item) if item else 0)
            if line is not None:
                self.write_line(line)
        return result

    # ------------------------------------------------------------------ barge-in

    async def on_speech_started(self) -> None:
        """Barge-in: stop playback, cancel the response if one is running, truncate at what was heard."""
        link = self.call.link
        started = time.perf_counter()
        self._meter.speech_started()
        self._cancel_hold()
        interrupting = self.tracker.playing or link.response_in_flight
        if not interrupting:
            return
        if self.call.actions.goodbye_pending:
            # The goodbye before a hang-up or transfer plays out whole: clearing it would echo the action's
            # barrier mark at once and close the line mid-goodbye (ivr/call/control.py).
            self._record.count("barge_ins_during_goodbye")
            self.call.log.info("caller spoke over the goodbye; letting it play before the line closes")
            return
        await self.send(self.writer.clear())
        stop_s = time.perf_counter() - started
        self._meter.interrupted(stop_s)
        truncations = self.tracker.interrupt()
        self._unmarked_ms, self._unmarked_item = 0.0, None  # that audio was cleared with the rest
        cancelled = None
        if link.response_in_flight and link.current_response and not link.cancel_sent:
            link.cancel_sent = True
            cancelled = link.current_response
            self._discard.add(cancelled)
            await link.send(link.client.response_cancel())
        for t in truncations:
            if not t.retired:  # an item of a replaced model session: the new one does not know it
                await link.send(link.client.truncate(t.item_id, t.audio_end_ms))
        if self.outbound is not None:
            self.outbound.reset()
        self._record.count("barge_ins")
        cuts = [Cut(t.item_id, t.audio_end_ms, t.sent_ms) for t in truncations]
        self.call.feed.emit(
            "barge_in",
            heard_ms=[t.audio_end_ms for t in truncations],
            items=[c.as_dict() for c in cuts],
            stop_ms=round(stop_s * 1000, 3),
        )
        for c in cuts:
            link.history.cut(c.item_id, c.heard_ms, c.sent_ms)
        if cancelled is not None:
            # Answers of the cancelled response with no mark pending (none sent yet, or played in full so
            # far) are cut too, at what was played: the caller heard no more of them.
            truncated = {c.item_id for c in cuts}
            for item_id in link.history.answers_of(cancelled):
                if item_id not in truncated:
                    link.history.cut(item_id, self.tracker.played_ms(item_id), self.tracker.sent_ms(item_id))
        for line in self.heard.cut(cuts, self._progress):
            self.write_line(line)
        self.call.log.info(
            "caller barged in; cleared playback, truncated at %s ms", [t.audio_end_ms for t in truncations]
        )

    def on_speech_stopped(self) -> None:
        """The caller's turn ended: time the reply, and hold the line if the model is slow to answer."""
        self._meter.speech_stopped()
        if self.call.flow.hold_phrase and self._hold is None and not self.call.ended.is_set():
            self._hold = self.call.spawn(self._hold_line(HOLD_AFTER_S), "hold")

    # ------------------------------------------------------------------ the local voice

    def _cancel_hold(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.cancel()

    def _synthesizer(self) -> Synthesizer:
        return flow_synthesizer(self.call.flow)

    async def _hold_line(self, delay_s: float) -> None:
        """After ``delay_s`` without reply audio, say the hold phrase (synthesised meanwhile; the voice
        loads once per process, in a worker thread)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        phrase = self.call.flow.hold_phrase
        mulaw = await self._local_audio(phrase)
        await asyncio.sleep(max(0.0, due - loop.time()))
        self._hold = None  # from here on it plays whole (the reply's audio queues behind it)
        if self.call.ended.is_set() or not self._meter.timer.waiting:
            return
        self._record.count("hold_phrases")
        self.call.feed.emit("hold_phrase", text=phrase, after_s=delay_s)
        self.call.log.info("no reply audio %.1f s after the caller's turn: playing the hold phrase", delay_s)
        await self._play_local(phrase, mulaw)

    async def say_local(self, text: str, *, wait: bool = False) -> None:
        """Say ``text`` in the local voice on the stream; ``wait``: return once it has had time to play."""
        mulaw = await self._local_audio(text)
        ms = await self._play_local(text, mulaw)
        if wait:
            await asyncio.sleep(ms / 1000.0 + 0.3)  # the audio is queued at Twilio: let it play out

    async def _local_audio(self, text: str) -> bytes:
        """``text`` in the local voice as μ-law, synthesised in a worker thread once per process (the hold
        phrase and the apology are the same few sentences on every call: no TTS work per turn)."""
        synthesizer = self._synthesizer()
        key = (id(synthesizer), text)
        mulaw = _SPOKEN.get(key)
        if mulaw is None:
            mulaw = await asyncio.to_thread(synthesizer.synthesize_mulaw, text)
            if len(_SPOKEN) >= _SPOKEN_MAX:
                _SPOKEN.pop(next(iter(_SPOKEN)))
            _SPOKEN[key] = mulaw
        return mulaw

    async def _play_local(self, text: str, mulaw: bytes) -> float:
        """Send μ-law audio made by the call itself, with a mark (barge-in clears it like model audio)."""
        if not mulaw:
            return 0.0
        await self.mark_played_so_far()
        self._local_lines += 1
        item_id = f"local_{self._local_lines}"
        ms = len(mulaw) / 8.0
        mark = self.tracker.on_audio_sent(item_id, ms, local=True)
        await self.send(self.writer.media(base64.b64encode(mulaw).decode()))
        await self.send(self.writer.mark(mark))
        self.call.transcript("agent", text, item_id=item_id, local=True)
        return ms

    # ------------------------------------------------------------------ what the caller heard

    def agent_said(self, event: ev.AgentTranscriptDone) -> None:
        """The model's transcript of an answer: written once the caller heard it, or was cut (heard.py)."""
        played, sent = self._progress(event.item_id)
        line = self.heard.said(
            event.item_id,
            event.transcript,
            played_ms=played,
            sent_ms=sent,
            cancelled=event.response_id in self._discard,
        )
        if line is not None:
            self.write_line(line)

    def _progress(self, item_id: str) -> tuple[int, int]:
        """``(played_ms, sent_ms)`` of an item, counting audio sent since its last mark."""
        unmarked = int(self._unmarked_ms) if self._unmarked_item == item_id else 0
        return self.tracker.played_ms(item_id), self.tracker.sent_ms(item_id) + unmarked

    def write_line(self, line: Line) -> None:
        self.call.transcript("agent", line.text, **line.fields())

    def release_lines(self) -> None:
        """The call ends: write every line still waiting to be heard, cut where playback had got to."""
        for line in self.heard.release(self._progress):
            self.write_line(line)

    async def new_session(self) -> None:
        """The model session was replaced. The old items' audio already at Twilio still plays: their lines
        stay held until heard, or cut by a barge-in (no truncation: the new session does not know them)."""
        await self.mark_played_so_far()
        self.tracker.retire_items()
