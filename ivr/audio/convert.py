"""The two stateful converters on the live call path when the model needs linear PCM.

- :class:`InboundConverter`: Twilio's 8 kHz μ-law → 24 kHz PCM16LE for the model.
- :class:`OutboundConverter`: the model's 24 kHz PCM16LE → 8 kHz μ-law for Twilio.

Why fused: each numpy call costs about a microsecond whatever it does, and that overhead, not arithmetic,
is the price of a 20 ms frame (benchmarks/bench_audio.py). So the μ-law tables work on the resamplers' own
buffers: decoded samples go straight into the upsampler's float history buffer, and encoding rounds,
saturates and looks up in a single ``take`` over an offset-binary table. Results equal ``resample`` and
``g711`` composed by hand (see the tests).
Both are pure, synchronous and sans-I/O; one instance per call and direction.
"""

from __future__ import annotations

import sys

import numpy as np

from ivr.audio.g711 import DECODE_TABLE, ENCODE_TABLE_OFFSET
from ivr.audio.resample import Downsampler24to8, Upsampler8to24

__all__ = ["InboundConverter", "OutboundConverter"]

_PCM_LE = np.dtype("<i2")
_DECODE_WORK = DECODE_TABLE.astype(np.float64)  # decoded straight to the resampler's working type
# Adding 1.5·2**52 to a float64 |v| < 2**31 leaves round-half-even(v) in the low 32 bits of the mantissa;
# the extra 32768 turns it into an index for the offset-binary encode table. (A 0-d array, so the ufunc
# does not convert a Python float on every call.)
_ROUND_TO_OFFSET_INDEX = np.array(1.5 * 2.0**52 + 32768.0, dtype=np.float64)
_LOW_WORD = 0 if sys.byteorder == "little" else 1


class InboundConverter:
    """Caller audio: μ-law 8 kHz bytes → PCM16 little-endian 24 kHz bytes (6 output bytes per input byte)."""

    latency_ms: float = Upsampler8to24.latency_ms

    def __init__(self) -> None:
        self._up = Upsampler8to24()

    def reset(self) -> None:
        """Drop the filter history so earlier audio cannot leak into what follows."""
        self._up.reset()

    def convert(self, mulaw_8k: bytes | bytearray | memoryview) -> bytes:
        """Convert the next chunk of the caller's μ-law stream; any length, including empty."""
        codes = np.frombuffer(mulaw_8k, dtype=np.uint8)
        up = self._up
        n = len(codes)
        if n != up._n:
            if n > up.MAX_BLOCK:
                step = up.MAX_BLOCK
                return b"".join([self.convert(codes[i : i + step]) for i in range(0, n, step)])
            up._select(n)
        up._tail[...] = _DECODE_WORK.take(codes)
        return up._run().astype(_PCM_LE).tobytes()


class OutboundConverter:
    """Model audio: PCM16 little-endian 24 kHz bytes → μ-law 8 kHz bytes.

    Accepts any number of bytes: an odd trailing byte is kept and joined to the next call, and the
    resampler keeps its phase across calls, so output never depends on how the stream was chunked.
    """

    latency_ms: float = Downsampler24to8.latency_ms

    def __init__(self) -> None:
        self._down = Downsampler24to8()
        self._carry = b""

    def reset(self) -> None:
        """Drop the filter history, the phase and any dangling byte (e.g. after a barge-in)."""
        self._down.reset()
        self._carry = b""

    def convert(self, pcm16le_24k: bytes | bytearray | memoryview) -> bytes:
        """Convert the next chunk of the model's PCM16LE stream to μ-law (one byte per three samples)."""
        data = pcm16le_24k if type(pcm16le_24k) is bytes else bytes(pcm16le_24k)  # len() counts bytes
        if self._carry:
            data = self._carry + data
            self._carry = b""
        size = len(data)
        if size & 1:
            self._carry = data[-1:]
        count = size >> 1
        if not count:
            return b""
        samples = np.frombuffer(data, dtype=_PCM_LE, count=count)
        step = self._down.MAX_BLOCK
        if count > step:
            return b"".join([self._convert_block(samples[i : i + step]) for i in range(0, count, step)])
        return self._convert_block(samples)

    def _convert_block(self, samples: np.ndarray) -> bytes:
        """Downsample and encode at most ``MAX_BLOCK`` samples."""
        down = self._down
        if len(samples) != down._n:
            down._select(len(samples))
        down._tail[...] = samples
        filtered = down._run()
        if not len(filtered):
            return b""
        index = np.add(filtered, _ROUND_TO_OFFSET_INDEX, out=filtered).view(np.int32)[_LOW_WORD::2]
        return ENCODE_TABLE_OFFSET.take(index, mode="clip").tobytes()
