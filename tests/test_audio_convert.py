"""Live-path converters: bytes in, bytes out, stateful; equal to the resamplers and G.711 composed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.audio import (
    ULAW_SILENCE,
    Downsampler24to8,
    InboundConverter,
    OutboundConverter,
    Upsampler8to24,
    pcm16_to_ulaw,
    tone,
    ulaw_to_pcm16,
)
from tests.audio_metrics import sinad_db


def _noise(length: int, seed: int, rms: float = 8000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(length) * rms, -32768, 32767).astype(np.int16)


def _pcm_bytes(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    parts, pos = [], 0
    for size in sizes:
        parts.append(data[pos : pos + size])
        pos += size
    parts.append(data[pos:])
    return parts


def _random_sizes(total: int, seed: int, largest: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(0, largest)))
    return sizes


def test_inbound_equals_decode_then_upsample() -> None:
    mulaw = pcm16_to_ulaw(_noise(8000, seed=1))
    expected = Upsampler8to24().process(ulaw_to_pcm16(mulaw)).astype("<i2").tobytes()
    converter = InboundConverter()
    got = b"".join(converter.convert(part) for part in _split(mulaw, [160] * 50))
    assert got == expected
    assert len(got) == 6 * len(mulaw)


def test_inbound_any_chunk_sizes() -> None:
    mulaw = pcm16_to_ulaw(_noise(8000, seed=2))
    whole = np.frombuffer(InboundConverter().convert(mulaw), "<i2")
    converter = InboundConverter()
    chunked = b"".join(converter.convert(part) for part in _split(mulaw, _random_sizes(8000, 2, 333)))
    diff = np.abs(np.frombuffer(chunked, "<i2").astype(np.int32) - whole)
    assert diff.max() <= 1


def test_outbound_equals_downsample_then_encode() -> None:
    samples = _noise(24000, seed=3)
    expected = pcm16_to_ulaw(Downsampler24to8().process(samples))
    converter = OutboundConverter()
    got = b"".join(converter.convert(part) for part in _split(_pcm_bytes(samples), [960] * 50))
    assert got == expected


def test_outbound_odd_byte_counts_are_carried() -> None:
    samples = _noise(24000, seed=4)
    pcm = _pcm_bytes(samples)
    sizes = _random_sizes(len(pcm), 4, 777)
    assert sum(size % 2 for size in sizes) > 10
    converter = OutboundConverter()
    got = b"".join(converter.convert(part) for part in _split(pcm, sizes))
    assert got == OutboundConverter().convert(pcm)
    assert len(got) == len(samples) // 3


def test_outbound_single_bytes() -> None:
    pcm = _pcm_bytes(_noise(300, seed=5))
    converter = OutboundConverter()
    outputs = [converter.convert(pcm[i : i + 1]) for i in range(len(pcm))]
    assert outputs[0] == b""  # half a sample: nothing to convert yet
    assert outputs[1] != b""  # the first whole sample is output position 0
    assert b"".join(outputs) == OutboundConverter().convert(pcm)


def test_outbound_accepts_bytearray_and_memoryview() -> None:
    pcm = _pcm_bytes(_noise(960, seed=6))
    expected = OutboundConverter().convert(pcm)
    converter = OutboundConverter()
    got = converter.convert(bytearray(pcm[:501])) + converter.convert(memoryview(pcm)[501:])
    assert got == expected
    # A memoryview over int16 items: its len() counts items, but the converter must count bytes.
    samples = np.frombuffer(pcm, "<i2").copy()
    assert OutboundConverter().convert(memoryview(samples)) == expected


def test_outbound_saturates_loud_input() -> None:
    square = np.where(np.arange(4800) % 24 < 12, 32767, -32768).astype(np.int16)  # overshoots when filtered
    got = OutboundConverter().convert(_pcm_bytes(square))
    assert got == pcm16_to_ulaw(Downsampler24to8().process(square))
    assert {0x00, 0x80} <= set(got)  # μ-law codes for the clipped extremes


def test_silence_passes_through_as_silence() -> None:
    assert InboundConverter().convert(bytes([ULAW_SILENCE]) * 160) == b"\x00" * 960
    assert OutboundConverter().convert(b"\x00" * 960) == bytes([ULAW_SILENCE]) * 160


def test_empty_input_gives_empty_output() -> None:
    assert InboundConverter().convert(b"") == b""
    assert OutboundConverter().convert(b"") == b""


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_reset_drops_stale_history(direction: str) -> None:
    if direction == "inbound":
        converter: InboundConverter | OutboundConverter = InboundConverter()
        loud, quiet, silent = pcm16_to_ulaw(_noise(160, seed=7)), bytes([ULAW_SILENCE]) * 160, b"\x00" * 960
    else:
        converter = OutboundConverter()
        loud, quiet, silent = _pcm_bytes(_noise(481, seed=7)) + b"\x05", b"\x00" * 960, bytes([0xFF]) * 160
    converter.convert(loud)
    assert converter.convert(quiet) != silent  # without reset the filter tail of the loud audio leaks out
    converter.convert(loud)
    converter.reset()
    assert converter.convert(quiet) == silent


def test_reset_clears_the_carried_byte() -> None:
    data = b"\x80\x00" * 90  # samples of +128; shifted by one byte they would read as -32768
    fresh = OutboundConverter().convert(data)
    stale = OutboundConverter()
    stale.convert(b"\x00")
    assert stale.convert(data) != fresh
    converter = OutboundConverter()
    converter.convert(b"\x00")
    converter.reset()
    assert converter.convert(data) == fresh


def test_quality_with_mulaw_in_the_loop_is_codec_limited() -> None:
    # With μ-law in the chain the codec's ~37 dB dominates; the converters must not pull it down.
    mulaw = pcm16_to_ulaw(tone(1004, 1000, 8000))
    inbound = InboundConverter()
    up = np.frombuffer(b"".join(inbound.convert(p) for p in _split(mulaw, [160] * 50)), "<i2")
    assert sinad_db(up, 1004, 24000) >= 35.0
    outbound = OutboundConverter()
    pcm = _pcm_bytes(tone(1004, 1000, 24000))
    down = ulaw_to_pcm16(b"".join(outbound.convert(p) for p in _split(pcm, [960] * 50)))
    assert sinad_db(down, 1004, 8000) >= 35.0


def test_latency_matches_resamplers() -> None:
    assert InboundConverter.latency_ms == Upsampler8to24.latency_ms <= 2.0
    assert OutboundConverter.latency_ms == Downsampler24to8.latency_ms <= 2.0
