"""The model's voice on the phone: audio and marks to Twilio, barge-in, and what the caller actually heard.

One :class:`AudioOut` per call, owned by :class:`~ivr.call.session.CallSession`. Model audio deltas become
Twilio ``media`` messages (converted to μ-law 8 kHz when the model speaks PCM16), with a named ``mark`` after
every ~100 ms so that Twilio's echo tells how much was played (:class:`~ivr.call.playback.PlaybackTracker`).
When the caller starts speaking over the agent, :meth:`AudioOut.on_speech_started` clears Twilio's buffer,
cancels the response in flight, truncates each item at the milliseconds confirmed played, and drops the late
audio of the cancelled response. The agent's transcript lines are written once the caller heard them, or
marked where they were cut (:mod:`ivr.call.heard`).

Per-frame path: :meth:`AudioOut.on_audio_delta` — keep it lean (no Redis, no metrics, no extra layers).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..audio.convert import OutboundConverter
from ..realtime import events as ev
from ..telephony import media_stream as tw
from .heard import Cut, HeardLines, Line
from .playback import MarkKind, MarkResult, PlaybackTracker

if TYPE_CHECKING:
    from .session import CallSession

#: A mark after every ~100 ms of model audio (and at the end of each item): what the caller heard is known
#: to that precision, and marks stay a small share of the messages we send.
MARK_EVERY_MS = 100.0


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
        interrupting = self.tracker.playing or link.response_in_flight
        if not interrupting:
            return
        await self.send(self.writer.clear())
        stop_s = time.perf_counter() - started
        self._meter.interrupted(stop_s)
        truncations = self.tracker.interrupt()
        self._unmarked_ms, self._unmarked_item = 0.0, None  # that audio was cleared with the rest
        if link.response_in_flight and link.current_response and not link.cancel_sent:
            link.cancel_sent = True
            self._discard.add(link.current_response)
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
        for line in self.heard.cut(cuts, self._progress):
            self.write_line(line)
        self.call.log.info(
            "caller barged in; cleared playback, truncated at %s ms", [t.audio_end_ms for t in truncations]
        )

    def on_speech_stopped(self) -> None:
        self._meter.speech_stopped()

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
