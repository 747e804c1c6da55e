"""Words as speech recognition writes them: tokens, number words, ordinals, spoken forms.

Shared by the slot parsers (:mod:`ivr.dialogue.slots`) and the intent matcher
(:mod:`ivr.dialogue.intents`). Recognisers write lower-case words ("ten thirty", "twenty first"); typed
text and keypad paths give digits ("10:30", "21st"). Both are read here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_MONTH_ABBREVIATIONS = {m[:3]: i + 1 for i, m in enumerate(MONTHS)} | {"sept": 9}
MONTH_NUMBERS = {m: i + 1 for i, m in enumerate(MONTHS)} | _MONTH_ABBREVIATIONS

_TOKEN = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}|[a-z0-9]+(?:'[a-z]+)?")
#: "21st", and "15's" / "16s": how Whisper writes some spoken ordinals ("the fifteenth" → "the 15's").
_DIGIT_ORDINAL = re.compile(r"(\d{1,2})(?:st|nd|rd|th|'s|s)")
#: A clock time as Whisper writes it: "7.30", "7:30", "19.45" (not "3.5", not a price "$19.50").
_WRITTEN_CLOCK = re.compile(r"(?<![\d$£€.,])(\d{1,2})[.:]([0-5]\d)(?![\d.,]*\d)")
#: "7pm", "7:30pm", "10am": the part of day glued to the number.
_GLUED_MARKER = re.compile(r"(\d)(am|pm|a\.m\.|p\.m\.)(?![a-z])")
#: "7ish", "7-ish": about seven.
_ISH = re.compile(r"(?<=\d)-?ish\b|(?<=[a-z])-ish\b")


def normalise(text: str) -> str:
    """Whisper's written forms read as words: lower case, curly quotes straightened, "7.30" → "7:30",
    "7pm" → "7 pm", "a.m." → "am", "o'clock" → "oclock"; digits and hyphenated numbers stay digits."""
    lowered = text.lower().replace("’", "'").replace("‘", "'")
    if not lowered.isascii():  # "tiramisù", "ragù": compare without accents
        lowered = "".join(c for c in unicodedata.normalize("NFKD", lowered) if not unicodedata.combining(c))
    lowered = _WRITTEN_CLOCK.sub(r"\1:\2", lowered)
    lowered = _GLUED_MARKER.sub(r"\1 \2", lowered)
    lowered = _ISH.sub("", lowered)
    return lowered


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; ``a.m.``/``p m`` become ``am``/``pm`` and ``o'clock`` becomes ``oclock``.

    Written forms are read first (:func:`normalise`): "7.30" is the clock token ``7:30``, "312-555-0101"
    is ``312 555 0101``, "July 14th" is ``july 14th``; punctuation and capitals are dropped.
    """
    lowered = normalise(text)
    lowered = re.sub(r"\ba\.\s?m\b\.?", " am ", lowered)
    lowered = re.sub(r"\bp\.\s?m\b\.?", " pm ", lowered)
    lowered = re.sub(r"\bo'?\s?clock\b", " oclock ", lowered)
    out = _TOKEN.findall(lowered)
    merged: list[str] = []
    for token in out:  # "p m" → "pm" after a number (the recogniser spells the letters)
        if (
            token == "m"
            and merged
            and merged[-1] in ("a", "p")
            and len(merged) >= 2
            and is_number_word(merged[-2])
        ):
            merged[-1] += "m"
            continue
        if token == "clock" and merged and is_number_word(merged[-1]):  # "after 3 clock": Whisper's o'clock
            token = "oclock"
        merged.append(token)
    return merged


def is_number_word(token: str) -> bool:
    """A digit string or a cardinal number word."""
    return token.isdigit() or token in UNITS or token in TENS


@dataclass(frozen=True)
class NumberSpan:
    """A number found in a token list: its value and the tokens ``[start, end)`` it covers."""

    value: int
    start: int
    end: int


