"""Fault runs over real processes: what a call lives through, measured from outside.

Run: ``python benchmarks/fault_runs.py`` (all five scenarios, a few minutes) or pick with
``--only drops,redis,failover,sigkill,slow``. Not a test: it prints figures (docs/reliability.md records
them) and says plainly when a scenario did not hold. Everything runs on 127.0.0.1 and ends by itself.

Scenarios (each with a fresh ``ivr serve`` child process and the fake Realtime API in this process):

``drops``    20 concurrent calls, 5 model-socket drops each (100 in all), made at different moments: idle,
             mid-answer, and between the caller's turn and the answer. After each drop: how long until the
             server has a new model session for the call, whether the new session was given the conversation
             so far (every earlier caller turn and answer, searched in its ``conversation.item.create``
             events), whether an interrupted answer was resumed, and whether the call still carries audio
             both ways. Every call must survive all five drops.
``redis``    5 concurrent calls holding numbered turns while the Redis server (Valkey with an append-only
             file) is SIGKILLed and restarted on the same port mid-call. Afterwards each call's transcript
             stream and event stream are read back from Redis: every expected line exactly once, in order.
``failover`` The same 5 calls while the server's Redis is demoted to a read-only replica of its own replica
             (which is promoted) and, 3 s later, promoted back: writes meet READONLY in between.
``sigkill``  Two instances share Redis. Calls run on instance A, each with an approval request pending;
             A is SIGKILLed. Instance B is polled: when (if ever) do A's calls get an outcome in their
             records and leave the active set, and what happens to their pending approvals.
``slow``     The model answers 5 s after the caller's turn ends. Does the caller hear the flow's hold phrase
             (audio before the model's answer), and when; and with a prompt (1 s) answer, that no hold
             phrase is played.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, `ivr`, `tests` as a script

import redis.asyncio as aioredis

from benchmarks.reliability_harness import (
    FLOW_YAML,
    ModelStandIn,
    RawCaller,
    ServerUnderTest,
    probe_call,
    report_line,
    scratch_dir,
)
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from tests.support.fake_realtime import FakeSession, Reply

# ---------------------------------------------------------------------------------------------- helpers


class Pacer:
    """Sends the caller's 20 ms frames in the background (5 frames every 100 ms), as a live caller would."""

    def __init__(self, caller: RawCaller) -> None:
        self.caller = caller
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.caller.alive:
            await self.caller.send_media(5)
            await asyncio.sleep(0.1)  # real-time pacing of caller audio

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def caller_turn(session: FakeSession, text: str) -> None:
    """The caller speaks one turn (server VAD events and its transcription)."""
    await session.speech_started()
    await session.speech_stopped()
    await session.user_said(text)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def replayed_text(session: FakeSession) -> str:
    """Everything the server put into the new session's conversation (items it created)."""
    texts: list[str] = []
    for event in session.received:
        if event.get("type") == "conversation.item.create":
            texts.extend(strings_in(event.get("item")))
    return "\n".join(texts)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def with_server(
    name: str,
    model: ModelStandIn,
    body: Callable[[ServerUnderTest], Awaitable[dict[str, Any]]],
    *,
    flows_yaml: str = FLOW_YAML,
    redis_url: str | None = None,
) -> dict[str, Any]:
    work = scratch_dir(f"ivr-fault-{name}-")
    flows = work / "flows"
    flows.mkdir()
    (flows / "reliability.yaml").write_text(flows_yaml, encoding="utf-8")
    server = ServerUnderTest(
        model.fake.url, flows, work / "server.log", redis_url=redis_url, twilio_api_base=model.rest.base_url
    )
    await server.start()
    try:
        result = await body(server)
    finally:
        await server.stop()
    problems = server.log_problems()
    result["tracebacks_in_log"] = problems["tracebacks"]
    result["error_examples"] = problems["examples"][:3]
    result["log"] = str(server.log_path)
    return result


# ---------------------------------------------------------------------------------------------- drops

DROP_MOMENTS = ("idle", "mid-answer", "before-answer", "idle", "mid-answer")


@dataclass
class DropFigures:
    drops: int = 0
    reconnected: int = 0
    reconnect_s: list[float] = field(default_factory=list)
    replay_expected: int = 0
    replay_found: int = 0
    interrupted: int = 0
    resumed: int = 0
    unprompted: int = 0  # answers requested after a drop while nothing was unanswered
    probes_ok: int = 0
    probes_failed: list[str] = field(default_factory=list)
    calls_survived: int = 0
    calls_lost: list[str] = field(default_factory=list)


