"""Fuzz the running server over both of its sockets: the Twilio media stream and the model connection.

Run: ``python benchmarks/fuzz_server.py`` (100,000 messages, a few minutes), ``--messages 5000`` for a quick
pass, ``--seed N`` for another sequence, ``--json out.json`` to keep the figures. Not a test: it prints
figures (docs/reliability.md records them). Everything runs on 127.0.0.1 and ends by itself.

What happens: a real ``ivr serve`` child process (own embedded Valkey, signature checks on) and the test
suite's fake Realtime API in this process. A few fuzz workers each place real calls — signed webhook, the
``<Stream>`` with its ``<Parameter>`` values, signed upgrade, ``connected``/``start`` — and then alternate:

- a batch of frames on the **Twilio socket**: documented messages (media, mark, dtmf, connected, start)
  mutated at the JSON level (keys dropped, values replaced by any JSON value, types changed, keys added,
  event names bent) or at the text level (truncated, spliced, duplicated), plus generated junk (random JSON,
  text, binary frames, long strings). ``stop`` is never sent mid-fuzz: it legitimately ends a call.
- a batch of frames on the **model socket**, sent from the fake model's side of that call's connection:
  every server event type the bridge handles (audio and transcript deltas, response lifecycle with function
  calls and their arguments, speech started/stopped, truncation, session updates, errors, unknown types),
  mutated the same ways, plus junk. Final error codes (bad key, no quota) are left out: they end a call by
  design.
- after each batch, a **liveness probe**: valid caller audio must reach the model, and a valid model reply
  must reach the caller as audio. A call is *lost* if the server closes its socket, or a probe fails twice
  in a row.

Canary calls that are never fuzzed run alongside and are probed the same way (a fuzzed call must not hurt
its neighbours). At the end: crashes (server exit, tracebacks and ERROR lines in its log), calls lost, the
server's RSS / fds / sockets / asyncio tasks before (after one warm-up call) and after, and what the server
counted (malformed frames per call record, stream refusals).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import string
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, `ivr`, `tests` as a script

from benchmarks.reliability_harness import (
    ModelStandIn,
    RawCaller,
    ServerUnderTest,
    metric_sum,
    probe_call,
    report_line,
    scratch_dir,
    send_raw,
    settled,
    warm_up,
    write_flows,
)
from ivr.realtime import events as _events

FINAL_CODES: frozenset[str] = frozenset(
    getattr(_events, "FINAL_ERROR_CODES", frozenset({"insufficient_quota", "invalid_api_key"}))
)
BATCH = 250
MAX_FRAME_BYTES = (
    60_000  # under IVR_MAX_WS_MESSAGE_BYTES (64 KiB): a bigger frame is closed with 1009 by design
)
REPLAY_FRAMES = 2000  # the frames of a lost call kept for --replay (every frame since its last good probe)
MESSAGES_PER_CALL = 6000

# ---------------------------------------------------------------------------------------------- generation


class Mutator:
    """Random JSON values and the mutation operators, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def text(self, max_len: int = 40) -> str:
        r = self.rng
        alphabet = r.choice(
            [
                string.ascii_letters + string.digits,
                string.printable,
                "\u00e9\u4e2d\U0001f600\u200b\u202e\ufeff\x00\x7f\\\"'",
                "0123456789",
            ]
        )
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, max_len)))

    def scalar(self) -> Any:
        r = self.rng
        kind = r.randrange(12)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.randint(-(2**31), 2**31)
        if kind == 3:
            return r.choice([0, -1, 2**63, -(2**63) - 1, 2**64, 10**30])
        if kind == 4:
            return r.uniform(-1e9, 1e9)
        if kind == 5:
            return r.choice([1e308, -1e308, 5e-324, 0.1])
        if kind == 6:
            return "x" * r.choice([0, 1, 255, 4096, 20000])
        if kind == 7:
            return base64.b64encode(r.randbytes(r.randint(0, 400))).decode()
        return self.text()

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        if depth > 3 or r.random() < 0.6:
            return self.scalar()
        if r.random() < 0.5:
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(8): self.value(depth + 1) for _ in range(r.randint(0, 4))}

    def nested(self) -> Any:
        depth = self.rng.choice([50, 200, 600])
        value: Any = 1
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.5 else {"a": value}
        return value

    def _containers(self, doc: Any, out: list[tuple[Any, Any]], depth: int = 0) -> None:
        if depth > 12:  # mutate near the documented structure, not inside a deep nest made earlier
            return
        if isinstance(doc, dict):
            for key, child in doc.items():
                out.append((doc, key))
                self._containers(child, out, depth + 1)
        elif isinstance(doc, list):
            for index, child in enumerate(doc):
                out.append((doc, index))
                self._containers(child, out, depth + 1)

    def mutate(self, doc: dict[str, Any]) -> dict[str, Any] | Any:
        """One to three structural mutations of a JSON document (deep-copied)."""
        r = self.rng
        doc = json.loads(json.dumps(doc))
        for _ in range(r.randint(1, 3)):
            spots: list[tuple[Any, Any]] = []
            self._containers(doc, spots)
            if not spots:
                return self.value()
            parent, key = r.choice(spots)
            op = r.randrange(9)
            if op == 0 and isinstance(parent, dict):
                del parent[key]
            elif op == 1:
                parent[key] = self.value()
            elif op == 2:
                current = parent[key]
                parent[key] = (
                    str(current) if not isinstance(current, str) else r.choice([0, None, [current], {}])
                )
            elif op == 3 and isinstance(parent, dict):
                parent[self.text(10)] = self.value()
            elif op == 4 and isinstance(parent, dict) and "event" in parent:
                event = str(parent["event"])
                parent["event"] = r.choice([event.upper(), event + " ", "", "media\x00"])
            elif op == 5 and isinstance(parent, dict) and "type" in parent:
                parent["type"] = r.choice(
                    [str(parent["type"]).replace(".", "_"), str(parent["type"]) + ".x", "", "response"]
                )
            elif op == 6:
                parent[key] = self.nested()
            elif op == 7:
                parent[key] = r.choice(["", " ", "\x00", "null", "NaN", "-1", "1e999", "0x10"])
            else:
                parent[key] = self.scalar()
        return doc

    def text_mutation(self, raw: str) -> str:
        r = self.rng
        op = r.randrange(6)
        at = r.randint(0, len(raw))
        if op == 0:
            return raw[:at]
        if op == 1:
            return raw[:at] + self.text(6) + raw[at:]
        if op == 2:
            return raw + raw
        if op == 3:
            return raw[:at] + raw[at + r.randint(1, 8) :]
        if op == 4:
            return raw.replace('"', "'", 1)
        return raw[:at] + r.choice(["}", "]", ",", ":", '"', "\\", "{{", "\\u12"]) + raw[at:]

    def junk(self) -> str | bytes:
        r = self.rng
        kind = r.randrange(8)
        if kind == 0:
            return r.randbytes(r.randint(0, 512))  # a binary frame
        if kind == 1:
            return json.dumps(self.value())
        if kind == 2:
            return self.text(200)
        if kind == 3:
            return r.choice(["", " ", "null", "[]", "{}", "0", '""', "true", "{}" * 50])
        if kind == 4:
            return json.dumps(self.nested())
        if kind == 5:
            return json.dumps({"event": self.text(12), "x": self.value()})
        if kind == 6:
            return json.dumps({"type": self.text(20), "event_id": self.text(10)})
        return "x" * r.choice([1000, 16000, 30000])


