"""Estimated model cost of a call from its token usage.

Prices are USD per million tokens as published by OpenAI for each model family (late 2025 list prices); they
are estimates for dashboards, not invoices. Unknown models get no cost (``None``) rather than a wrong one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Prices:
    text_in: float
    text_cached_in: float
    audio_in: float
    audio_cached_in: float
    text_out: float
    audio_out: float


# Longest prefix wins, so dated snapshots (gpt-realtime-2025-08-28) resolve to their family. ``None`` marks a
# family whose prices are not known, so it does not inherit a shorter prefix's (gpt-audio-mini vs gpt-audio).
PRICES: dict[str, Prices | None] = {
    "gpt-realtime-mini": Prices(0.60, 0.06, 10.00, 0.30, 2.40, 20.00),
    "gpt-realtime": Prices(4.00, 0.40, 32.00, 0.40, 16.00, 64.00),
    "gpt-4o-mini-realtime-preview": Prices(0.60, 0.30, 10.00, 0.30, 2.40, 20.00),
    "gpt-4o-realtime-preview": Prices(5.00, 2.50, 40.00, 2.50, 20.00, 80.00),
    # Chat Completions audio models (OpenAI model pages): no cached-input rate is listed, so cached tokens
    # are billed at the full rate. gpt-audio-mini's page lists text prices only.
    "gpt-audio": Prices(2.50, 2.50, 32.00, 32.00, 10.00, 64.00),
    "gpt-audio-1.5": Prices(2.50, 2.50, 32.00, 32.00, 10.00, 64.00),
    "gpt-audio-mini": None,
    "gpt-4o-audio-preview": Prices(2.50, 2.50, 40.00, 40.00, 10.00, 80.00),
    "gpt-4o-mini-audio-preview": Prices(0.15, 0.15, 10.00, 10.00, 0.60, 20.00),
}


def prices_for(model: str) -> Prices | None:
    best: tuple[str, Prices | None] | None = None
    for prefix, prices in PRICES.items():
        if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, prices)
    return best[1] if best else None


def estimate_cost_usd(model: str, usage: Mapping[str, int]) -> float | None:
    """Cost of the summed usage of a call (keys as in :meth:`CallRecord.add_usage`)."""
    prices = prices_for(model)
    if prices is None or not usage:
        return None
    cached = usage.get("input_cached_tokens", 0)
    audio_in = usage.get("input_audio_tokens", 0)
    text_in = usage.get("input_text_tokens", 0)
    # Cached tokens are part of the input counts; bill them at the cached rate, pro rata by modality.
    total_in = max(audio_in + text_in, 1)
    cached_audio = cached * audio_in / total_in
    cached_text = cached - cached_audio
    cost = (
        (audio_in - cached_audio) * prices.audio_in
        + cached_audio * prices.audio_cached_in
        + (text_in - cached_text) * prices.text_in
        + cached_text * prices.text_cached_in
        + usage.get("output_audio_tokens", 0) * prices.audio_out
        + usage.get("output_text_tokens", 0) * prices.text_out
    ) / 1_000_000
    return round(cost, 6)
