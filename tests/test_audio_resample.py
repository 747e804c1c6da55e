"""Streaming 3:1 resamplers: quality gates, chunking independence, latency, state handling.

Quality is measured on PCM (no μ-law in the loop), for each direction on its own, feeding 20 ms frames the
way the live path does.
"""

from __future__ import annotations

import numpy as np
import pytest

from ivr.audio import Downsampler24to8, Upsampler8to24, design_lowpass, tone
from ivr.audio.resample import TAPS
from tests.audio_metrics import band_ratio_db, peak_position, power_ratio_db, sinad_db, sine_fit

FRAME_8K = 160  # 20 ms
FRAME_24K = 480


def _feed(resampler: Upsampler8to24 | Downsampler24to8, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    outputs, pos = [], 0
    for size in sizes:
        outputs.append(resampler.process(x[pos : pos + size]))
        pos += size
    assert pos >= len(x)
    return np.concatenate(outputs)


def _frames(length: int, frame: int) -> list[int]:
    return [frame] * -(-length // frame)


def _random_sizes(length: int, seed: int, largest: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < length:
        sizes.append(int(rng.integers(0, largest)))  # zero-length calls included on purpose
    return sizes


def _noise(length: int, seed: int, rms: float = 8000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(length) * rms, -32768, 32767).astype(np.int16)


def _reference_up(x: np.ndarray) -> np.ndarray:
    """Textbook form, float64: zero-stuff to 24 kHz, convolve with 3·h, round, clip."""
    stuffed = np.zeros(3 * len(x))
    stuffed[::3] = x
    y = np.convolve(stuffed, 3 * design_lowpass())[: len(stuffed)]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _reference_down(x: np.ndarray) -> np.ndarray:
    """Textbook form, float64: convolve with h at 24 kHz, keep samples 0, 3, 6, ..., round, clip."""
    y = np.convolve(x.astype(np.float64), design_lowpass())[: len(x)][::3]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max(initial=0))


# --- filter design ------------------------------------------------------------------------------------


def test_filter_design_is_linear_phase_with_unity_dc_gain() -> None:
    h = design_lowpass()
    assert len(h) == TAPS
    np.testing.assert_allclose(h, h[::-1], atol=1e-15)
    assert h.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"taps": 0}, "taps"), ({"cutoff_hz": 12000.0}, "cutoff_hz"), ({"cutoff_hz": -1.0}, "cutoff_hz")],
)
def test_filter_design_rejects_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        design_lowpass(**kwargs)  # type: ignore[arg-type]


# --- quality gates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [1004, 3004])
def test_upsampler_sinad_at_least_50_db(freq: int) -> None:
    x = tone(freq, 1500, 8000)
    y = _feed(Upsampler8to24(), x, _frames(len(x), FRAME_8K))
    assert len(y) == 3 * len(x)
    assert sinad_db(y, freq, 24000) >= 50.0


@pytest.mark.parametrize("freq", [1004, 3004])
def test_downsampler_sinad_at_least_50_db(freq: int) -> None:
    x = tone(freq, 1500, 24000)
    y = _feed(Downsampler24to8(), x, _frames(len(x), FRAME_24K))
    assert len(y) == len(x) // 3
    assert sinad_db(y, freq, 8000) >= 50.0


def test_upsampler_preserves_level() -> None:
    x = tone(1004, 1000, 8000)
    y = _feed(Upsampler8to24(), x, _frames(len(x), FRAME_8K))
    gain = sine_fit(y, 1004, 24000)[0] / sine_fit(x, 1004, 8000)[0]
    assert gain == pytest.approx(1.0, abs=0.01)


def test_image_rejection_at_least_45_db() -> None:
    x = tone(3004, 1500, 8000)
    y = _feed(Upsampler8to24(), x, _frames(len(x), FRAME_8K))
    images = band_ratio_db(y, 24000, band_hz=(4000, 12001), reference_hz=(0, 4000))
    assert images <= -45.0


@pytest.mark.parametrize("freq", [5000, 6000])
def test_alias_rejection_at_least_45_db(freq: int) -> None:
    x = tone(freq, 1500, 24000)
    y = _feed(Downsampler24to8(), x, _frames(len(x), FRAME_24K))
    assert power_ratio_db(y, 8000, x, 24000) <= -45.0


def test_gates_would_catch_a_filterless_resampler() -> None:
    # The instruments must be able to fail: sample-and-hold upsampling and plain decimation flunk them.
    held = np.repeat(tone(3004, 1500, 8000), 3)
    assert band_ratio_db(held, 24000, band_hz=(4000, 12001), reference_hz=(0, 4000)) > -45.0
    assert sinad_db(held, 3004, 24000) < 50.0
    x = tone(5000, 1500, 24000)
    assert power_ratio_db(x[::3], 8000, x, 24000) > -45.0


# --- equivalence: chunking and the textbook form ------------------------------------------------------


def test_upsampler_matches_textbook_form_within_1_lsb() -> None:
    x = _noise(4000, seed=1)
    assert _max_diff(Upsampler8to24().process(x), _reference_up(x)) <= 1


def test_downsampler_matches_textbook_form_within_1_lsb() -> None:
    x = _noise(12001, seed=2)
    assert _max_diff(Downsampler24to8().process(x), _reference_down(x)) <= 1


