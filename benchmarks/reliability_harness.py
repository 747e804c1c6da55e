"""What the fuzz, fault and soak runs share: the real server as a child process, the fake model, raw callers.

Why a harness of its own: these runs must exercise the server exactly as production does — ``python -m ivr
serve`` in its own process, a signed Twilio webhook, the ``<Connect><Stream>`` it answers with (including
every ``<Parameter>``), a signed media WebSocket — while keeping byte-level control of what is sent (the
fuzzer sends frames no real Twilio would), and they must see the server from outside: its RSS and open file
descriptors from ``/proc``, its asyncio task count through a probe (SIGUSR1 makes the child write one line),
and its logs in a file.

- :class:`ServerUnderTest` starts ``ivr serve`` (wrapped only to answer the probe), waits for ``/healthz``,
  and stops, SIGKILLs or restarts it.
- :class:`ModelStandIn` is the test suite's protocol-faithful fake Realtime server (``tests/support``), with
  a lookup from a call SID to the model sessions serving it (the flow's instructions carry the SID).
- :class:`RawCaller` plays Twilio for one call with a raw WebSocket: webhook, stream, valid media frames on
  demand, mark echoes, arbitrary frames for fuzzing, and hang-up with ``stop`` and the status callback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ivr.caller.twilio_side import (  # noqa: E402  (after the sys.path line, so this runs as a script)
    SayHangup,
    StreamInstruction,
    TwilioStreamSimulator,
    new_sid,
    parse_twiml,
)
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply  # noqa: E402
from tests.support.fake_twilio_rest import FakeTwilioRest  # noqa: E402

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "reliability-auth-token-0123456789"
OPERATOR_TOKEN = "reliability-operator-token-0123456789abcdef"
FROM_NUMBER = "+15550100001"
TO_NUMBER = "+15550100002"
MULAW_SILENCE = 0xFF
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law

#: The flow every run uses: one number, passthrough audio, the call SID in the instructions (so the fake model
#: can tell which call a socket serves), caller transcription on (so a conversation exists to replay), two
#: stages whose move-only tools give the model something harmless to call, and a hold phrase.
FLOW_YAML = """\
id: reliability
default: true
numbers: ["+15550100002"]
model:
  voice: marin
  audio: pcmu
  turn_detection: {type: server_vad, threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500}
  transcription: {model: gpt-4o-mini-transcribe, language: en}
greeting: "Hello, reliability desk."
instructions: "Reliability call {{ call_sid }}. Keep answers short."
hold_phrase: "One moment please."
stages:
  - id: front
    transitions: [{to: back, tool: go_back, description: "Move to the back office."}]
  - id: back
    transitions: [{to: front, tool: go_front, description: "Move to the front desk."}]
start_stage: front
limits: {max_call_seconds: 14400, max_tool_calls: 1000}
"""


def write_flows(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "reliability.yaml").write_text(FLOW_YAML, encoding="utf-8")
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- the server

#: ``ivr serve`` with one addition: on SIGUSR1 it appends a JSON line (asyncio tasks, threads) to the file
#: named by RELIABILITY_PROBE_FILE. Python runs signal handlers in the main thread, the event loop's thread.
_PROBED_SERVE = r"""
import asyncio, json, os, signal, sys, threading
def _probe(signum, frame):
    try:
        loop = asyncio.get_running_loop()  # the handler runs inside the loop's thread, between callbacks
        tasks = len(asyncio.all_tasks(loop))
    except RuntimeError:
        tasks = -1
    line = json.dumps({"tasks": tasks, "threads": threading.active_count()})
    with open(os.environ["RELIABILITY_PROBE_FILE"], "a") as out:
        out.write(line + "\n")
signal.signal(signal.SIGUSR1, _probe)
from ivr.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class ProcessFigures:
    rss_kib: int
    fds: int
    sockets: int
    tasks: int | None
    threads: int | None


