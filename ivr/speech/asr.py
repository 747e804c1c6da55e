"""Offline speech recognition of 8 kHz phone audio with pocketsphinx (en-us model).

Audio path: the 8 kHz PCM16 turn is upsampled to 16 kHz with ``soxr`` (one shot: whole utterances, quality
over latency, as in ``ivr/audio/wav.py``) and decoded with pocketsphinx's stock 16 kHz acoustic model. The
alternative, decoding at 8 kHz natively, needs a different front end (the model's ``feat.params`` say
``-upperf 6800``, impossible at 8 kHz), and a 16 kHz model fed 8 kHz features with any filter bank
(upperf 3400-4000 Hz, 20-31 filters) recognised almost nothing: word accuracy 0.05-0.19 against 0.88
upsampled on the phone-path benchmark (benchmarks/bench_speech.py).

Vocabulary: words of the flow that pocketsphinx's dictionary lacks get a pronunciation when they are a
compound of two dictionary words ("toothache"); others are dropped (:attr:`Recognizer.dropped_words`).

Language model: with ``sentences`` (the flow's phrases) the model is an n-gram built by
:func:`ivr.speech.lm.build_arpa` from them plus :func:`ivr.speech.corpus.generic_phone_sentences`; it is
cached on disk by content hash together with a dictionary of just its words (pocketsphinx loads in ~0.02 s
with that against ~1.8 s with the full 134k-word dictionary).
Without ``sentences`` pocketsphinx's stock en-us model is used (broader, slower, much less accurate here).

Confidence: pocketsphinx's lattice posterior of the best hypothesis (``Decoder.get_prob()``, needs the
default ``-bestpath yes``), taken per word as a geometric mean, ``P(hyp | audio) ** (1 / n_words)``, so
long sentences are not punished for their length. Measured on the phone-path benchmark (flow LM): lines
recognised exactly scored 0.62 on average (0.32-0.79), lines with errors 0.44 (0.13-0.61), out-of-domain
speech 0.20 (0.14-0.32); white noise at −45/−35/−25 dBFS and hum decoded to no words (confidence 0) and
reversed-speech babble scored 0.22. Treat below ~0.35 as "did not understand". Audio whose loudest 20 ms
frame is below :data:`SILENCE_DBFS` is not decoded at all (pocketsphinx finds short words in digital
silence).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ivr.audio.g711 import ulaw_to_pcm16
from ivr.speech.corpus import generic_phone_sentences
from ivr.speech.lm import (
    build_arpa,
    compound_pronunciation,
    dictionary_text,
    normalize_words,
    pronunciations,
)

__all__ = ["Recognition", "Recognizer", "lm_cache_dir"]

log = logging.getLogger(__name__)

_PHONE_RATE = 8000
_MODEL_RATE = 16000
_LM_ORDER = 3
_CACHE_FORMAT = 1  # bump when lm.py changes what it writes for the same sentences
_FRAME = _PHONE_RATE // 50
#: Turns whose loudest 20 ms frame is quieter than this are not decoded: pocketsphinx finds words in
#: digital silence ("in", "two" on 1-3 s of zeros), and nobody speaks that softly on a phone line.
SILENCE_DBFS = -55.0
_ALTERNATE = re.compile(r"\(\d+\)$")
StatusCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Recognition:
    """What the caller said: ``text`` (lowercase words, no filler or noise tokens), a 0..1 ``confidence``
    (see the module docstring), the ``words``, the length of the audio and the decoding time.

    ``alternatives``: what else the recogniser thought the caller may have said, as (text, confidence) pairs
    on the same scale as ``confidence``, most likely first, the best ``text`` itself not repeated (Whisper's
    other beam-search hypotheses; empty for pocketsphinx). The dialogue may take one when ``text`` does not
    answer the open question (:mod:`ivr.dialogue.nbest`)."""

    text: str
    confidence: float
    words: tuple[str, ...]
    audio_ms: int
    decode_ms: float
    alternatives: tuple[tuple[str, float], ...] = ()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def lm_cache_dir() -> Path:
    """Where built language models are cached: ``$IVR_SPEECH_CACHE`` or ``<tmp>/ivr-speech-lm``."""
    return Path(os.environ.get("IVR_SPEECH_CACHE") or Path(tempfile.gettempdir()) / "ivr-speech-lm")


def loudest_frame_dbfs(pcm16_8k: bytes) -> float:
    """Level of the loudest 20 ms frame in dB relative to full scale (−inf for digital silence)."""
    samples = np.frombuffer(pcm16_8k, dtype="<i2").astype(np.float64)
    frames = len(samples) // _FRAME
    if frames == 0:
        return -math.inf
    power = (samples[: frames * _FRAME].reshape(frames, _FRAME) ** 2).mean(axis=1).max()
    return 10.0 * math.log10(power / 32768.0**2) if power > 0 else -math.inf


def _upsample(pcm16_8k: bytes) -> bytes:
    samples = np.frombuffer(pcm16_8k, dtype="<i2").astype(np.float32)
    up = soxr.resample(samples, _PHONE_RATE, _MODEL_RATE, quality="HQ")
    return np.clip(np.rint(up), -32768, 32767).astype("<i2").tobytes()


class Recognizer:
    """pocketsphinx for phone turns; load on first use (or :meth:`load`), then :meth:`recognize`."""

    def __init__(
        self,
        *,
        sentences: Iterable[str] | None = None,
        extra_words: Iterable[str] = (),
        on_status: StatusCallback | None = None,
    ) -> None:
        self._sentences = None if sentences is None else tuple(sentences)
        self._extra_words = tuple(w for word in extra_words for w in normalize_words(word))
        self._on_status = on_status
        self._decoder: Any = None
        self._lock = threading.Lock()  # the decoder is not re-entrant; also guards loading
        self._dropped: frozenset[str] = frozenset()
        #: Path of the language model file in use (None: pocketsphinx's stock en-us model).
        self.lm_path: Path | None = None
        #: Seconds the last :meth:`load` took (0 until loaded).
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._decoder is not None

    @property
    def dropped_words(self) -> frozenset[str]:
        """Words of the sentences/extra words that pocketsphinx cannot pronounce, left out (after load)."""
        return self._dropped

    def _status(self, message: str) -> None:
        if self._on_status is not None:
            self._on_status(message)

    def load(self) -> None:
        """Build or fetch the language model and load the decoder now (idempotent)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._decoder is not None:
            return self._decoder
        import pocketsphinx

        start = time.perf_counter()
        table = pronunciations()
        kwargs: dict[str, Any] = {"loglevel": "FATAL", "samprate": _MODEL_RATE}
        if self._sentences is not None:
            corpus = [*generic_phone_sentences(), *self._sentences, *self._extra_words]
            vocabulary = {w for s in corpus for w in normalize_words(s)}
            self.lm_path, dict_path = self._language_model(corpus, vocabulary, table)
            kwargs |= {"lm": str(self.lm_path), "dict": str(dict_path)}
        else:
            vocabulary = set(self._extra_words)
        compounds = {w: p for w in vocabulary if w not in table and (p := compound_pronunciation(w, table))}
        self._dropped = frozenset(w for w in vocabulary if w not in table and w not in compounds)
        if self._dropped:
            log.info(
                "speech recogniser: no pronunciation for %s; they cannot be recognised", sorted(self._dropped)
            )
        self._status("loading the speech recogniser (pocketsphinx en-us)…")
        decoder = pocketsphinx.Decoder(**kwargs)
        if self.lm_path is None and self._extra_words:
            for word, phones in sorted(compounds.items()):
                decoder.add_word(word, phones, update=False)
            self._add_to_stock_lm(decoder, [w for w in self._extra_words if w not in self._dropped])
        self._decoder = decoder
        self.load_seconds = time.perf_counter() - start
        self._status(f"recogniser loaded in {self.load_seconds:.1f} s")
        return decoder

    def _language_model(
        self, corpus: list[str], vocabulary: set[str], table: Mapping[str, tuple[str, ...]]
    ) -> tuple[Path, Path]:
        """The ARPA model and the matching small dictionary for ``corpus``, from the cache or built now."""
        digest = hashlib.sha256(f"format={_CACHE_FORMAT} order={_LM_ORDER}\n".encode())
        for sentence in corpus:
            digest.update(sentence.encode("utf-8") + b"\n")
        stem = lm_cache_dir() / digest.hexdigest()[:32]
        lm_path, dict_path = stem.with_suffix(".arpa"), stem.with_suffix(".dict")
        if lm_path.exists() and dict_path.exists():
            return lm_path, dict_path
        self._status(f"building the language model from {len(corpus)} phrases…")
        words = dictionary_text(vocabulary, table)
        known = {line.split(" ", 1)[0] for line in words.splitlines()}
        _write_atomically(dict_path, words)
        _write_atomically(lm_path, build_arpa(corpus, order=_LM_ORDER, known_words=known))
        return lm_path, dict_path

    @staticmethod
    def _add_to_stock_lm(decoder: Any, words: list[str]) -> None:
        """Make ``words`` that the stock model lacks recognisable (as unigrams)."""
        search = decoder.current_search()
        lm = decoder.get_lm(search)
        missing = [w for w in dict.fromkeys(words) if lm.prob([w]) < -(1 << 28)]
        if not missing:
            return
        for word in missing:
            lm.add_word(word, 1.0)
        decoder.add_lm(search, lm)  # re-register so the search picks up the new unigrams
        decoder.activate_search(search)

    def recognize(self, pcm16_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz PCM16 little-endian audio."""
        data = bytes(pcm16_8k)
        if len(data) % 2:
            raise ValueError(f"recognize: PCM16 audio must have an even number of bytes, got {len(data)}")
        audio_ms = len(data) // 2 * 1000 // _PHONE_RATE
        silent = loudest_frame_dbfs(data) < SILENCE_DBFS
        with self._lock:
            decoder = self._load_locked()
            if silent:
                return Recognition("", 0.0, (), audio_ms, 0.0)
            start = time.perf_counter()
            decoder.start_utt()
            decoder.process_raw(_upsample(data), full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            posterior = decoder.get_prob() if hyp is not None else 0.0
            decode_ms = (time.perf_counter() - start) * 1000.0
        words: tuple[str, ...] = ()
        if hyp is not None and hyp.hypstr:
            cleaned = (_ALTERNATE.sub("", w) for w in hyp.hypstr.split())
            words = tuple(w for w in cleaned if w and w[0] not in "<[")
        confidence = min(1.0, max(0.0, posterior)) ** (1.0 / len(words)) if words else 0.0
        return Recognition(" ".join(words), confidence, words, audio_ms, decode_ms)

    def recognize_mulaw(self, mulaw_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz G.711 μ-law audio."""
        return self.recognize(ulaw_to_pcm16(mulaw_8k).astype("<i2", copy=False).tobytes())
