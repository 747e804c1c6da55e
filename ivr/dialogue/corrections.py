"""Corrections: the caller changes a value already given ("no, Wednesday", "actually make it 3").

Pure helpers for :class:`ivr.dialogue.manager.Dialogue`: which slots depend on a changed one (an offer whose
tool reads it must be fetched again), and the bare number of "make it three" / "change it to 4" / "three
instead", which carries no cue of its own ("four people") but clearly replaces a count already given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from ivr.dialogue.words import MONTH_NUMBERS, number_at, ordinal_at, tokens
from ivr.flows.offline import Slot, references

__all__ = ["dependents", "has_cue", "replacing_number", "same_weekday"]

#: Words that say the caller is changing something already said.
_CUES = frozenset(
    {"no", "nope", "actually", "sorry", "wait", "instead", "change", "make", "meant", "mean", "rather",
     "oops", "not", "switch", "prefer", "better"}
)  # fmt: skip

_LEADS = (
    ("make", "it", "for"),
    ("change", "it", "to"),
    ("change", "that", "to"),
    ("make", "it"),
    ("make", "that"),
    ("made", "it"),  # Whisper's "make it" in a hurry
)


#: What Whisper writes for a number said alone at the end of "make it …" (measured: "free" for "three").
_SOUNDS_LIKE_NUMBER = {"free": 3, "tree": 3, "for": 4, "fore": 4, "to": 2, "too": 2, "won": 1, "ate": 8}


def has_cue(text: str) -> bool:
    """Whether ``text`` says a change: "no", "actually", "instead", "make it", "i meant" …"""
    return any(word in _CUES for word in tokens(text))


def same_weekday(old: Any, new: Any, text: str) -> bool:
    """Two ISO dates on the same weekday, the new one named only by its weekday ("tuesday at 9"): the
    caller is talking about the day already chosen, not changing it."""
    try:
        before, after = date.fromisoformat(str(old)), date.fromisoformat(str(new))
    except ValueError:
        return False
    words = tokens(text)
    dated = any(w in MONTH_NUMBERS or ordinal_at(words, k) is not None for k, w in enumerate(words))
    return before.weekday() == after.weekday() and not dated


def replacing_number(text: str) -> int | None:
    """The number in "make it three", "change that to 4", "three instead", "for 5 instead"; else ``None``."""
    words = tokens(text)
    for k in range(len(words)):
        for lead in _LEADS:
            if tuple(words[k : k + len(lead)]) == lead:
                end = k + len(lead)
                span = number_at(words, end)
                if span is not None and not _is_clock(words, span.end):
                    return span.value
                if end + 1 == len(words) and words[end] in _SOUNDS_LIKE_NUMBER:
                    return _SOUNDS_LIKE_NUMBER[words[end]]  # "make it free": Whisper's "three"
        if words[k] == "instead" and k > 0:
            j = k - 1
            while j > 0 and words[j] in ("people", "persons", "guests", "of", "us"):
                j -= 1
            span = _number_ending_at(words, j)
            if span is not None:
                return span
    return None


def _is_clock(words: list[str], end: int) -> bool:
    return end < len(words) and words[end] in ("oclock", "am", "pm", "thirty", "fifteen", "forty")


def _number_ending_at(words: list[str], j: int) -> int | None:
    for start in range(max(0, j - 2), j + 1):
        span = number_at(words, start)
        if span is not None and span.end == j + 1:
            return span.value
    return None


def _names_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield from (ref.name for ref in references(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _names_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _names_in(item)


def dependents(slots: Sequence[Slot], changed: str) -> list[str]:
    """The offer slots to fetch again when ``changed`` changes: their tool reads it, or it is one of the
    slots their "nothing free" answer clears."""
    return [
        slot.name
        for slot in slots
        if slot.type == "offer"
        and slot.name != changed
        and (changed in slot.none_clears or changed in set(_names_in(slot.arguments)))
    ]
