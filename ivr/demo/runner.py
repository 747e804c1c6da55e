"""One demo call, start to finish: Redis, datasets, speech models, the server, the call, the report.

Everything runs in this process on loopback: an embedded Redis (unless REDIS_URL is set), the app on a
free port with the offline engine, the simulated Twilio caller (signed webhook, media stream, marks), and a
stand-in for the one Twilio REST endpoint the app uses (hang-up and transfer end the media stream the way
Twilio would). The caller is a scripted person (:mod:`ivr.demo.scripts`: one per flow and scenario) whose
lines are spoken by a second voice, not the agent's (:mod:`ivr.demo.voice`), and sent as 8 kHz μ-law
through the same path a phone call takes. Whether the call reached its goal is read back from Redis
(:mod:`ivr.demo.goals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any, TextIO

import numpy as np
import uvicorn

from ..app import create_app, startup_warnings
from ..caller.client import CallEndedError, CallOptions, SimulatedCall
from ..caller.twilio_side import SayHangup, TwimlError, parse_twiml
from ..engines.local import LocalResources
from ..flows import Flow, FlowSet
from ..server import media_ws_protocol
from ..settings import Settings
from ..speech.wer import word_errors
from ..store.embedded import EmbeddedRedis
from ..store.keys import KeySchema
from . import voice
from .caller import REASK, CallerScript
from .conversation import DemoCall, twilio_rest_stand_in
from .goals import Observed, check_goal
from .options import Ask, DemoOptions, DemoResult, Progress, Voice, default_flows_dir
from .report import (
    reply_latency_ms,
    turn_latency_line,
    turn_latency_summary,
    write_stereo_wav,
    write_summary,
)
from .scripts import script_for
from .setup import (
    UNCLAIMED_NUMBER,
    NotForTheDemo,
    check_out_dir,
    dialled_number,
    free_socket,
    load_datasets,
    seed_booking,
)

__all__ = ["UNCLAIMED_NUMBER", "DemoOptions", "DemoResult", "check_out_dir", "run_demo"]


async def run_demo(options: DemoOptions, out: TextIO, ask: Ask) -> DemoResult:
    check_out_dir(options.out_dir)
    progress = Progress(out)
    progress("ivr demo: a complete phone call on this machine (no API key, no network)")
    flows_dir = options.flows_dir or default_flows_dir()
    flows = FlowSet.load(flows_dir)
    flow = flows.default if options.flow_id == "default" else flows.get(options.flow_id)
    if flow is None:
        known = ", ".join(f.id for f in flows)
        raise SystemExit(f"ivr demo: no flow {options.flow_id!r} in {flows_dir} (flows: {known})")
    number = dialled_number(flow, flows)
    try:
        script = options.script or script_for(
            flow.id, options.scenario, variant=options.variant, name=options.caller_name
        )
    except ValueError as exc:
        raise SystemExit(f"ivr demo: {exc}") from None
    how = "its number" if flow.numbers else "a number no flow claims (it is the default flow)"
    progress(f"flow {flow.id} from {flows_dir}, dialled at {number} ({how})")
    progress(f"the caller: scenario {script.scenario!r} — {script.goal.description}")

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
        await load_datasets(flows, redis_url, keys, progress)
        if script.seed_booking:
            script.facts["booking_id"] = await seed_booking(
                flow, script.seed_booking, options, redis_url, keys
            )
            progress(
                f"made booking {script.facts['booking_id']} for the caller to change ({script.seed_booking})"
            )
        progress("loading the offline speech models (recogniser, voice) …")
        resources = await asyncio.to_thread(LocalResources.for_flow, flow, lambda m: progress(f"  {m}"))
        caller_voice = options.caller_voice
        if caller_voice is None:
            second = await asyncio.to_thread(voice.second_voice, resources, lambda m: progress(f"  {m}"))
            caller_voice = second.speak
        progress(f"speech models ready in {resources.load_s:.1f} s")
        return await _call(
            options, flow, flows, number, script, caller_voice, redis_url, prefix, resources, progress, ask
        )
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _call(
    options: DemoOptions,
    flow: Flow,
    flows: FlowSet,
    number: str,
    script: CallerScript,
    caller_voice: Voice,
    redis_url: str,
    prefix: str,
    resources: LocalResources,
    progress: Progress,
    ask: Ask,
) -> DemoResult:
    sock = free_socket()
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
    demo = DemoCall(
        options=options,
        progress=progress,
        resources=resources,
        ask=ask,
        base_url=base_url,
        operator_token=operator_token,
        script=script,
    )
    demo.voice = caller_voice
    not_for_the_demo = NotForTheDemo(startup_warnings(settings))
    app_log = logging.getLogger("ivr.app")
    app_log.addFilter(not_for_the_demo)
    app = create_app(settings, flows)
    twilio_rest_stand_in(app, demo)
    ws = media_ws_protocol(app)
    config = uvicorn.Config(app, log_config=None, lifespan="on", ws_ping_interval=None, ws=ws)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server._serve(sockets=[sock]))
    running: asyncio.Task[Any] | None = None
    conversation: asyncio.Task[Any] | None = None
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
            to_number=number,
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
        closed = _said_before_hanging_up(result.twiml)
        if closed is not None:
            # The flow answered without a media stream (after hours: message_and_hangup); what Twilio would
            # have said is the agent's only line, and the goal (e.g. "hear the office hours") is judged on it.
            progress(f"the line answered without a media stream and hung up, saying: {closed!r}")
            demo.agent_lines.append(closed)
        return await _report(options, flow, settings, demo, call, result, progress)
    finally:
        # Stopped early (Ctrl-C, SIGTERM): end the call's tasks before the server, quietly.
        leftovers = [t for t in (running, conversation, *demo._tasks) if t is not None and not t.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        app_log.removeFilter(not_for_the_demo)


def _said_before_hanging_up(twiml: str) -> str | None:
    """The text of TwiML that says something and hangs up instead of streaming; ``None`` otherwise."""
    if not twiml:
        return None
    try:
        instruction = parse_twiml(twiml)
    except TwimlError:
        return None
    return instruction.text if isinstance(instruction, SayHangup) and instruction.text else None


async def _report(
    options: DemoOptions,
    flow: Flow,
    settings: Settings,
    demo: DemoCall,
    call: SimulatedCall,
    result: Any,
    progress: Progress,
) -> DemoResult:
    from ..store.client import open_redis

    keys = KeySchema(settings.redis_prefix)
    script = demo.script
    hours = flow.opening_hours
    observed = Observed(
        call_sid=call.call_sid,
        tools=demo.tools,
        approvals=demo.approvals,
        transfers=demo.transfers,
        seeded_booking=script.facts.get("booking_id") if script.seed_booking else None,
        open_now=hours.is_open(datetime.now(UTC)) if hours is not None else None,
        agent_lines=demo.agent_lines,
    )
    client = open_redis(settings.redis_url, decode_responses=True)
    try:
        verdict = await check_goal(script.goal, observed, client, keys)
        record = await client.hgetall(keys.call(call.call_sid))
    finally:
        await client.aclose()
    booked = verdict.bookings

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
    goal = verdict.reached  # interactive: the goal of the flow's default scenario (e.g. a booking stored)
    summary: dict[str, Any] = {
        "goal": script.goal.description,
        "goal_reached": goal,
        "goal_check": verdict.why,
        "scenario": script.scenario,
        "caller_turns": len(demo.lines),
        "turn_latency_ms": latencies,
        "reasks": sum(1 for line in demo.agent_lines if REASK.search(line)),
        "flow": flow.id,
        "call_sid": call.call_sid,
        "outcome": record.get("outcome") or getattr(result, "ended_by", None),
        "end_reason": getattr(result, "ended_by", None),
        # False when the flow answered without one (after hours: its message, then a hang-up)
        "media_stream": bool(getattr(result, "streams", ())),
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
        progress(f"SUCCESS: {verdict.why}")
        return DemoResult(0, summary)
    why = verdict.why
    progress(f"FAILED: the call did not reach its goal ({why}); see {path}")
    return DemoResult(1, summary)
