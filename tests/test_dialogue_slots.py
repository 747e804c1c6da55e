"""Slot parsers: what callers say (as a recogniser writes it, or typed) → dates, times, numbers, names …"""

from __future__ import annotations

from datetime import date, time

import pytest

from ivr.dialogue.slots import (
    option_time,
    parse_booking_id,
    parse_choice,
    parse_date,
    parse_digits,
    parse_name,
    parse_number,
    parse_phone,
    parse_time,
    parse_yes_no,
    pick_option,
    spell,
    spoken_date,
    spoken_digits,
    spoken_time,
)

THURSDAY = date(2026, 3, 5)
SATURDAY = date(2026, 3, 7)


# --- yes / no --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["yes", "yeah", "yep", "sure", "correct", "yes that's right", "that's right", "please do", "go ahead",
     "Yes, please.", "okay", "sounds good", "yeah sure book it"],
)  # fmt: skip
def test_yes(text: str) -> None:
    assert parse_yes_no(text) is True


@pytest.mark.parametrize(
    "text",
    ["no", "nope", "not really", "that's wrong", "no thanks", "No, thank you.", "that's not right",
     "i don't think so", "nah", "yeah no that's wrong", "sure um no thanks", "yes but that's not right"],
)  # fmt: skip
def test_no(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize("text", ["", "maybe", "tuesday", "yes no", "yeah no wait", "um"])
def test_neither_yes_nor_no(text: str) -> None:
    assert parse_yes_no(text) is None


# --- numbers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("four", 4),
        ("four people", 4),
        ("twenty one", 21),
        ("twenty-one", 21),
        ("a hundred and five", 105),
        ("one hundred twenty", 120),
        ("two thousand and twelve", 2012),
        ("12", 12),
        ("we are six", 6),
        ("a table for four tomorrow at seven", 4),
        ("party of eight please", 8),
        ("for", 4),
        ("for please", 4),
        ("to", 2),
        ("just too", 2),
        ("zero", 0),
    ],
)
def test_numbers(text: str, expected: int) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", ["", "a few", "some people", "at seven", "seven o'clock", "three pm"])
def test_not_numbers(text: str) -> None:
    assert parse_number(text) is None


def test_strict_numbers_need_a_people_cue() -> None:
    assert parse_number("a table for four tomorrow at seven", strict=True) == 4
    assert parse_number("six guests", strict=True) == 6
    assert parse_number("a table for for people", strict=True) == 4  # "for" heard for "four"
    assert parse_number("tuesday at ten thirty", strict=True) is None
    assert parse_number("four", strict=True) is None
    assert parse_number("for", strict=True) is None


def test_digits_and_phone_numbers() -> None:
    assert parse_digits("one two three four") == "1234"
    assert parse_digits("order 5 5 7") == "557"
    assert parse_digits("double five oh seven") == "5507"
    assert parse_digits("no idea") is None
    assert parse_phone("five five five oh one oh one") == "5550101"
    assert parse_phone("my number is three one two, five five five, zero one zero one") == "3125550101"
    assert parse_phone("plus one three one two five five five zero one zero one") == "+13125550101"
    assert parse_phone("eight hundred five five five twelve thirty four") == "8005551234"
    assert parse_phone("+1 312-555-0101") == "13125550101"
    assert parse_phone("five five five") is None  # too short for a phone number


# --- dates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("today", THURSDAY),
        ("tonight please", THURSDAY),
        ("tomorrow", date(2026, 3, 6)),
        ("tomorrow morning", date(2026, 3, 6)),
        ("the day after tomorrow", date(2026, 3, 7)),
        ("tuesday please", date(2026, 3, 10)),
        ("on tuesday", date(2026, 3, 10)),
        ("thursday", date(2026, 3, 12)),  # a bare weekday is never today
        ("this thursday", THURSDAY),
        ("this friday", date(2026, 3, 6)),
        ("next tuesday", date(2026, 3, 10)),  # Tuesday of next week (weeks start on Monday)
        ("next friday", date(2026, 3, 13)),
        ("the twenty first", date(2026, 3, 21)),
        ("the 21st", date(2026, 3, 21)),
        ("the second", date(2026, 4, 2)),  # already past this month
        ("march third", date(2027, 3, 3)),  # already past this year
        ("march the twentieth", date(2026, 3, 20)),
        ("third of april", date(2026, 4, 3)),
        ("the twenty second of april", date(2026, 4, 22)),
        ("april 2", date(2026, 4, 2)),
        ("may third", date(2026, 5, 3)),
        ("in three days", date(2026, 3, 8)),
        ("in a week", date(2026, 3, 12)),
        ("in two weeks", date(2026, 3, 19)),
        ("2026-04-01", date(2026, 4, 1)),
        ("tuesday at ten thirty", date(2026, 3, 10)),
        ("monday the twenty third", date(2026, 3, 23)),
        ("tuesday the twenty third", date(2026, 6, 23)),  # the next 23rd that is a Tuesday
    ],
)
def test_dates(text: str, expected: date) -> None:
    assert parse_date(text, THURSDAY) == expected


