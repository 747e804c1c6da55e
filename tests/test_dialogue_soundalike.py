"""Weekdays heard as other words (issue 10): "to z would work for me" is read as Tuesday, then read back.

The heard texts are what Whisper base wrote for weekdays said by the speech set's voices on the phone path
(flite slt "Tuesday would work for me" → "2v would work for me", espeak-ng "Wednesday the ninth" → "when they
find"). Sentences that do not sound like a weekday must stay as they are: a guess is read back to the caller,
and a wrong one costs them a "no".
"""

from __future__ import annotations

import pytest

from ivr.dialogue.soundalike import phone_distance, weekday_sounding
from ivr.flows import FlowSet
from tests.support import dialogues
from tests.support.dialogues import calls, dental_asking_day, says

flows = dialogues.flows


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("to z would work for me", "tuesday would work for me"),
        ("2v would work for me", "tuesday would work for me"),
        ("to thee with deepened", "tuesday with deepened"),
        ("cow about to see", "cow about tuesday"),
        ("is wendy any good", "is wednesday any good"),
        ("when they find", "wednesday find"),
        ("how about third day", "how about thursday"),
        ("i'm freelyan mandi", "i'm freelyan monday"),
    ],
)
def test_a_weekday_heard_as_other_words_is_read_as_that_weekday(heard: str, meant: str) -> None:
    assert weekday_sounding(heard) == meant


@pytest.mark.parametrize(
    "heard",
    [
        "ten thirty",  # a time: number words alone are never a weekday
        "maria gonzalez",
        "as soon as possible",
        "whenever you have something",
        "i don't know",
        "next week please",
        "the earliest one is fine",
        "yes please",
        "whom they would work for me",  # too far from any weekday to guess
        "tuesday or wednesday",  # already a weekday: nothing to respell
        "what time do you close today",  # "today" names the day ("to day" would sound like Tuesday)
    ],
)
def test_words_that_do_not_sound_like_one_weekday_are_left_alone(heard: str) -> None:
    assert weekday_sounding(heard) is None


def test_a_word_that_merely_sounds_like_a_weekday_is_guessed_and_so_read_back() -> None:
    """The price of guessing: nonsense that sounds like a weekday is taken for it. The dialogue reads every
    guess back ("Monday the 9th, right?"), so the caller's "no" undoes it."""
    assert weekday_sounding("purple monkey dishwasher") == "purple monday dishwasher"


def test_phone_distance_charges_less_for_a_sound_of_the_same_kind() -> None:
    tuesday = ("T", "UW", "Z", "D", "EY")
    assert phone_distance(tuesday, tuesday) == 0.0
    voiceless = phone_distance(("T", "UW", "S", "D", "EY"), tuesday)  # s for z: both fricatives
    nasal = phone_distance(("T", "UW", "N", "D", "EY"), tuesday)  # n for z: another kind
    vowel = phone_distance(("T", "IY", "Z", "D", "EY"), tuesday)
    dropped = phone_distance(("T", "UW", "Z", "EY"), tuesday)
    assert vowel < voiceless < dropped < nasal


def test_a_weekday_heard_as_other_words_is_read_back_then_taken(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    assert says(d.heard("to thee with deepened", 0.62)) == ["Tuesday the 10th, right?"]
    [find] = calls(d.heard("yes", 0.5))
    assert find.arguments == {"action": "find_slots", "service": "cleaning", "date": "2026-03-10"}


def test_a_close_runner_up_that_sounds_like_a_weekday_is_used(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    heard = d.heard("how about serenzy", 0.33, [("cow and out sir z", 0.31)])
    assert says(heard) == ["Thursday the 12th, right?"]


def test_a_wrong_guess_denied_asks_for_the_day_again(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    assert says(d.heard("is wendy any good", 0.5)) == ["Wednesday the 11th, right?"]
    again = d.heard("no", 0.9)
    assert says(again) == ["Which day would suit you?"] and not calls(again)
