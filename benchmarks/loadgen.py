"""Simulated Twilio callers and a lightweight fake Realtime model (GA dialect), in one asyncio process.

Why one process with hand-written protocols: the generator must drive hundreds of calls at real-time pace
from a single core while the server under test has the other. Each call moves about 300 messages a second
through the generator (50 caller frames, 50 mark echoes and 50 model deltas out; 50 appends, 50 media and
50 marks in), so every message is handled by an ``asyncio.Protocol`` callback with prefix dispatch and
prebuilt frames (:mod:`wsframe`), never by per-message coroutines or schema validation.

What the callers do, per call: open ``/twilio/media``, send ``connected`` and ``start`` exactly as Twilio
does (with ``flow``/``caller``/``called`` parameters), then, once the model has the session, one 20 ms
μ-law ``media`` frame every 20 ms; they keep a playback clock and echo each ``mark`` when the audio before
it has "played", echo all pending marks at once on ``clear``, and send ``stop`` at the end.

What the fake model does, per model socket: ``session.created``, ``session.updated`` on ``session.update``
(whose instructions carry the call SID, which ties the socket to its call), then it talks: responses of
3 s (150 deltas of 20 ms, PCM16 24 kHz or μ-law per the flow) with ``response.created``/``response.done``;
every other response (the first, third, …) is interrupted after 2 s by
``input_audio_buffer.speech_started`` (the response then ends ``cancelled``, as with server VAD), then
``speech_stopped`` and the next response.

Latency is measured on the shared CLOCK_MONOTONIC: the k-th caller frame sent ↔ the k-th append the model
receives for that call (inbound hop), the j-th delta the model sends ↔ the j-th ``media`` the caller
receives (outbound hop), and ``speech_started`` sent ↔ ``clear`` received. Every caller and every model
socket has a fixed 1 ms phase slot in the 20 ms period so the load is spread like independent calls.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import os
import random
import re
import resource
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import orjson

from benchmarks import wsframe as wf
from ivr.audio import pcm16_to_ulaw, tone

FRAME_NS = 20_000_000
SLOTS = 20
SLOT_NS = FRAME_NS // SLOTS
NS_PER_ULAW_BYTE = 125_000  # 8000 bytes a second

RESPONSE_DELTAS = 150  # 3 s of model speech per response
BARGE_AFTER = 100  # every second response is interrupted after 2 s
GAP_AFTER_DONE_NS = 200_000_000
GAP_AFTER_BARGE_NS = 300_000_000

ACCOUNT_SID = "AC" + "b" * 32
CALLER_NUMBER = "+15550300001"
_INSTRUCTIONS_SID = re.compile(r"Benchmark call (CA[0-9a-f]{32})\.")

_MEDIA_FROM_SERVER = b'{"event":"media"'
_MARK_FROM_SERVER = b'{"event":"mark"'
_CLEAR_FROM_SERVER = b'{"event":"clear"'
_APPEND = b'{"type":"input_audio_buffer.append"'
_PONG_CLIENT = wf.OP_PONG
_CLOSE_1000 = wf.close_payload(1000)


@dataclass(frozen=True, slots=True)
class Mode:
    """A bridge audio mode: which flow (by number) and which format the fake model speaks."""

    name: str
    flow_id: str
    number: str
    model_audio: str  # "pcm" (24 kHz PCM16) or "pcmu"


MODES: dict[str, Mode] = {
    "resample": Mode("resample", "bench-pcm", "+15550200001", "pcm"),
    "passthrough": Mode("passthrough", "bench-pcmu", "+15550200002", "pcmu"),
}


def _caller_frames() -> list[bytes]:
    """One second of caller audio (speech-band tones plus noise) as 50 base64 μ-law frames."""
    rng = np.random.default_rng(7)
    pcm = tone(310.0, 1000, 8000, -14.0).astype(np.float64) + tone(1270.0, 1000, 8000, -20.0)
    pcm += rng.normal(0.0, 600.0, len(pcm))
    mulaw = pcm16_to_ulaw(np.clip(np.rint(pcm), -32768, 32767).astype(np.int16))
    raw = bytes(mulaw)
    return [base64.b64encode(raw[i : i + 160]) for i in range(0, 8000, 160)]


def _model_frames(audio: str) -> list[bytes]:
    """One second of the model's voice in its output format, as 50 base64 chunks of 20 ms."""
    pcm = tone(440.0, 1000, 24000, -12.0)
    if audio == "pcm":
        raw = pcm.astype("<i2").tobytes()
        size = 960
    else:
        raw = bytes(pcm16_to_ulaw(pcm[::3]))
        size = 160
    return [base64.b64encode(raw[i : i + size]) for i in range(0, len(raw), size)]


