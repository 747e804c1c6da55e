"""pocketsphinx recogniser on the phone path: hibari → 24→8 kHz → μ-law → decode → recognise."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.speech.asr import Recognition, Recognizer
from ivr.speech.corpus import DEMO_FLOW_PHRASES, SAMPLE_CALLER_LINES
from ivr.speech.tts import Synthesizer
from ivr.speech.wer import word_accuracy

LINES = [
    "I'd like to book a cleaning",
    "my name is Maria Lopez",
    "yes that's right",
    "I need to cancel my appointment",
    "do you have vegetarian options",
    "the 21st of June",
    "I have a toothache and it really hurts",
    "a table for four tomorrow at seven",
    "thank you very much",
]


@pytest.fixture(scope="module")
def lm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lm-cache")


@pytest.fixture(scope="module")
def recognizer(lm_cache: Path) -> Recognizer:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IVR_SPEECH_CACHE", str(lm_cache))
        messages: list[str] = []
        rec = Recognizer(sentences=DEMO_FLOW_PHRASES, extra_words=["Xochiqzetl"], on_status=messages.append)
        rec.load()
    rec.status_messages = messages  # type: ignore[attr-defined]
    return rec


@pytest.fixture(scope="module")
def phone_audio() -> dict[str, bytes]:
    """Each line as the recogniser gets it on a call: 8 kHz PCM16 decoded from μ-law."""
    synth = Synthesizer(cache_size=0)
    return {line: ulaw_to_pcm16(synth.synthesize_mulaw(line)).tobytes() for line in LINES}


def test_lines_are_from_the_sample_set() -> None:
    assert set(LINES) <= set(SAMPLE_CALLER_LINES)
    assert not set(LINES) & set(DEMO_FLOW_PHRASES)  # the language model never saw the test sentences


def test_load_reports_progress_and_dropped_words(recognizer: Recognizer, lm_cache: Path) -> None:
    messages = recognizer.status_messages  # type: ignore[attr-defined]
    assert messages[0].startswith("building the language model from ")
    assert messages[1] == "loading the speech recogniser (pocketsphinx en-us)…"
    assert messages[-1].startswith("recogniser loaded in ")
    assert recognizer.dropped_words == {"xochiqzetl"}
    assert recognizer.lm_path is not None and recognizer.lm_path.parent == lm_cache


def test_phone_path_word_accuracy(recognizer: Recognizer, phone_audio: dict[str, bytes]) -> None:
    results = {line: recognizer.recognize(audio) for line, audio in phone_audio.items()}
    accuracy = word_accuracy((line, r.text) for line, r in results.items())
    assert accuracy >= 0.8, {line: r.text for line, r in results.items()}
    for line, r in results.items():
        assert r.words == tuple(r.text.split())
        assert not any(w.startswith(("<", "[")) or "(" in w for w in r.words)
        assert r.audio_ms == len(phone_audio[line]) // 16
        assert r.decode_ms > 0
        assert 0.0 < r.confidence <= 1.0
    assert "toothache" in results["I have a toothache and it really hurts"].words  # compound pronunciation


def test_noise_is_not_confident_speech(recognizer: Recognizer, phone_audio: dict[str, bytes]) -> None:
    clean = recognizer.recognize(phone_audio["I'd like to book a cleaning"])
    rng = np.random.default_rng(7)
    for dbfs in (-45, -30):
        noise = np.clip(rng.normal(0.0, 32768 * 10 ** (dbfs / 20), 16000), -32768, 32767).astype(np.int16)
        phone_noise = ulaw_to_pcm16(pcm16_to_ulaw(noise)).tobytes()
        result = recognizer.recognize(phone_noise)
        assert result.text == "" or result.confidence < clean.confidence, (dbfs, result)
    silence = recognizer.recognize(b"\x00\x00" * 8000)
    assert (silence.text, silence.confidence, silence.words) == ("", 0.0, ())
    assert recognizer.recognize(b"") == Recognition("", 0.0, (), 0, recognizer.recognize(b"").decode_ms)


def test_mulaw_input_and_bad_input(recognizer: Recognizer, phone_audio: dict[str, bytes]) -> None:
    pcm = phone_audio["yes that's right"]
    mulaw = pcm16_to_ulaw(np.frombuffer(pcm, dtype="<i2").astype(np.int16))
    assert recognizer.recognize_mulaw(mulaw).text == recognizer.recognize(pcm).text
    with pytest.raises(ValueError, match="even number of bytes"):
        recognizer.recognize(b"\x00\x00\x00")


def test_threads_share_one_recognizer(recognizer: Recognizer, phone_audio: dict[str, bytes]) -> None:
    lines = LINES[:3]
    expected = {line: recognizer.recognize(phone_audio[line]).text for line in lines}
    got: dict[str, str] = {}

    def work(line: str) -> None:
        got[line] = recognizer.recognize(phone_audio[line]).text

    threads = [threading.Thread(target=work, args=(line,)) for line in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_language_model_is_cached(
    recognizer: Recognizer, lm_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVR_SPEECH_CACHE", str(lm_cache))
    messages: list[str] = []
    again = Recognizer(sentences=DEMO_FLOW_PHRASES, extra_words=["Xochiqzetl"], on_status=messages.append)
    again.load()
    assert again.lm_path == recognizer.lm_path
    assert not any(m.startswith("building") for m in messages)
    other = Recognizer(sentences=["a different flow entirely"], on_status=messages.append)
    other.load()
    assert other.lm_path != recognizer.lm_path


def test_stock_model_with_extra_words(phone_audio: dict[str, bytes]) -> None:
    rec = Recognizer(extra_words=["carbonara", "Xochiqzetl"])
    result = rec.recognize(phone_audio["yes that's right"])
    assert rec.lm_path is None and rec.dropped_words == {"xochiqzetl"}
    assert result.words[-2:] == ("that's", "right")
