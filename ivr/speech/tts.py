"""Offline text-to-speech for phone calls: a thread-safe wrapper around hibari (voice "heart").

hibari ships one voice, "heart", inside its wheel (``hibari/assets/hibari.onnx``); every other voice is
downloaded from the internet on first use (``hibari.voices.download``), which ivr must never do, so only
"heart" is accepted and its model path is resolved with ``download_missing=False``. Nothing else in hibari
opens a connection (its G2P, tagger and out-of-vocabulary model all load files from ``hibari/assets``).

Output is deterministic (hibari's noise generator is seeded with 0) and goes to the phone through the same
path as the model's voice on a live call: 24 kHz PCM16 → :class:`~ivr.audio.resample.Downsampler24to8` →
G.711 μ-law. onnxruntime runs with one intra-op thread by default (the machine has two cores and the model
runs far faster than real time on one). One lock serialises the onnx session, so a :class:`Synthesizer`
may be used from several threads (e.g. ``asyncio.to_thread``); a small LRU cache returns repeated prompts
without synthesizing them again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ivr.audio.g711 import pcm16_to_ulaw
from ivr.audio.resample import Downsampler24to8

__all__ = ["SAMPLE_RATE", "Synthesizer", "shared_synthesizer"]

#: hibari's output rate (Hz).
SAMPLE_RATE = 24000
_ALLOWED_VOICE = "heart"
_SEED = 0

StatusCallback = Callable[[str], None]


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


class Synthesizer:
    """Text → speech with hibari's bundled "heart" voice, loaded on first use (or by :meth:`load`)."""

    def __init__(
        self,
        *,
        voice: str = _ALLOWED_VOICE,
        speed: float = 1.0,
        threads: int = 1,
        on_status: StatusCallback | None = None,
        cache_size: int = 256,
    ) -> None:
        if voice != _ALLOWED_VOICE:
            raise ValueError(
                f"TTS voice {voice!r} is not available: only {_ALLOWED_VOICE!r} ships inside the hibari-tts "
                f"package; other voices download from the internet, which ivr never does. Use voice='heart'."
            )
        if not 0.5 <= speed <= 2.0:
            raise ValueError(f"TTS speed must be between 0.5 and 2.0, got {speed}")
        if threads < 1:
            raise ValueError(f"TTS threads must be at least 1, got {threads}")
        self.voice = voice
        self.speed = float(speed)
        self.threads = threads
        self._on_status = on_status
        self._cache_size = cache_size
        self._tts: Any = None
        self._lock = threading.Lock()  # guards loading and every use of the onnx session and the G2P
        self._cache: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()
        self._cache_lock = threading.Lock()
        #: Seconds the last :meth:`load` took (0 until loaded).
        self.load_seconds = 0.0
        #: Texts answered from the cache / synthesized (by :meth:`stream_mulaw` and :meth:`synthesize_mulaw`).
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def loaded(self) -> bool:
        return self._tts is not None

    def _status(self, message: str) -> None:
        if self._on_status is not None:
            self._on_status(message)

    def load(self) -> None:
        """Load the voice model and the G2P now (idempotent); reports progress through ``on_status``."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._tts is not None:
            return self._tts
        self._status(f"loading the speech voice (hibari {self.voice})…")
        start = time.perf_counter()
        from hibari import Hibari
        from hibari.voices import voice_path

        model = voice_path(self.voice, download_missing=False)  # the bundled file; never a download
        tts = Hibari(voice=self.voice, model=model, threads=self.threads)
        tts.from_phonemes(tts.phonemize("Ready.")[0], self.speed, _SEED)  # loads the G2P, warms onnx
        self.load_seconds = time.perf_counter() - start
        self._tts = tts
        self._status(f"voice loaded in {self.load_seconds:.1f} s")
        return tts

    # -- synthesis ------------------------------------------------------------------------------
    def _sentences(self, text: str) -> tuple[Any, list[str], np.random.Generator]:
        with self._lock:
            tts = self._load_locked()
            phonemes = tts.phonemize(text)
        return tts, phonemes, np.random.default_rng(_SEED)

    def _render(self, tts: Any, phonemes: str, rng: np.random.Generator) -> np.ndarray:
        with self._lock:
            return tts.from_ids(tts.ids(phonemes), self.speed, rng)

    def phonemize(self, text: str) -> list[str]:
        """hibari's G2P alone: ``text`` as misaki phonemes, one string per sentence (the demo's second
        voice reads them; see ivr/demo/voice.py)."""
        with self._lock:
            return list(self._load_locked().phonemize(text))

    def synthesize(self, text: str) -> np.ndarray:
        """Speech for ``text`` as mono int16 samples at 24 kHz (empty for text with nothing to say)."""
        tts, sentences, rng = self._sentences(text)
        parts = [self._render(tts, ps, rng) for ps in sentences]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        return _to_int16(np.concatenate(parts))

    def synthesize_mulaw(self, text: str) -> bytes:
        """Speech for ``text`` as 8 kHz G.711 μ-law bytes (cached)."""
        return b"".join(self.stream_mulaw(text))

    def stream_mulaw(self, text: str) -> Iterator[bytes]:
        """Yield 8 kHz μ-law audio one sentence at a time, each as soon as it is synthesized.

        The chunks join seamlessly (one resampler runs across them) and equal :meth:`synthesize_mulaw`.
        A text already in the cache is replayed chunk by chunk without synthesis.
        """
        with self._cache_lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                self.cache_hits += 1
            else:
                self.cache_misses += 1
        if cached is not None:
            yield from cached
            return
        tts, sentences, rng = self._sentences(text)
        down = Downsampler24to8()
        chunks: list[bytes] = []
        for ps in sentences:
            chunk = pcm16_to_ulaw(down.process(_to_int16(self._render(tts, ps, rng))))
            chunks.append(chunk)
            yield chunk
        self._remember(text, tuple(chunks))

    def _remember(self, text: str, chunks: tuple[bytes, ...]) -> None:
        if self._cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[text] = chunks
            self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


_shared: dict[tuple[str, float, int], Synthesizer] = {}
_shared_lock = threading.Lock()


def shared_synthesizer(
    *,
    voice: str = _ALLOWED_VOICE,
    speed: float = 1.0,
    threads: int = 1,
    on_status: StatusCallback | None = None,
) -> Synthesizer:
    """The process-wide :class:`Synthesizer` for these settings (created once, loaded on first use)."""
    key = (voice, float(speed), threads)
    with _shared_lock:
        synth = _shared.get(key)
        if synth is None:
            synth = _shared[key] = Synthesizer(voice=voice, speed=speed, threads=threads, on_status=on_status)
        return synth