class ServerUnderTest:
    """One ``ivr serve`` child process on 127.0.0.1 with its log in a file."""

    def __init__(
        self,
        model_url: str,
        flows_dir: Path,
        log_path: Path,
        *,
        port: int | None = None,
        redis_url: str | None = None,
        instance_id: str | None = None,
        twilio_api_base: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.probe_path = log_path.with_suffix(".probe")
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "IVR_REDIS_URL")}
        env.update(
            OPENAI_API_KEY="sk-test",
            IVR_REALTIME_URL=model_url,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            IVR_OPERATOR_TOKEN=OPERATOR_TOKEN,
            IVR_PUBLIC_URL=self.base_url,
            IVR_FLOWS=str(flows_dir),
            IVR_LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
            RELIABILITY_PROBE_FILE=str(self.probe_path),
        )
        if redis_url:
            env["REDIS_URL"] = redis_url
        if instance_id:
            env["IVR_INSTANCE_ID"] = instance_id
        if twilio_api_base:
            env["IVR_TWILIO_API_BASE"] = twilio_api_base
        env.update(extra_env or {})
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 60.0) -> None:
        argv = [sys.executable, "-c", _PROBED_SERVE, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, env=self.env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                break
            if await self.healthy():
                return
            await asyncio.sleep(0.1)  # polling a child that gives no readiness signal but /healthz
        tail = self.log_tail(15)
        await self.stop()
        raise RuntimeError(f"ivr serve did not become healthy on port {self.port}; log tail:\n{tail}")

    async def healthy(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                return (await http.get(self.base_url + "/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the server drains its calls), SIGKILL after ``timeout``; our child only."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL: no drain, no flush, no goodbye — a crashed or evicted instance."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def figures(self) -> ProcessFigures:
        """RSS, open fds and sockets from /proc (tasks and threads need :meth:`probe`)."""
        rss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        fds = sockets = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                fds += 1
                if os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
        return ProcessFigures(rss, fds, sockets, None, None)

    def socket_peers(self) -> list[str]:
        """The server's TCP sockets as ``local → remote (state)``, from /proc/PID/fd and /proc/net/tcp."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        states = {
            "01": "ESTABLISHED",
            "06": "TIME_WAIT",
            "08": "CLOSE_WAIT",
            "0A": "LISTEN",
            "04": "FIN_WAIT1",
        }
        out = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    parts = line.split()
                    if parts[9] in inodes:
                        local, remote = (int(p.split(":")[1], 16) for p in (parts[1], parts[2]))
                        out.append(f":{local} → :{remote} ({states.get(parts[3], parts[3])})")
        return sorted(out)

    async def probe(self, timeout: float = 5.0) -> ProcessFigures:
        """:meth:`figures` plus the asyncio task and thread counts, read inside the server."""
        figures = self.figures()
        before = self.probe_path.read_text().count("\n") if self.probe_path.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.probe_path.read_text().splitlines() if self.probe_path.exists() else []
            if len(lines) > before:
                data = json.loads(lines[-1])
                figures.tasks, figures.threads = data["tasks"], data["threads"]
                break
            await asyncio.sleep(0.05)  # the child writes the file from its signal handler
        return figures

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_problems(self) -> dict[str, Any]:
        """Tracebacks and ERROR/CRITICAL lines in the log, with a few examples."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return {"tracebacks": 0, "errors": 0, "examples": []}
        tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line or "ERROR:" in line]
        return {"tracebacks": tracebacks, "errors": len(errors), "examples": errors[:5]}

    async def api(self, path: str) -> Any:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.get(
                self.base_url + path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            )
            response.raise_for_status()
            return response.json()

    async def metrics_text(self) -> str:
        async with httpx.AsyncClient(timeout=10.0) as http:
            return (await http.get(self.base_url + "/metrics")).text


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of one Prometheus metric's samples (optionally those with the given labels)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric = head.split("{", 1)[0]
        if metric not in (name, name + "_total"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            with contextlib.suppress(ValueError):
                total += float(value)
    return total


# ---------------------------------------------------------------------------------------------- the model


class ModelStandIn:
    """The fake Realtime API, with per-call session lookup, and the fake Twilio REST API beside it.

    The REST stand-in receives what the server asks Twilio for (ending a call with an apology, a transfer),
    so no run ever reaches api.twilio.com.
    """

    def __init__(self, replies: list[Reply] | None = None, *, auto_cancel_on_speech: bool = True) -> None:
        self.fake = FakeRealtimeServer(api_key="sk-test", auto_cancel_on_speech=auto_cancel_on_speech)
        self.fake.default_replies = replies or [Reply(text="Hello, reliability desk.", audio_ms=600)]
        self.rest = FakeTwilioRest(ACCOUNT_SID, AUTH_TOKEN)

    async def start(self) -> str:
        await self.fake.start()
        await self.rest.start()
        return self.fake.url

    async def stop(self) -> None:
        await self.fake.stop()
        await self.rest.stop()

    def sessions_for(self, call_sid: str) -> list[FakeSession]:
        """Every model socket opened for ``call_sid`` (after its session.update), oldest first."""
        out = []
        for session in self.fake.sessions:
            instructions = session.session_config.get("instructions")
            if isinstance(instructions, str) and call_sid in instructions:
                out.append(session)
        return out

    def live_session(self, call_sid: str) -> FakeSession | None:
        live = [s for s in self.sessions_for(call_sid) if not s.closed.is_set()]
        return live[-1] if live else None

    async def wait_session(
        self, call_sid: str, timeout: float = 10.0, *, newer_than: int = -1
    ) -> FakeSession:
        """The live session of ``call_sid`` whose index is above ``newer_than`` (a reconnect's new socket)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            session = self.live_session(call_sid)
            if session is not None and session.index > newer_than:
                return session
            await asyncio.sleep(0.02)  # the fake has no per-call signal; sessions appear within milliseconds
        raise TimeoutError(f"no model session for {call_sid} (newer than #{newer_than}) within {timeout} s")

    @staticmethod
    def trim(session: FakeSession) -> None:
        """Drop what the fake keeps for assertions (long runs would otherwise grow in *this* process)."""
        session.received.clear()
        session.sent.clear()
        del session.input_audio[:]


async def send_raw(session: FakeSession, frame: str | bytes) -> bool:
    """Send one frame on the model socket exactly as given (fuzzing: bypasses the fake's own validation)."""
    try:
        await session._ws.send(frame)  # the fake offers no public raw send; fuzz frames must skip its oracle
    except ConnectionClosed:
        return False
    return True


# ---------------------------------------------------------------------------------------------- a caller


@dataclass
class CallStats:
    media_frames: int = 0
    media_bytes: int = 0
    marks: int = 0
    clears: int = 0
    bad_frames: int = 0
    sent: int = 0
    close_code: int | None = None
    close_reason: str = ""
    first_media_at: float | None = None
    media_times: list[tuple[float, int]] = field(default_factory=list)  # (arrival, bytes)
    harness_errors: list[str] = field(default_factory=list)


class RawCaller:
    """One call placed like Twilio does, with a raw media WebSocket the driver controls frame by frame."""

    def __init__(self, server: ServerUnderTest, *, keep_media_times: bool = False) -> None:
        self.server = server
        self.call_sid = new_sid("CA")
        self.stream_sid = new_sid("MZ")
        self.stats = CallStats()
        self.webhook_status: int | None = None
        self.ws: ClientConnection | None = None
        self.closed = asyncio.Event()
        self.keep_media_times = keep_media_times
        self.on_media: Callable[[bytes], None] | None = None
        self._sim: TwilioStreamSimulator | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._timestamp = 0
        self._media_event = asyncio.Event()

    def _params(self, status: str) -> dict[str, str]:
        return {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": TO_NUMBER,
            "Caller": FROM_NUMBER,
            "Direction": "inbound",
            "From": FROM_NUMBER,
            "To": TO_NUMBER,
        }

    async def _post(self, path: str, params: dict[str, str]) -> httpx.Response:
        url = self.server.base_url + path
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        async with httpx.AsyncClient(timeout=10.0) as http:
            return await http.post(url, data=params, headers={"X-Twilio-Signature": signature})

    async def dial(self) -> None:
        """Webhook, then the media WebSocket with ``connected`` and ``start``; raises if refused."""
        response = await self._post("/twilio/voice", self._params("ringing"))
        self.webhook_status = response.status_code
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")
        instruction = parse_twiml(response.text)
        if isinstance(instruction, SayHangup) or not isinstance(instruction, StreamInstruction):
            raise RuntimeError(f"webhook did not answer with a stream: {response.text[:200]}")
        signature = RequestValidator(AUTH_TOKEN).compute_signature(instruction.url, {})
        self.ws = await connect(
            instruction.url,
            additional_headers={"x-twilio-signature": signature},
            max_size=None,
            open_timeout=10,
            ping_interval=None,
            compression=None,
        )
        self._sim = TwilioStreamSimulator(ACCOUNT_SID, self.call_sid, self.stream_sid, instruction.parameters)
        self._receiver = asyncio.create_task(self._receive())
        await self.send(self._sim.connected())
        await self.send(self._sim.start())

    @property
    def alive(self) -> bool:
        return self.ws is not None and not self.closed.is_set()

    async def send(self, frame: str | bytes) -> bool:
        """Send one frame as is; False once the server has closed the socket."""
        if self.ws is None or self.closed.is_set():
            return False
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            return False
        self.stats.sent += 1
        return True

    def media_frame(self, mulaw: bytes = bytes([MULAW_SILENCE]) * FRAME_BYTES) -> str:
        assert self._sim is not None
        frame = self._sim.media(mulaw, self._timestamp)
        self._timestamp += 20
        return frame

    async def send_media(self, frames: int = 1) -> bool:
        for _ in range(frames):
            if not await self.send(self.media_frame()):
                return False
        return True

    async def wait_media(self, more_than: int, timeout: float) -> bool:
        """True once more than ``more_than`` agent audio frames have arrived."""
        deadline = time.monotonic() + timeout
        while self.stats.media_frames <= more_than:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed.is_set():
                return self.stats.media_frames > more_than
            self._media_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._media_event.wait(), remaining)
        return True

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                try:
                    await self._on_frame(raw)
                except ConnectionClosed:
                    raise
                except Exception as exc:  # a harness bug must show, not pass for the server closing the call
                    self.stats.harness_errors.append(f"{type(exc).__name__}: {exc} on {raw[:120]!r}")
        except ConnectionClosed:
            pass
        finally:
            self.stats.close_code = self.ws.close_code
            self.stats.close_reason = self.ws.close_reason or ""
            self.closed.set()
            self._media_event.set()

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            event = message["event"]
        except (ValueError, KeyError, TypeError):
            self.stats.bad_frames += 1
            return
        if event == "media":
            try:
                audio = base64.b64decode(message["media"]["payload"])
            except (KeyError, TypeError, ValueError):
                self.stats.bad_frames += 1
                return
            now = time.monotonic()
            if self.stats.first_media_at is None:
                self.stats.first_media_at = now
            if self.keep_media_times:
                self.stats.media_times.append((now, len(audio)))
            self.stats.media_frames += 1
            self.stats.media_bytes += len(audio)
            if self.on_media is not None:
                self.on_media(audio)
            self._media_event.set()
        elif event == "mark":
            self.stats.marks += 1
            name = message.get("mark", {}).get("name")
            if isinstance(name, str) and self._sim is not None and not self._sim.stopped:
                # Echo at once: this caller "plays" audio instantly, which is allowed (Twilio echoes a mark
                # when the audio before it has played; a fast network and a short buffer make that soon).
                with contextlib.suppress(ConnectionClosed, RuntimeError):
                    await self.ws.send(self._sim.mark(name))  # type: ignore[union-attr]
        elif event == "clear":
            self.stats.clears += 1

    async def hang_up(self) -> None:
        """``stop``, close, and the ``completed`` status callback, as Twilio does when the caller hangs up."""
        if self._sim is not None and self.alive and not self._sim.stopped:
            with contextlib.suppress(ConnectionClosed, RuntimeError):
                await self.send(self._sim.stop())
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._receiver is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._receiver, 10.0)
        with contextlib.suppress(httpx.HTTPError):
            await self._post("/twilio/status", {**self._params("completed"), "CallDuration": "1"})

    async def abandon(self) -> None:
        """Drop the socket without ``stop`` (the caller's side vanished); used when the server is gone."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.transport.abort()
        if self._receiver is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._receiver, 5.0)


async def probe_call(model: ModelStandIn, caller: RawCaller, timeout: float = 6.0) -> str | None:
    """None when valid audio flows both ways; else what failed."""
    session = model.live_session(caller.call_sid)
    before = len(session.input_audio) if session is not None else 0
    before_index = session.index if session is not None else -1
    if not await caller.send_media(5):
        return f"server closed the Twilio socket ({caller.stats.close_code} {caller.stats.close_reason!r})"
    deadline = time.monotonic() + timeout
    while True:
        current = model.live_session(caller.call_sid)
        if current is not None and (
            (current.index == before_index and len(current.input_audio) >= before + 800)
            or (current.index != before_index and len(current.input_audio) > 0)
        ):
            break
        if time.monotonic() > deadline:
            state = (
                "no live model session" if current is None else f"{len(current.input_audio) - before} bytes"
            )
            return f"caller audio did not reach the model within {timeout:g} s ({state})"
        await caller.send_media(1)
        await asyncio.sleep(0.02)  # one 20 ms frame per tick while waiting, like a caller
    assert current is not None
    frames = caller.stats.media_frames
    if not current.response_in_flight:
        with contextlib.suppress(RuntimeError):  # a response in flight after all: its audio is the probe
            await current.respond(Reply(text="Still here.", audio_ms=200))
    if not await caller.wait_media(frames, timeout):
        return f"a model reply did not reach the caller within {timeout:g} s"
    with contextlib.suppress(TimeoutError):
        await current.wait_response_done(timeout)
    model.trim(current)
    return None


async def warm_up(server: ServerUnderTest, model: ModelStandIn) -> None:
    """One call that does what later calls do once, so lazy loads land before a baseline is taken.

    Audio both ways, a caller turn answered late (the hold phrase: the local voice loads on first use), and
    a barge-in. Raises if the call does not work at all.
    """
    caller = RawCaller(server)
    await caller.dial()
    session = await model.wait_session(caller.call_sid, timeout=20)
    if problem := await probe_call(model, caller):
        raise RuntimeError(f"the warm-up call failed: {problem}")
    await session.speech_started()
    await caller.send_media(10)
    await session.speech_stopped()
    await session.user_said("warming up")
    await asyncio.sleep(4.0)  # longer than the hold-phrase delay: the server speaks it once
    await session.respond(Reply(text="Warm.", audio_ms=1500, delta_interval_s=0.05))
    await asyncio.sleep(0.3)
    await session.speech_started()  # barge-in
    with contextlib.suppress(TimeoutError):
        await session.wait_response_done(5)
    await caller.hang_up()


async def settled(server: ServerUnderTest, timeout: float = 60.0) -> ProcessFigures:
    """The server's figures once RSS has stopped moving by more than 1 MiB between two samples 3 s apart."""
    last = await server.probe()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(3.0)  # sampling interval: RSS has no event to wait for
        now = await server.probe()
        if abs(now.rss_kib - last.rss_kib) < 1024:
            return now
        last = now
    return last


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def report_line(label: str, value: object) -> str:
    return f"  {label:<44} {value}"
