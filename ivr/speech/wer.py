"""Word error rate: a word-level Levenshtein distance, for the speech benchmark, tests and demos.

Both texts go through :func:`ivr.speech.lm.normalize_words` first, so "the 21st" and "the twenty first"
count as the same words and case or punctuation never counts as an error.

Whisper writes what it hears as digits in forms ``normalize_words`` reads one way only ("7.30" becomes
"seven point three zero", "312-555-0101" three large numbers). :func:`best_reading_errors` scores each number
in the hypothesis by its reading closest to the reference: a clock time ("seven thirty", "half past seven"),
digit by digit with "zero" or "oh", the groups of a phone number, or the number as written.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ivr.speech.lm import normalize_words, number_words

__all__ = ["WordErrors", "best_reading_accuracy", "best_reading_errors", "word_accuracy", "word_errors"]


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


_NUMERIC = re.compile(r"\d(?:[\d.:\-]*\d)?")
_CLOCK = re.compile(r"(\d{1,2})[.:](\d{2})")
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Above this many combinations of readings, numbers are chosen one at a time (left to right).
_MAX_COMBINATIONS = 256


def _spelled(digits: str, zero: str) -> str:
    return " ".join(zero if d == "0" else _DIGIT_WORDS[int(d)] for d in digits)


def _readings(token: str) -> list[str]:
    """Ways to say a number as a recogniser wrote it ("7.30", "312-555-0101", "730"), the token first."""
    out = [token]
    clock = _CLOCK.fullmatch(token)
    if clock is None and token.isdigit() and len(token) in (3, 4):
        clock = _CLOCK.fullmatch(f"{token[:-2]}.{token[-2:]}")
    if clock is not None:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour <= 24 and minute < 60:
            out.append(f"{hour}:{minute:02d}")
            named = " ".join(number_words(hour))
            if minute == 0:
                out += [named, f"{named} o'clock"]
            elif minute == 30:
                out.append(f"half past {named}")
            elif minute == 15:
                out.append(f"quarter past {named}")
            elif minute == 45:
                out.append(f"quarter to {' '.join(number_words(hour % 12 + 1))}")
    digits = token.replace("-", "").replace(".", "").replace(":", "")
    if digits.isdigit() and (len(digits) >= 3 or "-" in token):
        out += [_spelled(digits, "zero"), _spelled(digits, "oh")]
        if "-" in token:
            groups = token.split("-")
            out.append(" ".join(groups))
            out.append(" ".join(_spelled(g, "oh") if g.startswith("0") else g for g in groups))
    if token.isdigit() and len(token) == 4:
        out.append(f"{token[:2]} {token[2:]}")  # "1990" as "nineteen ninety"
    return list(dict.fromkeys(out))


def best_reading_errors(reference: str, hypothesis: str) -> WordErrors:
    """:func:`word_errors` with each number in ``hypothesis`` read the way that best matches ``reference``."""
    ref = normalize_words(reference)
    spans = [m.span() for m in _NUMERIC.finditer(hypothesis)]
    if not spans:
        return _align(ref, normalize_words(hypothesis))
    options = [_readings(hypothesis[a:b]) for a, b in spans]

    def text(choice: Sequence[str]) -> str:
        parts, last = [], 0
        for (a, b), reading in zip(spans, choice, strict=True):
            parts += [hypothesis[last:a], reading]
            last = b
        parts.append(hypothesis[last:])
        return "".join(parts)

    def score(choice: Sequence[str]) -> WordErrors:
        return _align(ref, normalize_words(text(choice)))

    combinations = 1
    for readings in options:
        combinations *= len(readings)
    if combinations <= _MAX_COMBINATIONS:
        return min((score(c) for c in itertools.product(*options)), key=lambda e: e.errors)
    choice = [readings[0] for readings in options]
    for k, readings in enumerate(options):
        choice[k] = min(readings, key=lambda r: score([*choice[:k], r, *choice[k + 1 :]]).errors)
    return score(choice)


def best_reading_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """Overall 1 − WER over ``(reference, hypothesis)`` pairs, numbers read by :func:`best_reading_errors`."""
    total = WordErrors(0, 0, 0, 0)
    for reference, hypothesis in pairs:
        total = total + best_reading_errors(reference, hypothesis)
    return total.accuracy
