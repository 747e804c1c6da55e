"""WAV helpers: round trips, foreign formats (float, 24-bit, stereo, 44.1 kHz), and clear errors."""

from __future__ import annotations

import re
import struct
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ivr.audio import (
    pcm16_to_ulaw,
    read_wav_as_ulaw8k,
    tone,
    ulaw_to_pcm16,
    write_stereo_wav,
    write_ulaw_as_wav,
    write_wav,
)
from tests.audio_metrics import dominant_frequency, sine_fit

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _wav_bytes(
    frames: np.ndarray, rate: int, tag: int, bits: int, *, extensible: bool = False, extra: bytes = b""
) -> bytes:
    """A WAV file built by hand (independent of ivr.audio.wav): frames is (n, channels), already encoded."""
    channels = frames.shape[1]
    if bits == 24:
        ints = frames.astype(np.int32).reshape(-1, 1)
        data = np.concatenate([(ints >> s).astype(np.uint8) for s in (0, 8, 16)], axis=1).tobytes()
    else:
        data = frames.tobytes()
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHI", EXTENSIBLE, channels, rate, rate * block, block, bits, 22, bits, 3)
        fmt += struct.pack("<H", tag) + GUID_TAIL
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", len(data))
    )
    return b"RIFF" + struct.pack("<I", len(body) + len(data)) + body + data


def _sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


# --- reading ------------------------------------------------------------------------------------------


def test_round_trip_8k_mono_is_exact(tmp_path: Path) -> None:
    pcm = tone(1004, 500, 8000)
    path = tmp_path / "tone.wav"
    write_wav(path, pcm, 8000)
    assert read_wav_as_ulaw8k(path) == pcm16_to_ulaw(pcm)


def test_round_trip_ulaw_recording(tmp_path: Path) -> None:
    mulaw = bytes(code for code in range(256) if code != 0x7F) * 4  # 0x7F ("-0") comes back as 0xFF
    path = tmp_path / "call.wav"
    write_ulaw_as_wav(path, mulaw)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 1020)
        np.testing.assert_array_equal(np.frombuffer(w.readframes(1020), "<i2"), ulaw_to_pcm16(mulaw))
    assert read_wav_as_ulaw8k(str(path)) == mulaw


@pytest.mark.parametrize("extensible", [False, True], ids=["plain", "extensible"])
def test_44k1_stereo_float_file_keeps_frequency(tmp_path: Path, extensible: bool) -> None:
    left, right = _sine(1004, 1.0, 44100), _sine(1004, 1.0, 44100, amplitude=0.3)
    frames = np.column_stack([left, right]).astype("<f4")
    path = tmp_path / "float.wav"
    path.write_bytes(_wav_bytes(frames, 44100, FLOAT, 32, extensible=extensible))
    pcm = ulaw_to_pcm16(read_wav_as_ulaw8k(path))
    assert abs(len(pcm) - 8000) <= 1
    assert dominant_frequency(pcm, 8000) == pytest.approx(1004, abs=1.0)
    # downmix is the average of the channels: (0.5 + 0.3) / 2 of full scale
    assert sine_fit(pcm, 1004, 8000)[0] == pytest.approx(0.4 * 32768, rel=0.02)


def test_44k1_stereo_16_bit_file_keeps_frequency(tmp_path: Path) -> None:
    frames = np.column_stack([tone(3004, 1000, 44100), tone(3004, 1000, 44100)])
    path = tmp_path / "cd.wav"
    write_wav(path, frames, 44100, channels=2)
    pcm = ulaw_to_pcm16(read_wav_as_ulaw8k(path))
    assert abs(len(pcm) - 8000) <= 1
    assert dominant_frequency(pcm, 8000) == pytest.approx(3004, abs=1.0)


def test_tone_above_phone_band_is_filtered_out(tmp_path: Path) -> None:
    path = tmp_path / "high.wav"
    write_wav(path, tone(6000, 1000, 16000), 16000)
    pcm = ulaw_to_pcm16(read_wav_as_ulaw8k(path))
    # No alias folded back to 2 kHz (μ-law's smallest levels at most); the first and last 50 ms hold the
    # one-shot filter's response to the tone switching on and off, which is not aliasing.
    assert np.abs(pcm[400:-400]).max() <= 8


@pytest.mark.parametrize(
    ("bits", "tag", "encode", "as_16_bit"),
    [
        (8, PCM, lambda x: np.rint(x * 127 + 128).astype(np.uint8), lambda v: (v.astype(float) - 128) * 256),
        (24, PCM, lambda x: np.rint(x * 2**23).astype(np.int32), lambda v: v / 2**8),
        (32, PCM, lambda x: np.rint(x * 2**31).astype("<i4"), lambda v: v / 2**16),
        (64, FLOAT, lambda x: x.astype("<f8"), lambda v: v * 2**15),
    ],
    ids=["u8", "s24", "s32", "f64"],
)
def test_other_sample_formats(
    tmp_path: Path,
    bits: int,
    tag: int,
    encode: Callable[[np.ndarray], np.ndarray],
    as_16_bit: Callable[[np.ndarray], np.ndarray],
) -> None:
    stored = encode(_sine(1004, 0.5, 8000, amplitude=0.9) * np.linspace(-1, 1, 4000))  # covers ± range
    path = tmp_path / f"fmt{bits}.wav"
    path.write_bytes(_wav_bytes(stored.reshape(-1, 1), 8000, tag, bits))
    expected = pcm16_to_ulaw(np.rint(as_16_bit(stored)).astype(np.int16))
    assert read_wav_as_ulaw8k(path) == expected


