"""The demo's scripted callers as pure state machines, and the goal checks against a real Redis.

Agent lines below are the flows' own lines as the offline dialogue says them (copied from real demo calls),
so a change in how a flow asks shows up here as a caller that no longer answers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.demo.caller import REASK, question_of
from ivr.demo.goals import Goal, Observed, check_goal
from ivr.demo.scripts import SCENARIOS, script_for
from ivr.demo.voice import MISAKI_TO_ESPEAK, formant_shift, misaki_to_espeak, mumble
from ivr.flows import FlowSet
from ivr.store.keys import KeySchema

FLOWS = Path(__file__).resolve().parents[1] / "flows"

GREETING = "Thanks for calling Bright Smile Dental, this is the virtual assistant. How can I help?"
OFFER = "On Tuesday, December 8 I have 8:00 AM, 8:15 AM or 8:30 AM. Which would suit you?"
READ_BACK = "So that's a cleaning on Tuesday, December 8 at 8:00 AM for Maria Gonzalez. Shall I book it?"
BOOKED = "You're booked for Tuesday, December 8 at 8:00 AM. Your booking id is J S V 4 X C."
ANYTHING_ELSE = "Is there anything else I can help you with?"


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def test_question_of_takes_the_last_question() -> None:
    assert question_of(f"{BOOKED} {ANYTHING_ELSE}") == ANYTHING_ELSE
    assert question_of("Hi Maria, good to hear from you.") == "Hi Maria, good to hear from you."
    assert question_of(OFFER) == "Which would suit you?"
    assert question_of("") == ""


def test_dental_booking_answers_each_question_and_hangs_up_when_done() -> None:
    script = script_for("dental-clinic", "book")
    opening = script.first_line()
    assert "cleaning" in opening.text.lower() and not opening.unclear
    day = script.next_line("Which day would suit you?")
    assert day is not None and "tuesday" in day.text.lower()
    time = script.next_line(OFFER)
    assert time is not None and "8 o'clock" in time.text  # one of the offered times, said plainly
    yes = script.next_line(READ_BACK)
    assert yes is not None and _words(yes.text).split()[0] in {"yes", "yep", "sure"}
    # Not done yet: "anything else?" before the booking is stored restates the request.
    script.observe_tool("appointments", {"status": "pending_approval"})
    assert not script.all_done
    script.observe_tool("appointments", {"status": "booked", "booking_id": "JSV4XC"})
    assert script.all_done
    bye = script.next_line(f"{BOOKED} {ANYTHING_ELSE}")
    assert bye is not None and "bye" in bye.text.lower()
    assert script.finished and script.next_line(ANYTHING_ELSE) is None


def test_a_known_caller_is_never_made_to_say_a_name_they_were_not_asked() -> None:
    script = script_for("dental-clinic", "book", name="Maria Gonzalez")
    script.first_line()
    lines = [script.next_line(t) for t in ("Which day would suit you?", OFFER, READ_BACK)]
    assert all(line is not None and "Maria" not in line.text for line in lines)


def test_an_unknown_caller_gives_a_name_only_when_asked() -> None:
    script = script_for("dental-clinic", "book", name="Daniel Brooks")
    script.first_line()
    assert "Daniel" not in script.next_line("Which day would suit you?").text  # type: ignore[union-attr]
    name = script.next_line("May I have your full name, please?")
    assert name is not None and "Daniel Brooks" in name.text


def test_a_wrong_read_back_is_corrected_not_confirmed() -> None:
    script = script_for("dental-clinic", "book")
    script.first_line()
    script.next_line("Which day would suit you?")  # says Tuesday
    wrong = READ_BACK.replace("Tuesday", "Thursday")
    correction = script.next_line(wrong)
    assert (
        correction is not None and correction.text.lower().startswith("no") and "Tuesday" in correction.text
    )


def test_nothing_free_gets_another_day() -> None:
    script = script_for("dental-clinic", "book")
    script.first_line()
    first = script.next_line("Which day would suit you?")
    other = script.next_line(
        "Sorry, there's nothing free on Tuesday, December 8. Which other day would suit you?"
    )
    assert first is not None and other is not None
    assert "tuesday" in first.text.lower() and "tuesday" not in other.text.lower()


def test_asked_again_the_caller_rephrases() -> None:
    script = script_for("dental-clinic", "book")
    opening = script.first_line()
    again = script.next_line("Sorry, I didn't catch that. Could you say it again?")
    assert again is not None and again.text != opening.text and "cleaning" in again.text.lower()
    day = script.next_line("Which day would suit you?")
    day_again = script.next_line("Sorry, the line is a little unclear. Could you repeat that?")
    assert day is not None and day_again is not None and day_again.text != day.text
    assert "tuesday" in day_again.text.lower()


def test_unclear_scenario_mumbles_first_then_speaks_clearly() -> None:
    for flow in SCENARIOS:
        script = script_for(flow, "unclear")
        first = script.first_line()
        assert first.unclear
        again = script.next_line("Sorry, I didn't catch that. Could you say it again?")
        assert again is not None and not again.unclear


def test_denied_booking_ends_the_call_instead_of_answering_the_next_prompt() -> None:
    script = script_for("dental-clinic", "deny")
    assert script.approve is False and script.goal.kind == "denied"
    script.first_line()
    script.next_line("Which day would suit you?")
    script.next_line(OFFER)
    script.next_line(READ_BACK)
    script.observe_approval("deny", {"action": "book", "service": "cleaning"})
    after = script.next_line(
        "Sorry, the front desk didn't approve that. Would you like to book a new appointment, or cancel one?"
    )
    assert after is not None and "bye" in after.text.lower() and script.finished


def test_cancel_spells_the_booking_id_and_corrects_a_wrong_one() -> None:
    script = script_for("dental-clinic", "cancel")
    assert script.seed_booking
    script.facts["booking_id"] = "BK7M3Q"
    assert "cancel" in script.first_line().text.lower()
    spelled = script.next_line("Sure. What's your booking id? Please say it letter by letter.")
    assert spelled is not None and spelled.text == "B K 7 M 3 Q"
    wrong = script.next_line("Just to confirm: you'd like to cancel booking B K 7 N 3 Q?")
    assert wrong is not None and wrong.text.lower().startswith("no")
    # Asked again after a wrong read-back, the caller spells it the way people do on a bad line.
    again = script.next_line("Sure. What's your booking id? Please say it letter by letter.")
    assert again is not None and again.text == "It's Bravo, Kilo, 7, Mike, 3, Quebec."
    right = script.next_line("Just to confirm: you'd like to cancel booking B K 7 M 3 Q?")
    assert right is not None and right.text.lower().startswith(("yes", "yep", "sure"))


def test_move_cancels_then_books_a_new_one() -> None:
    script = script_for("dental-clinic", "move")
    script.facts["booking_id"] = "BK7M3Q"
    assert "move" in script.first_line().text.lower() or "change" in script.first_line().text.lower()
    choice = script.next_line(
        "On this line I can cancel your appointment and book a new one, or put you through to the front "
        "desk. Which would you prefer?"
    )
    assert choice is not None and "cancel" in choice.text.lower()
    script.observe_tool("appointments", {"status": "cancelled", "booking_id": "BK7M3Q"})
    follow_up = script.next_line(f"Done: booking B K 7 M 3 Q is cancelled. {ANYTHING_ELSE}")
    assert follow_up is not None and "bye" not in follow_up.text.lower()
    assert "cleaning" in follow_up.text.lower() or "check-up" in follow_up.text.lower()
    assert follow_up.text.startswith("Yes, ") and "Hi" not in follow_up.text  # mid-call, no new greeting


def test_restaurant_caller_answers_only_what_is_asked() -> None:
    script = script_for("restaurant", "book")
    opening = script.first_line()
    assert re.search(r"table|reserv", opening.text, re.IGNORECASE)
    assert "cleaning" not in opening.text.lower()
    party = script.next_line("Sure! For how many people?")
    assert party is not None and "four" in party.text.lower()
    day = script.next_line("For which day?")
    assert day is not None and "friday" in day.text.lower() and "four" not in day.text.lower()
    meal = script.next_line("Lunch or dinner?")
    assert meal is not None and _words(meal.text) in {"dinner please", "for dinner"}
    pick = script.next_line(
        "On Friday, December 11 I have a table at 6:00 PM, 6:30 PM or 7:00 PM. Which would you like?"
    )
    assert pick is not None and "6 o'clock" in pick.text
    name = script.next_line("And what name should the reservation be under?")
    assert name is not None and script.facts["name"] in name.text
    wrong = script.next_line("A table for 5 on Friday at 6 PM, under Maria Gonzalez. Shall I book it?")
    assert wrong is not None and wrong.text.startswith("No") and "four" in wrong.text


def test_restaurant_deny_is_a_large_party() -> None:
    script = script_for("restaurant", "deny")
    assert script.approve is False and int(script.facts["party_size"]) > 8


def test_hours_caller_says_goodbye_once_the_hours_are_said() -> None:
    for flow, line in (
        (
            "dental-clinic",
            "We're open Monday to Thursday from 8 AM to noon and 1 to 6 PM, and Friday from 8 AM "
            "to 2 PM. We're closed on weekends.",
        ),
        (
            "general-reception",
            "Our office hours are Monday to Friday, 9 am to 5 pm. Anything else I can help with?",
        ),
        (
            "restaurant",
            "We're open Tuesday to Sunday, for lunch from noon to 3 PM and for dinner from 6 to 10:30 PM.",
        ),
    ):
        script = script_for(flow, "hours")
        script.first_line()
        bye = script.next_line(line)
        assert bye is not None and "bye" in bye.text.lower(), flow
        assert script.all_done and script.finished


def test_transfer_when_closed_is_settled_by_being_told() -> None:
    script = script_for("dental-clinic", "transfer")
    script.first_line()
    line = script.next_line(
        "The front desk is closed right now; it opens Monday at 8 AM. I can book or cancel an appointment "
        "for you, though."
    )
    assert script.all_done and line is not None and "bye" in line.text.lower()


def test_every_scenario_builds_and_variants_differ() -> None:
    for flow, names in SCENARIOS.items():
        for name in names:
            first = {script_for(flow, name, variant=v).first_line().text for v in range(3)}
            assert len(first) >= 2, (flow, name, first)
    assert script_for("default").flow_id == "general-reception"
    assert script_for("restaurant").scenario == "book"
    with pytest.raises(ValueError, match="choose one of: book, dish"):
        script_for("restaurant", "cancel")
    with pytest.raises(ValueError, match="no scripted caller"):
        script_for("pizza-place")


def test_callers_do_not_read_the_flows_example_sentences() -> None:
    flows = FlowSet.load(FLOWS)
    examples = set()
    for flow in flows:
        offline = flow.offline
        intents = list(offline.intents) if offline else []
        for stage in flow.stages:
            if stage.offline is not None:
                intents += list(stage.offline.intents)
        for intent in intents:
            examples |= {_words(e) for e in intent.examples}
    assert len(examples) > 30
    for flow, names in SCENARIOS.items():
        for name in names:
            for variant in range(3):
                script = script_for(flow, name, variant=variant)
                lines = [script.first_line().text] + [
                    line for r in script.rules if not callable(r.reply) for line in r.reply
                ]
                for line in lines:
                    assert _words(line) not in examples, (flow, name, line)


def test_reask_pattern_matches_the_flows_reask_lines() -> None:
    for line in (
        "Sorry, I didn't catch that. Could you say it again?",
        "Sorry, the line is a little unclear. Could you repeat that?",
        "Sorry, it's a bit noisy. Could you repeat that?",
    ):
        assert REASK.search(line)
    assert not REASK.search("Which day would suit you?")


# ---- the second voice's pure parts ---------------------------------------------------------------------


def test_misaki_symbols_become_espeak_ipa() -> None:
    assert misaki_to_espeak("hˈI, ˌId lˈIk") == "hˈaɪ, ˌaɪd lˈaɪk"
    assert misaki_to_espeak("mˌAk ɐn əpˈYntmənt") == "mˌeɪk ɐn əpˈɔɪntmənt"
    assert misaki_to_espeak("ʤˈʌʤ") == "dʒˈʌdʒ"
    assert all(ch not in "AIOWYʤʧᵊ" for ch in "".join(MISAKI_TO_ESPEAK.values()))


def _envelope_peak(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    smooth = np.convolve(spectrum, np.ones(41) / 41, mode="same")
    return float(np.argmax(smooth) * rate / len(pcm))


def test_formant_shift_moves_the_envelope_not_the_pitch() -> None:
    rate, f0 = 24000, 120.0
    t = np.arange(rate) / rate
    # A buzz at 120 Hz through one resonance at 1500 Hz: harmonics weighted by a peak there.
    harmonics = np.arange(1, 60)
    weights = 1.0 / (1.0 + ((harmonics * f0 - 1500.0) / 200.0) ** 2)
    pcm = sum(w * np.sin(2 * np.pi * h * f0 * t) for h, w in zip(harmonics, weights, strict=True)) * 3000
    shifted = formant_shift(pcm, 0.8)
    before, after = _envelope_peak(pcm, rate), _envelope_peak(shifted, rate)
    assert 1350 < before < 1650 and 1050 < after < 1350, (before, after)
    # The pitch stays: the harmonics are still at multiples of 120 Hz (1 s of audio: bin n is n Hz).
    spectrum = np.abs(np.fft.rfft(shifted))
    assert np.argmax(spectrum[100:140]) + 100 == 120
    assert np.argmax(spectrum[1150:1250]) + 1150 == 1200


def test_mumble_is_as_long_and_loud_but_not_the_same_audio() -> None:
    t = np.arange(8000) / 8000
    speech = pcm16_to_ulaw((np.sin(2 * np.pi * 300 * t) * np.linspace(0, 8000, 8000)).astype(np.int16))
    garbled = mumble(speech)
    assert len(garbled) == len(speech)
    a, b = ulaw_to_pcm16(speech).astype(float), ulaw_to_pcm16(garbled).astype(float)
    assert np.sqrt(np.mean(b**2)) > np.sqrt(np.mean(a**2))
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5


# ---- goal checks read Redis ----------------------------------------------------------------------------


async def test_goal_checks_read_the_booking_and_approval_from_redis(
    redis_url: str, redis_prefix: str
) -> None:
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        booking = {"status": "booked", "service": "cleaning", "name": "Go Ahead"}
        await client.hset(keys.booking("AAA111"), mapping=booking)
        tool = {"name": "appointments", "output": '{"status": "booked", "booking_id": "AAA111"}'}
        approve = {"id": "ap_1", "decision": "approve", "arguments": {"action": "book"}}
        observed = Observed(call_sid="CA1", tools=[tool], approvals=[approve])
        goal = Goal("booked", "book", {"service": "cleaning"}, name_any=("Maria", "Gonzalez"))
        assert not (await check_goal(goal, observed, client, keys)).reached  # booked under a wrong name
        await client.hset(keys.booking("AAA111"), "name", "Maria Gonzales")
        assert (await check_goal(goal, observed, client, keys)).reached
        # The tool said booked but Redis says otherwise: not reached.
        await client.hset(keys.booking("AAA111"), "status", "cancelled")
        verdict = await check_goal(goal, observed, client, keys)
        assert not verdict.reached and "no booking was stored" in verdict.why
        # A stored booking of the wrong service is not the goal.
        await client.hset(keys.booking("AAA111"), mapping={"status": "booked", "service": "checkup"})
        assert not (await check_goal(goal, observed, client, keys)).reached

        # Cancelled: the seeded booking must be cancelled in Redis.
        cancelled = Goal("cancelled", "cancel")
        seeded = Observed(call_sid="CA2", seeded_booking="BBB222")
        await client.hset(keys.booking("BBB222"), mapping={"status": "booked"})
        assert not (await check_goal(cancelled, seeded, client, keys)).reached
        await client.hset(keys.booking("BBB222"), "status", "cancelled")
        assert (await check_goal(cancelled, seeded, client, keys)).reached

        # Denied: the approval record must say denied and nothing be booked.
        denied = Goal("denied", "deny")
        deny = {"id": "ap_2", "decision": "deny", "arguments": {"action": "book"}}
        observed = Observed(call_sid="CA3", approvals=[deny])
        await client.hset(keys.approval("ap_2"), mapping={"status": "pending"})
        assert not (await check_goal(denied, observed, client, keys)).reached
        await client.hset(keys.approval("ap_2"), "status", "denied")
        assert (await check_goal(denied, observed, client, keys)).reached

        # Said: the agent's lines come from the call's transcript stream.
        hours = Goal("said", "hours", said=r"\bopen\b.*\bmonday\b")
        observed = Observed(call_sid="CA4")
        assert not (await check_goal(hours, observed, client, keys)).reached
        await client.xadd(keys.transcript("CA4"), {"role": "caller", "text": "are you open on monday"})
        assert not (await check_goal(hours, observed, client, keys)).reached
        await client.xadd(keys.transcript("CA4"), {"role": "agent", "text": "We're open Monday to Friday."})
        assert (await check_goal(hours, observed, client, keys)).reached

        # Transferred: the call record's outcome, or closed and told so.
        transfer = Goal("transferred", "transfer", said=r"closed right now")
        observed = Observed(call_sid="CA5", open_now=True)
        assert not (await check_goal(transfer, observed, client, keys)).reached
        await client.hset(keys.call("CA5"), "outcome", "transferred")
        assert (await check_goal(transfer, observed, client, keys)).reached
    finally:
        await client.aclose()


def test_a_hold_phrase_is_waited_out_not_answered() -> None:
    script = script_for("dental-clinic", "book")
    assert script.holding("One moment please, I'm checking that for you.")
    assert script.holding("Yes. A staff member needs to approve this, so please stay on the line.")
    assert not script.holding("One moment please, I'm checking that for you. Which day would suit you?")
    assert not script.holding(ANYTHING_ELSE)


def test_a_misheard_name_is_corrected_and_a_missed_time_is_pointed_at() -> None:
    script = script_for("restaurant", "book", name="Maria Gonzalez")
    script.first_line()
    script.next_line("Sure! For how many people?")
    script.next_line("For which day?")
    script.next_line("Lunch or dinner?")
    offer = "On Friday, December 11 I have a table at noon, 12:30 PM or 1:00 PM. Which would you like?"
    first = script.next_line(offer)
    assert first is not None and "noon" in first.text  # the first offered, as it was said
    again = script.next_line(f"Sorry, I didn't quite get that. {offer}")
    assert again is not None and again.text == "The first one, please."
    script.next_line("And what name should the reservation be under?")
    wrong = script.next_line("Mari, right?")
    assert wrong is not None and wrong.text == "No, my name is Maria Gonzalez."
    read_back = script.next_line(
        "A table for 4 on Friday, December 11 at noon, under Go Ahead. Shall I book it?"
    )
    assert read_back is not None and read_back.text.startswith("No, my name")
    ok = script.next_line(
        "A table for 4 on Friday, December 11 at noon, under Maria Gonzalez. Shall I book it?"
    )
    assert ok is not None and not ok.text.startswith("No")


def test_a_read_back_under_a_wrong_name_is_refused() -> None:
    script = script_for("dental-clinic", "book", name="Maria Gonzalez")
    script.first_line()
    script.next_line("Which day would suit you?")
    script.next_line(OFFER)
    script.next_line("May I have your full name, please?")
    assert script.next_line("Marie Gonzalez, right?").text.startswith("Yes")  # type: ignore[union-attr]
    wrong = script.next_line(READ_BACK.replace("Maria Gonzalez", "Go Ahead"))
    assert wrong is not None and wrong.text == "No, my name is Maria Gonzalez."