async def drop_call(
    k: int, server: ServerUnderTest, model: ModelStandIn, fig: DropFigures, drops: int
) -> None:
    caller = RawCaller(server)
    await caller.dial()
    session = await model.wait_session(caller.call_sid, timeout=20)
    pacer = Pacer(caller)
    said: list[str] = []
    lost: str | None = None
    try:
        for d in range(drops):
            moment = DROP_MOMENTS[d % len(DROP_MOMENTS)]
            turn = f"caller turn {d + 1} of call {k} about topic {k * 10 + d}"
            answer = f"agent answer {d + 1} of call {k} regarding {k * 10 + d}"
            await caller_turn(session, turn)
            said.append(turn)
            if moment == "before-answer":
                await asyncio.sleep(0.05)  # the drop lands between the caller's turn and the answer
            else:
                slow = moment == "mid-answer"
                reply = Reply(
                    text=answer, audio_ms=1500, chunk_ms=100, delta_interval_s=0.08 if slow else 0.0
                )
                with contextlib.suppress(RuntimeError):
                    await session.respond(reply)
                if slow:
                    await asyncio.sleep(0.4)  # about a third of the answer has been sent
                    fig.interrupted += 1
                else:
                    with contextlib.suppress(TimeoutError):
                        await session.wait_response_done(5)
                    said.append(answer)
                    await asyncio.sleep(0.3)  # the transcript of the answer reaches the server
            old_index = session.index
            t0 = time.monotonic()
            await session.kill()
            fig.drops += 1
            try:
                session = await model.wait_session(caller.call_sid, timeout=20, newer_than=old_index)
            except TimeoutError:
                lost = f"no new model session within 20 s after drop {d + 1} ({moment})"
                break
            fig.reconnected += 1
            fig.reconnect_s.append(time.monotonic() - t0)
            await asyncio.sleep(1.0)  # the replay follows the session update
            replay = replayed_text(session)
            fig.replay_expected += len(said)
            fig.replay_found += sum(1 for text in said if text in replay)
            asked = any(e.get("type") == "response.create" for e in session.received)
            if moment == "mid-answer" and asked:
                fig.resumed += 1
            elif moment == "idle" and asked:
                fig.unprompted += 1
            if session.response_in_flight:
                with contextlib.suppress(TimeoutError):
                    await session.wait_response_done(10)
            problem = await probe_call(model, caller, timeout=8)
            if problem is None:
                fig.probes_ok += 1
            else:
                fig.probes_failed.append(f"call {k} drop {d + 1} ({moment}): {problem}")
                if not caller.alive:
                    lost = problem
                    break
            session = model.live_session(caller.call_sid) or session
            await asyncio.sleep(3.0)  # drops spread over the call (a realistic failure rate, not a storm)
    finally:
        await pacer.stop()
    if lost is None and caller.alive:
        fig.calls_survived += 1
        await caller.hang_up()
    else:
        fig.calls_lost.append(f"call {k}: {lost or 'socket closed by the server'}")
        await caller.abandon()