def test_extra_chunks_and_truncated_data_are_tolerated(tmp_path: Path) -> None:
    pcm = tone(1004, 100, 8000).reshape(-1, 1)
    raw = _wav_bytes(pcm, 8000, PCM, 16, extra=b"LIST" + struct.pack("<I", 5) + b"hello\0")
    path = tmp_path / "odd.wav"
    path.write_bytes(raw[:-3])  # a recorder that died mid-write: last sample incomplete
    assert read_wav_as_ulaw8k(path) == pcm16_to_ulaw(pcm[:-2, 0])


# --- errors -------------------------------------------------------------------------------------------


def test_non_wav_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a RIFF/WAVE file"):
        read_wav_as_ulaw8k(path)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (_wav_bytes(np.zeros((4, 1), "<i2"), 8000, 2, 4), "unsupported WAV encoding"),  # MS ADPCM
        (_wav_bytes(np.zeros((4, 1), "<f2"), 8000, FLOAT, 16), "IEEE float, 16-bit"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no 'fmt ' chunk"),
        (_wav_bytes(np.zeros((4, 1), "<i2"), 8000, PCM, 16)[:36], "no 'data' chunk"),
        (b"RF64" + b"\xff" * 4 + b"WAVE", "RF64"),
    ],
    ids=["adpcm", "half-float", "no-fmt", "no-data", "rf64"],
)
def test_unsupported_files_give_clear_errors(tmp_path: Path, raw: bytes, problem: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape(problem)):
        read_wav_as_ulaw8k(path)


def test_nan_samples_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    path.write_bytes(_wav_bytes(np.array([[0.0], [np.nan]], "<f4"), 8000, FLOAT, 32))
    with pytest.raises(ValueError, match="NaN"):
        read_wav_as_ulaw8k(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav_as_ulaw8k(tmp_path / "absent.wav")


# --- writing ------------------------------------------------------------------------------------------


def test_write_wav_accepts_bytes_and_arrays(tmp_path: Path) -> None:
    pcm = tone(440, 50, 16000)
    write_wav(tmp_path / "a.wav", pcm, 16000)
    write_wav(tmp_path / "b.wav", pcm.astype("<i2").tobytes(), 16000)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        np.testing.assert_array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), pcm)


def test_write_wav_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    with pytest.raises(TypeError, match="int16"):
        write_wav(path, np.zeros(4, dtype=np.float64), 8000)
    with pytest.raises(ValueError, match="whole number of 2-channel"):
        write_wav(path, b"\x00" * 6, 8000, channels=2)
    with pytest.raises(ValueError, match="3 columns but channels=2"):
        write_wav(path, np.zeros((4, 3), dtype=np.int16), 8000, channels=2)
    with pytest.raises(ValueError, match="rate"):
        write_wav(path, b"", 0)
    assert not path.exists()


def test_stereo_wav_pads_the_shorter_track(tmp_path: Path) -> None:
    left, right = tone(1004, 100, 8000), tone(500, 60, 8000)
    path = tmp_path / "stereo.wav"
    write_stereo_wav(path, left, right)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, len(left))
        frames = np.frombuffer(w.readframes(len(left)), "<i2").reshape(-1, 2)
    np.testing.assert_array_equal(frames[:, 0], left)
    np.testing.assert_array_equal(frames[: len(right), 1], right)
    assert not frames[len(right) :, 1].any()


def test_stereo_wav_rejects_non_int16(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="right track"):
        write_stereo_wav(tmp_path / "s.wav", tone(1004, 10, 8000), np.zeros(3, dtype=np.float32))


# --- tone ---------------------------------------------------------------------------------------------


def test_tone_level_length_and_frequency() -> None:
    t = tone(1004, 250, 8000, amplitude_dbfs=-6.0)
    assert t.dtype == np.int16 and len(t) == 2000
    assert np.abs(t).max() == pytest.approx(32767 * 10 ** (-6 / 20), abs=2)
    assert dominant_frequency(t, 8000) == pytest.approx(1004, abs=2.0)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((5000, 10, 8000), "freq_hz"),
        ((100, -1, 8000), "ms"),
        ((100, 10, 0), "rate"),
        ((100, 10, 8000, 3), "dbfs"),
    ],
)
def test_tone_rejects_bad_arguments(args: tuple[float, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        tone(*args)  # type: ignore[arg-type]
