"""Word error rate: a word-level Levenshtein distance, for the speech benchmark, tests and demos.

Both texts go through :func:`ivr.speech.lm.normalize_words` first, so "the 21st" and "the twenty first"
count as the same words and case or punctuation never counts as an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ivr.speech.lm import normalize_words

__all__ = ["WordErrors", "word_accuracy", "word_errors"]


@dataclass(frozen=True, slots=True)
class WordErrors:
    """Word edits from a reference to a hypothesis; ``errors = substitutions + deletions + insertions``."""

    reference_words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word (can exceed 1 with many insertions); 0 for an empty pair."""
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else float(self.errors)
        return self.errors / self.reference_words

    @property
    def accuracy(self) -> float:
        """1 − WER (may be negative)."""
        return 1.0 - self.wer

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.reference_words + other.reference_words,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


def _align(ref: Sequence[str], hyp: Sequence[str]) -> WordErrors:
    """Minimum-edit alignment; each cell holds (cost, substitutions, deletions, insertions)."""
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        row = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            d, s_, de, ins = prev[j - 1]
            match = (d, s_, de, ins) if ref[i - 1] == hyp[j - 1] else (d + 1, s_ + 1, de, ins)
            d, s_, de, ins = prev[j]
            deletion = (d + 1, s_, de + 1, ins)
            d, s_, de, ins = row[j - 1]
            insertion = (d + 1, s_, de, ins + 1)
            row.append(min(match, deletion, insertion))
        prev = row
    _, subs, dels, inss = prev[-1]
    return WordErrors(len(ref), subs, dels, inss)


def word_errors(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> WordErrors:
    """Count word edits turning ``reference`` into ``hypothesis`` (strings are normalised first)."""
    ref = normalize_words(reference) if isinstance(reference, str) else list(reference)
    hyp = normalize_words(hypothesis) if isinstance(hypothesis, str) else list(hypothesis)
    return _align(ref, hyp)


def word_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """Overall 1 − WER over ``(reference, hypothesis)`` pairs (errors summed before dividing)."""
    total = WordErrors(0, 0, 0, 0)
    for reference, hypothesis in pairs:
        total = total + word_errors(reference, hypothesis)
    return total.accuracy
