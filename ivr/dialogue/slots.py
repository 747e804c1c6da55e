"""Slot parsers: read a date, a time, a number, a name, a yes or no … out of what the caller said.

Pure functions over recogniser text (lower-case words: "tuesday at ten thirty", "the twenty first", "my
name is maria lopez") that also accept digits ("10:30", "21st", "2026-03-03") for typed and keypad input.
Each returns ``None`` when the text does not clearly hold a value: the dialogue then asks again rather than
guess. Most parsers have a ``strict`` mode for text that was *not* an answer to the slot's question (the
caller volunteering "a table for four tomorrow at seven"); strict mode wants a cue ("at seven", "four
people", "my name is …") so that words meant for one thing do not fill another.

Rules worth knowing (also in docs/offline-dialogue.md):

* Weekdays: "tuesday"/"on tuesday" is the next Tuesday after today (1–7 days ahead); "this tuesday" is
  the next Tuesday from today on (today counts); "next tuesday" is the Tuesday of next week (weeks start
  on Monday), so said on a Saturday it is three days ahead, said on a Monday eight.
* A day of the month without a month ("the twenty first") is in this month if not yet past, else next
  month. A month and day ("march third") is this year if not yet past, else next year.
* A time without am/pm is resolved with ``plausible`` (e.g. "is this within the opening hours") when
  exactly one of the two readings passes it; otherwise business hours are assumed: 1–6 → pm, 7–11 → am,
  12 → noon.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, time, timedelta

import jellyfish

from ivr.dialogue.words import (
    MONTH_NUMBERS,
    ORDINALS,
    TENS,
    UNITS,
    WEEKDAYS,
    digit_string,
    number_at,
    numbers,
    ordinal_at,
    tokens,
)

__all__ = [
    "option_at_time",
    "option_time",
    "parse_booking_id",
    "parse_choice",
    "parse_date",
    "parse_digits",
    "parse_name",
    "parse_number",
    "parse_phone",
    "parse_time",
    "parse_yes_no",
    "pick_option",
    "spell",
    "spoken_date",
    "spoken_digits",
    "spoken_time",
]

# --- yes / no --------------------------------------------------------------------------------------------

_YES = (
    "yes",
    "yeah",
    "yea",
    "yep",
    "yup",
    "sure",
    "correct",
    "right",
    "that's right",
    "thats right",
    "please do",
    "go ahead",
    "ok",
    "okay",
    "absolutely",
    "definitely",
    "of course",
    "sounds good",
    "perfect",
    "affirmative",
    "i think so",
    "that's it",
    "that's correct",
    "book it",
    "do it",
    "that's fine",
    "that is fine",
    "fine",
    "that works",
    "works for me",
    "that's good",
    "good",
    "great",
    "lovely",
    "alright",
    "all right",
    "certainly",
    "exactly",
    "yes please",
    "go for it",
    "let's do it",
    "let's do that",
    "do that",
    "uh huh",
    "mm hmm",
    "mhm",
    "that would be great",
    "that'd be great",
    "it is",
    "i do",
    "yes it is",
)
_NO = (
    "no",
    "nope",
    "nah",
    "not really",
    "that's wrong",
    "thats wrong",
    "wrong",
    "no thanks",
    "no thank you",
    "not right",
    "that's not right",
    "not correct",
    "incorrect",
    "don't",
    "do not",
    "negative",
    "not quite",
    "i don't think so",
    "don't think so",
    "not that",
    "isn't right",
    "isn't correct",
    "no it's fine",
    "no that's fine",
    "no that's ok",
    "no that's okay",
    "no i'm good",
    "i'm good",
    "never mind",
    "not now",
    "no way",
    "please don't",
    "not fine",
    "that's not it",
    "not that one",
    "not good",
    "not great",
    "doesn't work",
    "that doesn't work",
    "won't work",
)
#: Noes that outweigh a yes said in the same breath.
_CLEAR_NO = frozenset(
    tuple(tokens(p))
    for p in ("that's wrong", "thats wrong", "wrong", "not right", "that's not right", "not correct",
              "incorrect", "no thanks", "no thank you", "i don't think so", "isn't right", "isn't correct",
              "no it's fine", "no that's fine", "no that's ok", "no that's okay", "please don't", "not fine",
              "that's not it")
)  # fmt: skip
#: Phrases that hold a yes or no word but say neither ("good bye", "good morning").
_NEITHER = ("good bye", "good morning", "good afternoon", "good evening", "good night", "no problem")
_YES_NO_PHRASES: list[tuple[tuple[str, ...], bool | None]] = sorted(
    [(tuple(tokens(p)), True) for p in _YES]
    + [(tuple(tokens(p)), False) for p in _NO]
    + [(tuple(tokens(p)), None) for p in _NEITHER],
    key=lambda item: -len(item[0]),
)


def parse_yes_no(text: str) -> bool | None:
    """True for yes/yeah/sure/correct/that's right/go ahead…, False for no/nope/not really/that's wrong….

    Phrases are matched longest first, so "not right" is a no and "i don't think so" is not a yes. An
    answer holding both a yes and a no is ``None`` (asked again: "yes… no, wait"), unless the no is clear
    ("yeah, no, that's wrong", "sure… no thanks", "no, that's fine"). A lone "please" is a yes.
    """
    words = tokens(text)
    if words == ["please"]:
        return True
    found: set[tuple[str, ...]] = set()
    meanings: set[bool] = set()
    i = 0
    while i < len(words):
        for phrase, meaning in _YES_NO_PHRASES:
            if tuple(words[i : i + len(phrase)]) == phrase:
                if meaning is not None:
                    found.add(phrase)
                    meanings.add(meaning)
                i += len(phrase)
                break
        else:
            i += 1
    if len(meanings) == 1:
        return meanings.pop()
    if meanings and found & _CLEAR_NO:
        return False
    return None


# --- numbers ---------------------------------------------------------------------------------------------

_PEOPLE = frozenset(
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
        if (s.end < len(words) and words[s.end] in _PEOPLE)
        or (s.start > 0 and words[s.start - 1] in ("for", "of", "are", "we're", "be"))
    ]
    counted = [s for s in cued if s.end < len(words) and words[s.end] in _PEOPLE - {"of"}]
    joined_by_and = all(words[a.end + 1 : b.start] == ["and"] for a, b in itertools.pairwise(counted))
    if len(counted) > 1 and joined_by_and:  # "two adults and two kids"
        return sum(s.value for s in counted)
    if cued:
        return cued[0].value
    for k, word in enumerate(words):  # "a table for for people": the recogniser wrote "for" for four
        if word == "for" and k + 1 < len(words) and words[k + 1] in _PEOPLE - {"of"}:
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


# --- dates -----------------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(text: str, today: date, *, strict: bool = False) -> date | None:
    """A day: today, tomorrow, the day after tomorrow, weekdays, "march third", "the 21st", ISO dates.

    See the module docstring for how weekdays and days without a month are placed. Strict mode accepts a
    bare day of the month only as "on the twenty first" or "the twenty first of …". "As soon as possible"
    (or "the earliest you have") is today; the offer that follows says when there is nothing free.
    """
    words = [_WEEKDAY_SHORT.get(w, w) for w in tokens(text)]
    joined = " ".join(words)
    for word in words:
        if _ISO_DATE.fullmatch(word):
            try:
                return date.fromisoformat(word)
            except ValueError:
                return None
    if "day after tomorrow" in joined:
        return today + timedelta(days=2)
    if re.search(r"\btomorrow\b", joined):
        return today + timedelta(days=1)
    if re.search(r"\b(today|tonight)\b", joined):
        return today
    if not strict and re.search(_SOONEST, f" {joined} ") and not any(w in WEEKDAYS for w in words):
        return today
    relative = _in_days(words)
    if relative is not None:
        return today + timedelta(days=relative)
    dated = _month_day(words, today)
    if dated is not None:
        return dated
    weekday = next((k for k, word in enumerate(words) if word in WEEKDAYS), None)
    if weekday is not None:
        named = WEEKDAYS.index(words[weekday])
        on_day = _day_of_month(words, today, strict=False, weekday=named)  # "monday the twenty third"
        if on_day is not None:
            return on_day
        before = words[weekday - 1] if weekday > 0 else ""
        if words[max(0, weekday - 2) : weekday] == ["next", "week"] or (
            weekday + 2 < len(words) + 1 and words[weekday + 1 : weekday + 3] == ["next", "week"]
        ):
            before = "next"  # "next week tuesday", "tuesday next week"
        return _weekday(today, named, before)
    return _day_of_month(words, today, strict=strict)


_WEEKDAY_SHORT = {"tues": "tuesday", "tue": "tuesday", "weds": "wednesday", "thurs": "thursday",
                  "thu": "thursday", "fri": "friday"}  # fmt: skip
_SOONEST = (r" (as soon as (possible|you can)|asap|(the )?(earliest|soonest|first available)"
            r"( (day|date|time|one|appointment|slot|you have|you've got|possible))?) ")  # fmt: skip


def _in_days(words: list[str]) -> int | None:
    for k, word in enumerate(words):
        if word != "in" or k + 2 >= len(words) + 1:
            continue
        rest = words[k + 1 :]
        if rest[:2] in (["a", "week"], ["one", "week"]):
            return 7
        if rest[:2] in (["a", "day"], ["one", "day"]):
            return 1
        span = number_at(words, k + 1)
        if span is not None and span.end < len(words) and words[span.end] in ("days", "day", "weeks", "week"):
            return span.value * (7 if words[span.end].startswith("week") else 1)
    return None


def _weekday(today: date, weekday: int, before: str) -> date:
    ahead = (weekday - today.weekday()) % 7
    if before == "next":
        monday_next_week = today + timedelta(days=7 - today.weekday())
        return monday_next_week + timedelta(days=weekday)
    if before == "this":
        return today + timedelta(days=ahead)
    return today + timedelta(days=ahead or 7)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month_day(words: list[str], today: date) -> date | None:
    for k, word in enumerate(words):
        month = MONTH_NUMBERS.get(word)
        if month is None or (word == "may" and not _near_day(words, k)):
            continue
        day = None
        after = k + 1 + (1 if k + 1 < len(words) and words[k + 1] == "the" else 0)
        if after < len(words):
            day = _day_number(words, after)
        if day is None and k >= 2 and words[k - 1] == "of":  # "the third of march"
            start = k - 2
            while start > 0 and words[start - 1] in TENS:
                start -= 1
            day = _day_number(words, start) if start >= 0 else None
        if day is None and k >= 1 and _DIGIT_DAY.fullmatch(words[k - 1]):  # "10 march", "10th march"
            day = _day_number(words, k - 1)
        if day is None:
            continue
        found = _safe_date(today.year, month, day)
        if found is not None and found < today:
            found = _safe_date(today.year + 1, month, day)
        return found
    return None


def _near_day(words: list[str], k: int) -> bool:
    """ "may" is a month only next to a day number ("may third", "the third of may")."""
    after = k + 1 < len(words) and (_day_number(words, k + 1) is not None or words[k + 1] == "the")
    return after or (k > 0 and words[k - 1] == "of")


def _day_number(words: list[str], i: int) -> int | None:
    ordinal = ordinal_at(words, i)
    if ordinal is not None:
        return ordinal[0] if 1 <= ordinal[0] <= 31 else None
    span = number_at(words, i)
    if span is not None and 1 <= span.value <= 31:
        return span.value
    return None


_DIGIT_DAY = re.compile(r"\d{1,2}(?:st|nd|rd|th)?")


def _day_of_month(words: list[str], today: date, *, strict: bool, weekday: int | None = None) -> date | None:
    """ "the twenty first": this month if not past, else the next month that has the day (and the weekday
    said with it, if any)."""
    for k in range(len(words)):
        found = ordinal_at(words, k)
        after_the = k > 0 and words[k - 1] == "the"
        # "tuesday 10th", "10th works": a written ordinal needs no "the" (nor any ordinal after a weekday)
        bare = not strict and weekday is None and _DIGIT_DAY.fullmatch(words[k]) is not None
        bare = bare or (weekday is not None and k > 0 and words[k - 1] in WEEKDAYS)
        if found is None and after_the and words[k].isdigit() and 1 <= int(words[k]) <= 31:
            following = words[k + 1] if k + 1 < len(words) else ""
            if following not in (*_PEOPLE, "oclock", "am", "pm", "minutes"):
                found = (int(words[k]), k + 1)  # "the 15, if you have it": Whisper's "the fifteenth"
        if found is None or not (after_the or bare):
            continue
        day, end = found
        if end < len(words) and words[end] in ("one", "option", "time", "slot"):
            continue  # "the first one": an option, not a date
        if strict and not (k >= 2 and words[k - 2] == "on") and not (end < len(words) and words[end] == "of"):
            continue
        if not 1 <= day <= 31:
            return None
        year, month = today.year, today.month
        for _ in range(3 if weekday is None else 5):  # a weekday and a day far apart: a mishearing
            candidate = _safe_date(year, month, day)
            if candidate is not None and candidate >= today and weekday in (None, candidate.weekday()):
                return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return None
    return None


# --- times -----------------------------------------------------------------------------------------------

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
        if end < len(words) and words[end] in _PEOPLE:
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


# --- names -----------------------------------------------------------------------------------------------

_NAME_CUES = (
    ("my", "name", "is"),
    ("my", "name's"),
    ("the", "name", "is"),
    ("name", "is"),
    ("name's",),
    ("my", "names"),  # Whisper drops the apostrophe: "the names peter jones"
    ("the", "names"),
    ("under", "the", "name", "of"),
    ("under", "the", "name"),
    ("this", "is"),
    ("it's",),
    ("it", "is"),
    ("its",),
    ("i'm",),
    ("i", "am"),
    ("call", "me"),
    ("under",),
    ("that's",),
    ("that", "is"),
    ("for",),
)
_STRICT_NAME_CUES = _NAME_CUES[:9]
_FILLERS = frozenset(
    {"um", "uh", "er", "erm", "hmm", "yes", "yeah", "yep", "sure", "ok", "okay", "so", "well", "hi", "hello",
     "hey", "oh", "right", "sorry", "it's", "its", "please", "thanks", "thank", "you", "speaking", "here"}
)  # fmt: skip
#: Words that are not part of a name: if any is left after the fillers, the answer was not a name.
_NOT_NAME = frozenset(
    {"i", "me", "my", "a", "an", "the", "to", "for", "of", "and", "or", "but", "is", "are", "was", "be",
     "want", "would", "like", "need", "can", "could", "book", "booking", "appointment", "speak", "talk",
     "person", "someone", "what", "why", "how", "when", "where", "who", "don't", "do", "not", "no", "know",
     "have", "has", "that", "this", "it", "in", "on", "at", "with", "cancel", "tomorrow", "today", "time",
     "day", "morning", "afternoon", "evening", "again", "repeat", "say", "just", "already", "told",
     "name", "number", "phone", "there", "i'm", "i'll", "i've", "i'd", "we", "we're", "you", "calling",
     "returning", "call", "about", "from", "new", "patient", "here", "last", "week", "ringing",
     *WEEKDAYS, *UNITS, *TENS, *ORDINALS}
)  # fmt: skip


#: A word of a name: letters (any script), inner apostrophes and hyphens ("o'brien", "maría-josé").
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def _strip_cue(words: list[str], cues: Sequence[tuple[str, ...]]) -> tuple[list[str], bool]:
    """The words after the first cue ("my name is"), then after any cues right behind it ("it's under")."""
    for k in range(len(words)):
        for cue in cues:
            if tuple(words[k : k + len(cue)]) == cue:
                rest = words[k + len(cue) :]
                while True:
                    rest = [w for w in rest[:1] if w not in _FILLERS] + rest[1:]
                    follow = next((c for c in _NAME_CUES if tuple(rest[: len(c)]) == c), None)
                    if follow is None:
                        return rest, True
                    rest = rest[len(follow) :]
    return words, False


def _spelled(words: list[str]) -> list[str]:
    """Letters spelled out after a name ("sean, s-e-a-n") replace the word before them; spelled letters
    alone ("k-i-m") are the word."""
    out: list[str] = []
    for word in words:
        parts = word.split("-")
        if len(parts) >= 2 and all(len(p) == 1 for p in parts):
            joined = "".join(parts)
            if out and out[-1][:1] == joined[:1]:
                out[-1] = joined
            else:
                out.append(joined)
            continue
        out.append(word)
    return out


def parse_name(text: str, *, strict: bool = False) -> str | None:
    """A person's name in title case: "my name is maria lopez" → "Maria Lopez"; "it's john smith".

    Fillers (um, yes, it's, please …) are dropped; what is left must be one to four words that are not
    ordinary English words ("i want to book" is not a name). Strict mode needs an explicit cue ("my name
    is", "the name is", "under the name"). Never invents: anything doubtful is ``None``.
    """
    words = _spelled(_NAME_WORD.findall(text.lower().replace("’", "'")))
    cues = _STRICT_NAME_CUES if strict else _NAME_CUES
    rest, cued = _strip_cue(words, cues)
    if strict and not cued:
        return None
    while rest and rest[0] in _FILLERS:
        rest = rest[1:]
    while rest and rest[-1] in _FILLERS:
        rest = rest[:-1]
    if strict:  # keep the name itself: stop at the first word that cannot be part of it
        cut = next((k for k, w in enumerate(rest) if w in _NOT_NAME or w in _FILLERS), len(rest))
        rest = rest[:cut]
    if not 1 <= len(rest) <= 4 or any(w in _NOT_NAME or w in _FILLERS for w in rest):
        return None
    if parse_yes_no(" ".join(rest)) is not None:
        return None  # "yes please, go ahead", "that's correct": an answer to a question, not a name
    if any(len(w) < 2 for w in rest):
        return None
    return " ".join(w.title() for w in rest)


# --- choices ---------------------------------------------------------------------------------------------


def _stem(word: str) -> str:
    for suffix in ("ings", "ing", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _phrase_in(phrase: Sequence[str], words: Sequence[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(tuple(words[i : i + n]) == tuple(phrase) for i in range(len(words) - n + 1))


def parse_choice(text: str, choices: Mapping[str, Sequence[str]]) -> str | None:
    """The choice whose name or one of whose phrases occurs as whole words; ``None`` if none or several.

    Plurals and -ing forms count ("cleanings" selects "cleaning"); "check-up" matches "check up".
    """
    words = [_stem(w) for w in tokens(text)]
    joined = "".join(words)
    matched: list[str] = []
    for value, phrases in choices.items():
        for phrase in (value, *phrases):
            stems = [_stem(w) for w in tokens(phrase)]
            if _phrase_in(stems, words) or (len(stems) > 1 and "".join(stems) in joined.split()):
                matched.append(value)
                break
    if not matched:
        return _sounds_like(tokens(text), choices)
    return matched[0] if len(matched) == 1 else None


#: How close a run of words must be, letter by letter, to a choice's phrase to select it when no phrase
#: matches exactly ("tramisu" for "tiramisu", "margrita" for "margherita"): difflib's ratio.
SOUNDS_LIKE = 0.75
_FUZZY_MIN_LETTERS = 7


def _sounds_like(words: list[str], choices: Mapping[str, Sequence[str]]) -> str | None:
    """The one choice a run of words is spelled nearly like (domain words Whisper does not know, such as
    dish names, come out spelled by ear); ``None`` if none or several come close."""
    scores: dict[str, float] = {}
    for value, phrases in choices.items():
        for phrase in (value, *phrases):
            target = "".join(tokens(phrase))
            if len(target) < _FUZZY_MIN_LETTERS:
                continue
            size = len(tokens(phrase))
            for n in {max(1, size - 1), size, size + 1}:
                for k in range(len(words) - n + 1):
                    said = "".join(words[k : k + n])
                    if abs(len(said) - len(target)) > len(target) // 2:
                        continue
                    ratio = difflib.SequenceMatcher(None, said, target, autojunk=False).ratio()
                    scores[value] = max(scores.get(value, 0.0), ratio)
    close = sorted(((r, v) for v, r in scores.items() if r >= SOUNDS_LIKE), reverse=True)
    if not close:
        return _sounds_alike(words, choices)
    if len(close) > 1 and close[1][0] > close[0][0] - 0.05:
        return None
    return close[0][1]


#: Letters a run of words may differ in length from a choice's phrase and still be heard as it by sound.
_PHONETIC_SLACK = 2
#: Below this letter-by-letter similarity two runs are not the same words, whatever their sound keys say.
_PHONETIC_MIN_RATIO = 0.55


def _key(letters: str) -> str:
    return str(jellyfish.metaphone(letters))


def _has_sounds(key: str, target: str) -> bool:
    """Whether ``key`` holds every sound of ``target`` in order (and perhaps one more)."""
    rest = iter(key)
    return all(sound in rest for sound in target)


def _sounds_alike(words: list[str], choices: Mapping[str, Sequence[str]]) -> str | None:
    """The one choice a run of words sounds like, by Metaphone key, when its spelling is too far off for
    :func:`_sounds_like` ("trim missus" is TRMSS, "tiramisu" TRMS). Safeguards against ordinary
    sentences: only phrases of 7 letters or more with keys of 4 or more; the run is about as long as the
    phrase (within two letters) and still at least half alike letter by letter; its key holds every sound
    of the phrase's key in order, with at most one more; exactly one choice fits."""
    hits: set[str] = set()
    for value, phrases in choices.items():
        for phrase in (value, *phrases):
            target = "".join(w for w in tokens(phrase) if w.isalpha())
            target_key = _key(target) if len(target) >= _FUZZY_MIN_LETTERS else ""
            if len(target_key) < 4:
                continue
            size = len(tokens(phrase))
            for n in {max(1, size - 1), size, size + 1}:
                for k in range(len(words) - n + 1):
                    run = words[k : k + n]
                    said = "".join(run)
                    if not said.isalpha() or abs(len(said) - len(target)) > _PHONETIC_SLACK:
                        continue
                    key = _key(said)
                    if len(key) > len(target_key) + 1 or key[:1] != target_key[:1]:
                        continue
                    if not _has_sounds(key, target_key):
                        continue  # a sound of the phrase is missing: "time is" (TMS) is not "tiramisu"
                    if (
                        difflib.SequenceMatcher(None, said, target, autojunk=False).ratio()
                        < _PHONETIC_MIN_RATIO
                    ):
                        continue
                    hits.add(value)
    return next(iter(hits)) if len(hits) == 1 else None


# --- booking ids -----------------------------------------------------------------------------------------

_NATO = {
    "alpha": "A", "alfa": "A", "bravo": "B", "charlie": "C", "delta": "D", "echo": "E", "foxtrot": "F",
    "golf": "G", "hotel": "H", "india": "I", "juliet": "J", "juliett": "J", "kilo": "K", "lima": "L",
    "mike": "M", "november": "N", "oscar": "O", "papa": "P", "quebec": "Q", "romeo": "R", "sierra": "S",
    "tango": "T", "uniform": "U", "victor": "V", "whiskey": "W", "whisky": "W", "xray": "X", "x-ray": "X",
    "yankee": "Y", "zulu": "Z",
}  # fmt: skip
#: How recognisers write some spoken letter names (only ones that are not common words).
_LETTER_NAMES = {
    "bee": "B", "cee": "C", "dee": "D", "gee": "G", "jay": "J", "kay": "K", "el": "L", "ell": "L",
    "em": "M", "en": "N", "pee": "P", "cue": "Q", "queue": "Q", "ess": "S", "tee": "T", "vee": "V",
    "ex": "X", "zed": "Z", "zee": "Z", "aitch": "H",
}  # fmt: skip
#: How recognisers write NATO words (Whisper: "julie" for juliet, "mic" for mike).
_NATO_HEARD = {
    "julie": "J", "juliette": "J", "julia": "J", "mic": "M", "charley": "C", "alfa": "A", "kilo": "K",
    "keylo": "K", "sierra": "S", "siera": "S", "kebec": "Q", "quebecc": "Q", "foxtrott": "F",
    "yanky": "Y", "zoolu": "Z", "whiskey": "W", "xray": "X",
}  # fmt: skip
#: NATO words Whisper splits in two ("fox trot", "x ray").
_NATO_PAIRS = {("fox", "trot"): "F", ("x", "ray"): "X", ("ex", "ray"): "X"}
#: Words heard for a digit, read as that digit only between characters of a spelled id ("b k 7 for m":
#: "for" is 4). "a" is 8 only in an id spelled with NATO words, where a letter A would be "alpha" (there
#: also before the first character: "it's a hotel quebec…" is 8HQ…).
_ID_HOMOPHONES = {"for": "4", "four": "4", "fore": "4", "to": "2", "too": "2", "ate": "8"}
_ID_CUES = ("id", "code", "reference", "number", "is", "booking", "confirmation")


def _id_chars(word: str) -> str | None:
    if word in _NATO:
        return _NATO[word]
    if word in _NATO_HEARD:
        return _NATO_HEARD[word]
    if word in _LETTER_NAMES:
        return _LETTER_NAMES[word]
    if word in UNITS and UNITS[word] < 10:
        return str(UNITS[word])
    if word == "oh":
        return "O"
    if re.fullmatch(r"[a-z0-9]+", word) and (len(word) == 1 or any(ch.isdigit() for ch in word)):
        return word.upper()
    if re.fullmatch(r"[b-df-hj-np-tv-z]{2,3}", word) and word not in ("mm", "hmm", "mhm", "hm", "nth"):
        return word.upper()  # "km", "bcd": letters Whisper ran together (no vowel, so not a word)
    return None


def parse_booking_id(text: str, *, strict: bool = False) -> str | None:
    """Letters and digits spelled out: "a b three k m seven" or "alpha bravo 3 kilo mike 7" → "AB3KM7".

    "b as in bravo" counts once; "double k" is "KK". The longest run of letter/digit words wins; fewer
    than three characters is ``None``. Strict mode reads only what follows a cue ("booking id is …").
    """
    words = tokens(text)
    if strict:
        cue = max((k for k, w in enumerate(words) if w in _ID_CUES), default=-1)
        if cue < 0:
            return None
        words = words[cue + 1 :]
    nato = sum(1 for w in words if w in _NATO or w in _NATO_HEARD) >= 2
    runs: list[str] = []
    current = ""
    repeat = 1
    i = 0
    while i < len(words):
        word = words[i]
        pair = _NATO_PAIRS.get((word, words[i + 1])) if i + 1 < len(words) else None
        if pair is not None:
            current += pair * repeat
            repeat = 1
            i += 2
            continue
        following = words[i + 1] if i + 1 < len(words) else None
        eight = word == "a" and nato  # "it's a hotel quebec…": a spelling in NATO words says "alpha" for A
        if (
            (current or eight)
            and following is not None
            and (word in _ID_HOMOPHONES or eight)
            and _id_chars(following) is not None
            and not (word == "for" and following in _NATO)
        ):
            current += ("8" if word == "a" else _ID_HOMOPHONES[word]) * repeat
            repeat = 1
            i += 1
            continue
        if word in ("double", "triple") and i + 1 < len(words) and _id_chars(words[i + 1]):
            repeat = 2 if word == "double" else 3
            i += 1
            continue
        if word in ("as", "for") and i + 2 < len(words) and words[i + 1] == "in" and words[i + 2] in _NATO:
            i += 3  # "b as in bravo"
            continue
        if word == "for" and i + 1 < len(words) and words[i + 1] in _NATO and current:
            i += 2  # "m for mike"
            continue
        chars = _id_chars(word)
        if chars is None:
            if current:
                runs.append(current)
            current = ""
        else:
            current += chars * repeat
        repeat = 1
        i += 1
    if current:
        runs.append(current)
    best = max(runs, key=len, default="")
    if len(best) >= 3:
        return best
    return None if strict else _written_id(text)


def _written_id(text: str) -> str | None:
    """An id Whisper wrote as one token ("paujfq", "rcu-5m") in a short answer: 4–8 letters and digits
    that are not an English word (pocketsphinx's 134k-word dictionary decides), hyphens dropped."""
    if len(text.split()) > 4:
        return None
    from ivr.speech.lm import dictionary_words  # the dictionary loads once, on the first such answer

    known = dictionary_words()
    found = [
        word.replace("-", "")
        for word in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())
        if 4 <= len(word.replace("-", "")) <= 8
        and (any(ch.isdigit() for ch in word) or word.replace("-", "") not in known)
        and not (word.isdigit())
    ]
    return max(found, key=len).upper() if found else None


# --- offers ----------------------------------------------------------------------------------------------

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


#: "8:15" as Whisper writes it from some voices: "a15", "the a 30" ("eight" heard as "a"). Read only to
#: pick among offered times, so it can only choose a time the agent just offered.
#: "12 30", "8-15": an hour and its minutes written apart.
_HOUR_MINUTES = re.compile(r"\b([01]?\d|2[0-3])[ -]([0-5]\d)\b")
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


# --- spoken forms ----------------------------------------------------------------------------------------

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def spoken_date(day: date) -> str:
    """``Tuesday, November 24``: how a date is said."""
    return f"{_DAY_NAMES[day.weekday()]}, {day.strftime('%B')} {day.day}"


def spoken_time(moment: time) -> str:
    """``10:30 AM``, ``2:15 PM``, ``noon``, ``midnight``: how a time is said (speech reads the digits)."""
    if moment == time(12, 0):
        return "noon"
    if moment == time(0, 0):
        return "midnight"
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def spell(text: str) -> str:
    """Letters and digits one by one: ``AB3KM7`` → ``A B 3 K M 7``."""
    return " ".join(ch.upper() for ch in text if ch.isalnum())


def spoken_digits(text: str) -> str:
    """Digits one by one: ``5551234`` → ``5 5 5 1 2 3 4`` (a leading ``+`` is said as "plus")."""
    said = " ".join(ch for ch in text if ch.isdigit())
    return f"plus {said}" if text.strip().startswith("+") else said
