"""Dates: "tomorrow", "next tuesday", "march third", "the twenty first", "in two weeks", "2026-03-03".

Reads recogniser text and typed dates relative to ``today``. What Whisper writes for a date is usually
words ("monday the twenty third", "the third of march"), but also digits and short forms: "the 15, if you
have it" (the fifteenth), "10th march", "tuesday 10th", "thurs", "weds"; "as soon as possible" or "the
earliest you have" is today.

Rules worth knowing (also in docs/offline-dialogue.md):

* Weekdays: "tuesday"/"on tuesday" is the next Tuesday after today (1–7 days ahead); "this tuesday" is
  the next Tuesday from today on (today counts); "next tuesday" is the Tuesday of next week (weeks start
  on Monday), so said on a Saturday it is three days ahead, said on a Monday eight.
* A day of the month without a month ("the twenty first") is in this month if not yet past, else next
  month. A month and day ("march third") is this year if not yet past, else next year. "may" is a month
  only next to a day ("may third", "the third of may").
* Strict mode (text that was not an answer to "which day?") takes a bare day of the month only as "on the
  twenty first" or "the twenty first of …".
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from ivr.dialogue.numbers import PEOPLE_WORDS
from ivr.dialogue.words import MONTH_NUMBERS, TENS, WEEKDAYS, number_at, ordinal_at, tokens

__all__ = ["parse_date"]


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
            if following not in (*PEOPLE_WORDS, "oclock", "am", "pm", "minutes"):
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
