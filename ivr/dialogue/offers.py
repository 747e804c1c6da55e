"""Offers: which of the options the agent just read out ("10:30 or 2 pm on Tuesday") the caller took.

Reads recogniser text by order ("the first one", "the last", "number two"), by time ("ten thirty" picks
the option at 10:30, am/pm tried both ways) or by a word only one option's label has ("wednesday"), and
"whichever is fine" as the first (earliest) option. What Whisper writes for an offered time: "1230",
"12 30", "8-15", and "a15" or "the a 30" for 8:15 ("eight" heard as "a"); these are read only here, where
they can only pick a time that was just offered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import time

from ivr.dialogue.times import parse_time
from ivr.dialogue.words import WEEKDAYS, number_at, tokens

__all__ = ["option_at_time", "option_time", "pick_option"]


_PICK_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4,
    "5th": 4, "earliest": 0, "earlier": 0, "last": -1, "latest": -1, "later": -1, "final": -1,
}  # fmt: skip
_OPTION_NOUNS = ("option", "number", "choice")
_ANY_OPTION = ("whichever", "either", "any of them", "any one", "anyone", "any is fine", "any time",
               "anytime", "doesn't matter", "don't mind", "any of those")  # fmt: skip
_NOT_ANY = frozenset({"other", "else", "another", "different", "not", *WEEKDAYS, "tomorrow", "today"})
_LABEL_STOP = frozenset(
    {"at", "on", "the", "a", "an", "and", "or", "of", "in", "one", "please", "i'll", "take"}
)
_OPTION_TIME = re.compile(r"(?:T|\b)(\d{1,2}):(\d{2})\b")


def option_time(value: str, label: str) -> time | None:
    """The time of day of an offered option, from its value (``2026-03-03T09:30``) or its label."""
    for source in (value, label):
        m = _OPTION_TIME.search(source)
        if m:
            return time(int(m.group(1)) % 24, int(m.group(2)))
        parsed = parse_time(source, strict=True)
        if parsed is not None:
            return parsed
    return None


#: "12 30", "8-15": an hour and its minutes written apart.
_HOUR_MINUTES = re.compile(r"\b([01]?\d|2[0-3])[ -]([0-5]\d)\b")
#: "8:15" as Whisper writes it from some voices: "a15", "the a 30" ("eight" heard as "a"). Read only to
#: pick among offered times, so it can only choose a time the agent just offered.
_EIGHT_AS_A = re.compile(r"(?:^|\b(?:the|at|about|say|maybe|um|uh)\s+)a[- ]?([0-5][05])\b")


def option_at_time(text: str, labels: Sequence[str], values: Sequence[str]) -> int | None:
    """The offered option at the time ``text`` says ("1230", "8-15", "12 30", "a15"), trying am and pm;
    ``None`` when no time is said or not exactly one option is at it."""
    lowered = text.lower()
    readings = [parse_time(text)]
    readings += [_clock(int(h), int(m)) for h, m in _HOUR_MINUTES.findall(lowered)]
    readings += [time(8, int(m)) for m in _EIGHT_AS_A.findall(lowered)]
    times = [option_time(str(v), str(label)) for v, label in zip(values, labels, strict=True)]
    for wanted in readings:
        if wanted is None:
            continue
        for candidate in (wanted, time((wanted.hour + 12) % 24, wanted.minute)):
            hits = [i for i, t in enumerate(times) if t == candidate]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                return None
    return None


def _clock(hour: int, minute: int) -> time | None:
    return time(hour, minute) if hour < 24 and minute < 60 else None


def pick_option(text: str, labels: Sequence[str], values: Sequence[str]) -> int | None:
    """Which offered option the caller chose, as an index; ``None`` if unclear.

    By order ("the first one", "the second", "the last", "number two"), by time ("ten thirty" picks the
    option at 10:30; am/pm is tried both ways when the first reading matches nothing), or by a word that
    only one label has ("wednesday" when one option is on Wednesday).
    """
    words = tokens(text)
    count = len(labels)
    if count == 0:
        return None
    joined = f" {' '.join(words)} "
    if any(f" {p} " in joined for p in _ANY_OPTION) and not set(words) & _NOT_ANY:
        return 0  # "whichever is fine", "any of them": the first offered is the earliest
    if "middle" in words and count == 3:
        return 1
    for k, word in enumerate(words):
        if word in _PICK_ORDINALS:
            index = _PICK_ORDINALS[word]
            index = count - 1 if index == -1 else index
            return index if index < count else None
        if word in _OPTION_NOUNS and k + 1 < len(words):
            span = number_at(words, k + 1)
            if span is not None and 1 <= span.value <= count:
                return span.value - 1
    if parse_time(text) is not None or _EIGHT_AS_A.search(text.lower()):
        return option_at_time(text, labels, values)
    label_words = [{w for w in tokens(str(label)) if w not in _LABEL_STOP} for label in labels]
    shared = set.intersection(*label_words) if label_words else set()
    said = set(words) - _LABEL_STOP
    hits = [i for i, ws in enumerate(label_words) if (ws - shared) & said]
    return hits[0] if len(hits) == 1 else None
