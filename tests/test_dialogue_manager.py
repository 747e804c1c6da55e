"""The dialogue manager driven through whole calls, with tool outputs shaped exactly like the real tools'.

The shipped dental flow runs the lead's demo script end to end (lookup → booking → offer → confirm →
approval → read-back → wrap-up → goodbye); smaller flows written here pin down errors, denials, re-asks,
give-up, barge-in, stage moves and the built-in behaviour of flows without an ``offline`` section.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ivr.dialogue import CallTool, Dialogue, Say
from ivr.dialogue.manager import Action
from ivr.flows import Flow, FlowSet, parse_flow
from ivr.tools import calendar as cal

ROOT = Path(__file__).resolve().parent.parent
CHICAGO = ZoneInfo("America/Chicago")
TODAY = date(2026, 3, 5)  # a Thursday
OPEN = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)  # 09:00 in Chicago: the practice is open
CLOSED = datetime(2026, 3, 8, 15, 0, tzinfo=UTC)  # a Sunday
MARIA = "+1 312-555-0101"


@pytest.fixture(scope="module")
def dental() -> Flow:
    flow = FlowSet.load(ROOT / "flows").get("dental-clinic")
    assert flow is not None
    return flow


def dialogue(flow: Flow, *, now: datetime = OPEN, caller: str = MARIA, stage: str | None = None) -> Dialogue:
    context = flow.call_context(caller_number=caller, called_number="+15551230001", call_sid="CA1", now=now)
    return Dialogue(flow, stage=stage, context=context, today=now.astimezone(flow.zone).date())


def flow_from(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text), "test.yaml").flow


def says(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Say)]


def only_call(actions: list[Action]) -> CallTool:
    calls = [a for a in actions if isinstance(a, CallTool)]
    assert len(calls) == 1, actions
    return calls[0]


# --- outputs as the real tools return them -------------------------------------------------------------


def out(data: dict[str, Any]) -> str:
    return json.dumps(data)


def patient(first: str = "Maria", last: str = "Gonzalez") -> str:
    return out(
        {
            "found": True,
            "first_name": first,
            "last_name": last,
            "last_visit": "2025-11-03",
            "dentist": "Dr. Patel",
        }
    )


NOT_FOUND = out({"found": False})
MOVED = out({"status": "ok", "note": "Moving on; follow the updated instructions from now on."})
ENDING = out({"status": "ending", "note": "Say a short goodbye now; the line will close after it plays."})


def free_slots(service: str, day: date, *times: str) -> str:
    starts = [datetime.combine(day, datetime.strptime(t, "%H:%M").time(), tzinfo=CHICAGO) for t in times]
    result: dict[str, Any] = {
        "service": service,
        "duration_minutes": 60,
        "timezone": "America/Chicago",
        "slots": [{"start": cal.format_local(s), "spoken": cal.spoken(s)} for s in starts],
    }
    if not starts:
        result["note"] = f"No free time for {service} on {day.isoformat()}. Offer another day or a transfer."
    return out(result)


def booked(start: str, booking_id: str = "AB3KM7", name: str = "Maria Gonzalez") -> str:
    moment = datetime.fromisoformat(start).replace(tzinfo=CHICAGO)
    return out(
        {
            "status": "booked",
            "booking_id": booking_id,
            "service": "cleaning",
            "start": start,
            "end": cal.format_local(moment.replace(hour=moment.hour + 1)),
            "spoken": cal.spoken(moment),
            "name": name,
            "note": "Tell the caller the time and spell out the booking id (needed to change or cancel).",
        }
    )


PENDING = out(
    {
        "status": "pending_approval",
        "message": "Not done yet: this action needs a person's approval (New bookings and cancellations are "
        "confirmed by the front desk). Request ap_7 is waiting for an operator, for up to 120 seconds.",
        "approval_id": "ap_7",
    }
)


def error(kind: str, message: str) -> str:
    return out({"error": {"type": kind, "message": message}})


# --- the demo call -------------------------------------------------------------------------------------


def test_the_dental_demo_call_end_to_end(dental: Flow) -> None:
    d = dialogue(dental)
    assert d.stage == "reception" and d.waiting == "caller"
    assert (
        d.last_prompt
        == "Thanks for calling Bright Smile Dental, this is the virtual assistant. How can I help?"
    )

    lookup = only_call(d.start())
    assert lookup == CallTool("local_1", "find_patient", {"key": MARIA})
    assert d.waiting == "tool"
    assert d.tool_result("local_1", patient()) == [Say("Hi Maria, good to hear from you.")]
    assert d.waiting == "caller"

    moved = d.heard("hi i'd like to book a cleaning please", 0.91)
    assert moved == [CallTool("local_2", "start_booking", {"reason": "offline dialogue: appointments"})]
    # The stage changes when the transition's result arrives; the request is heard again in the new stage.
    assert d.stage == "reception"
    assert d.tool_result("local_2", MOVED) == [Say("Which day would suit you?")]
    assert d.stage == "booking" and d.waiting == "caller"

    find = d.heard("tuesday please", 0.8)
    assert find == [
        CallTool(
            "local_3", "appointments", {"action": "find_slots", "service": "cleaning", "date": "2026-03-10"}
        )
    ]
    offer = d.tool_result(
        "local_3", free_slots("cleaning", date(2026, 3, 10), "09:00", "10:30", "14:00", "15:00")
    )
    assert says(offer) == ["On Tuesday, March 10 I have 9:00 AM, 10:30 AM or 2:00 PM. Which would suit you?"]

    confirm = d.heard("the first one", 0.85)
    assert says(confirm) == [
        "So that's a cleaning on Tuesday, March 10 at 9:00 AM for Maria Gonzalez. Shall I book it?"
    ]

    book = only_call(d.heard("yes", 0.95))
    assert book == CallTool(
        "local_4",
        "appointments",
        {"action": "book", "service": "cleaning", "start": "2026-03-10T09:00", "name": "Maria Gonzalez"},
    )
    assert d.tool_result("local_4", PENDING) == []  # the runtime plays the hold phrase
    assert d.waiting == "approval"
    assert d.heard("hello are you still there", 0.9) == [Say("Still checking, please hold on.")]

    done = d.approval_decided("appointments", True, booked("2026-03-10T09:00"), "")
    assert done == [
        Say("You're booked for Tuesday, March 10 at 9:00 AM. Your booking id is A B 3 K M 7."),
        CallTool("local_5", "booking_done", {"reason": "offline dialogue: book"}),
    ]
    assert d.tool_result("local_5", MOVED) == [Say("Is there anything else I can help you with?")]
    assert d.stage == "wrap_up"

    bye = d.heard("no thanks goodbye", 0.9)
    assert bye == [
        Say("Thank you for calling Bright Smile Dental. Have a lovely day. Goodbye!"),
        CallTool("local_6", "end_call", {"reason": "offline dialogue: done"}),
    ]
    assert d.waiting == "ended"
    assert d.tool_result("local_6", ENDING) == []
    assert d.waiting == "ended" and d.heard("hello", 0.9) == []
    assert d.results["caller"]["first_name"] == "Maria"


def test_tomorrow_and_a_time_are_understood_too(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i need a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    find = only_call(d.heard("tomorrow please", 0.9))
    assert find.arguments["date"] == "2026-03-06"
    d.tool_result(find.call_id, free_slots("cleaning", date(2026, 3, 6), "09:00", "10:30", "13:00"))
    confirm = d.heard("ten thirty", 0.9)
    assert says(confirm) == [
        "So that's a cleaning on Friday, March 6 at 10:30 AM for Maria Gonzalez. Shall I book it?"
    ]


def test_a_time_said_with_the_day_picks_the_offer_without_asking(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i'd like to book a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    find = only_call(d.heard("tuesday at ten thirty", 0.9))
    confirm = d.tool_result(find.call_id, free_slots("cleaning", date(2026, 3, 10), "09:00", "10:30"))
    assert says(confirm) == [
        "So that's a cleaning on Tuesday, March 10 at 10:30 AM for Maria Gonzalez. Shall I book it?"
    ]


def test_an_unknown_caller_is_asked_for_a_name(dental: Flow) -> None:
    d = dialogue(dental, caller="+15550000000")
    d.start()
    assert d.tool_result("local_1", NOT_FOUND) == []  # no greeting by name, nothing invented
    d.heard("can i book a check up", 0.9)
    d.tool_result("local_2", MOVED)
    find = only_call(d.heard("the twenty first", 0.9))
    assert find.arguments == {"action": "find_slots", "service": "checkup", "date": "2026-03-21"}
    offer = d.tool_result(find.call_id, free_slots("checkup", date(2026, 3, 21)))  # a Saturday: nothing
    assert says(offer) == [
        "Sorry, there's nothing free on Saturday, March 21. Which other day would suit you?"
    ]
    find = only_call(d.heard("monday the twenty third", 0.9))
    assert find.arguments["date"] == "2026-03-23"
    d.tool_result(find.call_id, free_slots("checkup", date(2026, 3, 23), "08:00", "08:30"))
    assert says(d.heard("the second one", 0.9)) == ["May I have your full name, please?"]
    assert says(d.heard("um it's john smith", 0.9)) == [
        "So that's a checkup on Monday, March 23 at 8:30 AM for John Smith. Shall I book it?"
    ]


def test_no_at_the_confirmation_clears_the_day_and_time(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i'd like a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    d.heard("tuesday", 0.9)
    d.tool_result("local_3", free_slots("cleaning", date(2026, 3, 10), "09:00"))
    d.heard("nine", 0.9)
    again = only_call(d.heard("no, make it wednesday", 0.9))
    assert again.arguments == {"action": "find_slots", "service": "cleaning", "date": "2026-03-11"}
    confirm = d.tool_result(again.call_id, free_slots("cleaning", date(2026, 3, 11), "13:00", "14:00"))
    assert says(confirm) == ["On Wednesday, March 11 I have 1:00 PM or 2:00 PM. Which would suit you?"]


def test_a_booking_turned_down_twice_is_dropped_not_handed_over(dental: Flow) -> None:
    """Two plain no's to "Shall I book it?" mean the caller does not want it: nothing is booked, nobody is
    put through, and the stage prompt lets them start again (one value read back and denied twice still
    gives up)."""
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i'd like a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    ids = iter(range(3, 10))
    for _ in range(2):
        find = only_call(d.heard("tuesday", 0.9))
        assert find.call_id == f"local_{next(ids)}"
        d.tool_result(find.call_id, free_slots("cleaning", date(2026, 3, 10), "09:00", "10:30"))
        assert says(d.heard("the first one", 0.9))[-1].endswith("Shall I book it?")
        if _ == 0:
            assert says(d.heard("no", 0.9)) == ["Which day would suit you?"]
    dropped = d.heard("no", 0.9)
    assert dropped == [
        Say("All right, I'll leave that, then."),
        Say("Would you like to book a new appointment, or cancel one?"),
    ]
    assert d.waiting == "caller" and d.stage == "booking"
    again = d.heard("i'd like to book a cleaning", 0.9)
    assert says(again) == ["Which day would suit you?"]  # the request can start over


# --- approvals and errors ------------------------------------------------------------------------------


def _to_booking_confirmation(d: Dialogue) -> None:
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i'd like to book a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    d.heard("tuesday", 0.9)
    d.tool_result("local_3", free_slots("cleaning", date(2026, 3, 10), "09:00", "10:30"))
    d.heard("the first one", 0.9)
    assert only_call(d.heard("yes please", 0.9)).call_id == "local_4"


def test_a_denied_booking_is_not_read_back(dental: Flow) -> None:
    d = dialogue(dental)
    _to_booking_confirmation(d)
    assert d.tool_result("local_4", PENDING) == []
    denied = d.approval_decided("appointments", False, None, "The front desk is fully booked that morning.")
    assert denied == [
        Say("I'm sorry, that wasn't approved, so I haven't done it."),
        Say("Would you like to book a new appointment, or cancel one?"),
    ]
    assert d.stage == "booking" and d.waiting == "caller"
    assert d.approval_decided("appointments", True, booked("2026-03-10T09:00"), "") == []  # nothing pending


def test_a_denial_straight_from_the_gate_is_a_denial(dental: Flow) -> None:
    d = dialogue(dental)
    _to_booking_confirmation(d)
    refused = out(
        {"status": "denied", "message": "Not done: an operator denied this action.", "approval_id": "a"}
    )
    assert (
        says(d.tool_result("local_4", refused))[0] == "I'm sorry, that wasn't approved, so I haven't done it."
    )
    assert d.waiting == "caller"


def test_a_tool_error_says_on_error_and_skips_the_remaining_steps(dental: Flow) -> None:
    d = dialogue(dental)
    _to_booking_confirmation(d)
    taken = error("slot_taken", "Tuesday, March 10 at 09:00 was just taken by someone else. Call find_slots.")
    assert d.tool_result("local_4", taken) == [
        Say("Sorry, I couldn't book that time; it may have just been taken."),
        Say("Would you like to book a new appointment, or cancel one?"),
    ]
    assert d.stage == "booking" and d.waiting == "caller"


def test_the_error_message_can_be_quoted_and_unknown_call_ids_are_ignored() -> None:
    flow = flow_from(
        """\
        id: t
        instructions: hi
        tools:
          - type: transfer_to_human
            name: transfer_to_human
            description: "Transfer."
            number: "+15550009999"
        offline:
          intents:
            - id: person
              keywords: [person]
              steps:
                - tool: transfer_to_human
                  on_error: "Sorry: {{ error.message }}"
        """
    )
    d = dialogue(flow)
    call = only_call(d.heard("a person please", 0.9))
    assert d.waiting == "ended"  # a transfer ends the dialogue ...
    assert d.tool_result("local_99", error("x", "y")) == []
    failed = d.tool_result(call.call_id, error("transfer_unavailable", "No one can take it."))
    assert failed == [Say("Sorry: No one can take it.")]  # ... unless it fails
    assert d.waiting == "caller"


def test_a_missing_value_fails_the_step_instead_of_leaving_a_hole() -> None:
    flow = flow_from(
        """\
        id: t
        instructions: hi
        tools:
          - type: lookup
            name: find
            description: "Find."
            dataset: d
            source: d.csv
            key_field: k
            fields: [first_name]
        offline:
          on_start:
            - tool: find
              arguments: {key: "{{ caller_number }}"}
              as: caller
            - say: "Hello {{ caller.first_name }}!"
            - say: "This is never said."
        """
    )
    d = dialogue(flow)
    d.start()
    assert d.tool_result("local_1", NOT_FOUND) == [Say("Sorry, I couldn't find that.")]
    assert d.waiting == "caller"
    d = dialogue(flow)
    d.start()
    assert d.tool_result("local_1", out({"found": True, "first_name": ""})) == [
        Say("Sorry, I couldn't find that.")
    ]


def test_an_optional_lookup_that_fails_is_silent(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    unavailable = error("unavailable", "Records cannot be looked up right now.")
    assert d.tool_result("local_1", unavailable) == []
    assert d.waiting == "caller" and "caller" not in d.results


# --- re-asking, giving up, barge-in --------------------------------------------------------------------


def test_low_confidence_is_asked_again_then_the_flow_gives_up(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    assert d.heard("mumble", 0.2) == [Say("Sorry, I didn't catch that. Could you say it again?")]
    assert d.heard("", 0.9) == [  # the last try before giving up also offers the keypad (issue 10)
        Say("Sorry, the line is a little unclear. Could you repeat that?"),
        Say("If it's easier, press 0 on your keypad for the front desk."),
    ]
    assert d.last_prompt == "Hi Maria, good to hear from you."  # re-asks are not what "repeat" repeats
    giveup = d.heard("mumble", 0.1)  # the third failure in a row: max_reasks is 2
    assert giveup == [
        Say("I'm sorry, I'm having trouble understanding. Let me put you through to the front desk."),
        CallTool("local_2", "transfer_to_human", {"reason": "offline dialogue"}),
    ]
    assert d.waiting == "ended"


def test_giving_up_after_hours_offers_the_keypad_then_says_goodbye(dental: Flow) -> None:
    # Changed with issue 10: this test pinned the bug the issue reports (hanging up with "call us back during
    # opening hours", which says nothing about why the call failed). After hours the flow now offers the
    # keypad and another try; only a second run of failures ends the call.
    d = dialogue(dental, now=CLOSED)
    d.start()
    d.tool_result("local_1", patient())
    assert len(d.heard("the weather is lovely", 0.9)) == 1  # no_match, a failure
    assert says(d.heard("the weather is lovely", 0.9))[-1] == (
        "If it's easier, press 0 on your keypad for the front desk."
    )
    offer = d.heard("the weather is lovely", 0.9)
    assert says(offer) == [
        "I'm sorry, I'm having trouble understanding. You can press 0 to be put through to the front desk's "
        "line, or tell me in a few words: book, cancel, or opening hours."
    ]
    assert d.waiting == "caller" and not any(isinstance(a, CallTool) for a in offer)
    for _ in range(2):
        assert d.waiting == "caller" and len(d.heard("the weather is lovely", 0.9)) >= 1
    last = d.heard("the weather is lovely", 0.9)
    assert says(last) == [
        "I'm sorry I couldn't help you on this line. Please try again, or press 0 for the front desk. "
        "Goodbye."
    ]
    assert only_call(last).name == "end_call"
    assert not any("opening hours" in line for line in says(last))


def test_a_good_turn_resets_the_failure_count(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("mumble", 0.1)
    d.heard("mumble", 0.1)
    assert says(d.heard("what are your opening hours", 0.9))[0].startswith("We're open Monday to Thursday")
    d.heard("mumble", 0.1)
    d.heard("mumble", 0.1)
    assert d.waiting == "caller"  # two more failures are still re-asks


def test_an_unclear_answer_repeats_the_question(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i'd like to book a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    assert d.heard("whenever really", 0.9) == [
        Say("Sorry, I didn't quite get that."),
        Say("Which day would suit you?"),
    ]


def test_barge_in_forgives_one_failure(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.interrupted()
    assert d.interruptions == 1
    for _ in range(3):  # the first does not count, so three failures are still re-asks
        reply = d.heard("mumble", 0.1)
        assert reply and all(isinstance(a, Say) for a in reply) and d.waiting == "caller"
    giveup = d.heard("mumble", 0.1)
    assert only_call(giveup).name == "transfer_to_human"


def test_repeat_that_says_the_last_turn_again(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i need a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    d.heard("tuesday", 0.9)
    offer = says(d.tool_result("local_3", free_slots("cleaning", date(2026, 3, 10), "09:00", "10:30")))
    assert d.heard("sorry could you repeat that", 0.9) == [Say(offer[0])]
    assert d.heard("pardon", 0.9) == [Say(offer[0])]
    assert says(d.heard("ten thirty", 0.9))[0].startswith(
        "So that's a cleaning on Tuesday, March 10 at 10:30 AM"
    )


# --- intents, stages and the runtime -------------------------------------------------------------------


def test_another_intent_takes_over_while_a_name_is_asked(dental: Flow) -> None:
    d = dialogue(dental, caller="+15550000000")
    d.start()
    d.tool_result("local_1", NOT_FOUND)
    d.heard("book a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    d.heard("tuesday", 0.9)
    d.tool_result("local_3", free_slots("cleaning", date(2026, 3, 10), "09:00"))
    assert says(d.heard("the first one", 0.9)) == ["May I have your full name, please?"]
    transfer = d.heard("actually can i speak to a person", 0.9)
    assert transfer == [CallTool("local_4", "transfer_to_human", {"reason": "offline dialogue: front_desk"})]


def test_what_the_caller_says_during_a_tool_call_is_handled_afterwards(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    assert d.heard("hi i'd like to book a cleaning please", 0.9) == []  # the lookup is still running
    after = d.tool_result("local_1", patient())
    assert after == [
        Say("Hi Maria, good to hear from you."),
        CallTool("local_2", "start_booking", {"reason": "offline dialogue: appointments"}),
    ]


def test_a_keypad_stage_change_enters_the_stage(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    assert d.stage_changed("booking") == [Say("Would you like to book a new appointment, or cancel one?")]
    assert d.stage == "booking"
    assert d.stage_changed("booking") == []
    cancel = d.heard("i want to cancel booking a b three k m seven", 0.9)
    assert says(cancel) == ["Just to confirm: you'd like to cancel booking A B 3 K M 7?"]
    call = only_call(d.heard("yes", 0.9))
    assert call.arguments == {"action": "cancel", "booking_id": "AB3KM7"}


def test_a_global_intent_works_in_every_stage_and_stage_intents_come_first(dental: Flow) -> None:
    d = dialogue(dental, stage="wrap_up")
    assert d.stage == "wrap_up"
    assert says(d.heard("where do i park", 0.9)) == [
        "We're at 48 Maple Avenue, Springfield. Parking is free behind the building."
    ]
    assert says(d.heard("no that's all", 0.9)) == [  # wrap_up's own "done", not the global goodbye
        "Thank you for calling Bright Smile Dental. Have a lovely day. Goodbye!"
    ]


def test_arguments_keep_their_types_and_unfilled_optional_slots_are_left_out() -> None:
    restaurant = FlowSet.load(ROOT / "flows").get("restaurant")
    assert restaurant is not None
    d = dialogue(restaurant)
    assert says(d.heard("a table for four tomorrow please", 0.9)) == ["Lunch or dinner?"]
    find = only_call(d.heard("dinner", 0.9))
    assert find.arguments == {
        "action": "find_slots",
        "service": "dinner",
        "date": "2026-03-06",
        # the time slot was not given: no time of the caller's, but the search starts at dinner's times
        # (slot ``times``), so the tool's first free times are not lunch times
        "after_time": "16:00",
    }
    d.tool_result(find.call_id, free_slots("dinner", date(2026, 3, 6), "18:00", "18:30"))
    d.heard("six thirty", 0.9)
    confirm = d.heard("under the name of kim", 0.9)
    assert says(confirm) == ["A table for 4 on Friday, March 6 at 6:30 PM, under Kim. Shall I book it?"]
    book = only_call(d.heard("yes", 0.9))
    assert book.arguments["party_size"] == 4 and isinstance(book.arguments["party_size"], int)


def test_a_flow_without_an_offline_section_still_says_goodbye_and_transfers() -> None:
    desk = FlowSet.load(ROOT / "tests" / "data" / "flows").get("test-desk")
    assert desk is not None and desk.offline is None
    d = dialogue(desk)
    assert d.start() == []
    assert d.stage is None
    assert says(d.heard("what's the weather like", 0.9)) == [
        "Sorry, I didn't understand that. Could you put it another way?"
    ]
    assert only_call(d.heard("can i speak to a person", 0.9)).name == "transfer_to_human"
    d = dialogue(desk)
    bye = d.heard("ok goodbye", 0.9)
    assert bye == [
        Say("Thank you for calling. Goodbye!"),
        CallTool("local_1", "end_call", {"reason": "offline dialogue: goodbye"}),
    ]


def test_an_unknown_stage_is_refused(dental: Flow) -> None:
    with pytest.raises(ValueError, match="has no stage 'lobby'"):
        dialogue(dental, stage="lobby")


def test_asking_for_another_day_at_the_offer_fetches_new_times(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("i'd like a cleaning", 0.9)
    d.tool_result("local_2", MOVED)
    d.heard("tuesday", 0.9)
    d.tool_result("local_3", free_slots("cleaning", date(2026, 3, 10), "09:00"))
    again = only_call(d.heard("have you got anything on wednesday", 0.9))
    assert again.arguments == {"action": "find_slots", "service": "cleaning", "date": "2026-03-11"}
    assert says(d.heard("the fifth one", 0.9)) == []  # still waiting for the tool: kept for later
    offer = d.tool_result(again.call_id, free_slots("cleaning", date(2026, 3, 11), "16:00"))
    assert says(offer) == [
        "On Wednesday, March 11 I have 4:00 PM. Which would suit you?",
        "Sorry, I didn't quite get that.",  # "the fifth one" of one option
        "On Wednesday, March 11 I have 4:00 PM. Which would suit you?",
    ]


def test_a_stage_change_reported_before_the_moves_result_is_the_move(dental: Flow) -> None:
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    assert only_call(d.heard("i'd like to book a cleaning", 0.9)).name == "start_booking"
    assert d.stage_changed("booking") == [Say("Which day would suit you?")]  # the request carried over
    assert d.tool_result("local_2", MOVED) == []  # already handled
    assert d.stage == "booking" and d.waiting == "caller"


def test_no_with_nothing_to_clear_drops_the_request_and_decisions_for_other_tools_are_ignored() -> None:
    flow = flow_from(
        """\
        id: t
        instructions: hi
        tools:
          - {type: end_call, name: end_call, description: "Hang up."}
        offline:
          intents:
            - id: bye
              keywords: [bye]
              confirm: "Hang up now?"
              confirm_no_clears: []
              steps: [{end_call: true}]
        """
    )
    d = dialogue(flow)
    assert d.heard("bye", 0.9) == [Say("Hang up now?")]
    assert d.heard("no", 0.9) == [] and d.waiting == "caller"
    assert d.heard("bye", 0.9) == [Say("Hang up now?")]
    call = only_call(d.heard("yes", 0.9))
    assert d.tool_result(call.call_id, PENDING) == [] and d.waiting == "approval"
    assert d.approval_decided("appointments", True, ENDING, "") == []  # not the pending tool
    assert d.approval_decided("end_call", True, ENDING, "") == [] and d.waiting == "ended"


def _at_wrap_up(dental: Flow) -> Dialogue:
    d = dialogue(dental, stage="wrap_up")
    d.start()
    d.tool_result("local_1", patient())  # the flow's on_start lookup
    assert d.stage == "wrap_up" and d.waiting == "caller"
    return d


def test_a_low_confidence_turn_that_clearly_says_an_expected_intent_is_taken(dental: Flow) -> None:
    # min_confidence is 0.45 in the dental flow: 0.39 on "no thanks that's all" (a real pocketsphinx score on
    # the demo's caller) still ends the call, because the words strongly match the stage's "done" intent.
    d = _at_wrap_up(dental)
    bye = d.heard("no thank that's all", 0.39)
    assert says(bye) == ["Thank you for calling Bright Smile Dental. Have a lovely day. Goodbye!"]
    assert d.waiting == "ended"


def test_a_low_confidence_turn_is_still_asked_again_when_weak_or_too_unsure(dental: Flow) -> None:
    weak = _at_wrap_up(dental)
    assert says(weak.heard("the weather is lovely", 0.39)) == [
        "Sorry, I didn't catch that. Could you say it again?"
    ]
    unsure = _at_wrap_up(dental)  # below half the minimum: not taken however well the words fit
    assert says(unsure.heard("no thank that's all", 0.19)) == [
        "Sorry, I didn't catch that. Could you say it again?"
    ]
    assert unsure.waiting == "caller"


def test_a_low_confidence_answer_to_an_open_question_is_confirmed_not_asked_again(dental: Flow) -> None:
    # Changed with issue 10: this test used to expect a re-ask ("Sorry, I didn't catch that"), the re-ask
    # loop the issue calls a bug. A shaky "tuesday" is still not taken as said: it is read back instead.
    d = dialogue(dental)
    d.start()
    d.tool_result("local_1", patient())
    d.heard("hi i'd like to book a cleaning please", 0.91)
    d.tool_result("local_2", MOVED)
    assert says(d.heard("tuesday please", 0.3)) == ["Tuesday the 10th, right?"]
    find = only_call(d.heard("yes", 0.3))
    assert find.arguments == {"action": "find_slots", "service": "cleaning", "date": "2026-03-10"}
