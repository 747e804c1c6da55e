"""Times of day: "ten thirty", "10:30", "three pm", "half past two", "quarter to five", "noon".

Reads recogniser text and typed clocks. What Whisper writes for a time is often not a clean clock: "at
730" or "1030 pm" (a clock without its colon), "the 9 o'clock", "i have passed three" (half past three),
"around for in the afternoon" (four). An hour word after "the", "for", "which" … is not a time ("the
first one", "for four") unless o'clock, am/pm or minutes follow it; nor is a number followed by "people".

A time without am/pm is resolved with ``plausible`` (e.g. "is this within the opening hours") when exactly
one of the two readings passes it; otherwise business hours are assumed: 1–6 → pm, 7–11 → am, 12 → noon
(also in docs/offline-dialogue.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import time

from ivr.dialogue.numbers import PEOPLE_WORDS
from ivr.dialogue.words import ORDINALS, TENS, UNITS, number_at, tokens

__all__ = ["parse_time"]


_AM = (("in", "the", "morning"), ("this", "morning"), ("am",))
_PM = (
    ("in", "the", "afternoon"),
    ("in", "the", "evening"),
    ("this", "afternoon"),
    ("this", "evening"),
    ("at", "night"),
    ("tonight",),
    ("pm",),
)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
#: An hour word right after these is not a time ("the first one", "for four", "which one").
_NOT_BEFORE_HOUR = frozenset({"the", "for", "of", "that", "this", "which", "any", "no", "every", *ORDINALS})


def _marker(words: list[str], i: int) -> tuple[str | None, int]:
    """``("am"|"pm"|None, end)`` for a part-of-day marker at ``i``."""
    for phrase in _AM:
        if tuple(words[i : i + len(phrase)]) == phrase:
            return "am", i + len(phrase)
    for phrase in _PM:
        if tuple(words[i : i + len(phrase)]) == phrase:
            return "pm", i + len(phrase)
    return None, i


_GLUED = re.compile(r"(\d{1,2})(\d{2})")


def _glued_clock(words: list[str], i: int) -> tuple[re.Match[str], bool] | None:
    """ "at 730", "1030 pm", "the 115 slot": a clock Whisper wrote without its colon, and whether a cue
    (at/around/am/pm) came with it; without one it is read only as the answer to a time question."""
    word = words[i]
    if not (3 <= len(word) <= 4 and word.isdigit()):
        return None
    cued = (i > 0 and words[i - 1] in ("at", "around", "about", "by")) or _marker(words, i + 1)[0] is not None
    found = _GLUED.fullmatch(word)
    if found is None or int(found.group(1)) > 23 or int(found.group(2)) > 59:
        return None
    return found, cued


def _the_clock(words: list[str], i: int) -> bool:
    """ "the 9 o'clock", "no, 8 pm", "the ten thirty": an hour after a word that usually rules a time out
    ("the", "for", "no" …) that is a time all the same: o'clock or am/pm follows (or minutes, after "the")."""
    if i + 1 >= len(words):
        return False
    nxt = words[i + 1]
    if nxt in ("oclock", "am", "pm"):
        return True
    single_digit = nxt in UNITS and UNITS[nxt] < 10  # "the one two three" is not a time
    return words[i - 1] == "the" and _minutes_at(words, i + 1) is not None and not single_digit


def _minutes_at(words: list[str], i: int) -> tuple[int, int] | None:
    """Minutes after an hour: "thirty", "forty five", "oh five", "15" → ``(minutes, end)``."""
    if i >= len(words):
        return None
    word = words[i]
    if word in ("oh", "o") and i + 1 < len(words) and words[i + 1] in UNITS and 0 < UNITS[words[i + 1]] < 10:
        return UNITS[words[i + 1]], i + 2
    if word.isdigit() and len(word) == 2 and int(word) < 60:
        return int(word), i + 1
    if word in TENS and TENS[word] < 60:
        if i + 1 < len(words) and words[i + 1] in UNITS and 0 < UNITS[words[i + 1]] < 10:
            return TENS[word] + UNITS[words[i + 1]], i + 2
        return TENS[word], i + 1
    if word in UNITS and UNITS[word] >= 10:
        return UNITS[word], i + 1
    return None


def _hour_at(words: list[str], i: int) -> int | None:
    word = words[i]
    if word.isdigit() and len(word) <= 2 and int(word) <= 23:
        return int(word)
    if word in UNITS and 1 <= UNITS[word] <= 12:
        return UNITS[word]
    return None


def _resolve(hour: int, minute: int, marker: str | None, plausible: Callable[[time], bool] | None) -> time:
    if marker == "pm" and hour < 12:
        hour += 12
    elif marker == "am" and hour == 12:
        hour = 0
    elif marker is None and 1 <= hour <= 11:
        readings = [time(hour, minute), time(hour + 12, minute)]
        if plausible is not None:
            fitting = [t for t in readings if plausible(t)]
            if len(fitting) == 1:
                return fitting[0]
        hour = hour + 12 if hour <= 6 else hour
    return time(hour % 24, minute)


