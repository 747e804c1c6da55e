"""Scripted callers for every shipped flow and scenario: :func:`script_for` and :data:`SCENARIOS`.

Each script is a :class:`~ivr.demo.caller.CallerScript` (a pure state machine): a person who wants one
thing (book, move, cancel, the hours, a person…), says it in plain words of their own (not the flows'
example sentences), answers only what the agent asks, rephrases when asked again, corrects a wrong
read-back, and says goodbye once done. ``variant`` picks other phrasings, days, names and party sizes, so
several calls of one scenario are not the same call. Each script carries its :class:`~ivr.demo.goals.Goal`,
checked after the call against Redis and the call's transcript (:mod:`ivr.demo.goals`).
"""

from __future__ import annotations

import re
from typing import Any

from .caller import CallerScript, Rule, Task, rule
from .goals import Goal
from .replies import (
    HOURS_SAID,
    NUMBER_WORDS,
    TRANSFER_SAID,
    common_rules,
    next_task,
    pick_offered_time,
    rotate,
    say_day,
    spell_booking_id,
    with_facts,
)

__all__ = ["DEFAULT_SCENARIO", "SCENARIOS", "script_for"]

#: Scenarios per flow id (the first is the flow's default). "unclear": the first line is mumbled, then
#: the caller says it again clearly when asked.
SCENARIOS: dict[str, list[str]] = {
    "dental-clinic": ["book", "move", "cancel", "hours", "transfer", "deny", "unclear"],
    "restaurant": ["book", "dish", "hours", "transfer", "deny", "unclear"],
    "general-reception": ["hours", "address", "transfer", "unclear"],
}
DEFAULT_SCENARIO = {flow: names[0] for flow, names in SCENARIOS.items()}


# ---- dental clinic -----------------------------------------------------------------------------------------


def _dental(scenario: str, variant: int, facts: dict[str, Any]) -> CallerScript:
    service = facts.setdefault("service", ("cleaning", "checkup", "cleaning")[variant % 3])
    service_words = {"cleaning": "a cleaning", "checkup": "a check-up", "emergency": "an emergency visit"}
    facts.setdefault("days", [("Tuesday", "Wednesday", "Thursday")[variant % 3], "Thursday", "Monday"])
    book = Task(
        "book",
        rotate(
            (
                f"Hi, I'd like to make an appointment for {service_words[service]}.",
                f"Hello, I need to come in for {service_words[service]} sometime soon.",
                f"Hi there, can you fit me in for {service_words[service]}?",
            ),
            variant,
        ),
    )
    cancel = Task(
        "cancel",
        rotate(
            (
                "Hi, something came up and I have to cancel my appointment.",
                "Hello, I won't be able to make my appointment, so please cancel it.",
            ),
            variant,
        ),
    )
    rules = [
        rule(
            "move_choice",
            r"cancel your appointment and book a new one|which would you prefer",
            ("Then cancel it, and I'll book a new one.", "Let's cancel it and make a new one."),
            times=2,
        ),
        rule("book_or_cancel", r"book a new appointment,? or cancel", next_task, when="pending", times=3),
        rule(
            "service",
            r"cleaning, a check|which service|what kind|what type|which treatment",
            (f"Just {service_words[service]}, please.", f"{service_words[service].capitalize()}."),
            times=3,
        ),
        rule("day", r"which (other )?day|what day|another day|other day|when would", say_day, times=3),
        rule(
            "offer",
            r"\bi have\b|which would suit|which one|which time",
            pick_offered_time,
            times=3,
            on_whole_turn=False,
        ),
        rule("booking_id", r"booking (id|number|reference)|letter by letter", spell_booking_id, times=3),
    ]
    tasks: list[Task]
    goal: Goal
    approve: bool | None = None
    seed: str | None = None
    unclear = False
    if scenario == "book":
        tasks, goal = (
            [book],
            Goal(
                "booked",
                "book an appointment, approved by the operator",
                {"service": service},
                name_any=tuple(str(facts["name"]).split()),
            ),
        )
    elif scenario == "unclear":
        tasks, unclear = [book], True
        goal = Goal(
            "booked",
            "book an appointment after a mumbled first line",
            {"service": service},
            name_any=tuple(str(facts["name"]).split()),
        )
    elif scenario == "deny":
        tasks, approve = [book], False
        goal = Goal("denied", "the operator denies the booking; nothing is booked")
    elif scenario == "cancel":
        tasks, seed = [cancel], "checkup"
        goal = Goal("cancelled", "cancel an existing appointment (approved by the operator)")
    elif scenario == "move":
        move = Task(
            "cancel",
            rotate(
                (
                    "Hi, I need to move my appointment to a different day.",
                    "Hello, could I change the day of my appointment?",
                ),
                variant,
            ),
        )
        tasks, seed = [move, book], "checkup"
        goal = Goal("moved", "move an appointment: the old one cancelled, a new one stored")
    elif scenario == "hours":
        hours = Task(
            "hours",
            rotate(
                (
                    "Hi, I was wondering what your hours are this week.",
                    "Hello, until what time are you open on Fridays? I need your hours.",
                    "Hi, could you tell me your opening hours?",
                ),
                variant,
            ),
            re.compile(HOURS_SAID, re.IGNORECASE),
        )
        tasks, goal = [hours], Goal("said", "hear the opening hours", said=HOURS_SAID)
    elif scenario == "transfer":
        transfer = Task(
            "transfer",
            rotate(
                (
                    "Hi, can you connect me with someone at the front desk?",
                    "Hello, I'd rather talk to a real person, please.",
                    "Could I speak with the receptionist, please?",
                ),
                variant,
            ),
            re.compile(TRANSFER_SAID, re.IGNORECASE),
        )
        tasks = [transfer]
        goal = Goal(
            "transferred",
            "be put through to the front desk (or told when it opens)",
            said=r"closed right now|opens",
        )
    else:
        raise _unknown("dental-clinic", scenario)
    return _script("dental-clinic", scenario, variant, tasks, rules, goal, facts, approve, seed, unclear)


