"""The replayable conversation (sans-I/O): item order, what the caller heard, drops, bounds."""

from __future__ import annotations

import random

import pytest

from ivr.call.conversation import MAX_ENTRY_CHARS, Conversation, heard_prefix
from ivr.realtime import events as ev


def _answer(conv: Conversation, item_id: str, text: str, *, done: bool = True, pieces: int = 4) -> None:
    conv.on_event(ev.OutputItemAdded("resp_1", item_id, "message", "assistant", None))
    step = max(1, len(text) // pieces)
    for i in range(0, len(text), step):
        conv.on_event(ev.AgentTranscriptDelta("resp_1", item_id, text[i : i + step]))
    if done:
        conv.on_event(ev.AgentTranscriptDone("resp_1", item_id, text))


def test_a_late_transcription_keeps_its_place_in_item_order() -> None:
    conv = Conversation()
    _answer(conv, "a0", "Hello, how can I help?")
    conv.on_event(ev.InputCommitted("u1", previous_item_id="a0"))
    _answer(conv, "a1", "We open at nine.")
    conv.on_event(ev.UserTranscript("u1", "When do you open?"))  # arrives after the answer
    assert conv.replay() == [
        ("assistant", "Hello, how can I help?"),
        ("user", "When do you open?"),
        ("assistant", "We open at nine."),
    ]


def test_item_added_moves_a_known_item_after_the_one_it_names() -> None:
    conv = Conversation()
    conv.on_event(ev.InputCommitted("u1", previous_item_id=None))
    conv.on_event(ev.UserTranscript("u1", "first"))
    conv.on_event(ev.InputCommitted("u2", previous_item_id="u1"))
    conv.on_event(ev.UserTranscript("u2", "third"))
    _answer(conv, "a1", "second")
    conv.on_event(ev.ItemAdded("a1", "u1", "message", "assistant"))
    assert [text for _, text in conv.replay()] == ["first", "second", "third"]
    conv.on_event(ev.ItemAdded("unknown", "u1", "message", "user"))  # unknown items are not invented
    assert len(conv) == 3


def test_a_barge_in_keeps_what_was_heard_ending_on_a_word() -> None:
    conv = Conversation()
    text = "one two three four five six seven eight nine ten"
    _answer(conv, "a1", text)
    conv.cut("a1", heard_ms=500, sent_ms=1000)
    heard = conv.replay()[0][1]
    assert text.startswith(heard) and heard.endswith("five") and len(heard) <= len(text) // 2


def test_a_barge_in_before_the_transcript_uses_the_text_known_at_the_cut() -> None:
    conv = Conversation()
    _answer(conv, "a1", "alpha beta gamma delta", done=False)  # all deltas so far, 1000 ms sent
    conv.cut("a1", heard_ms=250, sent_ms=1000)
    conv.on_event(ev.AgentTranscriptDone("resp_1", "a1", "alpha beta gamma delta epsilon zeta eta theta"))
    assert conv.replay() == [("assistant", "alpha")]


def test_a_drop_keeps_the_answer_as_far_as_it_came_and_says_so() -> None:
    conv = Conversation()
    _answer(conv, "a0", "Hello.")
    conv.on_event(ev.OutputItemAdded("resp_2", "a1", "message", "assistant", None))
    conv.on_event(ev.AgentTranscriptDelta("resp_2", "a1", "We open at nine and "))
    assert conv.drop("resp_2") == "We open at nine and "
    assert conv.replay()[-1] == ("assistant", "We open at nine and ")
    assert conv.drop("resp_2") is None  # nothing unfinished any more


def test_a_drop_reports_only_what_the_current_response_was_saying() -> None:
    conv = Conversation()
    _answer(conv, "a1", "Our hours are", done=False)  # resp_1 ended without its final transcript
    conv.on_event(ev.InputCommitted("u1", previous_item_id="a1"))
    conv.on_event(ev.UserTranscript("u1", "Hello?"))
    assert conv.drop("resp_2") is None  # resp_2 had said nothing yet: no stale text from resp_1
    assert conv.replay() == [("assistant", "Our hours are"), ("user", "Hello?")]


def test_a_cancelled_answer_nobody_heard_is_not_replayed() -> None:
    conv = Conversation()
    _answer(conv, "a0", "Hello.")
    _answer(conv, "a1", "We open at nine", done=False)
    assert conv.answers_of("resp_1") == ["a0", "a1"]
    conv.cut("a1", heard_ms=0, sent_ms=0)  # cancelled before any of its audio was marked
    conv.on_event(ev.AgentTranscriptDone("resp_1", "a1", "We open at nine and close at five."))
    assert conv.replay() == [("assistant", "Hello.")]


def test_calls_are_replayed_only_with_their_outputs() -> None:
    conv = Conversation()
    conv.append(("call", "c1", "lookup", '{"q": 1}'))
    conv.append(("output", "c1", '{"ok": true}'))
    conv.append(("call", "c2", "lookup", '{"q": 2}'))  # still running at the drop
    assert conv.replay() == [("call", "c1", "lookup", '{"q": 1}'), ("output", "c1", '{"ok": true}')]


def test_history_stays_bounded_and_a_call_leaves_with_its_output() -> None:
    conv = Conversation(max_items=20, max_chars=2_000)
    rng = random.Random(3)
    for n in range(5_000):
        kind = rng.choice(["user", "answer", "tool"])
        if kind == "user":
            conv.on_event(ev.InputCommitted(f"u{n}"))
            conv.on_event(ev.UserTranscript(f"u{n}", "x" * rng.randint(1, 300)))
        elif kind == "answer":
            _answer(conv, f"a{n}", "y" * rng.randint(1, 300))
        else:
            conv.append(("call", f"c{n}", "tool", "{}"))
            conv.append(("output", f"c{n}", "z" * rng.randint(1, 100)))
        entries = conv.entries()
        assert len(entries) <= 20
        assert sum(len(e.text) + sum(map(len, e.parts)) for e in entries) <= 2_000
    replay = conv.replay()
    calls = [e[1] for e in replay if e[0] == "call"]
    outputs = [e[1] for e in replay if e[0] == "output"]
    assert calls == outputs


def test_one_huge_text_is_capped() -> None:
    conv = Conversation()
    conv.append(("user", "w" * (MAX_ENTRY_CHARS * 3)))
    assert len(conv.replay()[0][1]) == MAX_ENTRY_CHARS
    with pytest.raises(ValueError, match="use"):
        conv.append(("bogus", "x"))


@pytest.mark.parametrize(
    ("heard", "total", "expected"),
    [
        (0, 1000, ""),
        (1000, 1000, "ab cd ef"),
        (2000, 1000, "ab cd ef"),
        (500, 1000, "ab"),
        (1, 0, "ab cd ef"),
    ],
)
def test_heard_prefix(heard: int, total: int, expected: str) -> None:
    assert heard_prefix("ab cd ef", heard, total) == expected


def test_final_error_codes() -> None:
    quota = ev.ErrorEvent("insufficient_quota", "insufficient_quota", "no quota", None, None)
    busy = ev.ErrorEvent("invalid_request_error", "conversation_already_has_active_response", "x", None, None)
    assert quota.final and not busy.final


@pytest.mark.parametrize(
    ("text", "heard", "total", "expected"),
    [
        ("営業時間は九時から五時までです。", 500, 1000, "営業時間は九時か"),  # no spaces: any character
        ("我们的营业时间是九点到五点。", 500, 1000, "我们的营业时间"),
        ("เราเปิดเก้าโมงถึงห้าโมงเย็น", 500, 1000, "เราเปิดเก้าโม"),  # Thai
        ("เปิด", 500, 1000, "เปิ"),  # a vowel mark stays with its letter
        ("こんにちは。営業時間は九時から五時までです", 300, 1000, "こんにちは。"),
        ("Hello,world of ours", 450, 1000, "Hello,"),  # a word not wholly heard ends at punctuation
        ("Hello world", 200, 1000, ""),  # the first word not wholly heard
    ],
)
def test_heard_prefix_without_spaces_between_words(text: str, heard: int, total: int, expected: str) -> None:
    assert heard_prefix(text, heard, total) == expected


def test_unanswered_says_whether_an_answer_is_still_owed() -> None:
    conv = Conversation()
    assert conv.unanswered()  # before the greeting
    _answer(conv, "a0", "Hello.")
    assert not conv.unanswered()
    conv.on_event(ev.InputCommitted("u1", previous_item_id="a0"))
    conv.on_event(ev.UserTranscript("u1", "When do you open?"))
    assert conv.unanswered()
    conv.on_event(ev.OutputItemAdded("resp_2", "a1", "message", "assistant", None))  # no text yet
    assert conv.unanswered()
    conv.append(("call", "c1", "hours", "{}"))
    assert not conv.unanswered()  # the tool runner asks for the answer when the tool is done
    conv.append(("output", "c1", '{"open": "9-17"}'))
    assert conv.unanswered()
    _answer(conv, "a2", "We open at nine.")
    assert not conv.unanswered()