# -- Twilio side ---------------------------------------------------------------------------------------------


def twilio_templates(caller: RawCaller, rng: random.Random) -> list[dict[str, Any]]:
    stream = caller.stream_sid
    payload = base64.b64encode(rng.randbytes(160)).decode()
    return [
        {
            "event": "media",
            "sequenceNumber": str(rng.randint(1, 10**6)),
            "media": {"track": "inbound", "chunk": "7", "timestamp": "140", "payload": payload},
            "streamSid": stream,
        },
        {
            "event": "mark",
            "sequenceNumber": "9",
            "streamSid": stream,
            "mark": {"name": f"m{rng.randint(0, 50)}"},
        },
        {
            "event": "dtmf",
            "streamSid": stream,
            "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": rng.choice("0123456789*#")},
        },
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream,
                "callSid": caller.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"flow": "reliability", "caller": "+15550000000"},
            },
            "streamSid": stream,
        },
        {"event": "stop", "sequenceNumber": "3", "streamSid": stream, "stop": {"callSid": caller.call_sid}},
    ]


def _ends_call(frame: str | bytes) -> bool:
    """A frame the server may rightly take as the end of the call (``stop``): never sent mid-fuzz."""
    try:
        data = json.loads(frame)
    except (ValueError, TypeError):
        return False
    return isinstance(data, dict) and data.get("event") == "stop"


