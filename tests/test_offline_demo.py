"""Audio end to end on the offline engine: ``ivr demo`` places a whole call through the phone path.

The caller's lines are spoken by a second voice (Piper "joe", not the agent's) and sent as 8 kHz μ-law
over a signed Twilio media stream; the app runs the offline engine (VAD, the recogniser, the flow's offline
dialogue, hibari); the tests then check the outcome where it lives — the booking in Redis, the approval
record, the recording — and run the agent's recorded voice back through the recogniser to check it said
what the transcript says. The demo's hygiene is checked on the real command: SIGTERM and Ctrl-C stop the
embedded Redis and print one line, a file given as ``--out`` fails before the call.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from ivr.audio.g711 import pcm16_to_ulaw
from ivr.demo.runner import UNCLAIMED_NUMBER, DemoOptions, run_demo
from ivr.flows import FlowSet
from ivr.speech.asr import Recognizer
from ivr.speech.lm import normalize_words
from ivr.speech.vad import SpeechStopped, TurnDetector
from ivr.speech.wer import word_errors
from ivr.store.keys import KeySchema

pytestmark = pytest.mark.slow


async def _no_terminal(prompt: str) -> str:
    raise AssertionError(f"the demo asked a question in a test: {prompt!r}")


def _agent_turns(agent_mulaw: bytes) -> list[bytes]:
    """The agent's track cut into utterances by the same VAD the engine uses (PCM16 8 kHz each)."""
    detector = TurnDetector(stop_ms=500)
    turns = []
    for event in detector.feed_mulaw(agent_mulaw + bytes([0xFF]) * 8000):
        if isinstance(event, SpeechStopped):
            turns.append(event.audio)
    return turns


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_demo_books_an_approved_appointment_by_voice(tmp_path: Path, redis_url: str) -> None:
    out = io.StringIO()
    options = DemoOptions(approve=True, out_dir=tmp_path, redis_url=redis_url)
    # run_demo leaves the process's log levels alone (tests and benchmarks run several demos in one process;
    # silencing "ivr" there leaked into every later test's logs): the calls' INFO lines still reach a handler.
    ivr_log, records = logging.getLogger("ivr"), _Records()
    saved = ivr_log.level
    ivr_log.setLevel(logging.INFO)
    ivr_log.addHandler(records)
    try:
        result = await run_demo(options, out, _no_terminal)
    finally:
        ivr_log.removeHandler(records)
        ivr_log.setLevel(saved)
    assert any(r.name.startswith("ivr.call") and r.levelno == logging.INFO for r in records.records)
    log = out.getvalue()
    summary = result.summary
    assert result.exit_code == 0, log
    assert summary["goal_reached"] is True
    assert summary["scenario"] == "book" and "stored in Redis" in summary["goal_check"]
    assert summary["caller_turns"] >= 4  # the request, the day, the time, yes, goodbye
    assert summary["turn_latency_ms"] == summary["reply_latency_ms"] and summary["turn_latency_ms"]
    # Warnings about a production setup (plain http, the offline engine on purpose) are not printed.
    assert "IVR_PUBLIC_URL" not in log and "every call runs on the offline engine" not in log

    # The booking exists in Redis, booked for the caller, and an operator approved it.
    [booking] = summary["bookings"]
    prefix = summary["redis_prefix"]
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = await client.hgetall(KeySchema(prefix).booking(booking["booking_id"]))
        assert stored["status"] == "booked"
        assert stored["service"] == "cleaning"
        [approval] = summary["approvals"]
        assert approval["decision"] == "approve" and approval["status"] == 200
        record = await client.hgetall(KeySchema(prefix).approval(approval["id"]))
        assert record["status"] == "approved"
        call = await client.hgetall(KeySchema(prefix).call(summary["call_sid"]))
        assert call["engine"] == "local"
        assert call["outcome"] == "agent-hangup"
    finally:
        await client.aclose()

    # The recogniser understood the caller through μ-law and the phone path.
    assert summary["recognition"]["word_accuracy"] >= 0.75, summary["recognition"]
    assert summary["reply_latency_ms"] and max(summary["reply_latency_ms"]) < 3000
    # The server's own per-turn figures (from the call hash in Redis) are in the summary and the log.
    measured = summary["turn_latency"]
    assert measured["turns"] >= 1 and len(measured["turns_ms"]) == measured["turns"]
    assert 0 < measured["median_ms"] <= measured["p90_ms"] < 5000 and measured["greeting_ms"] > 0
    assert "measured by the server" in log

    # The recording: two channels, caller left, agent right, as long as the call.
    with wave.open(str(tmp_path / "demo-call.wav")) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert frames.shape[0] / 8000 == pytest.approx(summary["duration_s"], abs=0.1)
    assert np.abs(frames[:, 0]).max() > 1000 and np.abs(frames[:, 1]).max() > 1000
    assert json.loads((tmp_path / "demo-call.json").read_text())["goal_reached"] is True

    # The agent's voice, recognised back from the right channel, says what its transcript says: a
    # recogniser whose language model knows the agent's sentences (so it checks words, not guesses them).
    # Lines the caller did not hear to their end (cut by a barge-in, or still playing when the call ended)
    # are only partly on the recording: compare the lines heard whole.
    said = [t["text"] for t in summary["transcript"] if t["role"] == "agent" and not t.get("interrupted")]
    recognizer = Recognizer(sentences=said)
    agent_track = pcm16_to_ulaw(frames[:, 1].astype(np.int16))
    heard = [recognizer.recognize(turn).text for turn in _agent_turns(agent_track)]
    expected = " ".join(" ".join(normalize_words(line)) for line in said)
    errors = word_errors(expected, " ".join(heard))
    assert errors.accuracy >= 0.8, (expected, heard)
    assert any("booked" in h.split() for h in heard), heard

    # Two voices: the caller (left) speaks lower than the agent (right), by far more than a pitch-down
    # by ~12 % (what the demo did before it had a second voice).
    caller_f0, agent_f0 = _median_f0(frames[:, 0]), _median_f0(frames[:, 1])
    assert caller_f0 < 0.75 * agent_f0, (caller_f0, agent_f0)