async def scenario_drops(args: argparse.Namespace) -> dict[str, Any]:
    model = ModelStandIn(auto_cancel_on_speech=True)
    await model.start()

    async def body(server: ServerUnderTest) -> dict[str, Any]:
        fig = DropFigures()
        per_call = max(1, args.drops // args.calls)
        await asyncio.gather(
            *(drop_call(k, server, model, fig, per_call) for k in range(args.calls)), return_exceptions=False
        )
        records = []
        for session in model.fake.sessions:
            records.append(session.index)
        return {
            "calls": args.calls,
            "drops": fig.drops,
            "reconnected": fig.reconnected,
            "reconnect_p50_s": round(statistics.median(fig.reconnect_s), 2) if fig.reconnect_s else None,
            "reconnect_max_s": round(max(fig.reconnect_s), 2) if fig.reconnect_s else None,
            "replayed_turns": f"{fig.replay_found}/{fig.replay_expected}",
            "interrupted_answers": fig.interrupted,
            "resumed_after_reconnect": fig.resumed,
            "answers_requested_after_idle_drops": fig.unprompted,
            "probes_ok": fig.probes_ok,
            "probes_failed": fig.probes_failed[:10],
            "calls_survived": fig.calls_survived,
            "calls_lost": fig.calls_lost,
            "model_sockets_opened": len(model.fake.sessions),
        }

    try:
        return await with_server("drops", model, body)
    finally:
        await model.stop()


# ---------------------------------------------------------------------------------------------- redis


async def redis_call(
    k: int,
    server: ServerUnderTest,
    model: ModelStandIn,
    turns: int,
    expected: dict[str, list[tuple[str, str]]],
) -> str | None:
    caller = RawCaller(server)
    await caller.dial()
    session = await model.wait_session(caller.call_sid, timeout=20)
    with contextlib.suppress(TimeoutError):
        await session.wait_response_done(5)  # the greeting
    lines: list[tuple[str, str]] = [("agent", "Hello, reliability desk.")]
    pacer = Pacer(caller)
    try:
        for t in range(turns):
            turn = f"caller line {t + 1} of redis call {k}"
            answer = f"agent line {t + 1} of redis call {k}"
            await caller_turn(session, turn)
            lines.append(("caller", turn))
            with contextlib.suppress(RuntimeError):
                await session.respond(Reply(text=answer, audio_ms=300))
            await session.wait_response_done(5)
            lines.append(("agent", answer))
            await asyncio.sleep(0.5)  # about one turn a second for the length of the outage
    finally:
        await pacer.stop()
    expected[caller.call_sid] = lines
    alive = caller.alive
    await caller.hang_up()
    return None if alive else f"call {k} was closed by the server"


async def scenario_redis(args: argparse.Namespace) -> dict[str, Any]:
    """Valkey SIGKILLed and restarted on the same port (its append-only file brings the data back)."""
    work = scratch_dir("ivr-fault-valkey-")
    valkey = EmbeddedRedis(data_dir=work / "data", appendonly=True).start()

    async def outage() -> dict[str, float]:
        await asyncio.sleep(2.5)
        assert valkey.pid is not None
        os.kill(valkey.pid, signal.SIGKILL)  # no shutdown, no final fsync beyond appendfsync always
        killed = time.monotonic()
        await asyncio.sleep(args.redis_outage)
        await asyncio.to_thread(valkey.start)
        return {"down_s": round(time.monotonic() - killed, 2)}

    try:
        return await redis_fault("redis", valkey, outage, args)
    finally:
        valkey.stop()


async def scenario_failover(args: argparse.Namespace) -> dict[str, Any]:
    """The server's Redis is demoted to a read-only replica mid-call (its replica promoted), then back.

    What a failover looks like from a client that keeps its address (a proxy or a virtual IP): writes answer
    READONLY while the old primary follows the new one, then succeed again once it is promoted back.
    """
    work = scratch_dir("ivr-fault-failover-")
    primary = EmbeddedRedis(data_dir=work / "primary", appendonly=True).start()
    replica = EmbeddedRedis(data_dir=work / "replica").start()
    p = aioredis.Redis.from_url(primary.url)
    r = aioredis.Redis.from_url(replica.url)
    await r.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))

    async def outage() -> dict[str, float]:
        await asyncio.sleep(2.5)
        await r.execute_command("REPLICAOF", "NO", "ONE")  # the replica takes over …
        await p.execute_command("REPLICAOF", "127.0.0.1", str(replica.port))  # … the old primary follows it
        demoted = time.monotonic()
        await asyncio.sleep(args.redis_outage)
        await p.execute_command("REPLICAOF", "NO", "ONE")  # and back
        await r.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        return {"down_s": round(time.monotonic() - demoted, 2)}

    try:
        return await redis_fault("failover", primary, outage, args)
    finally:
        await p.aclose()
        await r.aclose()
        replica.stop()
        primary.stop()


