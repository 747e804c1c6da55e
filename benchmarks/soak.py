"""Soak: 20 calls held for N minutes at real time; does the server's memory, task or socket count creep?

Run: ``python benchmarks/soak.py`` (10 minutes), ``--minutes 2`` for a short pass, ``--calls 20``,
``--json out.json``. Not a test: it prints figures (docs/reliability.md records them).

What happens: a real ``ivr serve`` child process and the fake Realtime API in this process. After one warm-up
call the server's figures are taken once its RSS has settled (the baseline). Then ``--calls`` calls run for
the whole soak: each caller sends a 20 ms μ-law frame every 20 ms (one shared ticker keeps real time), and
each call holds a conversation — a caller turn and a 2 s answer every few seconds, every third answer
interrupted by the caller (barge-in: ``clear``, cancel, truncate), a key press every fifth turn, a stage
change through a tool call every seventh. Every ``--sample-every`` seconds the server is sampled: RSS, open
fds, sockets, asyncio tasks, threads. At the end the calls hang up and, once settled, the server is sampled
again.

Figures: the RSS slope over the soak (least squares over the samples after the first minute), per call;
RSS per live call; fds / sockets / tasks before, at their highest during, and after; calls lost (the server
closed a socket, or a final probe found no audio both ways), turns held, barge-ins.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, `ivr`, `tests` as a script

from benchmarks.reliability_harness import (
    ModelStandIn,
    RawCaller,
    ServerUnderTest,
    probe_call,
    report_line,
    scratch_dir,
    settled,
    warm_up,
    write_flows,
)
from tests.support.fake_realtime import Reply


@dataclass
class Sample:
    t_s: float
    rss_kib: int
    fds: int
    sockets: int
    tasks: int | None
    threads: int | None
    live_calls: int
    turns: int


@dataclass
class SoakTally:
    turns: int = 0
    barge_ins: int = 0
    dtmf: int = 0
    tool_calls: int = 0
    turn_errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


async def ticker(callers: list[RawCaller], stop: asyncio.Event) -> None:
    """One 20 ms frame per live caller per tick, on an absolute schedule (real time for every call)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while not stop.is_set():
        n += 1
        delay = start + n * 0.02 - loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        for caller in callers:
            if caller.alive:
                await caller.send(caller.media_frame())


