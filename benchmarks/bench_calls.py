"""End-to-end load benchmark: N concurrent simulated calls through the real ``ivr serve`` to a fake model.

Run: ``python benchmarks/bench_calls.py`` (a few minutes), ``--quick`` (under a minute), or pick with
``--mode resample|passthrough|both``, ``--calls 50,100,200`` and ``--seconds 10`` (the measured window).
This prints figures; it is not a test. Everything runs on 127.0.0.1 and every step ends by itself.

Layout: the server under test is a subprocess (``python -m ivr serve``) pinned to CPU 0; this process,
pinned to CPU 1, runs the simulated Twilio callers and a lightweight fake Realtime model
(:mod:`benchmarks.loadgen`). Each step starts a fresh server, places the calls staggered over a ramp, lets
them settle, then measures a steady-state window:

- server CPU from ``/proc/PID/stat`` (utime + stime) over the window → % of a core and ms per call-second;
- server RSS from ``/proc/PID/status`` before the calls and at the end of the window → memory per call;
- added latency per hop, p50/p99: caller frame sent → model append received (inbound), model delta sent →
  caller media received (outbound), and ``speech_started`` sent → ``clear`` received (barge-in);
- the generator's own health: its CPU and how late its 1 ms ticks fire. A step whose ticks slip
  (p99 lag > 5 ms), whose generator is near a full core, or whose server core was shared with other
  processes (> 10 %) is marked invalid and retried once: it measured the generator or the neighbours.

Each mode ramps through the call counts until p99 added latency passes 20 ms or the server's core passes
95 %. A baseline step runs the same load against ``benchmarks/null_bridge.py`` (a bare μ-law relay) so the
share of loopback, event loop and generator in the figures is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks`, `ivr` importable as a script

import orjson

from benchmarks.loadgen import MODES, Generator, percentiles_ms

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0
GENERATOR_CPU = 1
MAX_P99_MS = 20.0
MAX_SERVER_CPU_PCT = 95.0
MAX_TICK_LAG_MS = 5.0
MAX_GENERATOR_CPU_PCT = 90.0
MAX_FOREIGN_PCT = 10.0  # other processes on the server's core beyond this make a step invalid
DEFAULT_CALLS = {
    "resample": [10, 50, 100, 125, 150, 175, 200, 250],
    "passthrough": [10, 50, 100, 150, 175, 200, 250, 300, 350, 400],
}
QUICK_CALLS = [10, 40]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Experiment (--server-uvloop): the same `ivr serve`, but with asyncio.run() creating a uvloop loop, which is
#: what uvicorn.Server.run() would pick by itself (`ivr serve` calls asyncio.run(server.serve()) directly).
_UVLOOP_SERVE = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from ivr.cli import main; sys.exit(main(sys.argv[1:]))"
)


# ---------------------------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_kib: int
    hwm_kib: int
    core_tasks_s: float = 0.0  # user + system time of every process on the server's CPU
    core_irq_s: float = 0.0  # interrupt time on the server's CPU
    core_steal_s: float = 0.0  # time the hypervisor took from it (VMs)


#: Share of a core under which a freshly started server counts as idle (see :func:`settled`).
SETTLED_CPU_SHARE = 0.05


def proc_sample(pid: int) -> ProcSample:
    """CPU seconds (user + system) and resident memory of one process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of stat)
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    tasks, irq, steal = cpu_times(SERVER_CPU)
    return ProcSample(cpu, rss, hwm, tasks, irq, steal)


