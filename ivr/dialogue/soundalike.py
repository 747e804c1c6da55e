"""Weekdays heard as other words: "to z" or "2v" for Tuesday, "first d" or "thirsty" for Thursday.

Whisper base hears a weekday said alone on a phone line as whatever English it sounds like: "to z would work
for me", "how about first d", "is wendy any good". Those words still carry the sounds of the day. When the
dialogue has asked for a day and nothing in the turn reads as one, :func:`weekday_sounding` looks for a run
of one to three words whose pronunciation is close to a weekday's and, if exactly one weekday is clearly
closest, gives the text with that run replaced ("tuesday would work for me").

Pronunciations come from the CMU dictionary that pocketsphinx ships (already a dependency;
:func:`ivr.speech.lm.pronunciations`). Digits are read as words first ("2" is "two", "3rd" is "third").
Words the dictionary does not know are never part of a run, nor is a run of number words alone ("ten
thirty" is a time). Two pronunciations are compared with an edit
distance over phones where a vowel for another vowel costs :data:`VOWEL_SWAP`, a consonant for one of the
same manner ("s" for "z", "f" for "th", "t" for "d") :data:`CLASS_SWAP`, and a phone added or dropped
:data:`INDEL`; the distance is divided by the weekday's length.

A day found this way is a guess: the dialogue treats the turn as unsure and reads the day back ("Tuesday,
December 8, right?"), so a wrong guess costs the caller one "no".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

from ivr.dialogue.words import ORDINALS, TENS, UNITS, WEEKDAYS, tokens

__all__ = [
    "CLASS_SWAP",
    "INDEL",
    "MARGIN",
    "MAX_DISTANCE",
    "MAX_RUN",
    "MAX_WORDS",
    "VOWEL_SWAP",
    "load",
    "phone_distance",
    "weekday_sounding",
]

VOWEL_SWAP = 0.3
CLASS_SWAP = 0.4
INDEL = 0.7
#: A run is taken for a weekday when its distance per weekday phone is at most this…
MAX_DISTANCE = 0.25
#: …and the next closest weekday is at least this much further away.
MARGIN = 0.1
#: The longest run of words compared with a weekday.
MAX_RUN = 3
#: Longer readings are not searched (each costs ~2 ms of CPU per word in the event loop).
MAX_WORDS = 10

_VOWELS = frozenset(
    ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"]
)
_MANNER = {
    **dict.fromkeys(["P", "B", "T", "D", "K", "G"], "stop"),
    **dict.fromkeys(["F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH"], "fricative"),
    **dict.fromkeys(["CH", "JH"], "affricate"),
    **dict.fromkeys(["M", "N", "NG"], "nasal"),
    **dict.fromkeys(["L", "R"], "liquid"),
    **dict.fromkeys(["W", "Y"], "glide"),
}
#: Words that name a day or a period themselves ("what time do you close today" is not Tuesday).
_DATE_WORDS = frozenset(["today", "tomorrow", "tonight", "yesterday", "weekend", "week", "month"])
_NUMBER_WORDS = {str(v): k for k, v in UNITS.items()} | {str(v): k for k, v in TENS.items()}
_ORDINAL_WORDS = {f"{v}{suffix}": k for k, v in ORDINALS.items() for suffix in ("st", "nd", "rd", "th")}


def _swap_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a in _VOWELS and b in _VOWELS:
        return VOWEL_SWAP
    manner_a, manner_b = _MANNER.get(a), _MANNER.get(b)
    if manner_a is not None and manner_a == manner_b:
        return CLASS_SWAP
    if {manner_a, manner_b} in ({"affricate", "stop"}, {"affricate", "fricative"}):
        return (CLASS_SWAP + 1.0) / 2
    return 1.0


def phone_distance(heard: Sequence[str], target: Sequence[str]) -> float:
    """Weighted edit distance between two phone sequences (see the module docstring for the costs)."""
    previous = [j * INDEL for j in range(len(target) + 1)]
    for i, a in enumerate(heard, 1):
        current = [i * INDEL]
        for j, b in enumerate(target, 1):
            current.append(
                min(previous[j] + INDEL, current[j - 1] + INDEL, previous[j - 1] + _swap_cost(a, b))
            )
        previous = current
    return previous[-1]


@cache
def _table() -> dict[str, tuple[str, ...]]:
    from ivr.speech.lm import pronunciations  # the dictionary loads once, on the first such turn

    return pronunciations()


def _spoken_words(token: str) -> list[str] | None:
    """A token as dictionary words: "2" → ["two"], "3rd" → ["third"], "2v" → ["two", "v"]."""
    if token in _NUMBER_WORDS:
        return [_NUMBER_WORDS[token]]
    if token in _ORDINAL_WORDS:
        return [_ORDINAL_WORDS[token]]
    head = token.rstrip("abcdefghijklmnopqrstuvwxyz")
    if head and head != token and head in _NUMBER_WORDS:  # "2v": a digit and a letter run together
        return [_NUMBER_WORDS[head], token[len(head) :]]
    return [token] if token.isalpha() else None


def _pronunciations(words: Sequence[str]) -> list[tuple[str, ...]] | None:
    """The pronunciation of a run of words (each word's first, most common, variant), or None if one is
    unknown. Later variants add weak forms ("the" as "thee") that made common phrases sound like weekdays
    ("to the" as Tuesday)."""
    table = _table()
    phones: list[str] = []
    for word in words:
        variants = table.get(word)
        if not variants:
            return None
        phones.extend(variants[0].split())
    return [tuple(phones)]


def load() -> None:
    """Read the pronunciation table now (~0.2 s, once per process) instead of on the first guess."""
    _weekday_phones()


@cache
def _weekday_phones() -> dict[str, list[tuple[str, ...]]]:
    table = _table()
    return {day: [tuple(v.split()) for v in table[day]] for day in WEEKDAYS}


#: Distances above this are never needed exactly: such a run is neither taken nor a close runner-up.
_RELEVANT = MAX_DISTANCE + MARGIN
#: Runs of more phones than this are beyond :data:`_RELEVANT` of every weekday on length alone (the longest
#: weekday, "wednesday", has 6 phones: 4 more cost at least 2.8 > 0.35 × 6).
_LONGEST_RUN = 9


def _closest(phones: list[tuple[str, ...]]) -> tuple[str, float, float]:
    """The weekday closest to any of ``phones``: (weekday, its distance per phone, the runner-up's).

    A pair whose lengths alone put it beyond :data:`_RELEVANT` (each phone of difference costs at least
    :data:`INDEL`) scores infinity without being computed: most runs of a long sentence are skipped so.
    """
    scores = []
    for day, targets in _weekday_phones().items():
        best = math.inf
        for target in targets:
            for heard in phones:
                if abs(len(heard) - len(target)) * INDEL > _RELEVANT * len(target):
                    continue
                best = min(best, phone_distance(heard, target) / len(target))
        scores.append((best, day))
    scores.sort()
    (first, day), (second, _) = scores[0], scores[1]
    return day, first, second


def weekday_sounding(text: str) -> str | None:
    """``text`` with the run of words that sounds like one weekday replaced by it, or None.

    None when the text has more than :data:`MAX_WORDS` words or already names a day (a weekday, "today",
    "tomorrow", "this week"…), when no run is within :data:`MAX_DISTANCE`, or when two weekdays are about
    as close (:data:`MARGIN`).
    """
    words = tokens(text)
    if len(words) > MAX_WORDS:
        return None  # an answer to "which day?" is short; a long sentence that named no day named none
    if any(word in WEEKDAYS or word in _DATE_WORDS for word in words):
        return None  # the turn names a day already: the date parser reads it, or nothing should
    spoken: list[list[str] | None] = [_spoken_words(word) for word in words]
    best: tuple[float, int, int, str] | None = None
    for start in range(len(words)):
        for end in range(start + 1, min(start + MAX_RUN, len(words)) + 1):
            parts = spoken[start:end]
            if any(part is None for part in parts):
                break
            if all(word in _NUMBER_WORDS or word in _NUMBER_WORDS.values() for word in words[start:end]):
                continue  # "ten thirty" is a time, not "ten thursday"
            phones = _pronunciations([w for part in parts if part is not None for w in part])
            if phones is None:
                break
            if min(len(p) for p in phones) > _LONGEST_RUN:
                break  # longer runs only grow: none can come close to a weekday
            day, distance, runner_up = _closest(phones)
            close = distance <= MAX_DISTANCE + 1e-9 and runner_up - distance >= MARGIN - 1e-9
            if close and (best is None or distance < best[0]):
                best = (distance, start, end, day)
    if best is None:
        return None
    _, start, end, day = best
    return " ".join([*words[:start], day, *words[end:]])