def _capped(frame: str | bytes) -> str | bytes:
    """Frames stay under the size limit; an oversized frame ends the stream (1009) by design, not by a bug."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    return frame if size <= MAX_FRAME_BYTES else frame[: MAX_FRAME_BYTES // 4]


def twilio_frame(m: Mutator, caller: RawCaller) -> tuple[str, str | bytes]:
    r = m.rng
    roll = r.random()
    templates = twilio_templates(caller, r)
    if roll < 0.5:
        frame: str | bytes = json.dumps(m.mutate(r.choice(templates)))
        kind = "mutated"
    elif roll < 0.65:
        frame = m.text_mutation(json.dumps(r.choice(templates)))
        kind = "text-mutated"
    elif roll < 0.8:
        frame = json.dumps(r.choice(templates[:4]))  # valid messages in odd places (marks nobody sent…)
        kind = "valid"
    else:
        frame = m.junk()
        kind = "generated"
    if _ends_call(frame):
        frame = json.dumps({"event": "stop?", "sequenceNumber": "3"})
    return kind, _capped(frame)


# -- model side -------------------------------------------------------------------------------------------


@dataclass
class ModelIds:
    responses: list[str] = field(default_factory=lambda: ["resp_fuzz0"])
    items: list[str] = field(default_factory=lambda: ["item_fuzz0"])

    def rid(self, r: random.Random) -> str:
        if r.random() < 0.3:
            self.responses.append(f"resp_fuzz{r.randint(1, 10**6)}")
            del self.responses[:-20]
        return r.choice(self.responses)

    def iid(self, r: random.Random) -> str:
        if r.random() < 0.3:
            self.items.append(f"item_fuzz{r.randint(1, 10**6)}")
            del self.items[:-20]
        return r.choice(self.items)


def _arguments(m: Mutator) -> str:
    r = m.rng
    return r.choice(
        [
            "{}",
            "",
            "{",
            "null",
            "[1,2]",
            '{"x": NaN}',
            '{"x": 1e999}',
            '{"x": ' + "9" * r.choice([10, 5000]) + "}",
            json.dumps(m.value()),
            "[" * 3000,
        ]
    )


def model_templates(m: Mutator, ids: ModelIds) -> list[dict[str, Any]]:
    r = m.rng
    rid, iid = ids.rid(r), ids.iid(r)
    audio = base64.b64encode(r.randbytes(r.choice([160, 161, 800]))).decode()
    call = {
        "type": "function_call",
        "id": iid,
        "call_id": f"call_{r.randint(0, 999)}",
        "name": r.choice(["go_back", "go_front", "end_call", "no_such_tool", ""]),
        "arguments": _arguments(m),
        "status": "completed",
    }
    error_code = r.choice(
        ["invalid_value", "response_cancel_not_active", "server_error", None, "rate_limited"]
    )
    return [
        {"type": "response.output_audio.delta", "response_id": rid, "item_id": iid, "delta": audio},
        {"type": "response.audio.delta", "response_id": rid, "item_id": iid, "delta": audio},
        {"type": "response.output_audio.done", "response_id": rid, "item_id": iid},
        {
            "type": "response.output_audio_transcript.delta",
            "response_id": rid,
            "item_id": iid,
            "delta": m.text(),
        },
        {
            "type": "response.output_audio_transcript.done",
            "response_id": rid,
            "item_id": iid,
            "transcript": m.text(),
        },
        {"type": "response.created", "response": {"id": rid, "status": "in_progress", "output": []}},
        {
            "type": "response.done",
            "response": {
                "id": rid,
                "status": r.choice(["completed", "cancelled", "failed", "incomplete"]),
                "status_details": r.choice([None, {"reason": "turn_detected"}, {"error": {"code": "x"}}]),
                "usage": {"total_tokens": r.randint(0, 10**6), "input_tokens": 1, "output_tokens": 1},
                "output": r.choice([[], [call], [call, dict(call, call_id="call_dup")]]),
            },
        },
        {
            "type": "response.output_item.added",
            "response_id": rid,
            "item": {"id": iid, "type": r.choice(["function_call", "message"]), "name": call["name"]},
        },
        {
            "type": "response.function_call_arguments.done",
            "response_id": rid,
            "item_id": iid,
            "call_id": call["call_id"],
            "name": call["name"],
            "arguments": call["arguments"],
        },
        {"type": "input_audio_buffer.speech_started", "item_id": iid, "audio_start_ms": r.randint(-5, 10**7)},
        {"type": "input_audio_buffer.speech_stopped", "item_id": iid, "audio_end_ms": r.randint(-5, 10**7)},
        {"type": "input_audio_buffer.committed", "item_id": iid, "previous_item_id": None},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": iid,
            "content_index": 0,
            "transcript": m.text(120),
        },
        {
            "type": "conversation.item.truncated",
            "item_id": iid,
            "content_index": 0,
            "audio_end_ms": r.randint(0, 10**6),
        },
        {
            "type": "session.updated",
            "session": {"id": "sess_fuzz", "type": "realtime", "instructions": m.text()},
        },
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": error_code, "message": m.text()},
        },
        {"type": "rate_limits.updated", "rate_limits": [{"name": "requests", "limit": 1, "remaining": 0}]},
        {"type": "response.content_part.added", "response_id": rid, "item_id": iid},
    ]


def _is_final_error(frame: str | bytes) -> bool:
    try:
        data = json.loads(frame)
    except (ValueError, TypeError):
        return False
    if not isinstance(data, dict) or data.get("type") != "error":
        return False
    error = data.get("error")
    if not isinstance(error, dict):
        return False
    return any(isinstance(error.get(k), str) and error[k] in FINAL_CODES for k in ("code", "type"))


def model_frame(m: Mutator, ids: ModelIds) -> tuple[str, str | bytes]:
    r = m.rng
    roll = r.random()
    templates = model_templates(m, ids)
    if roll < 0.45:
        frame: str | bytes = json.dumps(m.mutate(r.choice(templates)))
        kind = "mutated"
    elif roll < 0.6:
        frame = m.text_mutation(json.dumps(r.choice(templates)))
        kind = "text-mutated"
    elif roll < 0.8:
        frame = json.dumps(r.choice(templates))
        kind = "valid"
    else:
        frame = m.junk()
        kind = "generated"
    for event_id in ("event_id",):
        if isinstance(frame, str) and frame.startswith("{") and r.random() < 0.5:
            frame = frame.replace("{", '{"' + event_id + '": "event_fuzz", ', 1) if frame != "{}" else frame
    if _is_final_error(frame):
        frame = json.dumps({"type": "error", "error": {"type": "server_error", "message": "fuzz"}})
    return kind, _capped(frame)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Tally:
    twilio: Counter[str] = field(default_factory=Counter)
    model: Counter[str] = field(default_factory=Counter)
    calls_placed: int = 0
    calls_completed: int = 0
    calls_lost: list[dict[str, Any]] = field(default_factory=list)
    probe_failures: list[dict[str, Any]] = field(default_factory=list)
    canary_probes: int = 0
    canary_failures: list[dict[str, Any]] = field(default_factory=list)
    dial_failures: list[str] = field(default_factory=list)
    call_sids: list[str] = field(default_factory=list)
    doing: dict[str, str] = field(default_factory=dict)  # what each worker is at, for the progress line
    work: Path = Path(".")

    @property
    def sent(self) -> int:
        return sum(self.twilio.values()) + sum(self.model.values())


def save_replay(work: Path, call_sid: str, history: deque[tuple[str, str | bytes]]) -> str:
    """Write a lost call's last frames as JSON lines (``--replay FILE`` sends them again, in order)."""
    path = work / f"lost-{call_sid}.jsonl"
    with path.open("w") as out:
        for side, frame in history:
            if isinstance(frame, bytes):
                out.write(json.dumps({"side": side, "hex": frame.hex()}) + "\n")
            else:
                out.write(json.dumps({"side": side, "text": frame}) + "\n")
    return str(path)