def numbers(words: list[str]) -> list[NumberSpan]:
    """Every cardinal number: ``twenty one`` → 21, ``a hundred and five`` → 105, ``12`` → 12.

    Words that cannot continue a number start a new one: ``ten thirty`` is 10 and 30, ``one two`` is 1
    and 2 (digit-by-digit readings are for :func:`digit_string`).
    """
    out: list[NumberSpan] = []
    i = 0
    while i < len(words):
        span = _number_at(words, i)
        if span is None:
            i += 1
            continue
        out.append(span)
        i = span.end
    return out


def number_at(words: list[str], i: int) -> NumberSpan | None:
    """The number starting at token ``i``, if one does."""
    return _number_at(words, i)


def _number_at(words: list[str], i: int) -> NumberSpan | None:
    if i >= len(words):
        return None
    if words[i].isdigit():
        return NumberSpan(int(words[i]), i, i + 1)
    total = 0
    current = 0
    last: str | None = None
    j = i
    if words[j] == "a" and j + 1 < len(words) and words[j + 1] in ("hundred", "thousand"):
        current, last, j = 1, "unit", j + 1
    while j < len(words):
        word = words[j]
        fits_unit = last in (None, "hundred", "and") or (last == "tens" and 0 < UNITS.get(word, 0) < 10)
        if word in UNITS and fits_unit:
            current += UNITS[word]
            last = "unit"
        elif word in TENS and last in (None, "hundred", "and"):
            current += TENS[word]
            last = "tens"
        elif word == "hundred" and last in ("unit", "tens") and current % 100 == current and current < 100:
            current *= 100
            last = "hundred"
        elif word == "thousand" and last in ("unit", "tens", "hundred"):
            total += current * 1000
            current = 0
            last = "hundred"
        elif (
            word == "and"
            and last == "hundred"
            and j + 1 < len(words)
            and (words[j + 1] in UNITS or words[j + 1] in TENS)
        ):
            last = "and"
        else:
            break
        j += 1
    if last is None or last == "and":
        return None
    return NumberSpan(total + current, i, j)


def ordinal_at(words: list[str], i: int) -> tuple[int, int] | None:
    """``(value, end)`` of an ordinal at token ``i``: ``third``, ``twenty first``, ``21st``."""
    word = words[i]
    m = _DIGIT_ORDINAL.fullmatch(word)
    if m:
        return int(m.group(1)), i + 1
    if word in ORDINALS:
        return ORDINALS[word], i + 1
    if word.endswith("s") and word[:-1] in ORDINALS and ORDINALS[word[:-1]] > 3:  # Whisper: "the sixteenths"
        return ORDINALS[word[:-1]], i + 1
    if word in TENS and i + 1 < len(words) and words[i + 1] in ORDINALS and ORDINALS[words[i + 1]] < 10:
        return TENS[word] + ORDINALS[words[i + 1]], i + 2
    return None


_DIGIT_WORDS = {w: str(v) for w, v in UNITS.items() if v < 10} | {"oh": "0", "o": "0"}


def digit_string(words: list[str]) -> str:
    """Digits read one by one or in groups: ``five five five oh one`` → ``55501``, ``double two`` → ``22``.

    Teens and tens are read as two digits (``twelve`` → 12, ``thirty four`` → 34, ``eight hundred`` →
    800); other words are skipped.
    """
    out: list[str] = []
    repeat = 1
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("double", "triple"):
            repeat = 2 if word == "double" else 3
            i += 1
            continue
        piece: str | None = None
        if word.isdigit():
            piece = word
        elif word in _DIGIT_WORDS:
            piece = _DIGIT_WORDS[word]
        elif word in UNITS:
            piece = str(UNITS[word])
        elif word in TENS:
            value = TENS[word]
            if i + 1 < len(words) and words[i + 1] in UNITS and 0 < UNITS[words[i + 1]] < 10:
                value += UNITS[words[i + 1]]
                i += 1
            piece = str(value)
        elif word == "hundred" and out:
            piece = "00"
        if piece is not None:
            out.append(piece * repeat if len(piece) == 1 else piece)
        repeat = 1
        i += 1
    return "".join(out)


def join_words(items: list[str], conjunction: str = "or") -> str:
    """``A``, ``A or B``, ``A, B or C``."""
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"
