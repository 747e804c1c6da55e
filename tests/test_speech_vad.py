"""Turn detection on real synthesized speech (hibari → phone path) with known boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.speech.tts import Synthesizer
from ivr.speech.vad import SpeechStarted, SpeechStopped, TurnDetector, VadEvent

RATE = 8000
SECOND = np.zeros(RATE, dtype=np.int16)


def speech_edges_ms(pcm: np.ndarray) -> tuple[int, int]:
    """First and last 10 ms window whose energy is within 40 dB of the loudest window."""
    win = RATE // 100
    n = len(pcm) // win
    energy = (pcm[: n * win].astype(np.float64).reshape(n, win) ** 2).mean(axis=1)
    loud = np.nonzero(energy > energy.max() * 1e-4)[0]
    return int(loud[0]) * 10, (int(loud[-1]) + 1) * 10


@pytest.fixture(scope="module")
def sentences() -> tuple[np.ndarray, np.ndarray]:
    synth = Synthesizer(cache_size=0)
    first = ulaw_to_pcm16(synth.synthesize_mulaw("I'd like to book a cleaning on Tuesday."))
    second = ulaw_to_pcm16(synth.synthesize_mulaw("My name is Maria Lopez."))
    return first, second


def feed_in_chunks(detector: TurnDetector, data: bytes, size: int, mulaw: bool = False) -> list[VadEvent]:
    events: list[VadEvent] = []
    feed = detector.feed_mulaw if mulaw else detector.feed_pcm16
    for i in range(0, len(data), size):
        events += feed(data[i : i + size])
    return events


def test_silence_gives_no_events() -> None:
    detector = TurnDetector()
    assert detector.feed_pcm16(np.zeros(5 * RATE, dtype=np.int16).tobytes()) == []
    assert detector.feed_mulaw(b"\xff" * (3 * RATE)) == []
    assert not detector.in_speech
    assert detector.now_ms == 8000


def test_one_sentence_gives_one_turn_with_accurate_edges(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    speech = sentences[0]
    start, end = speech_edges_ms(speech)
    signal = np.concatenate([SECOND, speech, SECOND])
    detector = TurnDetector(prefix_ms=300)
    events = detector.feed_mulaw(pcm16_to_ulaw(signal))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert abs(started.at_ms - (1000 + start)) <= 150
    assert abs(stopped.at_ms - (1000 + end)) <= 150
    assert not stopped.truncated and not detector.in_speech
    # the turn's audio: 300 ms before the onset, the speech, then at most ~200 ms of silence
    audio = np.frombuffer(stopped.audio, dtype="<i2")
    first_sample = (started.at_ms - 300) * RATE // 1000
    assert np.array_equal(
        audio, ulaw_to_pcm16(pcm16_to_ulaw(signal))[first_sample : first_sample + len(audio)]
    )
    assert stopped.audio_ms == pytest.approx(stopped.at_ms - started.at_ms + 300 + 200, abs=40)


def test_two_sentences_give_two_turns(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    first, second = sentences
    signal = np.concatenate([SECOND, first, SECOND, second, SECOND])
    events = TurnDetector().feed_pcm16(signal.tobytes())
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2
    second_start = 2000 + len(first) * 1000 // RATE + speech_edges_ms(second)[0]
    assert abs(events[2].at_ms - second_start) <= 150


def test_events_do_not_depend_on_chunk_size(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    signal = np.concatenate([SECOND, sentences[0], SECOND[:4000], sentences[1], SECOND])
    mulaw = pcm16_to_ulaw(signal)
    reference = feed_in_chunks(TurnDetector(), mulaw, 160, mulaw=True)
    assert len(reference) == 4
    assert feed_in_chunks(TurnDetector(), mulaw, 7, mulaw=True) == reference
    assert feed_in_chunks(TurnDetector(), ulaw_to_pcm16(mulaw).tobytes(), 333) == reference


def test_long_turn_is_cut_and_a_new_one_starts(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    speech = sentences[0]
    assert len(speech) > 2 * RATE
    signal = np.concatenate([SECOND, speech, SECOND])
    events = TurnDetector(max_turn_ms=1000, prefix_ms=0).feed_pcm16(signal.tobytes())
    assert isinstance(events[0], SpeechStarted) and isinstance(events[1], SpeechStopped)
    assert events[1].truncated
    assert events[1].at_ms - events[0].at_ms == 1000
    assert events[1].audio_ms == 1000
    # the caller is still talking: a new turn starts straight away
    assert isinstance(events[2], SpeechStarted)
    assert events[1].at_ms <= events[2].at_ms <= events[1].at_ms + 200
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * (len(events) // 2)
    assert all(e.audio_ms <= 1000 for e in events if isinstance(e, SpeechStopped))


def test_reset_forgets_a_turn_in_progress(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    detector = TurnDetector()
    detector.feed_pcm16(np.concatenate([SECOND, sentences[0][: RATE // 2]]).tobytes())
    assert detector.in_speech
    detector.reset()
    assert not detector.in_speech and detector.now_ms == 0
    assert detector.feed_pcm16(SECOND.tobytes()) == []


def test_pocketsphinx_backend_agrees(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    signal = np.concatenate([SECOND, sentences[1], SECOND]).astype(np.float64)
    signal += rng.normal(0.0, 32768 * 10 ** (-40 / 20), len(signal))
    data = np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()
    webrtc = TurnDetector(backend="webrtcvad").feed_pcm16(data)
    assert len(webrtc) == 2
    assert TurnDetector(backend="pocketsphinx").feed_pcm16(data) == webrtc


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        TurnDetector(aggressiveness=4)
    with pytest.raises(ValueError, match="stop_ms"):
        TurnDetector(stop_ms=5)
    with pytest.raises(ValueError, match="backend"):
        TurnDetector(backend="silero")
