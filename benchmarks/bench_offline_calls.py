"""Scripted offline calls: task success, turns per task, and the caller's last word → the agent's first audio.

Run: ``python benchmarks/bench_offline_calls.py`` (every call of tests/support/scenarios.py:CALLS — each
scenario of each shipped flow, spoken by espeak-ng en-us and flite slt/kal/awb/rms; ~5–10 minutes on two
cores), ``--flow restaurant`` to place one flow's calls, ``--at-once N`` for how many calls run together
(default 3), ``--json PATH`` to write the figures. Redis: ``REDIS_URL`` when set, else an embedded Valkey
server started here. This prints figures; it is not a test (tests/test_offline_scenarios.py asserts the
floor).

Each call is ``ivr demo``'s call: the app on a real socket, the Twilio-exact simulated caller, the offline
engine, the flow's scripted caller; the goal is checked after the call where it lives (Redis bookings and
approvals, transfers, what the agent said). Latency is measured on the two recorded tracks (same 20 ms
clock): from the end of each caller line to the agent's next audio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.store.embedded import EmbeddedRedis
from tests.support.scenarios import CALLS, place_calls, summarize
from tests.support.voices import missing_voices


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


async def _run(args: argparse.Namespace) -> None:
    calls = [c for c in CALLS if args.flow in (None, c.flow)]
    if not calls:
        raise SystemExit(f"bench_offline_calls: no calls for flow {args.flow!r}")
    redis_url = os.environ.get("REDIS_URL", "")
    embedded = None
    if not redis_url:
        embedded = EmbeddedRedis()
        await asyncio.to_thread(embedded.start)
        redis_url = embedded.url
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-offline-calls-") as tmp:
            outcomes = await place_calls(calls, redis_url, Path(tmp), at_once=args.at_once)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    wall = time.perf_counter() - started
    print(f"\n{len(calls)} calls, {args.at_once} at a time, in {wall:.0f} s\n")
    print(f"{'call':<58} {'goal':<7} {'turns':>5} {'reasks':>6}  median latency")
    for o in outcomes:
        lat = sorted(o.latencies_ms)
        median = lat[len(lat) // 2] if lat else None
        print(
            f"{o.call.name:<58} {'yes' if o.reached else 'NO':<7} {o.turns:>5} "
            f"{o.summary.get('reasks', '-')!s:>6}  {_ms(median)}"
        )
    for o in outcomes:
        if not o.reached:
            print(f"  missed: {o.describe()}")
    figures = summarize(outcomes)
    lat = figures["latency_ms"]
    print(
        f"\ntask success: {figures['task_success']:.2f} ({sum(o.reached for o in outcomes)}/{len(outcomes)})"
    )
    print(
        f"turns per task: {figures['turns_per_task']:.1f} "
        f"(successful tasks: {figures['turns_per_successful_task']})"
    )
    print(
        f"last word → first audio over {lat['turns']} turns: p10 {_ms(lat['p10'])}, "
        f"median {_ms(lat['median'])}, p90 {_ms(lat['p90'])}, max {_ms(lat['max'])}"
    )
    per_voice: dict[str, list[bool]] = {}
    for o in outcomes:
        per_voice.setdefault(o.call.voice.name, []).append(o.reached)
    print("per voice: " + ", ".join(f"{v} {sum(r)}/{len(r)}" for v, r in per_voice.items()))
    if args.json:
        figures["calls_detail"] = [
            {
                "call": o.call.name,
                "goal_reached": o.reached,
                "turns": o.turns,
                "latency_ms": o.latencies_ms,
                "goal_check": o.summary.get("goal_check"),
            }
            for o in outcomes
        ]
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flow", help="only this flow's calls (dental-clinic, restaurant, general-reception)"
    )
    parser.add_argument("--at-once", type=int, default=3, help="calls placed together (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    if missing_voices():
        raise SystemExit(f"bench_offline_calls: install {sorted({v.binary for v in missing_voices()})} first")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