def test_next_weekday_said_at_the_weekend_is_the_coming_one() -> None:
    assert parse_date("next tuesday", SATURDAY) == date(2026, 3, 10)
    assert parse_date("tuesday", SATURDAY) == date(2026, 3, 10)
    assert parse_date("next monday", date(2026, 3, 9)) == date(2026, 3, 16)


@pytest.mark.parametrize(
    "text", ["", "whenever", "the first one", "may I book", "next week", "2026-02-30", "the forty fifth"]
)
def test_not_dates(text: str) -> None:
    assert parse_date(text, THURSDAY) is None


def test_strict_dates_want_a_cue_for_a_bare_day_of_the_month() -> None:
    assert parse_date("the twenty first", THURSDAY, strict=True) is None
    assert parse_date("on the twenty first", THURSDAY, strict=True) == date(2026, 3, 21)
    assert parse_date("a table on friday", THURSDAY, strict=True) == date(2026, 3, 6)


def test_day_31_skips_short_months() -> None:
    assert parse_date("the thirty first", date(2026, 4, 2)) == date(2026, 5, 31)


# --- times -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ten thirty", time(10, 30)),
        ("10:30", time(10, 30)),
        ("at 14:15", time(14, 15)),
        ("three pm", time(15, 0)),
        ("three p m", time(15, 0)),
        ("3 p.m.", time(15, 0)),
        ("eleven am", time(11, 0)),
        ("twelve am", time(0, 0)),
        ("half past two", time(14, 30)),
        ("quarter past one", time(13, 15)),
        ("quarter to five", time(16, 45)),
        ("ten to six", time(17, 50)),
        ("noon", time(12, 0)),
        ("midday please", time(12, 0)),
        ("nine o'clock", time(9, 0)),
        ("nine oclock", time(9, 0)),
        ("seven in the evening", time(19, 0)),
        ("two fifteen in the afternoon", time(14, 15)),
        ("eight in the morning", time(8, 0)),
        ("nine oh five", time(9, 5)),
        ("tuesday at ten thirty", time(10, 30)),
        ("ten", time(10, 0)),
        ("two", time(14, 0)),  # business hours: 1-6 are afternoon
        ("seven", time(7, 0)),  # 7-11 are morning
        ("twelve thirty", time(12, 30)),
        ("the one at ten thirty", time(10, 30)),
    ],
)
def test_times(text: str, expected: time) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "the first one", "four people", "for four", "whenever suits"])
def test_not_times(text: str) -> None:
    assert parse_time(text) is None


def test_opening_hours_decide_am_or_pm() -> None:
    evenings = lambda t: time(18, 0) <= t < time(22, 30) or time(12, 0) <= t < time(15, 0)  # noqa: E731
    assert parse_time("at seven", plausible=evenings) == time(19, 0)
    assert parse_time("one", plausible=evenings) == time(13, 0)
    assert parse_time("ten thirty", plausible=evenings) == time(10, 30)  # neither fits: business rule


def test_strict_times_ignore_bare_hours() -> None:
    assert parse_time("a table for four tomorrow at seven", strict=True) == time(7, 0)
    assert parse_time("tuesday ten thirty", strict=True) == time(10, 30)
    assert parse_time("four", strict=True) is None
    assert parse_time("i'd like a cleaning", strict=True) is None


# --- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my name is maria lopez", "Maria Lopez"),
        ("it's john smith", "John Smith"),
        ("this is anna", "Anna"),
        ("maria lopez", "Maria Lopez"),
        ("um yes it's maria lopez please", "Maria Lopez"),
        ("it's under maria lopez", "Maria Lopez"),
        ("the name is o'brien", "O'Brien"),
        ("Maria-José García", "Maria-José García"),  # typed text may have accents
        ("jean-luc picard", "Jean-Luc Picard"),
    ],
)
def test_names(text: str, expected: str | None) -> None:
    assert parse_name(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "yes", "i want to book an appointment", "what", "tuesday", "can i speak to a person", "um", "12345",
     "my name is", "a b c d e f"],
)  # fmt: skip
def test_not_names(text: str) -> None:
    assert parse_name(text) is None