def percentiles_ms(samples_ns: list[int]) -> tuple[float, float, float]:
    """(p50, p99, max) in milliseconds; NaN when there are no samples."""
    if not samples_ns:
        return float("nan"), float("nan"), float("nan")
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p99 = np.percentile(arr, [50, 99])
    return float(p50), float(p99), float(arr.max())


@dataclass(slots=True)
class Recorder:
    """Latency samples and anomalies; samples are kept only while ``recording`` (the steady-state window)."""

    recording: bool = False
    inbound: list[int] = field(default_factory=list)
    outbound: list[int] = field(default_factory=list)
    clear: list[int] = field(default_factory=list)
    tick_lag: list[int] = field(default_factory=list)
    anomalies: dict[str, int] = field(default_factory=dict)
    model_events: dict[str, int] = field(default_factory=dict)

    def anomaly(self, what: str) -> None:
        self.anomalies[what] = self.anomalies.get(what, 0) + 1


@dataclass(slots=True, eq=False)
class Call:
    """One simulated caller and the bookkeeping that pairs its frames with the model's view of them."""

    index: int
    call_sid: str
    stream_sid: str
    slot: int
    transport: asyncio.Transport | None = None
    model: ModelConnection | None = None
    sending: bool = False
    seq: int = 2  # connected has none, start is 1
    chunk: int = 0
    inbound_sent: deque[int] = field(default_factory=deque)
    outbound_sent: deque[int] = field(default_factory=deque)
    marks: deque[tuple[int, str]] = field(default_factory=deque)
    play_until: int = 0
    speech_started_ns: int = 0
    media_overhead: int = 0
    media_sent: int = 0
    appends: int = 0
    media_received: int = 0
    marks_echoed: int = 0
    clears: int = 0
    ready: asyncio.Future[None] | None = None
    closed: asyncio.Future[None] | None = None


class CallerProtocol(asyncio.Protocol):
    """Twilio's side of one media stream."""

    def __init__(self, gen: Generator, call: Call) -> None:
        self.gen = gen
        self.call = call
        self.transport: asyncio.Transport | None = None
        self.decoder = wf.FrameDecoder()
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.head = b""
        self.open = False
        self.close_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        transport.write(wf.client_request("127.0.0.1", self.gen.server_port, "/twilio/media", self.key))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            parts = wf.split_head(self.head)
            if parts is None:
                return
            head, data = parts
            self.head = b""
            try:
                wf.check_server_response(head, self.key)
            except wf.HandshakeError as exc:
                self.gen.rec.anomaly(f"caller handshake: {exc}")
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            self.call.transport = self.transport
            self.gen.on_caller_open(self.call)
            if not data:
                return
        now = time.monotonic_ns()
        on_text = self.gen.on_twilio_text
        for opcode, payload in self.decoder.feed(data):
            if opcode == wf.OP_TEXT:
                on_text(self.call, payload, now)
            elif opcode == wf.OP_PING:
                assert self.transport is not None
                self.transport.write(wf.encode(payload, wf.OP_PONG, client=True))
            elif opcode == wf.OP_CLOSE:
                assert self.transport is not None
                if not self.close_sent:
                    self.close_sent = True
                    self.transport.write(wf.encode(payload[:2], wf.OP_CLOSE, client=True))
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.call.transport = None
        self.call.sending = False
        if self.call.closed is not None and not self.call.closed.done():
            self.call.closed.set_result(None)