async def replay(path: Path) -> int:
    """Place one call, send a saved frame sequence on the same sockets, report whether the call survives."""
    work = scratch_dir("ivr-fuzz-replay-")
    model = ModelStandIn()
    await model.start()
    server = ServerUnderTest(
        model.fake.url, write_flows(work / "flows"), work / "server.log", twilio_api_base=model.rest.base_url
    )
    await server.start()
    try:
        caller = RawCaller(server)
        await caller.dial()
        await model.wait_session(caller.call_sid)
        frames = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for n, item in enumerate(frames):
            frame: str | bytes = bytes.fromhex(item["hex"]) if "hex" in item else item["text"]
            if item["side"] == "twilio":
                sent = await caller.send(frame)
            else:
                session = model.live_session(caller.call_sid)
                sent = session is not None and await send_raw(session, frame)
            if not sent:
                print(
                    f"frame {n + 1}/{len(frames)} could not be sent ({item['side']} socket gone): "
                    f"{frame[:200]!r}"
                )
                break
        problem = await probe_call(model, caller)
        print(f"replayed {len(frames)} frames: {'call alive' if problem is None else problem}")
        print(
            f"close code {caller.stats.close_code} {caller.stats.close_reason!r}; "
            f"server log {server.log_path}"
        )
        return 0 if problem is None else 1
    finally:
        await server.stop()
        await model.stop()


