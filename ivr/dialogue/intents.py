"""Which intent an utterance expresses: token overlap with the intent's examples, plus keyword hits.

Deliberately simple and deterministic, so a flow author can predict it: both the utterance and each
example are reduced to content words (a short stop-word list removed: "i'd like to", "please", "the" …) and
crudely stemmed (booking, booked, books → book; cancelled, cancellation → cancel). The example score is the
Dice overlap of the two word sets (``2·shared / (a + b)``), the best example counting. A keyword or key
phrase (stemmed the same way) found in the utterance lifts the score to ``0.5 + 0.5 · example score``.
Matches below :data:`THRESHOLD` are no match; on equal scores the intent listed first wins (stage intents
are listed before the flow's global ones).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from ivr.dialogue.words import tokens
from ivr.flows.offline import Intent

__all__ = ["STRONG", "THRESHOLD", "Match", "content_stems", "match_intent", "stem"]

#: The lowest score that counts as a match.
THRESHOLD = 0.4
#: A score this high switches away from an intent whose questions are being answered.
STRONG = 0.7

STOP_WORDS = frozenset(
    {"i", "i'd", "i'm", "i'll", "i've", "me", "my", "we", "we'd", "we're", "our", "us", "you", "your", "a",
     "an", "the", "to", "for", "of", "on", "at", "in", "and", "or", "is", "am", "are", "be", "was", "it",
     "it's", "its", "this", "that", "there", "please", "would", "could", "can", "will", "do", "does", "like",
     "want", "wanna", "need", "just", "so", "well", "um", "uh", "er", "hi", "hello", "hey", "oh", "ok",
     "okay", "actually", "really", "some", "with", "get", "have", "has", "let", "let's", "maybe", "also",
     "then", "about", "any", "if", "what", "what's", "how"}
)  # fmt: skip

_SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ies", "es", "ed", "s", "e")


def stem(word: str) -> str:
    """A crude, consistent stem: ``booking``/``booked``/``books`` → ``book``, ``scheduled`` → ``schedul``."""
    word = word.replace("'s", "")
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiousl":
        word = word[:-1]  # stopp → stop
    elif len(word) >= 5 and word.endswith("ll"):
        word = word[:-1]  # cancell → cancel
    return word


@functools.lru_cache(maxsize=4096)
def _stems(text: str) -> tuple[str, ...]:
    return tuple(stem(w) for w in tokens(text) if w not in STOP_WORDS)


def content_stems(text: str) -> tuple[str, ...]:
    """The stemmed content words of ``text``, in order."""
    return _stems(text)


@dataclass(frozen=True)
class Match:
    """An intent and how well the utterance fits it (0..1)."""

    intent: Intent
    score: float


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def score(text: str, intent: Intent) -> float:
    """How well ``text`` fits ``intent`` (see the module docstring)."""
    said = _stems(text)
    if not said:
        return 0.0
    said_set = set(said)
    best = 0.0
    for example in intent.examples:
        wanted = set(_stems(example))
        if not wanted:
            continue
        shared = len(said_set & wanted)
        best = max(best, 2 * shared / (len(said_set) + len(wanted)))
    if any(_contains(said, _stems(keyword)) for keyword in intent.keywords):
        return 0.5 + 0.5 * best
    return best


def match_intent(text: str, intents: Sequence[Intent], *, threshold: float = THRESHOLD) -> Match | None:
    """The best-scoring intent at or above ``threshold``; the earlier one on a tie; ``None`` if none."""
    found: Match | None = None
    for intent in intents:
        value = score(text, intent)
        if value >= threshold and (found is None or value > found.score):
            found = Match(intent, value)
    return found