def test_strict_names_need_a_cue() -> None:
    assert parse_name("my name is maria and i'd like a table", strict=True) == "Maria"
    assert parse_name("table for two under the name of kim", strict=True) == "Kim"
    assert parse_name("maria lopez", strict=True) is None
    assert parse_name("it's a cleaning", strict=True) is None


# --- choices ---------------------------------------------------------------------------------------------

SERVICES = {
    "cleaning": ["cleaning", "clean", "hygiene"],
    "checkup": ["check up", "checkup", "exam"],
    "emergency": ["emergency", "toothache"],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i'd like to book a cleaning please", "cleaning"),
        ("cleanings", "cleaning"),
        ("a check up", "checkup"),
        ("a check-up", "checkup"),
        ("just a checkup", "checkup"),
        ("i have a terrible toothache", "emergency"),
        ("an exam", "checkup"),
        ("a cleaning and an exam", None),  # two choices: ask again
        ("a filling", None),
        ("", None),
        ("examination", None),  # whole words only
    ],
)
def test_choices(text: str, expected: str | None) -> None:
    assert parse_choice(text, SERVICES) == expected


# --- booking ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b three k m seven", "AB3KM7"),
        ("alpha bravo 3 kilo mike 7", "AB3KM7"),
        ("my booking id is q w seven e r t", "QW7ERT"),
        ("b as in bravo double k seven m n", "BKK7MN"),
        ("m for mike n for november two", "MN2"),
        ("AB3KM7", "AB3KM7"),
        ("it's ab3 km7", "AB3KM7"),
    ],
)
def test_booking_ids(text: str, expected: str) -> None:
    assert parse_booking_id(text) == expected


@pytest.mark.parametrize("text", ["", "i don't know", "a b", "the booking please"])
def test_not_booking_ids(text: str) -> None:
    assert parse_booking_id(text) is None


def test_strict_booking_id_reads_only_after_a_cue() -> None:
    assert parse_booking_id("cancel booking a b three k m seven", strict=True) == "AB3KM7"
    assert parse_booking_id("a b three k m seven", strict=True) is None


# --- offers ----------------------------------------------------------------------------------------------

LABELS = ["Tuesday, March 10 at 09:00", "Tuesday, March 10 at 10:30", "Wednesday, March 11 at 14:00"]
VALUES = ["2026-03-10T09:00", "2026-03-10T10:30", "2026-03-11T14:00"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the first one", 0),
        ("first", 0),
        ("the second please", 1),
        ("the third one", 2),
        ("the last one", 2),
        ("the earliest", 0),
        ("number two", 1),
        ("option three", 2),
        ("ten thirty", 1),
        ("10:30", 1),
        ("the one at nine", 0),
        ("two pm", 2),
        ("two", 2),  # 14:00 (business hours), matching the third
        ("wednesday", 2),
        ("wednesday works", 2),
    ],
)
def test_pick_option(text: str, expected: int) -> None:
    assert pick_option(text, LABELS, VALUES) == expected


@pytest.mark.parametrize("text", ["", "the fifth one", "eleven", "tuesday", "whatever", "number four"])
def test_pick_option_unclear(text: str) -> None:
    assert pick_option(text, LABELS, VALUES) is None


def test_pick_option_with_the_same_time_on_two_days_needs_the_day() -> None:
    labels = ["Tuesday at 09:00", "Wednesday at 09:00"]
    values = ["2026-03-10T09:00", "2026-03-11T09:00"]
    assert pick_option("nine", labels, values) is None
    assert pick_option("wednesday", labels, values) == 1
    assert pick_option("anything", [], []) is None


def test_option_time_reads_values_and_labels() -> None:
    assert option_time("2026-03-10T09:30", "") == time(9, 30)
    assert option_time("x", "at 2 PM") == time(14, 0)
    assert option_time("x", "whenever") is None


# --- spoken forms ----------------------------------------------------------------------------------------


def test_spoken_forms() -> None:
    assert spoken_date(date(2026, 11, 24)) == "Tuesday, November 24"
    assert spoken_time(time(10, 30)) == "10:30 AM"
    assert spoken_time(time(14, 5)) == "2:05 PM"
    assert spoken_time(time(12, 0)) == "noon"
    assert spoken_time(time(0, 0)) == "midnight"
    assert spoken_time(time(0, 30)) == "12:30 AM"
    assert spell("ab3km7") == "A B 3 K M 7"
    assert spoken_digits("5551234") == "5 5 5 1 2 3 4"
    assert spoken_digits("+1312") == "plus 1 3 1 2"
