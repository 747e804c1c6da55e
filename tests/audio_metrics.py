"""Measurement helpers for the audio tests (and the audio benchmark): SINAD, band power, dominant frequency.

Why here and not in ivr: these are instruments for judging the converters, written independently of them
(plain float64 numpy), so a bug in the code under test cannot also hide in the ruler.
"""

from __future__ import annotations

import numpy as np


def _tail(signal: np.ndarray, rate: int, skip_s: float) -> np.ndarray:
    start = round(skip_s * rate)
    if start >= len(signal):
        raise ValueError(f"signal of {len(signal)} samples is too short to skip {skip_s} s at {rate} Hz")
    return np.asarray(signal[start:], dtype=np.float64)


def sine_fit(signal: np.ndarray, freq_hz: float, rate: int, skip_s: float = 0.25) -> tuple[float, float]:
    """Least-squares fit of a sine at a known frequency; returns (amplitude, residual RMS).

    Everything the fitted sine does not explain (harmonics, images, clicks, noise, DC) is residual.
    """
    x = _tail(signal, rate, skip_s)
    t = (np.arange(len(x)) + round(skip_s * rate)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)])
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    residual = x - basis @ coef
    return float(np.hypot(coef[0], coef[1])), float(np.sqrt(np.mean(residual**2)))


def sinad_db(signal: np.ndarray, freq_hz: float, rate: int, skip_s: float = 0.25) -> float:
    """Signal to noise-and-distortion ratio in dB of a single test tone (sine fit at the known frequency)."""
    amplitude, residual_rms = sine_fit(signal, freq_hz, rate, skip_s)
    signal_power = amplitude**2 / 2
    return float(10 * np.log10(signal_power / max(residual_rms**2, 1e-30)))


def _spectrum(signal: np.ndarray, rate: int, skip_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum with a Kaiser β 20 window (side lobes far below the 16-bit floor)."""
    x = _tail(signal, rate, skip_s)
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x * np.kaiser(len(x), 20.0))) ** 2
    return np.fft.rfftfreq(len(x), 1.0 / rate), power


def band_ratio_db(
    signal: np.ndarray,
    rate: int,
    band_hz: tuple[float, float],
    reference_hz: tuple[float, float],
    skip_s: float = 0.25,
) -> float:
    """Power in ``band_hz`` relative to power in ``reference_hz`` (both [low, high) in Hz), in dB."""
    freqs, power = _spectrum(signal, rate, skip_s)
    in_band = power[(freqs >= band_hz[0]) & (freqs < band_hz[1])].sum()
    reference = power[(freqs >= reference_hz[0]) & (freqs < reference_hz[1])].sum()
    return float(10 * np.log10(max(in_band, 1e-30) / reference))


def power_ratio_db(output: np.ndarray, output_rate: int, reference: np.ndarray, reference_rate: int) -> float:
    """Mean power of ``output`` relative to ``reference`` in dB, each after skipping its first 0.25 s."""
    out = _tail(output, output_rate, 0.25)
    ref = _tail(reference, reference_rate, 0.25)
    return float(10 * np.log10(max(np.mean(out**2), 1e-30) / np.mean(ref**2)))


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    """Frequency of the strongest spectral peak, refined by parabolic interpolation of the log power."""
    freqs, power = _spectrum(signal, rate, 0.0)
    k = int(np.argmax(power[1:-1])) + 1
    a, b, c = np.log(power[k - 1 : k + 2] + 1e-300)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float(freqs[k] + offset * (freqs[1] - freqs[0]))


def peak_position(signal: np.ndarray) -> float:
    """Index of the largest |sample|, refined by a parabola through it and its two neighbours."""
    x = np.abs(np.asarray(signal, dtype=np.float64))
    k = int(np.argmax(x))
    if k == 0 or k == len(x) - 1:
        return float(k)
    a, b, c = x[k - 1 : k + 2]
    return k + 0.5 * (a - c) / (a - 2 * b + c)
