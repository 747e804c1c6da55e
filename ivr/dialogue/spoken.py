"""Spoken forms: how the agent says a slot value back ("Tuesday, November 24", "10:30 AM", "A B 3 K M 7").

The reverse of the parsers: it writes text for speech synthesis rather than reading what Whisper wrote,
so times keep their digits ("2:15 PM"; speech reads them) and ids and phone numbers are said character by
character ("5 5 5 1 2 3 4", "plus 4 4 …").
"""

from __future__ import annotations

from datetime import date, time

from ivr.flows.hours import spoken_clock

__all__ = ["spell", "spoken_date", "spoken_digits", "spoken_time"]


_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def spoken_date(day: date) -> str:
    """``Tuesday, November 24``: how a date is said."""
    return f"{_DAY_NAMES[day.weekday()]}, {day.strftime('%B')} {day.day}"


def spoken_time(moment: time) -> str:
    """``10:30 AM``, ``2:15 PM``, ``noon``, ``midnight``: how a time is said (as the tools' labels say it)."""
    return spoken_clock(moment)


def spell(text: str) -> str:
    """Letters and digits one by one: ``AB3KM7`` → ``A B 3 K M 7``."""
    return " ".join(ch.upper() for ch in text if ch.isalnum())


def spoken_digits(text: str) -> str:
    """Digits one by one: ``5551234`` → ``5 5 5 1 2 3 4`` (a leading ``+`` is said as "plus")."""
    said = " ".join(ch for ch in text if ch.isdigit())
    return f"plus {said}" if text.strip().startswith("+") else said
