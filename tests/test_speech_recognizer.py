"""Choosing, sharing and queueing the speech recogniser (ivr/speech/recognizer.py).

Real engines throughout: Whisper from the installed wheels, pocketsphinx with a flow language model, voices
from espeak-ng/flite through the phone path. The queue's own behaviour (capacity, waiting, cancellation) is
checked with jobs that block on events the test controls, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from pathlib import Path

import pytest

from ivr.settings import Settings, SettingsError, asr_from_env
from ivr.speech.corpus import DEMO_FLOW_PHRASES
from ivr.speech.recognizer import (
    RecognitionQueue,
    SharedRecognizer,
    recognition_queue,
    shared_recognizer,
    shared_whisper,
)
from ivr.speech.whisper import MODEL_SHA256, WhisperRecognizer
from tests.support import speech
from tests.support.speech import linked_wheels
from tests.support.voices import VOICES, VoiceCache

LINES = (
    "I need to cancel my appointment",
    "Tuesday would work for me",
    "my name is Maria Lopez",
    "sure, go ahead and book it",
    "can I move it to Wednesday",
)


voices = speech.voices


def _tampered_wheels(tmp_path: Path) -> tuple[Path, Path]:
    part1, part2 = linked_wheels(tmp_path)
    vocabulary = part1 / "vocabulary.txt"
    text = vocabulary.read_text()
    vocabulary.unlink()
    vocabulary.write_text(text + "extra\n")
    return part1, part2


# ---- IVR_ASR -------------------------------------------------------------------------------------------


def test_ivr_asr_defaults_to_whisper_and_is_validated() -> None:
    assert asr_from_env({}) == "whisper"
    assert asr_from_env({"IVR_ASR": ""}) == "whisper"
    assert asr_from_env({"IVR_ASR": " PocketSphinx "}) == "pocketsphinx"
    assert Settings.from_env({}).asr == "whisper"
    assert Settings.from_env({"IVR_ASR": "pocketsphinx"}).asr == "pocketsphinx"
    with pytest.raises(SettingsError, match=r"IVR_ASR='vosk'.*use whisper .* or pocketsphinx"):
        Settings.from_env({"IVR_ASR": "vosk"})
    with pytest.raises(SettingsError, match="IVR_ASR"):
        Settings().with_(asr="kaldi").check()
    with pytest.raises(ValueError, match="'kaldi' is unknown; use one of whisper, pocketsphinx"):
        SharedRecognizer("kaldi")


def test_the_environment_picks_the_engine(monkeypatch: pytest.MonkeyPatch, voices: VoiceCache) -> None:
    monkeypatch.setenv("IVR_ASR", "pocketsphinx")
    rec = shared_recognizer(sentences=DEMO_FLOW_PHRASES)
    assert rec.requested == "pocketsphinx"
    rec.load()
    assert rec.kind == "pocketsphinx" and rec.degraded is None
    assert "cancel" in rec.recognize(voices.pcm16(VOICES[4], "I need to cancel my appointment")).text
    monkeypatch.delenv("IVR_ASR")
    assert shared_recognizer(sentences=DEMO_FLOW_PHRASES).requested == "whisper"
    monkeypatch.setenv("IVR_ASR", "sphinx")
    with pytest.raises(SettingsError, match="IVR_ASR='sphinx'"):
        shared_recognizer()


# ---- one model per process -----------------------------------------------------------------------------


def test_flows_share_one_whisper_model(voices: VoiceCache) -> None:
    dental = shared_recognizer("whisper", sentences=["I'd like a cleaning"])
    restaurant = shared_recognizer("whisper", sentences=["a table for two"])
    assert shared_recognizer("whisper", sentences=["I'd like a cleaning"]) is dental
    dental.load()
    restaurant.load()
    assert dental.kind == restaurant.kind == "whisper"
    assert dental._engine is restaurant._engine is shared_whisper()
    heard = dental.recognize_mulaw(voices.mulaw(VOICES[1], "my name is Maria Lopez"))
    assert heard.text == "my name is maria lopez"


# ---- degraded fallback ---------------------------------------------------------------------------------


def test_a_damaged_model_falls_back_to_pocketsphinx_logged_as_degraded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, voices: VoiceCache
) -> None:
    part1, part2 = _tampered_wheels(tmp_path)
    messages: list[str] = []
    rec = SharedRecognizer(
        "whisper",
        sentences=DEMO_FLOW_PHRASES,
        on_status=messages.append,
        whisper=lambda: WhisperRecognizer(data_dirs=(part1, part2)),
    )
    with caplog.at_level(logging.WARNING, logger="ivr.speech.recognizer"):
        rec.load()
    assert rec.kind == "pocketsphinx"
    assert rec.degraded is not None and "vocabulary.txt" in rec.degraded
    [record] = [r for r in caplog.records if r.name == "ivr.speech.recognizer"]
    assert record.levelno == logging.WARNING
    assert "speech recognition DEGRADED" in record.getMessage()
    assert MODEL_SHA256["vocabulary.txt"] in record.getMessage()
    assert any(m.startswith("speech recognition DEGRADED") for m in messages)
    heard = rec.recognize(voices.pcm16(VOICES[4], "I need to cancel my appointment"))
    assert "cancel" in heard.text  # the light engine answers: the call goes on


def test_a_missing_whisper_stack_falls_back_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError
    rec = SharedRecognizer("whisper", sentences=DEMO_FLOW_PHRASES, whisper=WhisperRecognizer)
    with caplog.at_level(logging.WARNING, logger="ivr.speech.recognizer"):
        rec.load()
    assert rec.kind == "pocketsphinx"
    assert "cannot import the Whisper stack" in caplog.text and "IVR_ASR=pocketsphinx" in caplog.text


# ---- the bounded queue ---------------------------------------------------------------------------------


async def test_concurrent_callers_share_the_recogniser_through_the_queue(voices: VoiceCache) -> None:
    queue = RecognitionQueue(workers=2, capacity=2, name="test-asr")
    rec = SharedRecognizer("whisper", queue=lambda: queue)
    await asyncio.to_thread(rec.load)
    turns = [voices.pcm16(VOICES[(i * 2) % len(VOICES)], LINES[i % len(LINES)]) for i in range(10)]
    expected = [shared_whisper().recognize(t).text for t in turns]
    heard = await asyncio.gather(*(rec.recognize_async(t) for t in turns))  # ten callers at once
    assert [h.text for h in heard] == expected
    assert queue.completed == 10
    assert queue.peak_depth <= 2  # bounded …
    assert queue.waited_for_room >= 1  # … so some turns waited for room, and none was dropped
    assert queue.depth == 0


async def test_a_full_queue_makes_turns_wait_in_order_and_drops_none() -> None:
    queue = RecognitionQueue(workers=1, capacity=2, name="test-order")
    gate, started = threading.Event(), threading.Event()
    ran: list[int] = []

    def job(n: int) -> int:
        started.set()
        assert gate.wait(30), "the test never opened the gate"
        ran.append(n)
        return n * 10

    first = asyncio.ensure_future(queue.run(lambda: job(0)))
    assert await asyncio.to_thread(started.wait, 30)  # the worker is busy with job 0
    rest = [asyncio.ensure_future(queue.run(lambda n=n: job(n))) for n in range(1, 6)]
    await asyncio.sleep(0)  # let each task reach its first await: 2 queued, 3 waiting for room
    assert queue.depth == 2 and queue.waited_for_room == 3
    rest[3].cancel()  # a caller hung up while its turn waited for room: it must not run
    gate.set()
    assert await first == 0
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[:3] == [10, 20, 30] and results[4] == 50
    assert isinstance(results[3], asyncio.CancelledError)
    assert sorted(ran) == [0, 1, 2, 3, 5]
    assert queue.completed == 5 and queue.peak_depth == 2


async def test_errors_reach_the_caller_and_threads_can_use_the_queue_too() -> None:
    queue = RecognitionQueue(workers=2, capacity=1, name="test-errors")

    def broken() -> int:
        raise RuntimeError("decoder exploded")

    with pytest.raises(RuntimeError, match="decoder exploded"):
        await queue.run(broken)
    results = await asyncio.gather(*(asyncio.to_thread(queue.call, lambda n=n: n) for n in range(6)))
    assert results == list(range(6))
    assert queue.completed == 7


def test_the_process_has_one_queue() -> None:
    assert recognition_queue() is recognition_queue()
    with pytest.raises(ValueError, match="workers ≥ 1"):
        RecognitionQueue(workers=0)


def test_the_offline_engine_uses_the_shared_recogniser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IVR_ASR", raising=False)
    from ivr.engines.local import LocalResources, flow_phrases
    from ivr.flows import FlowSet

    flow = FlowSet.load(Path(__file__).resolve().parents[1] / "flows").get("restaurant")
    assert flow is not None
    resources = LocalResources.for_flow(flow)
    assert resources.recognizer is shared_recognizer(sentences=flow_phrases(flow))
    assert resources.recognizer.kind == "whisper" and resources.recognizer.degraded is None
