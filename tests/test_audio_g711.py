"""G.711 μ-law tables: bit-exact against the stdlib reference, plus fixed points that need no reference."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import pytest

from ivr.audio import (
    ULAW_SILENCE,
    pcm16_bytes_to_ulaw_bytes,
    pcm16_to_ulaw,
    ulaw_bytes_to_pcm16_bytes,
    ulaw_to_pcm16,
)


def _reference() -> ModuleType | None:
    """audioop (stdlib up to 3.12, the audioop-lts package from 3.13), used only as a test oracle."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


audioop = _reference()
needs_reference = pytest.mark.skipif(
    audioop is None, reason="no audioop reference (stdlib < 3.13, or the audioop-lts package) importable"
)

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


@needs_reference
def test_decode_matches_reference_for_all_256_codes() -> None:
    assert audioop is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    got = ulaw_to_pcm16(ALL_CODES)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


@needs_reference
def test_encode_matches_reference_for_all_65536_inputs() -> None:
    assert audioop is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    got = pcm16_to_ulaw(ALL_SAMPLES)
    mismatches = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(expected, np.uint8))
    assert len(mismatches) == 0, f"first mismatching inputs: {ALL_SAMPLES[mismatches[:5]]}"


def test_known_g711_values() -> None:
    # Segment ends of G.711 μ-law (scaled to 16 bits): the extremes, the zeros and the first step.
    decoded = ulaw_to_pcm16(bytes([0x00, 0x80, 0x7F, 0xFF, 0x7E, 0xFE]))
    assert decoded.tolist() == [-32124, 32124, 0, 0, -8, 8]
    encoded = pcm16_to_ulaw(np.array([32767, -32768, 0, -1, 8, 32124], dtype=np.int16))
    assert list(encoded) == [0x80, 0x00, 0xFF, 0x7E, 0xFE, 0x80]


def test_silence_constant() -> None:
    assert ULAW_SILENCE == 0xFF
    assert ulaw_to_pcm16(bytes([ULAW_SILENCE])).tolist() == [0]
    assert pcm16_to_ulaw(np.zeros(3, dtype=np.int16)) == bytes([ULAW_SILENCE]) * 3


def test_decode_is_monotonic_and_symmetric() -> None:
    table = ulaw_to_pcm16(ALL_CODES).astype(np.int32)
    negatives, positives = table[:128], table[128:]
    assert np.all(np.diff(negatives) > 0)  # 0x00 (most negative) up to 0x7F (zero)
    assert np.all(np.diff(positives) < 0)  # 0x80 (most positive) down to 0xFF (zero)
    np.testing.assert_array_equal(negatives, -positives)


def test_encode_of_decode_is_identity_except_negative_zero() -> None:
    codes = np.frombuffer(pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES)), dtype=np.uint8)
    changed = np.flatnonzero(codes != np.arange(256))
    assert changed.tolist() == [0x7F]  # "negative zero" decodes to 0, which encodes as positive zero
    assert codes[0x7F] == ULAW_SILENCE


def test_quantisation_error_is_logarithmic() -> None:
    # μ-law's point: the error grows with the magnitude (about 1/32 of it, half a step), plus a small floor.
    samples = ALL_SAMPLES.astype(np.int32)
    in_range = np.abs(samples) <= 32124
    error = np.abs(ulaw_to_pcm16(pcm16_to_ulaw(ALL_SAMPLES)).astype(np.int32) - samples)
    assert (error - np.abs(samples) / 32)[in_range].max() <= 8
    assert error[np.abs(samples) < 100].max() <= 8


def test_bytes_wrappers_are_little_endian() -> None:
    pcm = ulaw_bytes_to_pcm16_bytes(bytes([0x80, 0x00]))
    assert pcm == (32124).to_bytes(2, "little", signed=True) + (-32124).to_bytes(2, "little", signed=True)
    assert pcm16_bytes_to_ulaw_bytes(pcm) == bytes([0x80, 0x00])
    assert len(ulaw_bytes_to_pcm16_bytes(ALL_CODES)) == 512


def test_wrappers_accept_bytearray_and_memoryview() -> None:
    assert ulaw_bytes_to_pcm16_bytes(bytearray(b"\xff\xff")) == b"\x00" * 4
    assert pcm16_bytes_to_ulaw_bytes(memoryview(b"\x00" * 4)) == b"\xff\xff"


def test_odd_pcm_bytes_rejected_with_length() -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        pcm16_bytes_to_ulaw_bytes(b"\x00\x01\x02")


def test_encode_rejects_wrong_dtype() -> None:
    with pytest.raises(TypeError, match="int16"):
        pcm16_to_ulaw(np.zeros(4, dtype=np.float32))


def test_empty_input() -> None:
    assert ulaw_to_pcm16(b"").shape == (0,)
    assert pcm16_to_ulaw(np.zeros(0, dtype=np.int16)) == b""
    assert ulaw_bytes_to_pcm16_bytes(b"") == b""