def parse_time(
    text: str, *, strict: bool = False, plausible: Callable[[time], bool] | None = None
) -> time | None:
    """A time of day: "ten thirty", "10:30", "three pm", "half past two", "quarter to five", "noon".

    Candidates with a clear cue (am/pm, o'clock, "at", "half past", a clock reading, noon) win over an
    hour followed by minutes ("ten thirty"), which wins over a bare hour ("ten"). Strict mode ignores bare
    hours. See the module docstring for how am/pm is chosen when not said.
    """
    words = tokens(text)
    best: tuple[int, int, time] | None = None  # (rank, position, time)

    def offer(rank: int, position: int, value: time) -> None:
        nonlocal best
        if best is None or (rank, position) < best[:2]:
            best = (rank, position, value)

    for i, word in enumerate(words):
        if word in ("noon", "midday"):
            offer(0, i, time(12, 0))
            continue
        if word == "midnight":
            offer(0, i, time(0, 0))
            continue
        glued = _glued_clock(words, i)
        if glued is not None and not glued[1]:
            if not strict:
                hour, minute = int(glued[0].group(1)), int(glued[0].group(2))
                offer(1, i, _resolve(hour, minute, None, plausible if hour <= 12 else None))
            continue
        clock = _CLOCK.fullmatch(word) or (glued[0] if glued is not None else None)
        if clock:
            hour, minute = int(clock.group(1)), int(clock.group(2))
            if hour <= 23 and minute <= 59:
                marker, _ = _marker(words, i + 1)
                offer(0, i, _resolve(hour, minute, marker, plausible if hour <= 12 else None))
            continue
        relative = _relative_time(words, i)
        if relative is not None:
            hour, minute, end = relative
            marker, _ = _marker(words, end)
            offer(0, i, _resolve(hour, minute, marker, plausible))
            continue
        hour = _hour_at(words, i)
        if hour is None and word == "for" and i > 0 and words[i - 1] in ("at", "around", "about", "by"):
            hour = 4  # "around for in the afternoon": Whisper's "four" after a time cue
        elif hour is None or (i > 0 and words[i - 1] in _NOT_BEFORE_HOUR and not _the_clock(words, i)):
            continue
        end = i + 1
        if end < len(words) and words[end] in PEOPLE_WORDS:
            continue  # "four people"
        minute = 0
        has_minutes = False
        if end < len(words) and words[end] == "oclock":
            end += 1
            cued = True
        else:
            found = _minutes_at(words, end)
            if found is not None and not (found[1] < len(words) and words[found[1]] in ("people", "minutes")):
                minute, end = found
                has_minutes = True
            cued = False
        marker, _ = _marker(words, end)
        cued = cued or marker is not None or (i > 0 and words[i - 1] in ("at", "around", "about", "by"))
        if hour > 12 and marker is not None:
            continue
        rank = 0 if cued else (1 if has_minutes else 2)
        if rank == 2 and strict:
            continue
        offer(rank, i, _resolve(hour, minute, marker, plausible if hour <= 12 else None))
    return best[2] if best is not None else None


def _relative_time(words: list[str], i: int) -> tuple[int, int, int] | None:
    """``half past two`` → (2, 30, end); ``quarter to five`` → (4, 45, end); ``ten past six`` → (6, 10, …)."""
    word = words[i]
    minutes: int | None = None
    j = i + 1
    passed = i + 1 < len(words) and words[i + 1] in ("past", "passed")
    if word == "half" or (word == "have" and passed):  # Whisper: "i have passed three" for "half past three"
        minutes = 30
    elif word == "quarter":
        minutes = 15
    elif word == "a" and i + 1 < len(words) and words[i + 1] == "quarter":
        minutes, j = 15, i + 2
    else:
        span = number_at(words, i)
        if span is not None and 1 <= span.value <= 30:
            minutes, j = span.value, span.end
            if j < len(words) and words[j] == "minutes":
                j += 1
    if minutes is None or j + 1 >= len(words):
        return None
    direction = "past" if words[j] == "passed" else words[j]
    if direction not in ("past", "after", "to", "before"):
        return None
    if direction in ("after", "before") and word not in ("half", "have", "quarter", "a"):
        return None
    hour = _hour_at(words, j + 1)
    if hour is None:
        return None
    if direction in ("past", "after"):
        return hour, minutes, j + 2
    if minutes == 30:
        return None  # "half to five" is not English
    return (hour - 1) % 24 or (12 if hour == 1 else 0), 60 - minutes, j + 2
