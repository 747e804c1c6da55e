"""Intent matching: paraphrases find their intent, near misses and noise find none, ties are stable."""

from __future__ import annotations

import pytest

from ivr.dialogue.intents import STRONG, THRESHOLD, content_stems, match_intent, score, stem
from ivr.flows.offline import Intent


def intent(id: str, examples: list[str], keywords: list[str] | None = None) -> Intent:
    return Intent.model_validate({"id": id, "examples": examples, "keywords": keywords or []})


BOOK = intent(
    "book",
    ["I'd like to book an appointment", "can I make an appointment", "I need a cleaning"],
    ["book", "appointment", "schedule"],
)
CANCEL = intent("cancel", ["I want to cancel my appointment", "cancel my booking"], ["cancel"])
PERSON = intent(
    "person", ["can I speak to a person", "put me through to the front desk"], ["person", "front desk"]
)
HOURS = intent("hours", ["what are your opening hours", "when are you open"])
GOODBYE = intent("goodbye", ["goodbye", "no thanks goodbye", "that's all thank you"], ["bye", "goodbye"])
ALL = [BOOK, CANCEL, PERSON, HOURS, GOODBYE]


def test_stems_are_consistent() -> None:
    assert {stem(w) for w in ("book", "booking", "booked", "books")} == {"book"}
    assert {stem(w) for w in ("cancel", "cancelled", "canceling", "cancellation")} == {"cancel"}
    assert {stem(w) for w in ("schedule", "scheduled", "scheduling")} == {"schedul"}
    assert {stem(w) for w in ("appointment", "appointments")} == {"appoint"}
    assert stem("need") == "need" and stem("yes") == "yes" and stem("bye") == "bye"
    assert content_stems("Hi, I'd like to book a cleaning, please!") == ("book", "clean")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi i'd like to book a cleaning please", "book"),
        ("I'd like to make an appointment", "book"),
        ("could I schedule a visit", "book"),
        ("we need to get a booking for my son", "book"),
        ("i need to cancel my appointment", "cancel"),
        ("please cancel it", "cancel"),
        ("my booking needs cancelling", "cancel"),
        ("can i talk to a person", "person"),
        ("front desk please", "person"),
        ("what are your hours", "hours"),
        ("when do you open", "hours"),
        ("no thanks goodbye", "goodbye"),
        ("bye", "goodbye"),
        ("ok bye bye", "goodbye"),
    ],
)
def test_paraphrases_match(text: str, expected: str) -> None:
    found = match_intent(text, ALL)
    assert found is not None and found.intent.id == expected, (text, found)


@pytest.mark.parametrize(
    "text", ["", "um", "the weather is lovely today", "do you sell bicycles", "hello", "my dog is called rex"]
)
def test_near_misses_and_noise_match_nothing(text: str) -> None:
    assert match_intent(text, ALL) is None


def test_scores_are_in_range_and_keywords_lift_them() -> None:
    assert score("schedule", BOOK) == pytest.approx(0.5)  # a keyword found in no example
    assert score("book", BOOK) == pytest.approx(0.5 + 0.5 * 2 / 3)  # keyword, and half an example
    assert score("I'd like to book an appointment", BOOK) == pytest.approx(1.0)
    assert score("make an appointment", BOOK) == pytest.approx(1.0)  # example {make, appoint} + keyword
    assert 0.0 <= score("the weather", BOOK) < THRESHOLD
    without_keywords = intent("book", list(BOOK.examples))
    assert score("book a cleaning", without_keywords) < score("book a cleaning", BOOK)


def test_ties_go_to_the_earlier_intent_and_matching_is_deterministic() -> None:
    first = intent("first", ["open the door"])
    second = intent("second", ["open the door"])
    assert match_intent("open the door", [first, second]).intent.id == "first"  # type: ignore[union-attr]
    assert match_intent("open the door", [second, first]).intent.id == "second"  # type: ignore[union-attr]
    results = {match_intent("i need to cancel my booking", ALL).intent.id for _ in range(5)}  # type: ignore[union-attr]
    assert results == {"cancel"}


def test_cancel_beats_book_when_both_words_are_present() -> None:
    found = match_intent("i want to cancel my appointment", [BOOK, CANCEL])
    assert found is not None and found.intent.id == "cancel"
    assert found.score > score("i want to cancel my appointment", BOOK)


def test_threshold_can_be_raised_for_switching() -> None:
    assert match_intent("front desk please", ALL, threshold=STRONG) is not None
    assert match_intent("no", ALL) is not None  # close to "no thanks goodbye" ...
    assert match_intent("no", ALL, threshold=STRONG) is None  # ... but not strongly enough to switch