def cpu_times(cpu: int) -> tuple[float, float, float]:
    """(tasks, irq + softirq, steal) seconds of one CPU since boot, from /proc/stat.

    "tasks" is user + nice + system of every process on that CPU. Interrupt time (the kernel's loopback
    packet handling often lands there) is not charged to any process, so it is reported on its own.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            steal = v[7] if len(v) > 7 else 0
            return (v[0] + v[1] + v[2]) / _CLK_TCK, (v[5] + v[6]) / _CLK_TCK, steal / _CLK_TCK
    return 0.0, 0.0, 0.0


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# ---------------------------------------------------------------------------------------------- targets


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def healthy(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 2.0)
        return line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def start_target(
    kind: str,
    port: int,
    model_port: int,
    log_path: Path,
    *,
    root: Path = ROOT,
    cpu: int = SERVER_CPU,
    extra_env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start ``ivr serve`` ("ivr", "ivr+uvloop") or the null relay ("null-bridge") pinned to ``cpu``.

    ``root``: the source tree to run (another checkout compares two versions side by side);
    ``extra_env`` is added to the server's environment."""
    env = dict(os.environ)
    env.update(
        {
            "OPENAI_API_KEY": "sk-bench-not-a-real-key",
            "IVR_REALTIME_URL": f"ws://127.0.0.1:{model_port}/v1/realtime",
            "TWILIO_ACCOUNT_SID": "AC" + "b" * 32,
            "TWILIO_AUTH_TOKEN": "bench-auth-token",
            "IVR_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "IVR_FLOWS": str(root / "benchmarks" / "flows"),
            "IVR_VERIFY_SIGNATURES": "false",
            "IVR_OPERATOR_TOKEN": "bench-operator-token",
            "IVR_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(root),
        }
    )
    env.update(extra_env or {})
    if kind == "ivr":
        argv = [sys.executable, "-m", "ivr", "serve", "--port", str(port)]
    elif kind == "ivr+uvloop":
        argv = [sys.executable, "-c", _UVLOOP_SERVE, "serve", "--port", str(port)]
    else:
        argv = [sys.executable, str(root / "benchmarks" / "null_bridge.py"), "--port", str(port)]
    log = log_path.open("ab")
    proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=root, stdout=log, stderr=log)
    log.close()
    if os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
        os.sched_setaffinity(proc.pid, {cpu})
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            break
        if await healthy(port):
            await settled(proc.pid, deadline)
            return proc
        await asyncio.sleep(0.1)
    await stop_target(proc)
    raise RuntimeError(f"{kind} server did not become healthy on port {port}; see {log_path}")


async def settled(pid: int, deadline: float) -> None:
    """Wait until the server is idle: after start-up ``ivr serve`` still loads the local voice and speaks its
    hold and apology lines in a worker thread (seconds of CPU), which must not fall into a measured window."""
    before = proc_sample(pid).cpu_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        await asyncio.sleep(0.25)
        now = proc_sample(pid).cpu_s
        quiet = quiet + 1 if now - before < 0.25 * SETTLED_CPU_SHARE else 0
        before = now


