"""WAV file helpers for the simulated caller and for call recordings (offline, not the live path).

Reading accepts what people actually have lying around: RIFF/WAVE with integer PCM (8-bit unsigned, 16, 24
or 32-bit signed) or IEEE float (32 or 64-bit), plain or WAVE_FORMAT_EXTENSIBLE, at any sample rate and any
number of channels (downmixed by averaging). The header is parsed by hand because the stdlib ``wave`` module
rejects float files. Rate conversion uses ``soxr.resample`` on the whole file: here quality matters and
latency does not, the opposite of the live path (see resample.py). Writing is always PCM16 with a plain
44-byte header (written by hand, so the bytes on disk do not depend on the host's byte order).
"""

from __future__ import annotations

import struct
from os import PathLike
from pathlib import Path

import numpy as np
import soxr

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16

__all__ = [
    "read_wav_as_ulaw8k",
    "tone",
    "write_stereo_wav",
    "write_ulaw_as_wav",
    "write_wav",
]

StrPath = str | PathLike[str]

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE
# The last 14 bytes of the KSDATAFORMAT_SUBTYPE_* GUIDs; the first two bytes are the plain format tag.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_PHONE_RATE = 8000
_SUPPORTED_BITS = {_FORMAT_PCM: (8, 16, 24, 32), _FORMAT_FLOAT: (32, 64)}