async def redis_fault(
    name: str,
    valkey: EmbeddedRedis,
    outage: Callable[[], Awaitable[dict[str, float]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """5 calls with numbered turns while ``outage`` runs; then every line and event is read back, counted."""
    model = ModelStandIn()
    await model.start()

    async def body(server: ServerUnderTest) -> dict[str, Any]:
        expected: dict[str, list[tuple[str, str]]] = {}
        outage_task = asyncio.create_task(outage())
        lost = await asyncio.gather(
            *(redis_call(k, server, model, args.redis_turns, expected) for k in range(5))
        )
        timing = await outage_task
        await asyncio.sleep(args.redis_settle)  # the writer retries and flushes after the restart
        writer = (await server.api("/api/calls")).get("redis_writer")
        client = aioredis.Redis.from_url(valkey.url, decode_responses=True)
        keys = KeySchema("ivr:")
        per_call: list[dict[str, Any]] = []
        totals: Counter[str] = Counter()
        try:
            global_entries = await client.xrange(keys.events())
            global_by_call = Counter(f.get("call_sid") for _, f in global_entries)
            for sid, lines in expected.items():
                entries = await client.xrange(keys.transcript(sid))
                stored = [(f.get("role"), f.get("text")) for _, f in entries]
                events = await client.xrange(keys.call_events(sid))
                event_bodies = [json.dumps(f, sort_keys=True) for _, f in events]
                doubled_events = sum(n - 1 for n in Counter(event_bodies).values() if n > 1)
                missing = [line for line in lines if line not in stored]
                doubled = sum(n - 1 for n in Counter(stored).values() if n > 1)
                in_order = [line for line in stored if line in lines] == [
                    line for line in lines if line in stored
                ]
                ended = sum(1 for _, f in events if f.get("type") == "call.ended")
                per_call.append(
                    {
                        "call": sid,
                        "transcript_expected": len(lines),
                        "transcript_stored": len(stored),
                        "missing": len(missing),
                        "doubled": doubled,
                        "in_order": in_order,
                        "events_stored": len(events),
                        "events_doubled": doubled_events,
                        "events_in_global_stream": global_by_call.get(sid, 0),
                        "call_ended_events": ended,
                    }
                )
                totals["expected"] += len(lines)
                totals["stored"] += len(stored)
                totals["missing"] += len(missing)
                totals["doubled"] += doubled
                totals["events_doubled"] += doubled_events
                totals["events"] += len(events)
                totals["global"] += global_by_call.get(sid, 0)
        finally:
            await client.aclose()
        return {
            "calls": len(expected),
            "calls_lost": [x for x in lost if x],
            "redis_down_s": timing["down_s"],
            "writer_counters": writer,
            "transcript_lines_expected": totals["expected"],
            "transcript_lines_stored": totals["stored"],
            "transcript_lines_missing": totals["missing"],
            "transcript_lines_doubled": totals["doubled"],
            "call_events_stored": totals["events"],
            "call_events_doubled": totals["events_doubled"],
            "global_stream_events_for_these_calls": totals["global"],
            "per_call": per_call,
        }

    try:
        return await with_server(name, model, body, redis_url=valkey.url)
    finally:
        await model.stop()


# ---------------------------------------------------------------------------------------------- sigkill

SIGKILL_FLOW = FLOW_YAML.replace(
    'hold_phrase: "One moment please."\n',
    'hold_phrase: "One moment please."\n'
    "tools:\n"
    "  - type: end_call\n"
    "    name: end_call\n"
    '    description: "Hang up after saying goodbye."\n'
    "    approval: {required: always, reason: Reliability run, timeout_s: 60}\n",
)


async def scenario_sigkill(args: argparse.Namespace) -> dict[str, Any]:
    work = scratch_dir("ivr-fault-sigkill-")
    valkey = EmbeddedRedis(data_dir=work / "data").start()
    model = ModelStandIn()
    await model.start()
    flows = work / "flows"
    flows.mkdir()
    (flows / "reliability.yaml").write_text(SIGKILL_FLOW, encoding="utf-8")
    a = ServerUnderTest(
        model.fake.url,
        flows,
        work / "a.log",
        redis_url=valkey.url,
        instance_id="instance-a",
        twilio_api_base=model.rest.base_url,
    )
    b = ServerUnderTest(
        model.fake.url,
        flows,
        work / "b.log",
        redis_url=valkey.url,
        instance_id="instance-b",
        twilio_api_base=model.rest.base_url,
        extra_env={"IVR_LOG_LEVEL": "INFO"},  # B's log shows what it reconciles
    )
    await a.start()
    await b.start()
    callers: list[RawCaller] = []
    timeline: list[str] = []
    try:
        for _ in range(args.sigkill_calls):
            caller = RawCaller(a)
            await caller.dial()
            session = await model.wait_session(caller.call_sid, timeout=20)
            with contextlib.suppress(TimeoutError):
                await session.wait_response_done(5)
            await caller_turn(session, "Please hang up for me.")
            await session.respond(Reply(function_call=("end_call", {})))
            callers.append(caller)
        sids = [c.call_sid for c in callers]
        pending_before: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listed = await a.api("/api/approvals")
            pending_before = [x for x in listed["approvals"] if x.get("call_sid") in sids]
            if len(pending_before) >= len(sids):
                break
            await asyncio.sleep(0.2)  # the gate writes the request to Redis shortly after the tool call
        approval_ids = [str(x.get("id")) for x in pending_before]
        active_before = (await b.api("/api/calls")).get("active_everywhere") or []
        await asyncio.sleep(args.sigkill_delay)  # 0: the crash comes within a heartbeat of the calls' start
        killed_at = time.monotonic()
        await a.kill()
        client = aioredis.Redis.from_url(valkey.url, decode_responses=True)
        try:
            last_beat = await client.zscore(KeySchema("ivr:").instances(), "instance-a")
        finally:
            await client.aclose()
        started = {}
        for sid in sids:
            with contextlib.suppress(Exception):
                started[sid] = float((await b.api(f"/api/calls/{sid}")).get("started_at") or 0)
        after_beat = sum(1 for t in started.values() if last_beat is not None and t > last_beat)
        timeline.append(
            f"t=0.0 s: instance A SIGKILLed with {len(sids)} live calls, {len(approval_ids)} pending"
        )
        for caller in callers:
            await caller.abandon()
        first_outcome: dict[str, float] = {}
        left_active: dict[str, float] = {}
        approval_status: dict[str, str] = {aid: "pending" for aid in approval_ids}
        approval_changed: dict[str, float] = {}
        outcomes: dict[str, Any] = {}
        while time.monotonic() - killed_at < args.reconcile_wait:
            now = time.monotonic() - killed_at
            listing = await b.api("/api/calls")
            active = set(listing.get("active_everywhere") or [])
            for sid in sids:
                with contextlib.suppress(Exception):
                    record = await b.api(f"/api/calls/{sid}")
                    outcomes[sid] = record.get("outcome")
                    if record.get("outcome") not in (None, "", "in-progress") and sid not in first_outcome:
                        first_outcome[sid] = now
                        timeline.append(
                            f"t={now:.1f} s: call {sid[:10]}… record outcome {record.get('outcome')!r}"
                        )
                if sid not in active and sid not in left_active:
                    left_active[sid] = now
                    timeline.append(f"t={now:.1f} s: call {sid[:10]}… left the active set")
            for aid in approval_ids:
                with contextlib.suppress(Exception):
                    status = str((await b.api(f"/api/approvals/{aid}")).get("status"))
                    if status != approval_status[aid]:
                        approval_status[aid] = status
                        approval_changed[aid] = now
                        timeline.append(f"t={now:.1f} s: approval {aid[:10]}… became {status!r}")
            if (
                len(first_outcome) == len(sids)
                and len(left_active) == len(sids)
                and len(approval_changed) == len(approval_ids)
            ):
                break
            await asyncio.sleep(1.0)  # polling instance B like an operator's console would
        return {
            "calls_on_killed_instance": len(sids),
            "active_before_kill": len([s for s in active_before if s in sids]),
            "pending_approvals_before_kill": len(approval_ids),
            "kill_delay_after_calls_s": args.sigkill_delay,
            "calls_started_after_last_heartbeat_of_a": after_beat,
            "watched_s": round(time.monotonic() - killed_at, 1),
            "records_with_outcome": f"{len(first_outcome)}/{len(sids)}",
            "record_outcomes": outcomes,
            "left_active_set": f"{len(left_active)}/{len(sids)}",
            "approvals_final_status": approval_status,
            "reconciled_within_s": round(max([*first_outcome.values(), *approval_changed.values()]), 1)
            if first_outcome or approval_changed
            else None,
            "timeline": timeline,
            "tracebacks_in_log_b": b.log_problems()["tracebacks"],
            "log_a": str(a.log_path),
            "log_b": str(b.log_path),
        }
    finally:
        for caller in callers:
            await caller.abandon()
        await a.stop()
        await b.stop()
        await model.stop()
        valkey.stop()


# ---------------------------------------------------------------------------------------------- slow model


async def slow_call(server: ServerUnderTest, model: ModelStandIn, delay_s: float) -> dict[str, Any]:
    caller = RawCaller(server, keep_media_times=True)
    await caller.dial()
    session = await model.wait_session(caller.call_sid, timeout=20)
    with contextlib.suppress(TimeoutError):
        await session.wait_response_done(5)  # the greeting
    pacer = Pacer(caller)
    try:
        await asyncio.sleep(1.5)  # the greeting has played out
        await session.speech_started()
        await asyncio.sleep(0.5)
        await session.speech_stopped()
        turn_end = time.monotonic()
        await session.user_said("Can you check my order status?")
        frames_at_turn_end = caller.stats.media_frames
        await asyncio.sleep(delay_s)
        answer_at = time.monotonic()
        await session.respond(Reply(text="Your order has shipped.", audio_ms=1000))
        await session.wait_response_done(10)
        await asyncio.sleep(1.5)
        before_answer = [(t, n) for t, n in caller.stats.media_times[frames_at_turn_end:] if t < answer_at]
        alive = caller.alive
    finally:
        await pacer.stop()
    await caller.hang_up()
    return {
        "answer_after_s": delay_s,
        "audio_before_answer_ms": sum(n for _, n in before_answer) // 8,  # 8 μ-law bytes per ms
        "first_audio_after_turn_s": round(before_answer[0][0] - turn_end, 2) if before_answer else None,
        "call_alive": alive,
    }


async def scenario_slow(args: argparse.Namespace) -> dict[str, Any]:
    model = ModelStandIn()
    await model.start()

    async def body(server: ServerUnderTest) -> dict[str, Any]:
        slow = [await slow_call(server, model, 5.0) for _ in range(3)]
        prompt = [await slow_call(server, model, 1.0) for _ in range(2)]
        heard = sum(1 for r in slow if r["audio_before_answer_ms"] > 0)
        false_holds = sum(1 for r in prompt if r["audio_before_answer_ms"] > 0)
        return {
            "slow_calls": len(slow),
            "slow_calls_with_hold_phrase": heard,
            "hold_phrase_ms": [r["audio_before_answer_ms"] for r in slow],
            "hold_phrase_started_after_s": [r["first_audio_after_turn_s"] for r in slow],
            "prompt_calls": len(prompt),
            "prompt_calls_with_a_hold_phrase": false_holds,
            "details": slow + prompt,
        }

    try:
        return await with_server("slow", model, body)
    finally:
        await model.stop()


# ---------------------------------------------------------------------------------------------- main

SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "drops": scenario_drops,
    "redis": scenario_redis,
    "failover": scenario_failover,
    "sigkill": scenario_sigkill,
    "slow": scenario_slow,
}


def verdict(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return "did not run to the end"
    if name == "drops":
        ok = not r["calls_lost"] and r["calls_survived"] == r["calls"] and r["reconnected"] == r["drops"]
        return "held" if ok else "did NOT hold"
    if name in ("redis", "failover"):
        ok = r["transcript_lines_missing"] == 0 and r["transcript_lines_doubled"] == 0 and not r["calls_lost"]
        return "held" if ok and r["call_events_doubled"] == 0 else "did NOT hold"
    if name == "sigkill":
        done = r["records_with_outcome"].split("/")
        return "reconciled" if done[0] == done[1] else "NOT reconciled within the watch window"
    if name == "slow":
        ok = r["slow_calls_with_hold_phrase"] == r["slow_calls"] and r["prompt_calls_with_a_hold_phrase"] == 0
        return "held" if ok else "did NOT hold"
    return "?"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in args.only:
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        try:
            result = await SCENARIOS[name](args)
        except Exception as exc:  # a scenario that breaks is reported, and the others still run
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.monotonic() - started, 1)
        result["verdict"] = verdict(name, result)
        results[name] = result
        for key, value in result.items():
            if key in ("per_call", "details") and isinstance(value, list):
                for item in value:
                    print(report_line("", item))
                continue
            if key == "timeline":
                for line in value:
                    print(report_line("", line))
                continue
            print(report_line(key, value), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="drops,redis,failover,sigkill,slow", help="comma-separated scenarios"
    )
    parser.add_argument("--calls", type=int, default=20, help="drops: concurrent calls (default 20)")
    parser.add_argument(
        "--drops", type=int, default=100, help="drops: model-socket drops in all (default 100)"
    )
    parser.add_argument("--redis-turns", type=int, default=10, help="redis: turns per call (default 10)")
    parser.add_argument("--redis-outage", type=float, default=3.0, help="redis: seconds Redis stays down")
    parser.add_argument("--redis-settle", type=float, default=10.0, help="redis: seconds to let writes flush")
    parser.add_argument("--sigkill-calls", type=int, default=3, help="sigkill: calls on the killed instance")
    parser.add_argument("--reconcile-wait", type=float, default=90.0, help="sigkill: seconds to watch B")
    parser.add_argument(
        "--sigkill-delay",
        type=float,
        default=0.0,
        help="sigkill: seconds between the calls' start and the kill",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    results = asyncio.run(run(args))
    print("\nverdicts:")
    for name, result in results.items():
        print(report_line(name, result["verdict"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(r["verdict"] in ("held", "reconciled") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