async def stop_target(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (ivr drains: with no live calls it exits at once), then SIGKILL after 10 s. Our child only."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 10.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# ---------------------------------------------------------------------------------------------- one step


@dataclass
class StepResult:
    target: str
    mode: str
    calls: int
    ready: int
    window_s: float
    server_cpu_pct: float
    cpu_ms_per_call_s: float
    rss_idle_mib: float
    rss_peak_mib: float
    kib_per_call: float
    in_p50: float
    in_p99: float
    in_max: float
    out_p50: float
    out_p99: float
    out_max: float
    clear_p50: float
    clear_p99: float
    clear_count: int
    frames_per_s: float
    gen_cpu_pct: float
    tick_lag_p99: float
    server_core_irq_pct: float
    valid: bool
    passed: bool
    notes: list[str] = field(default_factory=list)


async def run_step(
    target: str, mode: str, calls: int, *, window_s: float, settle_s: float, log_path: Path
) -> StepResult:
    gen = Generator(MODES[mode])
    model_port = await gen.start_model()
    port = free_port()
    proc = await start_target(target, port, model_port, log_path)
    pid = proc.pid
    samples: dict[str, ProcSample] = {}
    try:
        await asyncio.sleep(0.3)
        samples["idle"] = proc_sample(pid)
        load = await gen.run_step(
            port,
            calls,
            ramp_s=max(1.0, calls / 100.0),
            settle_s=settle_s,
            window_s=window_s,
            on_window_start=lambda: samples.__setitem__("start", proc_sample(pid)),
            on_window_end=lambda: samples.__setitem__("end", proc_sample(pid)),
            log=lambda text: print(f"    {text}", flush=True),
        )
    finally:
        await gen.close()
        await stop_target(proc)

    rec = load.rec
    cpu = samples["end"].cpu_s - samples["start"].cpu_s
    cpu_pct = 100.0 * cpu / load.window_s
    idle_kib = samples["idle"].rss_kib
    peak_kib = max(samples["end"].rss_kib, samples["end"].hwm_kib)
    in_p = percentiles_ms(rec.inbound)
    out_p = percentiles_ms(rec.outbound)
    clear_p = percentiles_ms(rec.clear)
    _, lag_p99, lag_max = percentiles_ms(rec.tick_lag)
    notes: list[str] = []
    valid = True
    if load.calls_ready < calls:
        valid = False
        notes.append(f"only {load.calls_ready}/{calls} calls came up")
    start, end = samples["start"], samples["end"]
    others = 100.0 * ((end.core_tasks_s - start.core_tasks_s) - cpu) / load.window_s
    irq = 100.0 * (end.core_irq_s - start.core_irq_s) / load.window_s
    steal = 100.0 * (end.core_steal_s - start.core_steal_s) / load.window_s
    healthy, health = health_notes(lag_p99, lag_max, load.gen_cpu_pct, others, steal, "the server core")
    valid = valid and healthy
    notes += health
    notes += [f"{what} ×{count}" for what, count in sorted(rec.anomalies.items())]
    expected_barge_ins = calls * load.window_s / 5.3  # one per 5.3 s of talk cycle per call
    if rec.clear and len(rec.clear) < 0.5 * expected_barge_ins:
        notes.append(f"few barge-ins measured ({len(rec.clear)})")
    worst_p99 = max(in_p[1], out_p[1])
    passed = valid and worst_p99 < MAX_P99_MS and cpu_pct < MAX_SERVER_CPU_PCT
    return StepResult(
        target=target,
        mode=mode,
        calls=calls,
        ready=load.calls_ready,
        window_s=load.window_s,
        server_cpu_pct=cpu_pct,
        cpu_ms_per_call_s=1000.0 * cpu / (calls * load.window_s),
        rss_idle_mib=idle_kib / 1024,
        rss_peak_mib=peak_kib / 1024,
        kib_per_call=(peak_kib - idle_kib) / calls,
        in_p50=in_p[0],
        in_p99=in_p[1],
        in_max=in_p[2],
        out_p50=out_p[0],
        out_p99=out_p[1],
        out_max=out_p[2],
        clear_p50=clear_p[0],
        clear_p99=clear_p[1],
        clear_count=len(rec.clear),
        frames_per_s=load.frames_sent / load.window_s,
        gen_cpu_pct=load.gen_cpu_pct,
        tick_lag_p99=lag_p99,
        server_core_irq_pct=irq,
        valid=valid,
        passed=passed,
        notes=notes,
    )


def health_notes(
    lag_p99: float, lag_max: float, gen_pct: float, others_pct: float, steal_pct: float, where: str
) -> tuple[bool, list[str]]:
    """Whether the generator and the machine kept up during a window (False: the step is invalid), and notes
    saying what went wrong. ``where`` names what the other processes' and the hypervisor's shares are of."""
    valid, notes = True, []
    if lag_p99 > MAX_TICK_LAG_MS:
        valid = False
        notes.append(f"generator ticks slipped (p99 lag {lag_p99:.1f} ms)")
    if lag_max > MAX_P99_MS:
        notes.append(f"generator paused up to {lag_max:.0f} ms (shows in the max, rarely in the p99)")
    if gen_pct > MAX_GENERATOR_CPU_PCT:
        valid = False
        notes.append(f"generator near a full core ({gen_pct:.0f} %)")
    if others_pct > 3.0:
        valid = valid and others_pct <= MAX_FOREIGN_PCT
        notes.append(f"other processes took {others_pct:.0f} % of {where}")
    if steal_pct > 2.0:
        notes.append(f"hypervisor stole {steal_pct:.0f} % of {where}")
    return valid, notes


# ---------------------------------------------------------------------------------------------- output

_HEADER = (
    f"{'target':<12} {'mode':<11} {'calls':>5} {'srv CPU':>7} {'ms CPU':>6} {'RSS':>6} {'KiB/':>5}  "
    f"{'in p50/p99':>11}  {'out p50/p99':>11}  {'clear p50/p99':>13} {'n':>4}  "
    f"{'gen CPU':>7} {'lag99':>5}  ok"
)
_UNITS = (
    f"{'':<12} {'':<11} {'':>5} {'% core':>7} {'/call-s':>6} {'MiB':>6} {'call':>5}  "
    f"{'ms':>11}  {'ms':>11}  {'ms':>13} {'':>4}  {'%':>7} {'ms':>5}"
)


def row(r: StepResult) -> str:
    ok = "yes" if r.passed else ("INVALID" if not r.valid else "no")
    return (
        f"{r.target:<12} {r.mode:<11} {r.calls:>5} {r.server_cpu_pct:>7.1f} {r.cpu_ms_per_call_s:>6.2f} "
        f"{r.rss_peak_mib:>6.0f} {r.kib_per_call:>5.0f}  {r.in_p50:>5.2f}/{r.in_p99:<5.1f}  "
        f"{r.out_p50:>5.2f}/{r.out_p99:<5.1f}  {r.clear_p50:>6.2f}/{r.clear_p99:<6.1f} {r.clear_count:>4}  "
        f"{r.gen_cpu_pct:>7.0f} {r.tick_lag_p99:>5.1f}  {ok}"
    )


def summary(results: list[StepResult]) -> list[str]:
    """Per target and mode: most calls that passed, CPU cost there, memory slope, why the ramp stopped."""
    lines = []
    for target in dict.fromkeys(r.target for r in results):
        for mode in MODES:
            steps = [r for r in results if r.target == target and r.mode == mode]
            if not steps:
                continue
            passed = [r for r in steps if r.passed]
            best = max(passed, key=lambda r: r.calls) if passed else None
            text = f"{target} {mode}: "
            if best is None:
                text += f"no step passed (p99 < {MAX_P99_MS:.0f} ms, server CPU < {MAX_SERVER_CPU_PCT:.0f} %)"
            else:
                per_core = math.floor(1000.0 / best.cpu_ms_per_call_s * MAX_SERVER_CPU_PCT / 100)
                text += (
                    f"held {best.calls} calls on one core with p99 < {MAX_P99_MS:.0f} ms; "
                    f"{best.cpu_ms_per_call_s:.2f} ms CPU per call-second there "
                    f"(→ ~{per_core} calls at {MAX_SERVER_CPU_PCT:.0f} % of a core)"
                )
            mem = [r for r in steps if r.valid and r.calls >= 50]
            if len(mem) >= 2:
                a, b = mem[0], mem[-1]
                per_call = (b.rss_peak_mib - a.rss_peak_mib) * 1024 / (b.calls - a.calls)
                text += f"; memory {per_call:.0f} KiB per extra call ({a.calls}→{b.calls})"
            last = steps[-1]
            if not last.passed:
                worst = max(last.in_p99, last.out_p99)
                text += f"; stopped at {last.calls}: " + (
                    "generator-bound, see notes"
                    if not last.valid
                    else f"p99 {worst:.1f} ms, server CPU {last.server_cpu_pct:.0f} %"
                )
            lines.append(text)
    return lines


# ---------------------------------------------------------------------------------------------- main


def parse_calls(text: str, low: int = 1, high: int = 2000) -> list[int]:
    """``--calls``: comma-separated call counts, each between ``low`` and ``high``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--calls {text!r}: use whole numbers separated by commas") from None
    if not values or any(v < low or v > high for v in values):
        raise argparse.ArgumentTypeError(f"--calls {text!r}: each count must be between {low} and {high}")
    return values


async def main_async(args: argparse.Namespace) -> int:
    log_path = Path(args.log)
    log_path.write_bytes(b"")
    info = machine()
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"kernel {info['kernel']}, loadavg {info['loadavg_at_start']}"
    )
    print(
        f"server on CPU {SERVER_CPU}, generator + fake model on CPU {GENERATOR_CPU}; "
        f"window {args.seconds:g} s, "
        f"settle {args.settle:g} s; server logs in {log_path}"
    )
    modes = list(MODES) if args.mode == "both" else [args.mode]
    results: list[StepResult] = []
    plan: list[tuple[str, str, list[int]]] = []
    server = "ivr+uvloop" if args.server_uvloop else "ivr"
    for mode in modes:
        counts = args.calls or (QUICK_CALLS if args.quick else DEFAULT_CALLS[mode])
        plan.append((server, mode, counts))
    if args.baseline and "passthrough" in modes:
        plan.append(("null-bridge", "passthrough", args.baseline))
    for target, mode, counts in plan:
        for calls in counts:
            print(f"  {target} {mode}: {calls} calls …", flush=True)
            result = await run_step(
                target, mode, calls, window_s=args.seconds, settle_s=args.settle, log_path=log_path
            )
            if not result.valid:  # often a noisy neighbour: one retry before believing it
                print(f"    {row(result)}\n    notes: {'; '.join(result.notes)}", flush=True)
                print("    invalid step: retrying once …", flush=True)
                result = await run_step(
                    target, mode, calls, window_s=args.seconds, settle_s=args.settle, log_path=log_path
                )
                result.notes.append("second attempt")
            results.append(result)
            print(f"    {row(result)}", flush=True)
            if result.notes:
                print(f"    notes: {'; '.join(result.notes)}", flush=True)
            if target != "null-bridge" and not result.passed and not args.no_stop:
                break
    print()
    print(_HEADER)
    print(_UNITS)
    for result in results:
        print(row(result))
    print()
    for line in summary(results):
        print(line)
    print(
        "\nAdded latency = loopback sockets + both event loops + the generator's scheduling; "
        "compare with the null-bridge rows.\nin: Twilio media frame sent → model append received; "
        "out: model delta sent → Twilio media received;\n"
        "clear: speech_started sent → clear received. ok: valid and p99 < "
        f"{MAX_P99_MS:.0f} ms and server CPU < {MAX_SERVER_CPU_PCT:.0f} %."
    )
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {"machine": info, "results": [asdict(r) for r in results]}, option=orjson.OPT_INDENT_2
            )
        )
        print(f"results written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="End-to-end load benchmark of the ivr bridge.")
    parser.add_argument("--quick", action="store_true", help="small call counts, short windows (< 60 s)")
    parser.add_argument("--mode", choices=["resample", "passthrough", "both"], default="both")
    parser.add_argument("--calls", type=parse_calls, default=None, help="comma-separated call counts")
    parser.add_argument("--seconds", type=float, default=None, help="measured window per step (default 8)")
    parser.add_argument("--settle", type=float, default=None, help="seconds between ramp and window")
    parser.add_argument(
        "--baseline",
        type=parse_calls,
        default=None,
        help="call counts for the null-bridge baseline (default 100,350; 40 with --quick)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the null-bridge baseline")
    parser.add_argument(
        "--server-uvloop",
        action="store_true",
        help="experiment: run `ivr serve` on uvloop (what uvicorn.Server.run() would choose)",
    )
    parser.add_argument("--no-stop", action="store_true", help="run every call count even past saturation")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--log", default="/tmp/ivr-bench-server.log", help="where server output goes")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 8.0
    if args.settle is None:
        args.settle = 1.0 if args.quick else 2.0
    if not 1.0 <= args.seconds <= 120.0:
        parser.error("--seconds must be between 1 and 120")
    if args.no_baseline:
        args.baseline = []
    elif args.baseline is None:
        args.baseline = [40] if args.quick else [100, 350]
    if not sys.platform.startswith("linux"):
        parser.error("this benchmark reads /proc and pins CPUs: it runs on Linux only")
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    else:
        print(
            "warning: one CPU only; server and generator share it, figures are pessimistic", file=sys.stderr
        )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