async def fuzz_worker(
    index: int,
    server: ServerUnderTest,
    model: ModelStandIn,
    tally: Tally,
    budget: list[int],
    seed: int,
) -> None:
    m = Mutator(random.Random(seed * 1000 + index))
    while budget[0] > 0:
        caller = RawCaller(server)
        tally.calls_placed += 1
        try:
            await caller.dial()
            await model.wait_session(caller.call_sid)
        except Exception as exc:
            tally.dial_failures.append(f"{type(exc).__name__}: {exc}"[:300])
            await caller.abandon()
            await asyncio.sleep(0.5)
            if len(tally.dial_failures) > 20:
                return
            continue
        tally.call_sids.append(caller.call_sid)
        ids = ModelIds()
        sent_on_call = 0
        history: deque[tuple[str, str | bytes]] = deque(maxlen=REPLAY_FRAMES)
        misses = 0
        lost: str | None = None
        last: list[str] = []
        while budget[0] > 0 and sent_on_call < MESSAGES_PER_CALL:
            side = "twilio" if (sent_on_call // BATCH) % 2 == 0 else "model"
            tally.doing[f"w{index}"] = f"{side} batch"
            for _ in range(BATCH):
                if side == "twilio":
                    kind, frame = twilio_frame(m, caller)
                    if not await caller.send(frame):
                        break
                    tally.twilio[kind] += 1
                else:
                    session = model.live_session(caller.call_sid)
                    if session is None:
                        break
                    kind, frame = model_frame(m, ids)
                    if not await send_raw(session, frame):
                        break
                    tally.model[kind] += 1
                last = [*last, f"{side}:{frame[:160]!r}"][-6:]
                history.append((side, frame))
                budget[0] -= 1
                sent_on_call += 1
            tally.doing[f"w{index}"] = f"probe after {side}"
            problem = await probe_call(model, caller)
            if problem is None:
                misses = 0
                continue
            misses += 1
            tally.probe_failures.append(
                {"call": caller.call_sid, "after": side, "problem": problem, "last": last}
            )
            if not caller.alive or misses >= 2:
                lost = problem
                break
        if lost is not None:
            replay = save_replay(tally.work, caller.call_sid, history)
            why = (
                f"{lost}; harness errors: {caller.stats.harness_errors[:2]}"
                if caller.stats.harness_errors
                else lost
            )
            tally.calls_lost.append(
                {"call": caller.call_sid, "why": why, "last_frames": last, "replay": replay}
            )
            await caller.abandon()
            continue
        await caller.hang_up()
        tally.calls_completed += 1


async def canary(server: ServerUnderTest, model: ModelStandIn, tally: Tally, stop: asyncio.Event) -> None:
    caller = RawCaller(server)
    await caller.dial()
    await model.wait_session(caller.call_sid)
    misses = 0
    while not stop.is_set():
        problem = await probe_call(model, caller)
        tally.canary_probes += 1
        if problem is not None:
            misses += 1
            tally.canary_failures.append({"call": caller.call_sid, "problem": problem})
            if not caller.alive or misses >= 2:
                tally.calls_lost.append(
                    {"call": caller.call_sid, "why": f"canary: {problem}", "last_frames": []}
                )
                await caller.abandon()
                return
        else:
            misses = 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await caller.hang_up()


async def progress(tally: Tally, total: int, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
        elapsed = time.monotonic() - started
        print(
            f"  [{elapsed:6.1f} s] {tally.sent:>7,}/{total:,} messages "
            f"({tally.sent / max(elapsed, 1e-9):,.0f}/s), calls placed {tally.calls_placed}, "
            f"completed {tally.calls_completed}, lost {len(tally.calls_lost)}, "
            f"probe failures {len(tally.probe_failures)}; {tally.doing}",
            flush=True,
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = scratch_dir("ivr-fuzz-")
    model = ModelStandIn()
    model_url = await model.start()
    server = ServerUnderTest(
        model_url, write_flows(work / "flows"), work / "server.log", twilio_api_base=model.rest.base_url
    )
    print(
        f"fuzz_server: {args.messages:,} messages, {args.workers} fuzz workers + {args.canaries} canaries, "
        f"seed {args.seed}"
    )
    print(f"  server log: {server.log_path}")
    await server.start()
    tally = Tally(work=work)
    try:
        await warm_up(server, model)  # the first call loads what calls load; the baseline follows it
        before = await settled(server)
        print(
            f"  baseline after a warm-up call: RSS {before.rss_kib / 1024:.1f} MiB, fds {before.fds}, "
            f"tasks {before.tasks}"
        )
        started = time.monotonic()
        stop = asyncio.Event()
        canaries = [asyncio.create_task(canary(server, model, tally, stop)) for _ in range(args.canaries)]
        reporter = asyncio.create_task(progress(tally, args.messages, started, stop))
        budget = [args.messages]
        await asyncio.gather(
            *(fuzz_worker(i, server, model, tally, budget, args.seed) for i in range(args.workers))
        )
        stop.set()
        await asyncio.gather(*canaries, reporter, return_exceptions=True)
        elapsed = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the server finish the last calls' records
        alive = server.running and await server.healthy()
        after = await settled(server) if server.running else None
        peers_after = server.socket_peers() if server.running else []
        records = []
        for sid in tally.call_sids:
            with contextlib.suppress(Exception):
                records.append(await server.api(f"/api/calls/{sid}"))
        counters: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        for record in records:
            outcomes[str(record.get("outcome"))] += 1
            for key, value in (record.get("counters") or {}).items():
                if isinstance(value, int | float):
                    counters[key] += value
        metrics = await server.metrics_text() if alive else ""
    finally:
        exit_code = await server.stop()
        await model.stop()
    problems = server.log_problems()
    result = {
        "messages": tally.sent,
        "twilio_messages": dict(tally.twilio),
        "model_messages": dict(tally.model),
        "seconds": round(elapsed, 1),
        "calls_placed": tally.calls_placed,
        "calls_completed": tally.calls_completed,
        "calls_lost": len(tally.calls_lost),
        "lost_details": tally.calls_lost[:10],
        "probe_failures": len(tally.probe_failures),
        "probe_failure_examples": tally.probe_failures[:10],
        "canary_probes": tally.canary_probes,
        "canary_failures": tally.canary_failures[:10],
        "dial_failures": tally.dial_failures[:10],
        "server_alive_at_end": alive,
        "server_exit_code": exit_code,
        "tracebacks_in_log": problems["tracebacks"],
        "error_lines_in_log": problems["errors"],
        "error_examples": problems["examples"],
        "rss_before_mib": round(before.rss_kib / 1024, 1),
        "rss_after_mib": round(after.rss_kib / 1024, 1) if after else None,
        "fds_before": before.fds,
        "fds_after": after.fds if after else None,
        "sockets_before": before.sockets,
        "sockets_after": after.sockets if after else None,
        "server_sockets_after": peers_after,
        "tasks_before": before.tasks,
        "tasks_after": after.tasks if after else None,
        "call_outcomes": dict(outcomes),
        "server_counted": dict(counters),
        "streams_refused": metric_sum(metrics, "ivr_media_streams_refused") if metrics else None,
        "twilio_rest_requests": len(model.rest.requests),
        "fake_model_protocol_complaints": len(model.fake.violations),
        "fake_model_complaint_examples": model.fake.violations[:5],
        "log": str(server.log_path),
    }
    return result


def print_report(r: dict[str, Any]) -> None:
    print("\nfuzz_server results")
    print(report_line("messages sent", f"{r['messages']:,} in {r['seconds']} s"))
    print(report_line("  on the Twilio socket", r["twilio_messages"]))
    print(report_line("  on the model socket", r["model_messages"]))
    print(
        report_line(
            "calls placed / completed / lost",
            f"{r['calls_placed']} / {r['calls_completed']} / {r['calls_lost']}",
        )
    )
    print(report_line("probe failures (recovered or not)", r["probe_failures"]))
    print(report_line("canary probes / failures", f"{r['canary_probes']} / {len(r['canary_failures'])}"))
    print(report_line("server alive at the end", r["server_alive_at_end"]))
    print(
        report_line(
            "tracebacks / ERROR lines in its log", f"{r['tracebacks_in_log']} / {r['error_lines_in_log']}"
        )
    )
    print(report_line("RSS before → after (MiB)", f"{r['rss_before_mib']} → {r['rss_after_mib']}"))
    print(
        report_line(
            "fds / sockets / tasks before", f"{r['fds_before']} / {r['sockets_before']} / {r['tasks_before']}"
        )
    )
    print(
        report_line(
            "fds / sockets / tasks after", f"{r['fds_after']} / {r['sockets_after']} / {r['tasks_after']}"
        )
    )
    print(report_line("call outcomes (records)", r["call_outcomes"]))
    print(report_line("server counted", r["server_counted"]))
    print(report_line("fake-model protocol complaints", r["fake_model_protocol_complaints"]))
    for example in r["error_examples"]:
        print("    log:", example[:200])
    for lost in r["lost_details"]:
        print("    lost:", lost["call"], lost["why"])
        print("      replay:", lost["replay"])
        for frame in lost["last_frames"]:
            print("      after:", frame[:200])
    for failure in r["probe_failure_examples"][:5]:
        print("    probe:", failure["problem"], "after", failure.get("after"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=100_000, help="fuzz messages to send in all (default 100000)"
    )
    parser.add_argument("--workers", type=int, default=4, help="concurrent fuzzed calls (default 4)")
    parser.add_argument(
        "--canaries", type=int, default=2, help="calls never fuzzed, probed alongside (default 2)"
    )
    parser.add_argument("--seed", type=int, default=9, help="random seed (default 9)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--replay", type=Path, help="send a lost call's saved frames again (lost-*.jsonl)")
    args = parser.parse_args(argv)
    if args.replay:
        return asyncio.run(replay(args.replay))
    if args.messages < 1 or args.workers < 1 or args.canaries < 0:
        parser.error("--messages and --workers must be positive, --canaries zero or more")
    result = asyncio.run(run(args))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    crashed = not result["server_alive_at_end"] or result["tracebacks_in_log"] > 0
    return 1 if crashed or result["calls_lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
