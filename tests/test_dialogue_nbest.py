"""The dialogue choosing among the recogniser's readings of a turn (issue 10: mishearings of short answers).

Whisper hands over its best reading and the beam's runner-ups (``Recognition.alternatives``). When a slot
question is open and the best reading gives no value for it, a close runner-up that does is used, and its
value is read back ("Tuesday the 10th, right?"), never acted on silently. The readings below are ones
Whisper base produced on the phone path for the speech set's voices, e.g. "to z would work for
me" for "Tuesday would work for me".
"""

from __future__ import annotations

from datetime import UTC, datetime

from ivr.dialogue import Dialogue
from ivr.dialogue.nbest import CLOSE_RATIO, rescue
from ivr.flows import FlowSet
from tests.support import dialogues
from tests.support.dialogues import DENTAL_OPEN, calls, dental_asking_day, dialogue, out, says

EVENING = datetime(2026, 3, 5, 20, 0, tzinfo=UTC)  # 15:00 in New York, a Thursday


flows = dialogues.flows


def at_confirmation(flows: FlowSet) -> Dialogue:
    d = dental_asking_day(flows)
    [find] = calls(d.heard("tuesday would work for me", 0.9))
    starts = ("2026-03-10T09:00", "2026-03-10T10:30")
    d.tool_result(find.call_id, out({"slots": [{"start": s, "spoken": s} for s in starts]}))
    assert says(d.heard("the earliest one is fine", 0.9)) == ["May I have your full name, please?"]
    assert says(d.heard("it's maria gonzalez", 0.9))[-1].endswith("Shall I book it?")
    return d


# --- the choice itself ------------------------------------------------------------------------------------


def _is_day(text: str) -> bool:
    return "tuesday" in text or "wednesday" in text


def test_the_best_reading_is_kept_when_it_answers() -> None:
    assert rescue("wednesday please", 0.5, [("tuesday please", 0.5)], _is_day, floor=0.2) is None


def test_the_most_likely_close_alternative_that_answers_is_taken() -> None:
    alternatives = [
        ("who they would work", 0.52),
        ("wednesday would work", 0.47),
        ("tuesday would work", 0.5),
    ]
    picked = rescue("to z would work", 0.53, alternatives, _is_day, floor=0.2)
    assert picked == ("tuesday would work", 0.5)


def test_far_quiet_or_missing_alternatives_are_not_taken() -> None:
    far = 0.6 * CLOSE_RATIO - 0.01
    assert rescue("to z would work", 0.6, [("tuesday would work", far)], _is_day, floor=0.2) is None
    assert rescue("to z", 0.25, [("tuesday", 0.21)], _is_day, floor=0.225) is None  # below the floor
    assert rescue("to z", 0.5, [], _is_day, floor=0.2) is None
    assert rescue("", 0.0, [("tuesday", 0.3)], _is_day, floor=0.2) is None  # nothing heard: noise


# --- in the dialogue --------------------------------------------------------------------------------------


def test_a_misheard_day_is_rescued_from_the_alternatives_and_read_back(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    heard = d.heard(
        "to z would work for me",
        0.6,
        [("who they would work for me", 0.58), ("tuesday would work for me", 0.55)],
    )
    assert says(heard) == ["Tuesday the 10th, right?"]
    assert not calls(heard)  # not acted on before the caller agrees
    [find] = calls(d.heard("yes", 0.9))
    assert find.arguments["date"] == "2026-03-10"


def test_a_rescued_day_the_caller_denies_is_asked_again(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    assert says(d.heard("qv", 0.29, [("tuesday", 0.27)])) == ["Tuesday the 10th, right?"]
    assert says(d.heard("no", 0.9)) == ["Which day would suit you?"]


def test_without_alternatives_the_same_mishearing_is_asked_again(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    heard = says(d.heard("whom they would work for me", 0.6))
    assert heard and "right?" not in heard[-1] and not calls(d.heard("whom they would work for me", 0.6, ()))


def test_a_best_reading_that_answers_wins_over_alternatives(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    [find] = calls(d.heard("thursday would work for me", 0.7, [("tuesday would work for me", 0.69)]))
    assert find.arguments["date"] == "2026-03-12"


def test_an_alternative_far_below_the_best_is_not_taken(flows: FlowSet) -> None:
    d = dental_asking_day(flows)
    heard = says(d.heard("whom they would work for me", 0.7, [("tuesday would work for me", 0.3)]))
    assert heard and "Tuesday" not in heard[-1]


def test_a_count_is_rescued_in_the_restaurant(flows: FlowSet) -> None:
    d = dialogue(flows, "restaurant", EVENING)
    d.start()
    assert says(d.heard("i'd like to book a table", 0.9)) == ["Sure! For how many people?"]
    assert says(d.heard("there will be or a must", 0.51, [("there will be 4 of us", 0.44)])) == ["4, right?"]
    assert says(d.heard("yes", 0.9)) == ["For which day?"]


def test_no_runner_up_yes_is_taken_at_the_confirmation(flows: FlowSet) -> None:
    d = at_confirmation(flows)
    heard = d.heard("guess", 0.5, [("yes", 0.49)])
    assert not calls(heard)  # nothing is booked on a runner-up yes
    assert says(heard)


def test_a_turn_kept_while_a_tool_runs_keeps_its_alternatives(flows: FlowSet) -> None:
    d = dialogue(flows, "dental-clinic", DENTAL_OPEN)
    d.start()
    assert d.waiting == "tool"  # looking the caller up
    assert d.heard("hi i'd like to book a cleaning please", 0.9) == []
    [move] = calls(d.tool_result("local_1", out({"found": False})))
    assert says(d.tool_result(move.call_id, out({"status": "ok"}))) == ["Which day would suit you?"]
    assert d.waiting == "caller"
    assert says(d.heard("qv", 0.3, [("tuesday", 0.28)])) == ["Tuesday the 10th, right?"]
