"""Numbers: a party size or count, a string of digits, a phone number.

Reads recogniser text ("a table for four", "two adults and two kids", "party of six") and typed digits
("12", "5550101"). Whisper writes small numbers as words that sound like them, and these are read back
when the answer was to "how many?": "a table for for people" (four), a lone "to" or "too" (two), "free,
including me" (three); "just me", "my wife and i" are one and two. Digits read out come as
"five five five oh one oh one" or "double five".

:data:`PEOPLE_WORDS` (the words that mark a count of people) is shared with :mod:`ivr.dialogue.dates` and
:mod:`ivr.dialogue.times`, which use it to keep "four people" from being a day or an hour.
"""

from __future__ import annotations

import itertools

from ivr.dialogue.words import digit_string, numbers, tokens

__all__ = ["PEOPLE_WORDS", "parse_digits", "parse_number", "parse_phone"]

#: Words after (or, for "of", before) a number that make it a count of people: "four people", "party of six".
PEOPLE_WORDS = frozenset(
    {"people", "persons", "person", "guests", "guest", "adults", "diners", "kids", "children", "of"}
)
_NUMBER_FILLERS = frozenset(
    {"please", "people", "persons", "guests", "of", "us", "just", "we", "are", "we're", "there", "will", "be",
     "it's", "its", "it", "'ll", "we'll", "um", "uh", "a", "table", "party"}
)  # fmt: skip
_JUST_ONE = ("just me", "only me", "just myself", "by myself", "on my own", "just one", "myself")
_A_PAIR = ("me and my", "my wife and i", "my husband and i", "my partner and i", "a couple", "a pair",
           "me and a friend", "my friend and i", "the both of us", "both of us")  # fmt: skip


def parse_number(text: str, *, strict: bool = False) -> int | None:
    """A whole number: "four", "twenty one", "a hundred and five", "12".

    A number with a people cue ("four people", "for four", "party of six") wins over others. Strict mode
    accepts only such cued numbers. Leniently (an answer to "how many?"), a lone "for" is read as four and
    a lone "to"/"too" as two — recognisers often write those for a bare number.
    """
    words = tokens(text)
    spans = [s for s in numbers(words) if not (s.start > 0 and words[s.start - 1] in ("at", "around"))]
    spans = [s for s in spans if not (s.end < len(words) and words[s.end] in ("oclock", "am", "pm"))]
    cued = [
        s
        for s in spans
        if (s.end < len(words) and words[s.end] in PEOPLE_WORDS)
        or (s.start > 0 and words[s.start - 1] in ("for", "of", "are", "we're", "be"))
    ]
    counted = [s for s in cued if s.end < len(words) and words[s.end] in PEOPLE_WORDS - {"of"}]
    joined_by_and = all(words[a.end + 1 : b.start] == ["and"] for a, b in itertools.pairwise(counted))
    if len(counted) > 1 and joined_by_and:  # "two adults and two kids"
        return sum(s.value for s in counted)
    if cued:
        return cued[0].value
    for k, word in enumerate(words):  # "a table for for people": the recogniser wrote "for" for four
        if word == "for" and k + 1 < len(words) and words[k + 1] in PEOPLE_WORDS - {"of"}:
            return 4
        if word == "for" and k + 1 < len(words) and words[k + 1] == "for":  # "a table for for on friday"
            return 4
    if strict:
        return None
    if spans:
        return spans[0].value
    joined = f" {' '.join(words)} "
    if any(f" {p} " in joined for p in _JUST_ONE):
        return 1
    if any(f" {p} " in joined for p in _A_PAIR):
        return 2
    rest = [w for w in words if w not in _NUMBER_FILLERS]
    if rest == ["for"]:
        return 4
    if rest in (["to"], ["too"]):
        return 2
    if rest[:1] == ["free"] and "for" not in words:  # "free, including me": Whisper's "three"
        return 3
    return None


def parse_digits(text: str) -> str | None:
    """Digits read out or typed: "one two three four" → "1234", "double five" → "55"."""
    digits = digit_string(tokens(text))
    return digits or None


def parse_phone(text: str) -> str | None:
    """A phone number from words or digits ("five five five oh one oh one" → "5550101"); at least 7 digits.

    A spoken "plus" at the start keeps a leading ``+``.
    """
    words = tokens(text)
    digits = digit_string(words)
    if len(digits) < 7:
        return None
    return ("+" if "plus" in words[:2] else "") + digits
