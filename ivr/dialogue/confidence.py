"""How sure the recogniser was about a turn, in three bands: sure, unsure, not heard.

The one place where recogniser confidence turns into dialogue behaviour (the flow's ``min_confidence`` is
the only per-flow setting):

* **sure** (``confidence >= min_confidence``): the words are taken as said.
* **unsure** (from :data:`FLOOR_FRACTION` of ``min_confidence`` up to it): the words are used only where they
  fit what the dialogue expects, and a value read from them is confirmed back ("Tuesday the 10th, right?")
  instead of being asked for again; a clean yes or no to a yes/no question is taken as it is (asking "did
  you say yes?" after a yes is the loop callers hate); a strong match of an expected intent is taken.
* **not heard** (below the floor, empty text, or one of Whisper's well-known phrases for silence heard with
  low confidence): asked again.

Whisper's confidence (``ivr.speech.whisper``) and pocketsphinx's posterior are on different scales; the
shipped flows' ``min_confidence`` (0.45) is set for Whisper, the default recogniser, from the figures in
:mod:`ivr.speech.whisper` and docs/speech.md: a correct "yes" scores 0.41–0.60, so it is at worst unsure
and, being a yes, taken as said; garbage that comes out as yes/no words scores far below the floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ivr.dialogue.words import tokens

__all__ = ["FLOOR_FRACTION", "SILENCE_PHRASES", "Band", "Calibration"]

#: Below this fraction of ``min_confidence`` a turn is not heard at all, however well its words fit.
FLOOR_FRACTION = 0.5

#: What Whisper writes for silence, breath or line noise (known hallucinations of its training data). Heard
#: with less than ``min_confidence`` these are treated as nothing said rather than as the caller's words.
SILENCE_PHRASES = frozenset(
    {
        ("you",),
        ("thank", "you"),
        ("thanks", "for", "watching"),
        ("thank", "you", "for", "watching"),
        ("thank", "you", "so", "much", "for", "watching"),
        ("please", "subscribe"),
        ("subscribe",),
        ("bye",),
        ("music",),
        ("applause",),
        ("silence",),
        ("blank", "audio"),
    }
)

Band = Literal["sure", "unsure", "unheard"]


@dataclass(frozen=True)
class Calibration:
    """The confidence bands of one flow."""

    min_confidence: float
    floor_fraction: float = FLOOR_FRACTION

    @property
    def floor(self) -> float:
        """The lowest confidence at which a turn's words are used at all."""
        return self.min_confidence * self.floor_fraction

    def band(self, text: str, confidence: float) -> Band:
        """Which band a turn falls in (see the module docstring)."""
        words = tokens(text)
        if not words:
            return "unheard"
        if confidence >= self.min_confidence:
            return "sure"
        if confidence < self.floor or tuple(words) in SILENCE_PHRASES:
            return "unheard"
        return "unsure"