async def conversation(
    k: int, caller: RawCaller, model: ModelStandIn, tally: SoakTally, stop: asyncio.Event, every_s: float
) -> None:
    turn = 0
    await asyncio.sleep(k * every_s / 20)  # spread the calls' turns over the period
    while not stop.is_set() and caller.alive:
        turn += 1
        session = model.live_session(caller.call_sid)
        if session is None:
            await asyncio.sleep(0.5)  # a model reconnect in progress
            continue
        try:
            if session.response_in_flight:
                await session.wait_response_done(10)
            await session.speech_started()
            await asyncio.sleep(0.6)  # the caller speaks for a moment
            await session.speech_stopped()
            await session.user_said(f"caller turn {turn} on soak call {k}")
            if turn % 7 == 0:
                tool = "go_back" if (turn // 7) % 2 else "go_front"
                await session.respond(Reply(function_call=(tool, {})))
                tally.tool_calls += 1
            else:
                await session.respond(Reply(text=f"answer {turn} on call {k}", audio_ms=2000, chunk_ms=100))
                if turn % 3 == 0:
                    await asyncio.sleep(0.3)
                    await session.speech_started()  # barge-in: the fake cancels, the server clears Twilio
                    await session.speech_stopped()
                    await session.user_said("sorry, go on")
                    tally.barge_ins += 1
            with contextlib.suppress(TimeoutError):
                await session.wait_response_done(10)
            if turn % 5 == 0:
                digit = "123456789"[turn % 9]
                await caller.send(caller._sim.dtmf(digit))  # type: ignore[union-attr]
                tally.dtmf += 1
            tally.turns += 1
        except Exception as exc:  # a turn that breaks is counted; the call goes on
            tally.turn_errors.append(f"call {k} turn {turn}: {type(exc).__name__}: {exc}"[:200])
        model.trim(session)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def slope_kib_per_min(samples: list[Sample], skip_s: float) -> float | None:
    points = [(s.t_s / 60.0, s.rss_kib) for s in samples if s.t_s >= skip_s]
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = scratch_dir("ivr-soak-")
    model = ModelStandIn(auto_cancel_on_speech=True)
    await model.start()
    server = ServerUnderTest(
        model.fake.url, write_flows(work / "flows"), work / "server.log", twilio_api_base=model.rest.base_url
    )
    print(
        f"soak: {args.calls} calls for {args.minutes:g} min at real time; server log {server.log_path}",
        flush=True,
    )
    await server.start()
    tally = SoakTally()
    samples: list[Sample] = []
    callers: list[RawCaller] = []
    stop = asyncio.Event()
    try:
        await warm_up(server, model)
        before = await settled(server)
        print(
            f"  baseline: RSS {before.rss_kib / 1024:.1f} MiB, fds {before.fds}, sockets {before.sockets}, "
            f"tasks {before.tasks}, threads {before.threads}",
            flush=True,
        )
        for _ in range(args.calls):
            caller = RawCaller(server)
            await caller.dial()
            await model.wait_session(caller.call_sid, timeout=20)
            callers.append(caller)
        started = time.monotonic()
        tick = asyncio.create_task(ticker(callers, stop))
        talks = [
            asyncio.create_task(conversation(k, c, model, tally, stop, args.turn_every))
            for k, c in enumerate(callers)
        ]
        end = started + args.minutes * 60.0
        while time.monotonic() < end:
            await asyncio.sleep(max(0.0, min(args.sample_every, end - time.monotonic())))  # sampling interval
            figures = await server.probe()
            live = sum(1 for c in callers if c.alive)
            sample = Sample(
                round(time.monotonic() - started, 1),
                figures.rss_kib,
                figures.fds,
                figures.sockets,
                figures.tasks,
                figures.threads,
                live,
                tally.turns,
            )
            samples.append(sample)
            print(
                f"  [{sample.t_s / 60:5.1f} min] RSS {sample.rss_kib / 1024:7.1f} MiB  fds {sample.fds:4}  "
                f"sockets {sample.sockets:4}  tasks {sample.tasks}  live calls {live}/{args.calls}  "
                f"turns {tally.turns}  barge-ins {tally.barge_ins}",
                flush=True,
            )
        final_problems = await asyncio.gather(*(probe_call(model, c, timeout=10) for c in callers))
        for k, (caller, problem) in enumerate(zip(callers, final_problems, strict=True)):
            if not caller.alive:
                tally.lost.append(f"call {k}: closed by the server ({caller.stats.close_code})")
            elif problem is not None:
                tally.lost.append(f"call {k}: {problem}")
        stop.set()
        await asyncio.gather(tick, *talks, return_exceptions=True)
        for caller in callers:
            await caller.hang_up()
        after = await settled(server)
    finally:
        stop.set()
        await server.stop()
        await model.stop()
    slope = slope_kib_per_min(samples, skip_s=60.0 if args.minutes > 2 else 0.0)
    during = samples
    result = {
        "calls": args.calls,
        "minutes": args.minutes,
        "turns": tally.turns,
        "barge_ins": tally.barge_ins,
        "dtmf": tally.dtmf,
        "tool_calls": tally.tool_calls,
        "turn_errors": len(tally.turn_errors),
        "turn_error_examples": tally.turn_errors[:5],
        "calls_lost": tally.lost,
        "rss_before_mib": round(before.rss_kib / 1024, 1),
        "rss_peak_during_mib": round(max(s.rss_kib for s in during) / 1024, 1) if during else None,
        "rss_after_mib": round(after.rss_kib / 1024, 1),
        "rss_slope_kib_per_min": round(slope, 1) if slope is not None else None,
        "rss_slope_kib_per_min_per_call": round(slope / args.calls, 2) if slope is not None else None,
        "rss_per_live_call_kib": round((during[-1].rss_kib - before.rss_kib) / args.calls)
        if during
        else None,
        "rss_kib_per_turn": round(
            (during[-1].rss_kib - during[0].rss_kib) / (during[-1].turns - during[0].turns), 2
        )
        if len(during) > 1 and during[-1].turns > during[0].turns
        else None,
        "rss_kept_after_calls_kib_per_call": round((after.rss_kib - before.rss_kib) / args.calls),
        "fds_before_max_after": [before.fds, max((s.fds for s in during), default=None), after.fds],
        "sockets_before_max_after": [
            before.sockets,
            max((s.sockets for s in during), default=None),
            after.sockets,
        ],
        "tasks_before_max_after": [
            before.tasks,
            max((s.tasks or 0 for s in during), default=None),
            after.tasks,
        ],
        "threads_before_after": [before.threads, after.threads],
        "tracebacks_in_log": server.log_problems()["tracebacks"],
        "error_examples": server.log_problems()["examples"][:3],
        "samples": [asdict(s) for s in samples],
        "log": str(server.log_path),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the calls run (default 10)")
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls (default 20)")
    parser.add_argument(
        "--turn-every", type=float, default=6.0, help="seconds between a call's turns (default 6)"
    )
    parser.add_argument(
        "--sample-every", type=float, default=30.0, help="seconds between samples (default 30)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.calls < 1:
        parser.error("--minutes must be positive and --calls at least 1")
    result = asyncio.run(run(args))
    print("\nsoak results")
    for key, value in result.items():
        if key != "samples":
            print(report_line(key, value))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    leaked = result["tasks_before_max_after"][2] != result["tasks_before_max_after"][0]
    return 1 if result["calls_lost"] or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