class ModelConnection(asyncio.Protocol):
    """The fake model's side of one Realtime socket (GA dialect)."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.decoder = wf.FrameDecoder()
        self.head = b""
        self.open = False
        self.call: Call | None = None
        self.slot = 0
        self.speaking = False
        self.responses = 0
        self.sent_in_response = 0
        self.barge_at = -1
        self.idle_until = 0
        self.user_item = ""
        self.delta_prefix = b""
        self.response_id = ""
        self.item_id = ""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.audio_ms = 0

    # -- I/O callbacks ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.gen.models.add(self)

    def _send(self, event: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(wf.encode(orjson.dumps(event)))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            parts = wf.split_head(self.head)
            if parts is None:
                return
            head, data = parts
            self.head = b""
            assert self.transport is not None
            try:
                request = wf.parse_client_request(head)
            except wf.HandshakeError as exc:
                self.gen.rec.anomaly(f"model handshake: {exc}")
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            if not request.path.startswith("/v1/realtime?") or "model=" not in request.path:
                self.gen.rec.anomaly(f"model socket on unexpected path {request.path[:60]}")
            self.transport.write(wf.server_response(request))
            self.open = True
            session = {"type": "realtime", "object": "realtime.session", "id": "sess_bench"}
            self._send({"type": "session.created", "event_id": "evt_created", "session": session})
            if not data:
                return
        now = time.monotonic_ns()
        rec = self.gen.rec
        for opcode, payload in self.decoder.feed(data):
            if opcode == wf.OP_TEXT:
                if payload.startswith(_APPEND):
                    call = self.call
                    if call is None:
                        rec.anomaly("append before session.update")
                        continue
                    call.appends += 1
                    sent = call.inbound_sent
                    if sent:
                        t = sent.popleft()
                        if rec.recording:
                            rec.inbound.append(now - t)
                    else:
                        rec.anomaly("append with no caller frame pending")
                else:
                    self._on_event(payload)
            elif opcode == wf.OP_PING:
                assert self.transport is not None
                self.transport.write(wf.encode(payload, wf.OP_PONG))
            elif opcode == wf.OP_CLOSE:
                assert self.transport is not None
                self.transport.write(wf.encode(payload[:2], wf.OP_CLOSE))
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.models.discard(self)
        self.gen.unschedule_model(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_event(self, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
            etype = event["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.gen.rec.anomaly("model got a frame that is not a client event")
            return
        counts = self.gen.rec.model_events
        counts[etype] = counts.get(etype, 0) + 1
        if etype == "session.update":
            session = event.get("session") or {}
            self._send({"type": "session.updated", "event_id": "evt_updated", "session": session})
            if self.call is None:
                match = _INSTRUCTIONS_SID.search(str(session.get("instructions", "")))
                call = self.gen.calls_by_sid.get(match.group(1)) if match else None
                if call is None:
                    self.gen.rec.anomaly("session.update without a known call SID")
                    return
                self.call = call
                call.model = self
                self.gen.on_model_ready(self, call)

    # -- talking (driven by the generator's ticker) -------------------------------------------------------

    def _start_response(self) -> None:
        assert self.call is not None
        self.responses += 1
        n = self.responses
        self.response_id = f"resp_{self.call.index}_{n}"
        self.item_id = f"item_{self.call.index}_{n}"
        self.sent_in_response = 0
        self.barge_at = BARGE_AFTER if n % 2 == 1 else -1
        self.speaking = True
        self._send(
            {
                "type": "response.created",
                "event_id": "evt_rc",
                "response": {
                    "id": self.response_id,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                },
            }
        )
        self.delta_prefix = (
            b'{"type":"response.output_audio.delta","event_id":"evt_d","response_id":"'
            + self.response_id.encode()
            + b'","item_id":"'
            + self.item_id.encode()
            + b'","output_index":0,"content_index":0,"delta":"'
        )

    def _end_response(self, status: str, reason: str | None) -> None:
        details = {"type": status, "reason": reason} if reason else None
        output_tokens = self.sent_in_response // 2
        self._send(
            {
                "type": "response.done",
                "event_id": "evt_rd",
                "response": {
                    "id": self.response_id,
                    "object": "realtime.response",
                    "status": status,
                    "status_details": details,
                    "output": [
                        {
                            "id": self.item_id,
                            "type": "message",
                            "role": "assistant",
                            "status": "completed" if status == "completed" else "incomplete",
                            "content": [{"type": "output_audio", "transcript": "Benchmark speech."}],
                        }
                    ],
                    "usage": {
                        "total_tokens": 40 + output_tokens,
                        "input_tokens": 40,
                        "output_tokens": output_tokens,
                    },
                },
            }
        )
        self.speaking = False

    def tick(self, now: int) -> None:
        """Called once per 20 ms in this socket's phase slot: send the next delta, or start/stop talking."""
        transport = self.transport
        call = self.call
        if transport is None or call is None or transport.is_closing():
            return
        if not self.speaking:
            if now < self.idle_until or not self.gen.talking:
                return
            if self.user_item:
                self._send(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "event_id": "evt_ss",
                        "audio_end_ms": self.audio_ms + 300,
                        "item_id": self.user_item,
                    }
                )
                self.user_item = ""
            self._start_response()
        self.sent_in_response += 1
        frames = self.gen.model_frames
        frame = wf.encode(self.delta_prefix + frames[self.sent_in_response % len(frames)] + b'"}')
        t = time.monotonic_ns()
        transport.write(frame)
        call.outbound_sent.append(t)
        self.audio_ms += 20
        if self.sent_in_response == self.barge_at:
            self.user_item = f"item_u_{call.index}_{self.responses}"
            started = wf.encode(
                orjson.dumps(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "event_id": "evt_sst",
                        "audio_start_ms": self.audio_ms,
                        "item_id": self.user_item,
                    }
                )
            )
            call.speech_started_ns = time.monotonic_ns()
            transport.write(started)
            self._end_response("cancelled", "turn_detected")
            self.idle_until = now + GAP_AFTER_BARGE_NS
        elif self.sent_in_response >= RESPONSE_DELTAS:
            self._end_response("completed", None)
            self.idle_until = now + GAP_AFTER_DONE_NS


