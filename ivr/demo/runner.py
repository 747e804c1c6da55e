"""One demo call, start to finish: Redis, datasets, speech models, the server, the call, the report.

Everything runs in this process on loopback: an embedded Redis (unless REDIS_URL is set), the app on a
free port with the offline engine, the simulated Twilio caller (signed webhook, media stream, marks), and a
stand-in for the one Twilio REST endpoint the app uses (hang-up and transfer end the media stream the way
Twilio would). The caller's lines are synthesised, pitched down to sound like another person, and sent as
8 kHz μ-law through the same path a phone call takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl

import httpx
import numpy as np
import uvicorn
from fastapi import Request, Response

from ..app import create_app
from ..audio.g711 import pcm16_to_ulaw
from ..audio.resample import Downsampler24to8
from ..caller.client import CallEndedError, CallOptions, SimulatedCall
from ..engines.local import LocalResources
from ..flows import Flow, FlowSet
from ..settings import Settings
from ..speech.wer import word_errors
from ..store.embedded import EmbeddedRedis
from ..store.keys import KeySchema
from ..tools import datasets as ds
from .caller import CallerScript, dental_booking_script
from .report import (
    parse_json,
    reply_latency_ms,
    sound_span,
    turn_latency_line,
    turn_latency_summary,
    write_stereo_wav,
    write_summary,
)

Ask = Callable[[str], Awaitable[str]]

#: The caller's voice: the same neural voice, played ~12 % lower and slower so the two sides differ.
_CALLER_PITCH = 0.89


def default_flows_dir() -> Path:
    """flows/ in the working directory, else the one beside the package (a source checkout)."""
    here = Path("flows")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "flows"


@dataclass
class DemoOptions:
    flow_id: str = "dental-clinic"
    flows_dir: Path | None = None
    caller_number: str = "+13125550101"
    caller_name: str = "Maria Gonzalez"
    approve: bool | None = None  # True: --yes; False: deny; None: ask (approve when there is no terminal)
    interactive: bool = False
    out_dir: Path = Path(".")
    redis_url: str = ""
    timeout_s: float = 240.0


@dataclass
class DemoResult:
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)


class Progress:
    """Timestamped progress lines: what the demo is doing, so nothing pauses silently."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", file=self.out, flush=True)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def caller_voice(resources: LocalResources, text: str) -> bytes:
    """The caller's line as 8 kHz μ-law: the neural voice, pitched down, through the phone's downsampler."""
    pcm = resources.synthesizer.synthesize(text).astype(np.float32)
    n = int(len(pcm) / _CALLER_PITCH)
    stretched = np.interp(np.arange(n) * _CALLER_PITCH, np.arange(len(pcm)), pcm)
    down = Downsampler24to8()
    samples = down.process(np.clip(stretched, -32768, 32767).astype(np.int16))
    return pcm16_to_ulaw(samples) + bytes([0xFF]) * 800  # and 100 ms of line silence


