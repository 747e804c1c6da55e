"""What a demo call leaves behind: a two-channel recording and a JSON summary, plus figures from the audio.

Both channels come from the simulated caller, on one clock: every 20 ms tick it sent one frame of caller
audio and played 20 ms of whatever the agent had sent (silence when nothing was queued). So position *n*
of both is the same moment, and the time from the caller's last word to the agent's first audio can be read
straight off the two tracks.
"""

from __future__ import annotations

import json
import math
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.g711 import ulaw_to_pcm16

#: A μ-law sample this far from zero (in linear PCM16) counts as sound, not line silence.
_SOUND_LEVEL = 200
#: Agent audio shorter than this after the caller's line is not "the reply" (a click, the tail of a word).
_MIN_REPLY_MS = 60


def write_stereo_wav(
    path: Path, caller: bytes | bytearray, agent: bytes | bytearray, rate: int = 8000
) -> float:
    """Caller on the left channel, agent on the right, 16-bit PCM; returns the length in seconds."""
    left, right = ulaw_to_pcm16(caller), ulaw_to_pcm16(agent)
    n = max(len(left), len(right))
    frames = np.zeros((n, 2), dtype="<i2")
    frames[: len(left), 0] = left
    frames[: len(right), 1] = right
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.tobytes())
    return n / rate


@dataclass(frozen=True)
class Turn:
    """One caller line on the call's timeline (sample positions at 8 kHz)."""

    text: str
    start: int
    end: int  # one past the last sample of sound


def sound_span(mulaw: bytes) -> tuple[int, int] | None:
    """First and one-past-last sample with sound, or ``None`` for silence."""
    loud = np.flatnonzero(np.abs(ulaw_to_pcm16(mulaw).astype(np.int32)) > _SOUND_LEVEL)
    if loud.size == 0:
        return None
    return int(loud[0]), int(loud[-1]) + 1


def reply_latency_ms(agent: bytes | bytearray, after: int, until: int | None = None) -> float | None:
    """ms from sample ``after`` to the first agent sound that lasts at least ``_MIN_REPLY_MS``."""
    pcm = np.abs(ulaw_to_pcm16(agent[after:until]).astype(np.int32))
    loud = pcm > _SOUND_LEVEL
    if not loud.any():
        return None
    window = _MIN_REPLY_MS * 8
    counts = np.convolve(loud.astype(np.int32), np.ones(window, dtype=np.int32), "valid")
    start = np.flatnonzero(counts >= window // 4)
    if start.size == 0:
        return None
    first = int(np.flatnonzero(loud[int(start[0]) :])[0]) + int(start[0])
    return first / 8.0


def turn_latency_summary(record: Mapping[str, str]) -> dict[str, Any]:
    """The server's own per-turn figures from the call's Redis hash (``turns``, ``greeting_ms``; see
    ivr/call/turns.py): each reply's latency, their median and p90 (nearest rank), the greeting's time to
    first audio. Unlike ``reply_latency_ms`` (read off the recording, from the caller's last sound), these
    start when the engine's VAD reported the end of speech and stop when the first reply audio was sent."""
    turns = parse_json(record.get("turns"))
    greeting = parse_json(record.get("greeting_ms"))
    values = [
        float(t["latency_ms"])
        for t in (turns if isinstance(turns, list) else [])
        if isinstance(t, dict) and isinstance(t.get("latency_ms"), int | float)
    ]
    ordered = sorted(values)
    return {
        "greeting_ms": float(greeting) if isinstance(greeting, int | float) else None,
        "turns_ms": values,
        "turns": len(values),
        "median_ms": round(float(np.median(ordered)), 1) if ordered else None,
        "p90_ms": ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)] if ordered else None,
    }


def turn_latency_line(figures: Mapping[str, Any]) -> str | None:
    """One line for the demo's printed summary, or None when nothing was measured."""
    parts = []
    if figures.get("greeting_ms") is not None:
        parts.append(f"greeting {figures['greeting_ms']:.0f} ms after the call connected")
    if figures.get("turns"):
        parts.append(
            f"replies median {figures['median_ms']:.0f} ms, p90 {figures['p90_ms']:.0f} ms "
            f"({figures['turns']} turns)"
        )
    if not parts:
        return None
    return "measured by the server (end of speech → first reply audio sent): " + "; ".join(parts)


def parse_json(text: Any) -> Any:
    """JSON text parsed (a field of a Redis hash, a tool's output); None when it is not JSON, other values
    as they are."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
