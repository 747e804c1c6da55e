"""G.711 μ-law codec as numpy lookup tables.

Why tables: Twilio sends and expects 8 kHz μ-law, and one 20 ms frame is only 160 samples, so per-sample
arithmetic in Python is far too slow while a single ``np.take`` over a 256-entry (decode) or 65,536-entry
(encode) table costs about 2 µs a frame. The tables are built once at import from the G.711 segment
algorithm in the form of the widely used Sun reference implementation (``g711.c``), which is what CPython's
``audioop.ulaw2lin`` / ``audioop.lin2ulaw`` implement, so results are bit-exact with them (checked for all
256 codes and all 65,536 inputs in the tests).

16-bit linear samples are reduced to G.711's 14-bit range by an arithmetic right shift before encoding, and
decoded values are G.711's 14-bit magnitudes scaled back up by 4, exactly as the reference does.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ULAW_SILENCE",
    "pcm16_bytes_to_ulaw_bytes",
    "pcm16_to_ulaw",
    "ulaw_bytes_to_pcm16_bytes",
    "ulaw_to_pcm16",
]

#: The μ-law code for a zero sample (positive zero). Use it to pad or to send silence.
ULAW_SILENCE: int = 0xFF

_BIAS = 0x84  # 132: added to the magnitude so every segment boundary is a power of two
_CLIP_14 = 8159  # largest 14-bit magnitude that still fits the top segment after the bias
_SEG_END_14 = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_LITTLE_ENDIAN_PCM = np.dtype("<i2")


def _build_decode_table() -> np.ndarray:
    """code (0..255) → int16 sample: invert the bits, rebuild the segment value, apply the sign."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    """Every int16 value (indexed by its uint16 bit pattern) → μ-law code."""
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2  # 14-bit, arithmetic shift
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _CLIP_14) + (_BIAS >> 2)
    segment = np.searchsorted(_SEG_END_14, magnitude, side="left")  # first segment whose end >= magnitude
    mantissa = (magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


#: μ-law code → int16 sample (256 entries).
DECODE_TABLE: np.ndarray = _build_decode_table()
DECODE_TABLE.flags.writeable = False
#: int16 sample, indexed by its uint16 bit pattern → μ-law code (65,536 entries).
ENCODE_TABLE: np.ndarray = _build_encode_table()
ENCODE_TABLE.flags.writeable = False
#: The same encode table indexed by ``sample + 32768`` (offset binary). convert.py uses it with
#: ``np.take(..., mode="clip")``, which then saturates out-of-range samples for free.
ENCODE_TABLE_OFFSET: np.ndarray = np.roll(ENCODE_TABLE, 32768)
ENCODE_TABLE_OFFSET.flags.writeable = False


def ulaw_to_pcm16(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode μ-law bytes to a new int16 array (one sample per byte)."""
    return DECODE_TABLE.take(np.frombuffer(data, dtype=np.uint8))


def pcm16_to_ulaw(samples: np.ndarray) -> bytes:
    """Encode int16 samples to μ-law bytes (one byte per sample)."""
    if samples.dtype != np.int16:
        raise TypeError(f"pcm16_to_ulaw needs int16 samples, got dtype {samples.dtype}")
    return ENCODE_TABLE.take(samples.reshape(-1).view(np.uint16)).tobytes()


def ulaw_bytes_to_pcm16_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Decode μ-law bytes to little-endian PCM16 bytes (twice as long)."""
    return ulaw_to_pcm16(data).astype(_LITTLE_ENDIAN_PCM, copy=False).tobytes()


def pcm16_bytes_to_ulaw_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Encode little-endian PCM16 bytes to μ-law bytes; the length must be even."""
    if len(data) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(data)}")
    samples = np.frombuffer(data, dtype=_LITTLE_ENDIAN_PCM).astype(np.int16, copy=False)
    return pcm16_to_ulaw(samples)
