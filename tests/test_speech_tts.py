"""hibari text-to-speech wrapper: real model, phone-path output, cache, streaming, threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.audio.resample import Downsampler24to8
from ivr.speech.tts import SAMPLE_RATE, Synthesizer, shared_synthesizer


@pytest.fixture(scope="module")
def synth() -> Iterator[Synthesizer]:
    messages: list[str] = []
    s = Synthesizer(on_status=messages.append)
    s.load()
    s.status_messages = messages  # type: ignore[attr-defined]
    yield s


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_load_reports_progress(synth: Synthesizer) -> None:
    messages = synth.status_messages  # type: ignore[attr-defined]
    assert messages[0] == "loading the speech voice (hibari heart)…"
    assert messages[1].startswith("voice loaded in ") and messages[1].endswith(" s")
    assert synth.loaded and synth.load_seconds > 0
    synth.load()  # idempotent: no second load
    assert len(messages) == 2


def test_audio_is_speech_and_scales_with_text(synth: Synthesizer) -> None:
    short = synth.synthesize("Yes.")
    long = synth.synthesize("I would like to book a cleaning on Tuesday morning at half past ten, please.")
    assert short.dtype == np.int16 and short.ndim == 1
    assert 0.3 < len(short) / SAMPLE_RATE < 1.5
    assert len(long) > 3 * len(short)
    assert rms(long) > 1000  # about −30 dBFS or louder: not silence
    assert synth.synthesize("").size == 0


def test_mulaw_is_the_phone_path_at_8khz(synth: Synthesizer) -> None:
    text = "Your appointment is on Friday at nine."
    pcm24 = synth.synthesize(text)
    mulaw = synth.synthesize_mulaw(text)
    assert len(mulaw) == -(-len(pcm24) // 3)  # 8000 samples per second of 24 kHz audio
    decoded = ulaw_to_pcm16(mulaw)
    assert rms(decoded) == pytest.approx(rms(pcm24), rel=0.1)


def test_output_is_deterministic_and_cached(synth: Synthesizer) -> None:
    text = "Thank you for calling the clinic."
    hits = synth.cache_hits
    first = synth.synthesize_mulaw(text)
    second = synth.synthesize_mulaw(text)
    assert second == first
    assert synth.cache_hits == hits + 1
    assert Synthesizer(cache_size=0).synthesize_mulaw(text) == first  # a fresh model: same bytes


def test_cache_is_bounded() -> None:
    s = Synthesizer(cache_size=2)
    for text in ("One.", "Two.", "Three.", "One."):
        s.synthesize_mulaw(text)
    assert (s.cache_hits, s.cache_misses) == (0, 4)  # "One." was evicted by "Three."
    s.synthesize_mulaw("Three.")
    assert s.cache_hits == 1


def test_streaming_yields_a_chunk_per_sentence(synth: Synthesizer) -> None:
    text = "We are open until six tonight. Would you like to book a table?"
    chunks = list(synth.stream_mulaw(text))
    assert len(chunks) >= 2 and all(chunks)
    joined = b"".join(chunks)
    assert abs(len(joined) - len(synth.synthesize(text)) / 3) <= 1
    assert joined == synth.synthesize_mulaw(text)  # now from the cache, chunked the same way
    assert list(synth.stream_mulaw(text)) == chunks


def test_other_voices_are_refused() -> None:
    with pytest.raises(ValueError, match=r"only 'heart' ships inside the hibari-tts package"):
        Synthesizer(voice="emma")
    with pytest.raises(ValueError, match="speed"):
        Synthesizer(speed=5.0)


def test_threads_share_one_synthesizer(synth: Synthesizer) -> None:
    texts = [f"Table number {n} is ready." for n in range(1, 5)]
    expected = {t: pcm16_to_ulaw(Downsampler24to8().process(synth.synthesize(t))) for t in texts}
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def work(text: str) -> None:
        try:
            results[text] = synth.synthesize_mulaw(text)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == expected


def test_shared_synthesizer_is_one_instance() -> None:
    assert shared_synthesizer() is shared_synthesizer()
    assert shared_synthesizer(speed=1.2) is not shared_synthesizer()
