"""Console benchmark: what watching calls costs the server, and how fast a history page renders.

Run: ``python benchmarks/bench_console.py`` (about 3 minutes) or ``--quick``. This prints figures; it is not
a test. Everything runs on 127.0.0.1 and every step ends by itself.

1. **Overhead of live pages.** The same load as ``bench_calls.py`` (N simulated Twilio calls through a real
   ``ivr serve`` pinned to CPU 0, a light fake model in this process on CPU 1) is measured with no console
   open and with ``--viewers`` server-sent-event clients following live pages (half on the live board's
   global stream ``/ops/events``, half on call pages ``/ops/calls/{sid}/events`` of live calls). Runs
   alternate (off, on, off, on, …) so drift hits both alike; the figure is the median server CPU per
   call-second of each, and the rise in per cent. Redis's own CPU is shown beside it (the readers' XREADs).
2. **History page with many ended calls.** ``--history`` ended calls (default 10,000) are written through
   the real call store (records, transcripts, indexes), then ``GET /ops/history`` — first page, a filtered
   page, a transcript search, a deep page — and the CSV export are timed over repeated requests (median,
   p95). The server is idle for this part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, `ivr` importable as a script

import httpx
import redis.asyncio as aioredis

from benchmarks.bench_calls import (
    GENERATOR_CPU,
    free_port,
    proc_sample,
    start_target,
    stop_target,
)
from benchmarks.loadgen import MODES, Generator
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.writer import ResilientWriter

TOKEN = "bench-operator-token"  # the bootstrap admin token bench_calls.start_target gives the server
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _cpu_s(pid: int) -> float:
    return proc_sample(pid).cpu_s


# ------------------------------------------------------------------------------------------ SSE viewers


@dataclass
class Viewer:
    path: str
    events: int = 0
    bytes: int = 0
    error: str | None = None


async def follow(port: int, viewer: Viewer, stop: asyncio.Event) -> None:
    """One browser-like SSE client: a raw HTTP/1.1 GET that reads the stream until ``stop``."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        viewer.error = str(exc)
        return
    request = (
        f"GET {viewer.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    writer.write(request.encode())
    try:
        status = await asyncio.wait_for(reader.readline(), 10)
        if b" 200 " not in status:
            viewer.error = status.decode(errors="replace").strip()
            return
        while not stop.is_set():
            reading = asyncio.ensure_future(reader.read(65536))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not reading.done():
                reading.cancel()
                break
            chunk = reading.result()
            if not chunk:
                viewer.error = "server closed the stream"
                break
            viewer.bytes += len(chunk)
            viewer.events += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")
    except (OSError, TimeoutError) as exc:
        viewer.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def live_sids(port: int, want: int, timeout: float = 30.0) -> list[str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = (await http.get("/api/calls")).json()
            sids = reply.get("active_everywhere") or []
            if len(sids) >= want:
                return list(sids)
            await asyncio.sleep(0.25)
    return []


# ------------------------------------------------------------------------------------------ overhead


@dataclass
class OverheadRun:
    viewers: int
    calls: int
    ready: int
    cpu_ms_per_call_s: float
    redis_cpu_ms_per_call_s: float
    events_seen: int
    viewer_errors: list[str]


async def overhead_run(
    calls: int, viewers: int, *, window_s: float, settle_s: float, redis: EmbeddedRedis, log_path: Path
) -> OverheadRun:
    gen = Generator(MODES["passthrough"])
    model_port = await gen.start_model()
    port = free_port()
    os.environ["REDIS_URL"] = redis.url
    proc = await start_target("ivr", port, model_port, log_path)
    redis_pid = redis.pid
    assert redis_pid is not None, "the embedded Redis is not running"
    samples: dict[str, tuple[float, float]] = {}
    followers: list[Viewer] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def open_viewers() -> None:
        sids = await live_sids(port, min(calls, 10))
        for i in range(viewers):
            path = "/ops/events" if i % 2 == 0 or not sids else f"/ops/calls/{random.choice(sids)}/events"
            viewer = Viewer(path)
            followers.append(viewer)
            tasks.append(asyncio.create_task(follow(port, viewer, stop)))

    try:
        opener = asyncio.create_task(open_viewers()) if viewers else None
        load = await gen.run_step(
            port,
            calls,
            ramp_s=max(1.0, calls / 100.0),
            settle_s=settle_s,
            window_s=window_s,
            on_window_start=lambda: samples.__setitem__("start", (_cpu_s(proc.pid), _cpu_s(redis_pid))),
            on_window_end=lambda: samples.__setitem__("end", (_cpu_s(proc.pid), _cpu_s(redis_pid))),
            log=lambda text: print(f"    {text}", flush=True),
        )
        if opener is not None:
            await opener
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gen.close()
        await stop_target(proc)
    call_s = calls * load.window_s
    return OverheadRun(
        viewers=viewers,
        calls=calls,
        ready=load.calls_ready,
        cpu_ms_per_call_s=1000.0 * (samples["end"][0] - samples["start"][0]) / call_s,
        redis_cpu_ms_per_call_s=1000.0 * (samples["end"][1] - samples["start"][1]) / call_s,
        events_seen=sum(v.events for v in followers),
        viewer_errors=[f"{v.path}: {v.error}" for v in followers if v.error],
    )


# ------------------------------------------------------------------------------------------ history


async def seed_history(url: str, prefix: str, count: int) -> None:
    """``count`` ended calls through the real CallStore: record, a few transcript lines, end (indexes)."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    writer = ResilientWriter(client)
    writer.start()
    keys = KeySchema(prefix)
    flows = ["dental-clinic", "restaurant", "default"]
    outcomes = ["completed", "completed", "completed", "caller-hung-up", "transferred", "agent-hangup"]
    rng = random.Random(7)
    now = time.time()
    stores = {iid: CallStore(client, keys, instance_id=iid, writer=writer) for iid in ("bench-a", "bench-b")}
    try:
        for i in range(count):
            sid = "CA" + f"{i:032x}"
            start = now - 86400 * 7 + i * (86400 * 7 / count)
            store = stores["bench-a" if i % 2 else "bench-b"]
            store.call_started(
                {
                    "call_sid": sid,
                    "flow_id": rng.choice(flows),
                    "caller": f"+1312555{rng.randrange(10000):04d}",
                    "called": "+15550001111",
                    "started_at": start,
                    "model": "gpt-realtime",
                    "engine": "realtime",
                }
            )
            store.transcript(sid, "agent", "Thanks for calling, how can I help?", start + 1)
            store.transcript(
                sid, "caller", rng.choice(["I need a cleaning", "Table for four", "Hours?"]), start + 3
            )
            store.call_ended(
                sid, {"outcome": rng.choice(outcomes), "ended_at": start + 60, "duration_s": 60.0}
            )
            if i % 1000 == 999:
                await writer.flush(60)
                print(f"    seeded {i + 1}/{count} calls", flush=True)
        await writer.flush(60)
    finally:
        await writer.stop(10)
        await client.aclose()


async def time_gets(http: httpx.AsyncClient, path: str, n: int) -> tuple[float, float, int]:
    times = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        reply = await http.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        if reply.status_code != 200:
            raise RuntimeError(f"GET {path} → {reply.status_code}: {reply.text[:200]}")
        size = len(reply.content)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], size


async def history_bench(count: int, redis: EmbeddedRedis, log_path: Path, repeats: int) -> list[str]:
    prefix = "ivr:"
    print(f"  seeding {count} ended calls into Redis …", flush=True)
    t0 = time.perf_counter()
    await seed_history(redis.url, prefix, count)
    print(f"  seeded in {time.perf_counter() - t0:.1f} s", flush=True)
    gen = Generator(MODES["passthrough"])
    model_port = await gen.start_model()
    port = free_port()
    os.environ["REDIS_URL"] = redis.url
    proc = await start_target("ivr", port, model_port, log_path)
    lines = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30) as http:
            for label, path in [
                ("first page", "/ops/history"),
                ("flow + outcome", "/ops/history?flow=restaurant&outcome=transferred"),
                ("caller digits", "/ops/history?caller=0101"),
                ("transcript text", "/ops/history?q=cleaning"),
                ("page 40", "/ops/history?page=40"),
                ("CSV export, 1st page", "/ops/history?format=csv"),
            ]:
                await http.get(path)  # warm
                p50, p95, size = await time_gets(http, path, repeats)
                lines.append(f"  {label:<22} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({size / 1024:.0f} KiB)")
                print(lines[-1], flush=True)
    finally:
        await gen.close()
        await stop_target(proc)
    return lines


# ------------------------------------------------------------------------------------------ main


async def main_async(args: argparse.Namespace) -> int:
    if os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
        os.sched_setaffinity(0, {GENERATOR_CPU})
    log_path = Path(args.log)
    log_path.write_text("")
    print(f"== console benchmark: {args.calls} calls, {args.viewers} SSE viewers, {args.runs} runs each")
    report: list[str] = []
    if not args.skip_overhead:
        runs: dict[int, list[OverheadRun]] = {0: [], args.viewers: []}
        for r in range(args.runs):
            for viewers in (0, args.viewers):
                redis = EmbeddedRedis()
                await asyncio.to_thread(redis.start)
                try:
                    print(f"  run {r + 1}: {args.calls} calls, {viewers} viewers", flush=True)
                    run = await overhead_run(
                        args.calls,
                        viewers,
                        window_s=args.seconds,
                        settle_s=args.settle,
                        redis=redis,
                        log_path=log_path,
                    )
                finally:
                    await asyncio.to_thread(redis.stop)
                runs[viewers].append(run)
                print(
                    f"    server {run.cpu_ms_per_call_s:.3f} ms CPU/call-s, redis "
                    f"{run.redis_cpu_ms_per_call_s:.3f}, {run.ready}/{run.calls} calls, "
                    f"{run.events_seen} SSE events seen"
                    + (f", viewer errors: {run.viewer_errors[:3]}" if run.viewer_errors else ""),
                    flush=True,
                )
        off = statistics.median(r.cpu_ms_per_call_s for r in runs[0])
        on = statistics.median(r.cpu_ms_per_call_s for r in runs[args.viewers])
        roff = statistics.median(r.redis_cpu_ms_per_call_s for r in runs[0])
        ron = statistics.median(r.redis_cpu_ms_per_call_s for r in runs[args.viewers])
        report += [
            f"live-page overhead, {args.calls} calls, median of {args.runs} runs each:",
            f"  server CPU per call-second: {off:.3f} ms without console, {on:.3f} ms with {args.viewers} "
            f"SSE viewers → {100 * (on - off) / off:+.1f} %",
            f"  Redis CPU per call-second:  {roff:.3f} ms → {ron:.3f} ms",
            "  every run (ms/call-s): off "
            + ", ".join(f"{r.cpu_ms_per_call_s:.3f}" for r in runs[0])
            + "; on "
            + ", ".join(f"{r.cpu_ms_per_call_s:.3f}" for r in runs[args.viewers]),
        ]
    if not args.skip_history:
        redis = EmbeddedRedis()
        await asyncio.to_thread(redis.start)
        try:
            report.append(f"history with {args.history} ended calls in Redis ({args.repeats} requests each):")
            report += await history_bench(args.history, redis, log_path, args.repeats)
        finally:
            await asyncio.to_thread(redis.stop)
    print("\n== results")
    for line in report:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 calls, 1 run each, 2,000 history calls")
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls (default 100)")
    parser.add_argument("--viewers", type=int, default=20, help="SSE clients on live pages (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="runs with and without viewers (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run (default 10)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between ramp and window")
    parser.add_argument("--history", type=int, default=10_000, help="ended calls for the history part")
    parser.add_argument("--repeats", type=int, default=30, help="requests per history query")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-history", action="store_true")
    parser.add_argument("--log", default="/tmp/ivr-bench-console.log", help="where server output goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.runs, args.seconds, args.history, args.repeats = 20, 1, 5.0, 2000, 10
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