class DemoCall:
    """The conversation loop: speak, wait for the agent, handle the operator's approval."""

    def __init__(
        self,
        *,
        options: DemoOptions,
        progress: Progress,
        resources: LocalResources,
        ask: Ask,
        base_url: str,
        operator_token: str,
        script: CallerScript,
    ) -> None:
        self.options = options
        self.progress = progress
        self.resources = resources
        self.ask = ask
        self.base_url = base_url
        self.operator_token = operator_token
        self.script = script
        self.call: SimulatedCall | None = None
        self.lines: list[tuple[str, int, int]] = []  # text, first sample of sound, end of sound
        self.approvals: list[dict[str, Any]] = []
        self.agent_lines: list[str] = []
        self.caller_heard: list[str] = []
        self.engine_turns: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []
        self._approval_pending: asyncio.Event = asyncio.Event()
        self._approval_done: asyncio.Event = asyncio.Event()
        # Set when a decision reaches the call before the terminal answered (taken in the console).
        self._decided_elsewhere: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- live events -------------------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "transcript":
            role, text = event.get("role", "?"), event.get("text", "")
            (self.agent_lines if role == "agent" else self.caller_heard).append(text)
            label = "agent " if role == "agent" else "caller"
            shown = text if text else "(nothing recognised)"
            self.progress(f"  {label} │ {shown}")
        elif kind == "tool.called":
            self.tools.append(event)
            status = "ok" if event.get("ok") else f"not run: {event.get('error_type')}"
            self.progress(f"  tool   │ {event.get('name')} {_args(event.get('arguments'))} → {status}")
        elif kind == "approval.decided":
            # Set even before the terminal question is asked: the console may decide first.
            self._decided_elsewhere.setdefault(str(event.get("approval_id")), asyncio.Event()).set()
        elif kind == "approval.requested":
            self._approval_pending.set()
            self._approval_done.clear()
            task = asyncio.ensure_future(self._decide(str(event.get("approval_id"))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "engine.turn":
            self.engine_turns.append(event)
        elif kind == "stage.changed":
            self.progress(f"  stage  │ {event.get('previous')} → {event.get('stage')}")
        elif kind == "call.ended":
            self.progress(f"  call ended: {event.get('outcome')}")

    async def _decide(self, approval_id: str) -> None:
        headers = {"Authorization": f"Bearer {self.operator_token}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10) as http:
            details = (await http.get(f"/api/approvals/{approval_id}")).json()
            what = f"{details.get('tool')} {_args(details.get('arguments'))}"
            self.progress(f"  OPERATOR: approval {approval_id} requested for {what}")
            if details.get("reason"):
                self.progress(f"            why: {details.get('reason')}")
            approve = self.options.approve
            if approve is None:
                if sys.stdin is not None and sys.stdin.isatty():
                    approve = await self._ask_or_console(http, approval_id)
                    if approve is None:  # decided in the console
                        self._approval_pending.clear()
                        self._approval_done.set()
                        return
                else:
                    self.progress("            no terminal to ask: approving automatically (as --yes would)")
                    approve = True
            else:
                self.progress(f"            {'approving' if approve else 'denying'} automatically")
            body = {"decision": "approve" if approve else "deny", "operator": "demo-operator"}
            response = await http.post(f"/api/approvals/{approval_id}", json=body)
            self.approvals.append(
                {
                    "id": approval_id,
                    "tool": details.get("tool"),
                    "decision": body["decision"],
                    "status": response.status_code,
                    "arguments": details.get("arguments"),
                }
            )
        self._approval_pending.clear()
        self._approval_done.set()

    async def _ask_or_console(self, http: httpx.AsyncClient, approval_id: str) -> bool | None:
        """Ask at the terminal, unless an operator decides in the console first (then None)."""
        elsewhere = self._decided_elsewhere.setdefault(approval_id, asyncio.Event())
        self.progress("            (or decide in the console)")
        asking = asyncio.ensure_future(self.ask("            approve it? [y/n] "))
        console = asyncio.ensure_future(elsewhere.wait())
        await asyncio.wait({asking, console}, return_when=asyncio.FIRST_COMPLETED)
        console.cancel()
        if asking.done():
            return asking.result().strip().lower() in {"y", "yes"}
        asking.cancel()
        record = (await http.get(f"/api/approvals/{approval_id}")).json()
        self.progress(
            f"            {record.get('status')} in the console by {record.get('decided_by') or '?'}"
        )
        self.approvals.append(
            {
                "id": approval_id,
                "tool": record.get("tool"),
                "decision": "approve" if record.get("status") == "approved" else "deny",
                "status": 200,
                "decided_by": record.get("decided_by"),
                "arguments": record.get("arguments"),
            }
        )
        return None

    # ---- the conversation ----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        assert self.call is not None
        audio = caller_voice(self.resources, text)
        span = sound_span(audio) or (0, len(audio))
        # The line starts at the next tick: after the audio already queued, on the sent timeline.
        start = len(self.call.sent_audio) + self.call.queued_caller_bytes
        self.lines.append((text, start + span[0], start + span[1]))
        self.call.say(audio)

    async def agent_turn(self) -> None:
        """Wait for the agent to answer and stop; an approval in between is waited out."""
        assert self.call is not None
        while True:
            await self.call.wait_agent_quiet(900, timeout=60)
            if not self._approval_pending.is_set():
                return
            await self._approval_done.wait()

    async def scripted(self) -> None:
        assert self.call is not None
        await self.call.wait_started(timeout=30)
        await self.agent_turn()
        self.say(self.script.first_line())
        while True:
            await self.agent_turn()
            line = self.script.next_line(self.agent_lines[-1] if self.agent_lines else "")
            if line is None:
                break
            self.say(line)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call.wait_ended(), 20)

    async def interactive(self) -> None:
        assert self.call is not None
        await self.call.wait_started(timeout=30)
        self.progress(
            "  you are the caller: type what to say and press Enter (empty line or Ctrl-D hangs up)"
        )
        while not self.call.ended:
            await self.agent_turn()
            if self._approval_pending.is_set():
                continue
            try:
                line = (await self.ask("  you    │ ")).strip()
            except EOFError:
                line = ""
            if not line or self.call.ended:
                break
            self.say(line)
        if not self.call.ended:
            await self.call.hang_up()


def _args(arguments: Any) -> str:
    if not isinstance(arguments, dict):
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in arguments.items()) + ")"


def _twilio_rest_stand_in(app: Any, demo: DemoCall) -> None:
    """Twilio's call-update endpoint, played by the demo: hang-up and transfer end the media stream."""

    @app.post("/2010-04-01/Accounts/{account}/Calls/{call}.json", include_in_schema=False)
    async def update_call(account: str, call: str, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        what = "hang-up" if form.get("Status") == "completed" else "transfer (TwiML redirect)"
        demo.progress(f"  twilio │ the app asked Twilio for a {what}; ending the media stream")
        if demo.call is not None:
            task = asyncio.ensure_future(demo.call.hang_up())
            demo._tasks.add(task)
            task.add_done_callback(demo._tasks.discard)
        return Response(
            content=f'{{"sid": "{call}", "account_sid": "{account}", "status": "completed"}}',
            media_type="application/json",
        )


async def _load_datasets(flows: FlowSet, redis_url: str, keys: KeySchema, progress: Progress) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for spec in ds.collect(flows):
            report = await ds.load(client, keys, spec, progress=lambda n: None, warn=progress)
            progress(f"loaded dataset {report.dataset}: {report.records} records from {spec.source}")
    finally:
        await client.aclose()


async def run_demo(options: DemoOptions, out: TextIO, ask: Ask) -> DemoResult:
    progress = Progress(out)
    progress("ivr demo: a complete phone call on this machine (no API key, no network)")
    flows_dir = options.flows_dir or default_flows_dir()
    flows = FlowSet.load(flows_dir)
    flow = flows.get(options.flow_id)
    if flow is None:
        known = ", ".join(f.id for f in flows)
        raise SystemExit(f"ivr demo: no flow {options.flow_id!r} in {flows_dir} (flows: {known})")
    if not flow.numbers:
        raise SystemExit(f"ivr demo: flow {flow.id!r} has no phone number to call; add one under numbers:")
    progress(f"flow {flow.id} from {flows_dir}, dialled at {flow.numbers[0]}")

    embedded: EmbeddedRedis | None = None
    redis_url = options.redis_url
    prefix = "ivr:" if not redis_url else f"ivr-demo-{secrets.token_hex(3)}:"
    if not redis_url:
        progress("starting an embedded Redis (valkey) …")
        embedded = EmbeddedRedis()
        await asyncio.to_thread(embedded.start)
        redis_url = embedded.url
        progress(f"Redis ready at {redis_url}")
    else:
        progress(f"using the Redis at REDIS_URL, keys under {prefix!r}")
    keys = KeySchema(prefix)
    try:
        await _load_datasets(flows, redis_url, keys, progress)
        progress("loading the offline speech models (recogniser, voice) …")
        resources = await asyncio.to_thread(LocalResources.for_flow, flow, lambda m: progress(f"  {m}"))
        progress(f"speech models ready in {resources.load_s:.1f} s")
        return await _call(options, flow, flows, redis_url, prefix, resources, progress, ask)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _call(
    options: DemoOptions,
    flow: Flow,
    flows: FlowSet,
    redis_url: str,
    prefix: str,
    resources: LocalResources,
    progress: Progress,
    ask: Ask,
) -> DemoResult:
    sock = _free_socket()
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    account_sid = "AC" + secrets.token_hex(16)
    auth_token, operator_token = secrets.token_hex(16), secrets.token_hex(16)
    settings = Settings(
        engine="local",
        redis_url=redis_url,
        redis_prefix=prefix,
        flows_dir=options.flows_dir or default_flows_dir(),
        twilio_account_sid=account_sid,
        twilio_auth_token=auth_token,
        operator_token=operator_token,
        public_url=base_url,
        twilio_api_base=base_url,
        instance_id=f"demo-{port}",
        log_level="WARNING",
    )
    script = dental_booking_script(options.caller_name)
    demo = DemoCall(
        options=options,
        progress=progress,
        resources=resources,
        ask=ask,
        base_url=base_url,
        operator_token=operator_token,
        script=script,
    )
    app = create_app(settings, flows)
    _twilio_rest_stand_in(app, demo)
    ivr_log = logging.getLogger("ivr")
    ivr_log_level = ivr_log.level
    ivr_log.setLevel(logging.WARNING)  # the demo prints its own progress; restored when it ends
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", ws_ping_interval=None))
    serving = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                await serving
                raise RuntimeError("the demo server stopped during start-up")
            await asyncio.sleep(0.02)
        progress(f"server listening on {base_url} (offline engine)")
        progress(
            f"watch the call live in the operations console: {base_url}/ops/  "
            f"(log in with this demo's admin token: {operator_token})"
        )
        options_ = CallOptions(
            base_url=base_url,
            from_number=options.caller_number,
            to_number=flow.numbers[0],
            account_sid=account_sid,
            auth_token=auth_token,
            operator_token=operator_token,
            duration_s=options.timeout_s,
            on_event=demo.on_event,
        )
        call = SimulatedCall(options_)
        demo.call = call
        progress(
            f"placing the call from {options.caller_number} (Twilio's signed webhook, then the media stream)"
        )
        running = asyncio.create_task(call.run())
        conversation = asyncio.create_task(demo.interactive() if options.interactive else demo.scripted())
        done, _ = await asyncio.wait({running, conversation}, return_when=asyncio.FIRST_COMPLETED)
        if conversation in done and conversation.exception() is not None:
            exc = conversation.exception()
            if not isinstance(exc, CallEndedError):
                progress(f"the conversation stopped: {exc}")
        if not running.done():
            await call.hang_up()
        result = await running
        conversation.cancel()
        await asyncio.gather(conversation, return_exceptions=True)
        return await _report(options, flow, settings, demo, call, result, progress)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        ivr_log.setLevel(ivr_log_level)


async def _report(
    options: DemoOptions,
    flow: Flow,
    settings: Settings,
    demo: DemoCall,
    call: SimulatedCall,
    result: Any,
    progress: Progress,
) -> DemoResult:
    import redis.asyncio as aioredis

    keys = KeySchema(settings.redis_prefix)
    booked: list[dict[str, Any]] = []
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        for tool in demo.tools:
            output = tool.get("output")
            data = parse_json(output)
            if isinstance(data, dict) and data.get("status") == "booked" and data.get("booking_id"):
                stored = await client.hgetall(keys.booking(str(data["booking_id"])))
                booked.append(
                    {"booking_id": data["booking_id"], "spoken": data.get("spoken"), "redis": stored}
                )
        record = await client.hgetall(keys.call(call.call_sid))
    finally:
        await client.aclose()

    wav = options.out_dir / "demo-call.wav"
    seconds = write_stereo_wav(wav, call.sent_audio, call.played_audio)
    latencies = []
    for index, (_text, _start, end) in enumerate(demo.lines):
        until = demo.lines[index + 1][1] if index + 1 < len(demo.lines) else None
        latency = reply_latency_ms(call.played_audio, end, until)
        if latency is not None:
            latencies.append(round(latency, 1))
    said = " ".join(text for text, _s, _e in demo.lines)
    heard = " ".join(demo.caller_heard)
    errors = word_errors(said, heard)
    stored_ok = [b for b in booked if b["redis"].get("status") == "booked"]
    approved = [a for a in demo.approvals if a["decision"] == "approve"]
    goal = bool(stored_ok) and bool(approved) if not options.interactive else bool(stored_ok)
    summary: dict[str, Any] = {
        "goal": "book an appointment, approved by the operator",
        "goal_reached": goal,
        "flow": flow.id,
        "call_sid": call.call_sid,
        "outcome": record.get("outcome") or getattr(result, "ended_by", None),
        "end_reason": getattr(result, "ended_by", None),
        "duration_s": round(seconds, 1),
        "bookings": booked,
        "approvals": demo.approvals,
        "transcript": [
            {
                "role": e.get("role"),
                "text": e.get("text"),
                # An agent line the caller did not hear to its end says how much they heard.
                **{k: e[k] for k in ("interrupted", "heard_ms", "total_ms") if k in e},
            }
            for e in call.transcript
            if e.get("type") == "transcript"
        ],
        "tools": [
            {
                "name": t.get("name"),
                "arguments": t.get("arguments"),
                "ok": t.get("ok"),
                "error": t.get("error_type"),
            }
            for t in demo.tools
        ],
        "recognition": {
            "caller_said": [text for text, _s, _e in demo.lines],
            "agent_heard": demo.caller_heard,
            "word_accuracy": round(errors.accuracy, 3),
        },
        "reply_latency_ms": latencies,
        "turn_latency": turn_latency_summary(record),
        "engine_turns": [
            {k: v for k, v in e.items() if k in ("asr_ms", "confidence", "reply_ms")}
            for e in demo.engine_turns
        ],
        "errors": call.errors,
        "recording": str(wav),
        "redis_prefix": settings.redis_prefix,
    }
    path = options.out_dir / "demo-call.json"
    write_summary(path, summary)
    progress(f"recording: {wav} ({seconds:.1f} s; left channel caller, right channel agent)")
    progress(f"summary:   {path}")
    if latencies:
        progress(
            f"caller's last word → agent's first audio: median {float(np.median(latencies)):.0f} ms "
            f"(min {min(latencies):.0f}, max {max(latencies):.0f}, {len(latencies)} turns)"
        )
    measured = turn_latency_line(summary["turn_latency"])
    if measured:
        progress(measured)
    progress(f"the agent recognised the caller's words with {errors.accuracy:.0%} word accuracy")
    if goal:
        ids = ", ".join(b["booking_id"] for b in stored_ok)
        progress(f"SUCCESS: booking {ids} is stored in Redis and was approved by the operator")
        return DemoResult(0, summary)
    why = "no booking was stored" if not stored_ok else "the operator did not approve it"
    progress(f"FAILED: the call did not reach its goal ({why}); see {path}")
    return DemoResult(1, summary)
