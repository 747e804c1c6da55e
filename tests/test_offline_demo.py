"""Audio end to end on the offline engine: ``ivr demo`` places a whole call through the phone path.

The caller's lines are synthesized speech sent as 8 kHz μ-law over a signed Twilio media stream; the app
runs the offline engine (VAD, pocketsphinx, the dental flow's offline dialogue, hibari); the tests then
check the outcome where it lives — the booking in Redis, the approval record, the recording — and run the
agent's recorded voice back through the recogniser to check it said what the transcript says.
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from ivr.audio.g711 import pcm16_to_ulaw
from ivr.demo.runner import DemoOptions, run_demo
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


async def test_demo_books_an_approved_appointment_by_voice(tmp_path: Path, redis_url: str) -> None:
    out = io.StringIO()
    options = DemoOptions(approve=True, out_dir=tmp_path, redis_url=redis_url)
    result = await run_demo(options, out, _no_terminal)
    log = out.getvalue()
    summary = result.summary
    assert result.exit_code == 0, log
    assert summary["goal_reached"] is True

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