@pytest.mark.parametrize("seed", [3, 4])
def test_upsampler_chunking_does_not_change_output(seed: int) -> None:
    x = _noise(4000, seed=seed)
    whole = Upsampler8to24().process(x)
    assert _max_diff(_feed(Upsampler8to24(), x, _frames(len(x), FRAME_8K)), whole) <= 1
    assert _max_diff(_feed(Upsampler8to24(), x, _random_sizes(len(x), seed, 400)), whole) <= 1


@pytest.mark.parametrize("seed", [5, 6])
def test_downsampler_chunking_does_not_change_output(seed: int) -> None:
    x = _noise(12000, seed=seed)
    whole = Downsampler24to8().process(x)
    assert _max_diff(_feed(Downsampler24to8(), x, _frames(len(x), FRAME_24K)), whole) <= 1
    odd_sizes = _random_sizes(len(x), seed, 1000)
    assert any(size % 3 for size in odd_sizes)
    assert _max_diff(_feed(Downsampler24to8(), x, odd_sizes), whole) <= 1
    single = _feed(Downsampler24to8(), x, [1] * len(x))
    assert _max_diff(single, whole) <= 1


def test_downsampler_five_then_seven_equals_twelve() -> None:
    x = _noise(12, seed=7)
    d = Downsampler24to8()
    first, second = d.process(x[:5]), d.process(x[5:])
    assert (len(first), len(second)) == (2, 2)  # outputs sit at input positions 0, 3 | 6, 9
    np.testing.assert_array_equal(np.concatenate([first, second]), Downsampler24to8().process(x))


def test_downsampler_output_count_follows_input_positions() -> None:
    d = Downsampler24to8()
    counts = [len(d.process(np.zeros(n, dtype=np.int16))) for n in (1, 1, 1, 2, 4, 0, 3)]
    # cumulative input 1,2,3,5,9,9,12 → outputs at positions 0,3,6,9: ceil(total/3) so far
    assert counts == [1, 0, 0, 1, 1, 0, 1]


# --- latency ------------------------------------------------------------------------------------------


def test_upsampler_latency_at_most_2_ms() -> None:
    x = np.zeros(200, dtype=np.int16)
    x[100] = 10000
    y = _feed(Upsampler8to24(), x, _frames(len(x), FRAME_8K))
    delay_ms = (peak_position(y) - 3 * 100) / 24.0
    assert delay_ms <= 2.0
    assert delay_ms == pytest.approx(Upsampler8to24.latency_ms, abs=0.05)


def test_downsampler_latency_at_most_2_ms() -> None:
    # The output is every third sample, so probe three impulse positions; each gives the filter peak
    # sampled at a different phase, and the parabola through the sampled peak locates it.
    delays = []
    for position in (300, 301, 302):
        x = np.zeros(600, dtype=np.int16)
        x[position] = 20000
        y = _feed(Downsampler24to8(), x, _frames(len(x), FRAME_24K))
        delays.append(3 * peak_position(y) - position)
    delay_ms = float(np.mean(delays)) / 24.0
    assert delay_ms <= 2.0
    assert delay_ms == pytest.approx(Downsampler24to8.latency_ms, abs=0.1)


def test_declared_latency_is_half_the_filter() -> None:
    assert Upsampler8to24.latency_ms == pytest.approx((TAPS - 1) / 2 / 24.0)
    assert Downsampler24to8.latency_ms == pytest.approx((TAPS - 1) / 2 / 24.0)
    assert Upsampler8to24.latency_ms <= 2.0


# --- state and input handling -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Upsampler8to24, Downsampler24to8])
def test_reset_forgets_history(cls: type[Upsampler8to24] | type[Downsampler24to8]) -> None:
    probe = _noise(481, seed=8)
    used = cls()
    used.process(_noise(1001, seed=9))  # leaves history and (downsampler) a phase of 1
    after_history = used.process(probe)
    used.reset()
    np.testing.assert_array_equal(used.process(probe), cls().process(probe))
    assert not np.array_equal(after_history, cls().process(probe))


@pytest.mark.parametrize("cls", [Upsampler8to24, Downsampler24to8])
def test_silence_in_silence_out_and_empty_input(cls: type[Upsampler8to24] | type[Downsampler24to8]) -> None:
    r = cls()
    assert r.process(np.zeros(0, dtype=np.int16)).shape == (0,)
    out = r.process(np.zeros(480, dtype=np.int16))
    assert out.dtype == np.int16
    assert not out.any()


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    # A full-scale square wave overshoots after filtering (Gibbs); the result must clip, not wrap around.
    square_24k = np.where(np.arange(2400) % 24 < 12, 32767, -32768).astype(np.int16)  # 1 kHz
    down = Downsampler24to8().process(square_24k)
    assert down.max() == 32767 and down.min() == -32768
    assert _max_diff(down, _reference_down(square_24k)) <= 1
    square_8k = square_24k[::3]
    up = Upsampler8to24().process(square_8k)
    assert up.max() == 32767 and up.min() == -32768
    assert _max_diff(up, _reference_up(square_8k)) <= 1


@pytest.mark.parametrize("cls", [Upsampler8to24, Downsampler24to8])
@pytest.mark.parametrize(
    "bad",
    [np.zeros(4, dtype=np.float32), np.zeros((2, 2), dtype=np.int16), [0, 1, 2]],
    ids=["float32", "2-D", "list"],
)
def test_process_rejects_wrong_input(cls: type[Upsampler8to24] | type[Downsampler24to8], bad: object) -> None:
    with pytest.raises(TypeError, match=f"{cls.__name__}.process needs a 1-D int16"):
        cls().process(bad)  # type: ignore[arg-type]