@dataclass
class StepLoad:
    """What one load step observed on the generator's side (the server's own figures come from /proc)."""

    calls_started: int
    calls_ready: int
    window_s: float
    gen_cpu_pct: float
    frames_sent: int
    media_received: int
    barge_ins: int
    rec: Recorder


class Generator:
    """Owns the fake model's listening socket, the callers, and the 1 ms phase ticker."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.rec = Recorder()
        self.caller_frames = _caller_frames()
        self.model_frames = _model_frames(mode.model_audio)
        self.calls: list[Call] = []
        self.calls_by_sid: dict[str, Call] = {}
        self.models: set[ModelConnection] = set()
        self.caller_slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        self.model_slots: list[list[ModelConnection]] = [[] for _ in range(SLOTS)]
        self.server_port = 0
        self.model_port = 0
        self.talking = True
        self._listener: asyncio.AbstractServer | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._slot = 0
        self._next_tick = 0
        self._run_id = os.urandom(4).hex()
        self._rng = random.Random(11)

    # -- fake model listener --------------------------------------------------------------------------------

    async def start_model(self) -> int:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: ModelConnection(self), "127.0.0.1", 0, backlog=1024)
        self.model_port = self._listener.sockets[0].getsockname()[1]
        return self.model_port

    async def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for model in list(self.models):
            if model.transport is not None:
                model.transport.abort()
        for call in self.calls:
            if call.transport is not None:
                call.transport.abort()
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()

    # -- events from the protocols ------------------------------------------------------------------------

    def on_caller_open(self, call: Call) -> None:
        assert call.transport is not None
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": call.stream_sid,
                "callSid": call.call_sid,
                "tracks": ["inbound"],
                "customParameters": {
                    "flow": self.mode.flow_id,
                    "caller": CALLER_NUMBER,
                    "called": self.mode.number,
                },
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": call.stream_sid,
        }
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        call.transport.write(
            wf.encode(orjson.dumps(connected), client=True) + wf.encode(orjson.dumps(start), client=True)
        )
        call.media_overhead = len(
            b'{"event":"media","streamSid":' + orjson.dumps(call.stream_sid) + b',"media":{"payload":"'
        ) + len(b'"}}')

    def on_model_ready(self, model: ModelConnection, call: Call) -> None:
        """The model has this call's session: the caller starts talking, the model starts after a pause."""
        model.slot = (call.slot + 7 + self._rng.randrange(SLOTS - 7)) % SLOTS
        model.idle_until = time.monotonic_ns() + self._rng.randrange(0, 500_000_000)
        self.model_slots[model.slot].append(model)
        call.sending = True
        if call.ready is not None and not call.ready.done():
            call.ready.set_result(None)

    def unschedule_model(self, model: ModelConnection) -> None:
        slot = self.model_slots[model.slot]
        if model in slot:
            slot.remove(model)

    def on_twilio_text(self, call: Call, payload: bytes, now: int) -> None:
        rec = self.rec
        if payload.startswith(_MEDIA_FROM_SERVER):
            call.media_received += 1
            sent = call.outbound_sent
            if sent:
                t = sent.popleft()
                if rec.recording:
                    rec.outbound.append(now - t)
            else:
                rec.anomaly("media with no model delta pending")
            b64 = len(payload) - call.media_overhead
            size = b64 * 3 // 4 - (payload[-4] == 61) - (payload[-5] == 61)  # 61 is '='
            start = call.play_until if call.play_until > now else now
            call.play_until = start + size * NS_PER_ULAW_BYTE
        elif payload.startswith(_MARK_FROM_SERVER):
            try:
                name = orjson.loads(payload)["mark"]["name"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                rec.anomaly("malformed mark from server")
                return
            call.marks.append((call.play_until, name))
        elif payload.startswith(_CLEAR_FROM_SERVER):
            call.clears += 1
            if call.speech_started_ns:
                if rec.recording:
                    rec.clear.append(now - call.speech_started_ns)
                call.speech_started_ns = 0
            else:
                rec.anomaly("clear with no speech_started")
            while call.marks:
                self._echo_mark(call, call.marks.popleft()[1])
            call.play_until = now
        else:
            rec.anomaly("unexpected message from server")

    def _echo_mark(self, call: Call, name: str) -> None:
        transport = call.transport
        if transport is None:
            return
        call.seq += 1
        message = {
            "event": "mark",
            "sequenceNumber": str(call.seq),
            "streamSid": call.stream_sid,
            "mark": {"name": name},
        }
        transport.write(wf.encode(orjson.dumps(message), client=True))
        call.marks_echoed += 1

    # -- the ticker ---------------------------------------------------------------------------------------

    def start_ticker(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick = time.monotonic_ns() + SLOT_NS
        self._tick_handle = loop.call_later(SLOT_NS / 1e9, self._tick)

    def _tick(self) -> None:
        now = time.monotonic_ns()
        if self.rec.recording:
            self.rec.tick_lag.append(now - self._next_tick)
        slot = self._slot
        frames = self.caller_frames
        for call in self.caller_slots[slot]:
            transport = call.transport
            if transport is None:
                continue
            if call.sending:
                call.seq += 1
                call.chunk += 1
                message = (
                    b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
                    % (
                        call.seq,
                        call.chunk,
                    )
                    + b'"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
                    % (
                        call.chunk * 20,
                        frames[call.chunk % len(frames)],
                        call.stream_sid.encode(),
                    )
                )
                frame = wf.encode(message, client=True)
                t = time.monotonic_ns()
                transport.write(frame)
                call.inbound_sent.append(t)
                call.media_sent += 1
            marks = call.marks
            while marks and marks[0][0] <= now:
                self._echo_mark(call, marks.popleft()[1])
        for model in self.model_slots[slot]:
            model.tick(now)
        self._slot = (slot + 1) % SLOTS
        self._next_tick += SLOT_NS
        delay = (self._next_tick - time.monotonic_ns()) / 1e9
        self._tick_handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._tick)

    # -- one load step ------------------------------------------------------------------------------------

    def _new_call(self, index: int) -> Call:
        loop = asyncio.get_running_loop()
        sid = f"{self._run_id}{index:024x}"
        call = Call(
            index=index,
            call_sid="CA" + sid,
            stream_sid="MZ" + sid,
            slot=(index * 7) % SLOTS,  # 7 is coprime with 20: consecutive calls land 7 ms apart
            ready=loop.create_future(),
            closed=loop.create_future(),
        )
        self.calls.append(call)
        self.calls_by_sid[call.call_sid] = call
        self.caller_slots[call.slot].append(call)
        return call

    async def _place(self, call: Call, delay: float) -> None:
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: CallerProtocol(self, call), "127.0.0.1", self.server_port)
        except OSError as exc:
            self.rec.anomaly(f"caller connect failed: {exc.strerror or exc}")
            assert call.ready is not None and call.closed is not None
            if not call.ready.done():
                call.ready.set_exception(exc)
            if not call.closed.done():
                call.closed.set_result(None)

    async def run_step(
        self,
        server_port: int,
        calls: int,
        *,
        ramp_s: float,
        settle_s: float,
        window_s: float,
        on_window_start: Callable[[], None],
        on_window_end: Callable[[], None],
        log: Callable[[str], None],
    ) -> StepLoad:
        """Place ``calls`` calls over ``ramp_s``, let them settle, record ``window_s``, then hang up."""
        self.server_port = server_port
        self.start_ticker()
        new_calls = [self._new_call(i) for i in range(calls)]
        placing = [
            asyncio.ensure_future(self._place(call, i * ramp_s / max(1, calls)))
            for i, call in enumerate(new_calls)
        ]
        ready_timeout = ramp_s + 20.0
        ready_results = await asyncio.wait_for(
            asyncio.gather(*(c.ready for c in new_calls if c.ready is not None), return_exceptions=True),
            ready_timeout,
        )
        await asyncio.gather(*placing, return_exceptions=True)
        ready = sum(1 for r in ready_results if r is None)
        log(f"{ready}/{calls} calls live; settling {settle_s:.0f} s")
        await asyncio.sleep(settle_s)

        frames0 = sum(c.media_sent for c in new_calls)
        media0 = sum(c.media_received for c in new_calls)
        clears0 = sum(c.clears for c in new_calls)
        # The generator's own cyclic GC would pause every call at once and show up as "server" latency; the
        # window allocates little that is cyclic, so collect now and keep the collector off until it ends.
        gc.collect()
        gc.freeze()
        gc.disable()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        self.rec.recording = True
        try:
            on_window_start()
            await asyncio.sleep(window_s)
            on_window_end()
        finally:
            self.rec.recording = False
            gc.enable()
            gc.unfreeze()
        wall = time.monotonic() - wall0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        gen_cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)

        load = StepLoad(
            calls_started=calls,
            calls_ready=ready,
            window_s=wall,
            gen_cpu_pct=100.0 * gen_cpu / wall,
            frames_sent=sum(c.media_sent for c in new_calls) - frames0,
            media_received=sum(c.media_received for c in new_calls) - media0,
            barge_ins=sum(c.clears for c in new_calls) - clears0,
            rec=self.rec,
        )
        await self._hang_up(new_calls)
        return load

    async def _hang_up(self, calls: list[Call]) -> None:
        """Stop talking, send Twilio's ``stop`` on every stream, and wait for the server to close them."""
        self.talking = False
        for call in calls:
            call.sending = False
        await asyncio.sleep(0.1)
        for call in calls:
            if call.transport is not None:
                call.seq += 1
                stop = {
                    "event": "stop",
                    "sequenceNumber": str(call.seq),
                    "streamSid": call.stream_sid,
                    "stop": {"accountSid": ACCOUNT_SID, "callSid": call.call_sid},
                }
                call.transport.write(wf.encode(orjson.dumps(stop), client=True))
        closed = [c.closed for c in calls if c.closed is not None]
        _, pending = await asyncio.wait(closed, timeout=15.0)
        if pending:
            self.rec.anomaly(f"server did not close {len(pending)} stream(s) within 15 s of stop")
        models = [m.closed for m in list(self.models)]
        if models:
            _, pending_models = await asyncio.wait(models, timeout=5.0)
            if pending_models:
                self.rec.anomaly(
                    f"{len(pending_models)} model socket(s) still open 5 s after the calls ended"
                )
        for slot in itertools.chain(self.caller_slots, self.model_slots):
            slot.clear()