def _parse_chunks(raw: bytes, where: str) -> tuple[bytes, bytes]:
    """Return the ``fmt `` and ``data`` chunk bodies of a RIFF/WAVE file, or raise ValueError."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        kind = "RF64 (not supported)" if raw[:4] in (b"RF64", b"BW64") else "not a RIFF/WAVE file"
        raise ValueError(f"{where}: {kind}")
    fmt: bytes | None = None
    data: bytes | None = None
    pos = 12
    while pos + 8 <= len(raw):
        chunk_id = raw[pos : pos + 4]
        (size,) = struct.unpack_from("<I", raw, pos + 4)
        body = raw[pos + 8 : pos + 8 + size]  # a streaming writer may leave size too big: take what exists
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            data = body
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise ValueError(f"{where}: WAV file has no 'fmt ' chunk")
    if data is None:
        raise ValueError(f"{where}: WAV file has no 'data' chunk")
    return fmt, data


def _decode_samples(fmt: bytes, data: bytes, where: str) -> tuple[np.ndarray, int]:
    """Turn the data chunk into float64 frames of shape (n, channels) in [-1, 1], plus the sample rate."""
    if len(fmt) < 16:
        raise ValueError(f"{where}: 'fmt ' chunk is {len(fmt)} bytes, expected at least 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise ValueError(f"{where}: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is too short ({len(fmt)} bytes)")
        subformat = fmt[24:40]
        if subformat[2:] != _GUID_TAIL:
            raise ValueError(f"{where}: unsupported WAVE_FORMAT_EXTENSIBLE sub-format {subformat.hex()}")
        tag = struct.unpack_from("<H", subformat)[0]
    if channels < 1:
        raise ValueError(f"{where}: WAV header says {channels} channels")
    if rate < 1:
        raise ValueError(f"{where}: WAV header says sample rate {rate}")
    width = bits // 8
    if bits not in _SUPPORTED_BITS.get(tag, ()):
        kind = {_FORMAT_PCM: "integer PCM", _FORMAT_FLOAT: "IEEE float"}.get(tag, f"format tag 0x{tag:04x}")
        raise ValueError(
            f"{where}: unsupported WAV encoding ({kind}, {bits}-bit); "
            "supported are integer PCM 8/16/24/32-bit and IEEE float 32/64-bit"
        )
    if block_align != width * channels:
        raise ValueError(
            f"{where}: WAV block align {block_align} does not match {channels} channels of {bits}-bit samples"
        )
    frames = len(data) // block_align
    data = data[: frames * block_align]
    if tag == _FORMAT_FLOAT:
        samples = np.frombuffer(data, dtype=f"<f{width}").astype(np.float64)
        if not np.all(np.isfinite(samples)):
            raise ValueError(f"{where}: WAV float samples contain NaN or infinity")
    elif bits == 8:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif bits == 24:
        triplets = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)) << 8  # sign in bit 31
        samples = (ints >> 8).astype(np.float64) / float(1 << 23)
    else:
        samples = np.frombuffer(data, dtype=f"<i{width}").astype(np.float64) / float(1 << (bits - 1))
    return samples.reshape(frames, channels), rate


def read_wav_as_ulaw8k(path: StrPath) -> bytes:
    """Read a PCM or float WAV file (any rate, any channel count) as 8 kHz mono μ-law bytes.

    Raises ValueError naming the file and the problem for anything that is not a supported WAV file.
    """
    where = str(path)
    raw = Path(path).read_bytes()
    fmt, data = _parse_chunks(raw, where)
    frames, rate = _decode_samples(fmt, data, where)
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if rate != _PHONE_RATE and len(mono):
        mono = soxr.resample(mono, rate, _PHONE_RATE, quality="VHQ")
    pcm = np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)
    return pcm16_to_ulaw(pcm)


def _as_pcm16_bytes(pcm16: np.ndarray | bytes | bytearray | memoryview, channels: int, where: str) -> bytes:
    if isinstance(pcm16, np.ndarray):
        if pcm16.dtype != np.int16:
            raise TypeError(f"{where}: samples must be int16, got dtype {pcm16.dtype}")
        if pcm16.ndim == 2:
            if pcm16.shape[1] != channels:
                raise ValueError(
                    f"{where}: array has {pcm16.shape[1]} columns but channels={channels}; "
                    "pass frames as shape (n, channels)"
                )
        elif pcm16.ndim != 1:
            raise ValueError(
                f"{where}: samples must be 1-D (interleaved) or (n, channels), got shape {pcm16.shape}"
            )
        data = pcm16.astype("<i2", copy=False).tobytes()
    else:
        data = bytes(pcm16)
    if len(data) % (2 * channels):
        raise ValueError(
            f"{where}: {len(data)} bytes is not a whole number of {channels}-channel PCM16 frames"
        )
    return data


def write_wav(
    path: StrPath, pcm16: np.ndarray | bytes | bytearray | memoryview, rate: int, channels: int = 1
) -> None:
    """Write PCM16 samples to a WAV file.

    ``pcm16`` is an int16 array (1-D interleaved, or shape (frames, channels)) or little-endian PCM16 bytes.
    """
    where = str(path)
    if not 1 <= channels <= 0xFFFF // 2:
        raise ValueError(f"{where}: channels must be between 1 and {0xFFFF // 2}, got {channels}")
    if not 1 <= rate <= 0xFFFFFFFF // (2 * channels):
        raise ValueError(f"{where}: rate must be a positive number of Hz that fits a WAV header, got {rate}")
    data = _as_pcm16_bytes(pcm16, channels, where)
    if len(data) > 0xFFFFFFFF - 36:
        raise ValueError(f"{where}: {len(data)} bytes of audio is too large for a RIFF/WAVE file")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        _FORMAT_PCM,
        channels,
        rate,
        rate * channels * 2,
        channels * 2,
        16,
        b"data",
        len(data),
    )
    with open(path, "wb") as out:
        out.write(header)
        out.write(data)


def write_ulaw_as_wav(path: StrPath, mulaw: bytes | bytearray | memoryview) -> None:
    """Decode 8 kHz μ-law bytes and write them as a mono PCM16 WAV file."""
    write_wav(path, ulaw_to_pcm16(mulaw), _PHONE_RATE)


def write_stereo_wav(
    path: StrPath, left_pcm16_8k: np.ndarray, right_pcm16_8k: np.ndarray, rate: int = _PHONE_RATE
) -> None:
    """Write two mono int16 tracks (e.g. caller and agent) as one stereo WAV; the shorter is padded with 0."""
    where = str(path)
    for name, track in (("left", left_pcm16_8k), ("right", right_pcm16_8k)):
        if not isinstance(track, np.ndarray) or track.dtype != np.int16 or track.ndim != 1:
            raise TypeError(f"{where}: {name} track must be a 1-D int16 array")
    frames = np.zeros((max(len(left_pcm16_8k), len(right_pcm16_8k)), 2), dtype=np.int16)
    frames[: len(left_pcm16_8k), 0] = left_pcm16_8k
    frames[: len(right_pcm16_8k), 1] = right_pcm16_8k
    write_wav(path, frames, rate, channels=2)


def tone(freq_hz: float, ms: float, rate: int, amplitude_dbfs: float = -6.0) -> np.ndarray:
    """A sine tone as int16 samples; 0 dBFS is a peak of 32767. Starts at phase 0."""
    if rate < 1:
        raise ValueError(f"rate must be a positive number of Hz, got {rate}")
    if ms < 0:
        raise ValueError(f"ms must not be negative, got {ms}")
    if not 0 <= freq_hz < rate / 2:
        raise ValueError(f"freq_hz must be in [0, {rate / 2}) for rate {rate}, got {freq_hz}")
    if amplitude_dbfs > 0:
        raise ValueError(f"amplitude_dbfs must be at most 0 (full scale), got {amplitude_dbfs}")
    n = round(rate * ms / 1000.0)
    amplitude = 32767.0 * 10.0 ** (amplitude_dbfs / 20.0)
    t = np.arange(n, dtype=np.float64) / rate
    return np.rint(amplitude * np.sin(2.0 * np.pi * freq_hz * t)).astype(np.int16)
