"""Turn detection on real synthesized speech (hibari → phone path) with known boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.speech.endpointing import EndpointingPolicy
from ivr.speech.tts import Synthesizer
from ivr.speech.vad import (
    SpeechPaused,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    VadEvent,
    trim_leading_silence,
)

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


# ---- adaptive end of turn (ivr/speech/endpointing.py) ---------------------------------------------------


def test_fixed_rule_reports_no_pauses(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    signal = np.concatenate([SECOND, sentences[0], SECOND])
    assert not any(isinstance(e, SpeechPaused) for e in TurnDetector().feed_pcm16(signal.tobytes()))


def test_a_pause_is_reported_with_the_audio_the_turn_will_carry(
    sentences: tuple[np.ndarray, np.ndarray],
) -> None:
    policy = EndpointingPolicy()
    detector = TurnDetector(endpointing=policy)
    speech = sentences[1]
    events = detector.feed_pcm16(np.concatenate([SECOND, speech, SECOND[:4000]]).tobytes())
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    assert next(type(e) for e in events) is SpeechStarted and paused
    assert isinstance(events[-1], SpeechPaused)  # still waiting for the words: no end yet
    last = paused[-1]
    assert abs(last.at_ms - (1000 + speech_edges_ms(speech)[1])) <= 200
    # The words come back: a complete answer ends the turn at once, with exactly the paused audio.
    [stopped] = detector.judged(last.revision, "my name is maria lopez thank you")
    assert isinstance(stopped, SpeechStopped) and stopped.audio == last.audio
    assert stopped.at_ms == last.at_ms and not detector.in_speech
    assert detector.judged(last.revision, "yes") == []  # the turn is over


def test_an_open_phrase_waits_and_a_stale_result_is_ignored(
    sentences: tuple[np.ndarray, np.ndarray],
) -> None:
    policy = EndpointingPolicy()
    detector = TurnDetector(endpointing=policy)
    first, second = sentences
    events = detector.feed_pcm16(np.concatenate([SECOND, first, SECOND[:2400]]).tobytes())
    pause = [e for e in events if isinstance(e, SpeechPaused)][-1]
    assert detector.judged(pause.revision, "i'd like to book a cleaning on") == []  # open: keep listening
    events = detector.feed_pcm16(np.concatenate([SECOND[:1600], second]).tobytes())  # 0.5 s later: more
    assert not any(isinstance(e, SpeechStopped) for e in events)
    # (the fixed rule cuts this pause: two turns)
    fixed = TurnDetector().feed_pcm16(
        np.concatenate([SECOND, first, SECOND[:4000], second, SECOND]).tobytes()
    )
    assert [type(e) for e in fixed].count(SpeechStopped) == 2
    assert detector.judged(pause.revision, "i'd like to book a cleaning on tuesday") == []  # stale
    tail = SECOND.tobytes() * 2
    for offset in range(0, len(tail), 320):
        stops = [e for e in detector.feed_pcm16(tail[offset : offset + 320]) if isinstance(e, SpeechStopped)]
        if stops:
            break
    [stopped] = stops
    # One turn with both sentences; with no words for the last pause it ended after open_ms of silence.
    assert stopped.audio_ms > (len(first) + len(second)) * 1000 // RATE
    assert detector.now_ms - stopped.at_ms == policy.open_ms


def test_adaptive_events_do_not_depend_on_chunk_size(sentences: tuple[np.ndarray, np.ndarray]) -> None:
    signal = np.concatenate([SECOND, sentences[0], SECOND[:4000], sentences[1], SECOND, SECOND])
    mulaw = pcm16_to_ulaw(signal)
    reference = feed_in_chunks(TurnDetector(endpointing=EndpointingPolicy()), mulaw, 160, mulaw=True)
    assert [type(e) for e in reference].count(SpeechStopped) >= 1
    assert feed_in_chunks(TurnDetector(endpointing=EndpointingPolicy()), mulaw, 7, mulaw=True) == reference


def test_a_reply_starts_without_the_voice_s_leading_silence() -> None:
    synth = Synthesizer(cache_size=0)
    audio = synth.synthesize_mulaw("Which day would suit you?")
    trimmed = trim_leading_silence(audio, keep_ms=60)
    cut_ms = (len(audio) - len(trimmed)) // 8
    assert audio.endswith(trimmed) and cut_ms >= 150  # hibari leads with ~300 ms of silence
    onset = speech_edges_ms(ulaw_to_pcm16(trimmed))[0]
    assert 40 <= onset <= 80  # the voice now starts ~60 ms in
    assert trim_leading_silence(b"\xff" * 800) == b"\xff" * 800  # silence stays as it is
    assert trim_leading_silence(b"") == b""