# ---- restaurant --------------------------------------------------------------------------------------------


def _restaurant(scenario: str, variant: int, facts: dict[str, Any]) -> CallerScript:
    party = facts.setdefault(
        "party_size", (10, 12)[variant % 2] if scenario == "deny" else (4, 2, 6)[variant % 3]
    )
    facts.setdefault("days", [("Friday", "Saturday", "Thursday")[variant % 3], "Sunday", "Wednesday"])
    meal = facts.setdefault("meal", ("dinner", "lunch", "dinner")[variant % 3])
    people = NUMBER_WORDS.get(int(party), str(party))
    reserve = Task(
        "book",
        rotate(
            (
                "Hi, I'd like to reserve a table, please.",
                "Hello, could I get a reservation for a group?"
                if party > 8
                else "Hello, I want to reserve a table.",
                "Hi there, do you take table reservations? I'd like one.",
            ),
            variant,
        ),
    )
    rules = [
        rule(
            "party",
            r"how many|how big|party size|number of (people|guests)",
            (
                f"There will be {people} of us.",
                f"{people.capitalize()} people.",
                f"We're a party of {people}.",
            ),
            times=3,
        ),
        rule(
            "day", r"which (other )?day|what day|another day|other day|what date|when would", say_day, times=3
        ),
        rule("meal", r"lunch or dinner", (f"{meal.capitalize()}, please.", f"For {meal}."), times=3),
        rule(
            "offer",
            r"\bi have\b|table at|which would you like|which one|which time",
            pick_offered_time,
            times=3,
        ),
    ]
    dishes = (
        ("risotto", "Risotto of the day", "Is the risotto vegetarian? I don't eat meat."),
        ("tiramisu", "Tiramisù", "Hi, I have a question about a dessert: what's in your tiramisu?"),
        ("cacio e pepe", "Cacio e pepe", "Hello, does the cacio e pepe on your menu have dairy in it?"),
    )
    approve: bool | None = None
    unclear = False
    if scenario == "book":
        tasks = [reserve]
        goal = Goal(
            "booked",
            f"reserve a table for {party}",
            {"party_size": str(party)},
            name_any=tuple(str(facts["name"]).split()),
        )
    elif scenario == "deny":
        tasks, approve = [reserve], False
        goal = Goal(
            "denied", f"a table for {party} needs the manager; the manager says no, nothing is booked"
        )
    elif scenario == "dish":
        word, dish, ask = dishes[variant % len(dishes)]
        facts["dish"] = dish
        tasks = [Task("dish", (ask, f"Can you tell me about the {word} on your menu?"))]
        goal = Goal(
            "dish", f"hear about the {word}", {"dish": dish}, said=r"\$|\bdollars?\b|contains|made with"
        )
    elif scenario in ("hours", "unclear"):
        hours = Task(
            "hours",
            rotate(
                (
                    "Hi, what are your hours this weekend?",
                    "Hello, are you open on Sunday evenings? What are your hours?",
                    "Hi, could you tell me your opening hours?",
                ),
                variant,
            ),
            re.compile(HOURS_SAID, re.IGNORECASE),
        )
        tasks, unclear = [hours], scenario == "unclear"
        goal = Goal(
            "said",
            "hear the opening hours" + (" after a mumbled first line" if unclear else ""),
            said=HOURS_SAID,
        )
    elif scenario == "transfer":
        transfer = Task(
            "transfer",
            rotate(
                (
                    "Hi, could you put me through to someone on staff?",
                    "Hello, I need to talk to a person about a private event.",
                    "Can I speak with the manager, please?",
                ),
                variant,
            ),
            re.compile(TRANSFER_SAID, re.IGNORECASE),
        )
        tasks = [transfer]
        goal = Goal(
            "transferred",
            "be put through to the staff (or told when they are in)",
            said=r"not in right now|we open|opens",
        )
    else:
        raise _unknown("restaurant", scenario)
    return _script("restaurant", scenario, variant, tasks, rules, goal, facts, approve, None, unclear)