def _median_f0(pcm: np.ndarray, rate: int = 8000) -> float:
    """Median pitch (Hz) of the voiced 40 ms frames: the autocorrelation peak between 70 and 350 Hz."""
    x = pcm.astype(np.float64)
    frame, hop = 320, 160
    level = np.sqrt(np.mean(x**2)) if len(x) else 0.0
    found = []
    for start in range(0, len(x) - frame, hop):
        chunk = x[start : start + frame] - x[start : start + frame].mean()
        if np.sqrt(np.mean(chunk**2)) < level:  # loud frames only (voiced speech)
            continue
        ac = np.correlate(chunk, chunk, "full")[frame - 1 :]
        lo, hi = rate // 350, rate // 70
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found)) if found else 0.0


async def test_the_default_flow_is_reachable_and_answers_the_hours(tmp_path: Path, redis_url: str) -> None:
    """general-reception claims no number: the demo dials one no flow claims, and the call routes there."""
    out = io.StringIO()
    options = DemoOptions(flow_id="default", scenario="hours", out_dir=tmp_path, redis_url=redis_url)
    hours = FlowSet.load(Path(__file__).resolve().parents[1] / "flows").get("general-reception")
    assert hours is not None and hours.opening_hours is not None
    open_before = hours.opening_hours.is_open(datetime.now(UTC))
    result = await run_demo(options, out, _no_terminal)
    open_after = hours.opening_hours.is_open(datetime.now(UTC))
    log = out.getvalue()
    assert f"dialled at {UNCLAIMED_NUMBER}" in log
    assert result.summary["flow"] == "general-reception"
    assert result.exit_code == 0 and result.summary["goal_reached"] is True, log
    if open_before == open_after:  # not run across 9 am or 5 pm New York
        # Open: a conversation on a media stream; closed: the after-hours message alone, and no stream.
        assert result.summary["media_stream"] is open_before, result.summary
        assert (result.summary["caller_turns"] > 0) is open_before, result.summary
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        call = await client.hgetall(
            KeySchema(result.summary["redis_prefix"]).call(result.summary["call_sid"])
        )
    finally:
        await client.aclose()
    assert call["flow_id"] == "general-reception", call


async def test_demo_fails_when_the_operator_denies(tmp_path: Path, redis_url: str) -> None:
    out = io.StringIO()
    result = await run_demo(
        DemoOptions(approve=False, out_dir=tmp_path, redis_url=redis_url), out, _no_terminal
    )
    assert result.exit_code == 1, out.getvalue()
    assert result.summary["goal_reached"] is False
    assert result.summary["bookings"] == []
    assert [a["decision"] for a in result.summary["approvals"]] == ["deny"]
    assert "FAILED" in out.getvalue()


async def test_out_naming_a_file_fails_before_the_call(tmp_path: Path) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    out = io.StringIO()
    with pytest.raises(SystemExit, match="is a file; --out takes a folder"):
        await run_demo(DemoOptions(out_dir=existing), out, _no_terminal)
    assert out.getvalue() == ""  # nothing started: no Redis, no models, no call
    assert existing.read_text() == "keep me\n"
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        await run_demo(DemoOptions(out_dir=existing / "sub"), out, _no_terminal)


def _redis_servers_of(pid: int, port: int) -> list[int]:
    """Processes whose parent is ``pid`` and whose command line serves ``port`` (the embedded Redis)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and f":{port}" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int, port: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f":{port}".encode() in cmdline


def _stop_the_demo_mid_call(tmp_path: Path, signum: int) -> tuple[int, str, str, list[int], int]:
    """Run `ivr demo` as a user would, send ``signum`` once the call is placed; return its exit code,
    stdout, stderr, the embedded Redis server's process ids and port."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ivr", "demo", "--yes", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    seen = []
    port = 0
    for line in proc.stdout:  # progress lines arrive as the demo goes: wait for the call itself
        seen.append(line)
        found = re.search(r"Redis ready at redis://127\.0\.0\.1:(\d+)", line)
        port = int(found.group(1)) if found else port
        if "placing the call" in line:
            break
    else:
        raise AssertionError("the demo ended before placing its call:\n" + "".join(seen))
    servers = _redis_servers_of(proc.pid, port)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, "".join(seen) + stdout, stderr, servers, port


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_stopped_demo_stops_its_redis_and_prints_one_line(tmp_path: Path, signum: int, name: str) -> None:
    code, stdout, stderr, servers, port = _stop_the_demo_mid_call(tmp_path, signum)
    assert len(servers) == 1, "the demo should run one embedded Redis"
    assert not _alive(servers[0], port), "the embedded Redis is still running"
    assert code == 128 + signum, (code, stderr)
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert stderr.strip() == (
        f"ivr demo: stopped by {name}; the call, the server and the embedded Redis are shut down"
    ), stderr
