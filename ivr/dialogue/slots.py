"""Slot parsers: read a date, a time, a number, a name, a yes or no … out of what the caller said.

Pure functions over recogniser text (lower-case words: "tuesday at ten thirty", "the twenty first", "my
name is maria lopez") that also accept digits ("10:30", "21st", "2026-03-03") for typed and keypad input.
Each returns ``None`` when the text does not clearly hold a value: the dialogue then asks again rather than
guess. Most parsers have a ``strict`` mode for text that was *not* an answer to the slot's question (the
caller volunteering "a table for four tomorrow at seven"); strict mode wants a cue ("at seven", "four
people", "my name is …") so that words meant for one thing do not fill another.

This module is the façade: the parsers live in one module per kind of slot, and are re-exported here.

* :mod:`ivr.dialogue.yes_no` — :func:`parse_yes_no`;
* :mod:`ivr.dialogue.numbers` — :func:`parse_number`, :func:`parse_digits`, :func:`parse_phone`;
* :mod:`ivr.dialogue.dates` — :func:`parse_date` (how weekdays and days without a month are placed);
* :mod:`ivr.dialogue.times` — :func:`parse_time` (how am/pm is chosen when not said);
* :mod:`ivr.dialogue.names` — :func:`parse_name`;
* :mod:`ivr.dialogue.choices` — :func:`parse_choice` (exact, then near spelling, then sound);
* :mod:`ivr.dialogue.booking_ids` — :func:`parse_booking_id` (letters, NATO words, digits);
* :mod:`ivr.dialogue.offers` — :func:`pick_option`, :func:`option_time`, :func:`option_at_time`;
* :mod:`ivr.dialogue.spoken` — :func:`spoken_date`, :func:`spoken_time`, :func:`spell`,
  :func:`spoken_digits` (how values are said back).

Rules worth knowing are in those modules' docstrings (also in docs/offline-dialogue.md).
"""

from __future__ import annotations

from ivr.dialogue.booking_ids import parse_booking_id
from ivr.dialogue.choices import SOUNDS_LIKE as SOUNDS_LIKE  # public before the split, not in __all__
from ivr.dialogue.choices import parse_choice
from ivr.dialogue.dates import parse_date
from ivr.dialogue.names import parse_name
from ivr.dialogue.numbers import parse_digits, parse_number, parse_phone
from ivr.dialogue.offers import option_at_time, option_time, pick_option
from ivr.dialogue.spoken import spell, spoken_date, spoken_digits, spoken_time
from ivr.dialogue.times import parse_time
from ivr.dialogue.yes_no import parse_yes_no

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
