"""Caller voices nobody on the project chose: espeak-ng and four flite voices, through the phone path.

Each voice is a Debian package's command-line synthesizer (``espeak-ng`` en-us; ``flite`` slt, kal, awb,
rms). A line is synthesized to a WAV file, read by the project's own WAV reader
(:func:`ivr.audio.wav.read_wav_as_ulaw8k`: resampled to 8 kHz with soxr, G.711 μ-law encoded) and padded
with :data:`PAD_S` of μ-law silence each side — the audio a phone call would carry. :func:`phone_pcm16`
decodes it back to the 8 kHz PCM16 a recogniser receives.

When a binary is missing locally, :func:`require_voice` skips the test with a reason; ``.ci/run`` installs
both packages, and with ``IVR_REQUIRE_SPEECH=1`` a missing voice fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.audio.g711 import ULAW_SILENCE, ulaw_to_pcm16
from ivr.audio.wav import read_wav_as_ulaw8k

__all__ = [
    "PAD_S",
    "VOICES",
    "Voice",
    "VoiceCache",
    "caller_voice",
    "missing_voices",
    "phone_pcm16",
    "require_voice",
    "session_cache",
    "synthesize_mulaw",
]

RATE = 8000
#: Silence added before and after each line (seconds), as a caller's turn is cut with some margin.
PAD_S = 0.3


@dataclass(frozen=True, slots=True)
class Voice:
    """One independent voice: ``name`` as shown in reports, the binary and its voice option."""

    name: str
    binary: str
    voice: str

    def command(self, text: str, wav_path: Path) -> list[str]:
        if self.binary == "espeak-ng":
            return ["espeak-ng", "-v", self.voice, "-w", str(wav_path), text]
        return ["flite", "-voice", self.voice, "-t", text, "-o", str(wav_path)]

    @property
    def package(self) -> str:
        return self.binary


VOICES: tuple[Voice, ...] = (
    Voice("espeak-ng en-us", "espeak-ng", "en-us"),
    Voice("flite slt", "flite", "slt"),
    Voice("flite kal", "flite", "kal"),
    Voice("flite awb", "flite", "awb"),
    Voice("flite rms", "flite", "rms"),
)


def missing_voices() -> list[Voice]:
    """The voices whose binary is not on PATH."""
    return [v for v in VOICES if shutil.which(v.binary) is None]


def require_voice(voice: Voice) -> None:
    """Skip the calling test when ``voice``'s binary is missing (fail instead under IVR_REQUIRE_SPEECH=1)."""
    if shutil.which(voice.binary) is not None:
        return
    reason = (
        f"{voice.binary} is not installed, so the {voice.name} voice cannot speak; "
        f"install it with `apt-get install {voice.package}` (.ci/run does)"
    )
    if os.environ.get("IVR_REQUIRE_SPEECH") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def synthesize_mulaw(voice: Voice, text: str, *, pad_s: float = PAD_S) -> bytes:
    """``text`` spoken by ``voice`` as 8 kHz μ-law bytes, with ``pad_s`` seconds of silence each side."""
    with tempfile.TemporaryDirectory(prefix="ivr-voice-") as tmp:
        wav = Path(tmp) / "line.wav"
        try:
            subprocess.run(voice.command(text, wav), check=True, capture_output=True, timeout=60)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"{voice.name} failed to speak {text!r} (exit {exc.returncode}): {exc.stderr.decode()[:300]}"
            ) from exc
        mulaw = read_wav_as_ulaw8k(wav)
    pad = bytes([ULAW_SILENCE]) * round(pad_s * RATE)
    return pad + mulaw + pad


def phone_pcm16(mulaw: bytes) -> bytes:
    """μ-law bytes decoded to 8 kHz PCM16 little-endian, as the recogniser receives a turn."""
    return ulaw_to_pcm16(mulaw).astype("<i2", copy=False).tobytes()


class VoiceCache:
    """Synthesized lines kept for the test session (thread-safe), so each (voice, text) is made once."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, str, float], bytes] = {}
        self._lock = threading.Lock()

    def mulaw(self, voice: Voice, text: str, *, pad_s: float = PAD_S) -> bytes:
        key = (voice.name, text, pad_s)
        with self._lock:
            cached = self._audio.get(key)
        if cached is None:
            cached = synthesize_mulaw(voice, text, pad_s=pad_s)
            with self._lock:
                self._audio[key] = cached
        return cached

    def pcm16(self, voice: Voice, text: str) -> bytes:
        return phone_pcm16(self.mulaw(voice, text))


def caller_voice(
    voice: Voice, cache: VoiceCache | None = None, *, pad_s: float = 0.0
) -> Callable[[str], bytes]:
    """A text → 8 kHz μ-law function speaking with ``voice`` (for the demo's ``caller_voice`` option)."""
    store = cache or VoiceCache()
    return lambda text: store.mulaw(voice, text, pad_s=pad_s)


_SESSION_CACHE = VoiceCache()


def session_cache() -> VoiceCache:
    """One cache for the whole test process, shared by the speech-set and scenario tests."""
    return _SESSION_CACHE