# ---- general reception (the default flow: every number no other flow claims) ----------------------------


def _reception(scenario: str, variant: int, facts: dict[str, Any]) -> CallerScript:
    hours = Task(
        "hours",
        rotate(
            (
                "Hi, when is your office open during the week?",
                "Hello, what are your hours on weekdays?",
                "Hi there, until what time is the office open today?",
            ),
            variant,
        ),
        re.compile(HOURS_SAID, re.IGNORECASE),
    )
    address = Task(
        "address",
        rotate(
            (
                "Hi, could you tell me your address?",
                "Hello, what street is your office on?",
                "Hi, where exactly are you located?",
            ),
            variant,
        ),
        re.compile(r"\b(street|avenue|suite)\b", re.IGNORECASE),
    )
    transfer = Task(
        "transfer",
        rotate(
            (
                "Hi, could I speak with someone from your team?",
                "Hello, can you put me through to a person?",
                "I'd like to talk to a representative, please.",
            ),
            variant,
        ),
        re.compile(TRANSFER_SAID + r"|connecting you", re.IGNORECASE),
    )
    unclear = False
    if scenario in ("hours", "unclear"):
        tasks, unclear = [hours], scenario == "unclear"
        goal = Goal(
            "said",
            "hear the office hours" + (" after a mumbled first line" if unclear else ""),
            said=HOURS_SAID,
        )
    elif scenario == "address":
        tasks, goal = [address], Goal("said", "hear the office address", said=r"\b(street|avenue|suite)\b")
    elif scenario == "transfer":
        tasks = [transfer]
        goal = Goal(
            "transferred",
            "be put through to a team member (or told when the office opens)",
            said=r"closed right now|open again|opens",
        )
    else:
        raise _unknown("general-reception", scenario)
    return _script("general-reception", scenario, variant, tasks, [], goal, facts, None, None, unclear)


# ---- assembly ----------------------------------------------------------------------------------------------


def _unknown(flow_id: str, scenario: str) -> ValueError:
    known = ", ".join(SCENARIOS[flow_id])
    return ValueError(f"no scenario {scenario!r} for flow {flow_id!r}; choose one of: {known}")


def _script(
    flow_id: str,
    scenario: str,
    variant: int,
    tasks: list[Task],
    rules: list[Rule],
    goal: Goal,
    facts: dict[str, Any],
    approve: bool | None,
    seed: str | None,
    unclear: bool,
) -> CallerScript:
    facts["variant"] = variant
    all_rules = with_facts(rules + common_rules(variant), facts)
    return CallerScript(
        flow_id=flow_id,
        scenario=scenario,
        tasks=tasks,
        rules=all_rules,
        goal=goal,
        facts=facts,
        approve=approve,
        seed_booking=seed,
        unclear_opening=unclear,
    )


_BUILDERS = {"dental-clinic": _dental, "restaurant": _restaurant, "general-reception": _reception}
_NAMES = ("Maria Gonzalez", "Daniel Brooks", "Priya Natarajan", "Tom Lindqvist")


def script_for(flow_id: str, scenario: str = "default", **kw: Any) -> CallerScript:
    """A fresh caller script for ``flow_id`` (``"default"`` is the reception flow) and ``scenario``.

    Keywords: ``variant`` (int: other phrasings, days, names, sizes), ``name``, ``phone`` (the caller's
    number, said when asked), ``days`` (the days the caller can do, in order), ``service`` (dental),
    ``party_size``, ``meal`` (restaurant), ``pick`` ("first", "second" or "last" offered time),
    ``booking_id`` (for cancel/move when the runner does not seed one).
    """
    flow = "general-reception" if flow_id == "default" else flow_id
    if flow not in _BUILDERS:
        raise ValueError(f"no scripted caller for flow {flow_id!r}; flows with one: {', '.join(SCENARIOS)}")
    if scenario == "default":
        scenario = DEFAULT_SCENARIO[flow]
    if scenario not in SCENARIOS[flow]:
        raise _unknown(flow, scenario)
    variant = int(kw.pop("variant", 0))
    facts: dict[str, Any] = {"name": _NAMES[variant % len(_NAMES)], "phone": "312 555 0101", "pick": "first"}
    facts.update({k: v for k, v in kw.items() if v is not None})
    return _BUILDERS[flow](scenario, variant, facts)
