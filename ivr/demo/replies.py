"""What the scripted callers say that depends on the agent's words (an offered time, a day, a booking id, a
read-back to confirm or correct) and the rules every caller shares; the per-flow callers are in
:mod:`ivr.demo.scripts`."""

from __future__ import annotations

import re
from typing import Any

from .caller import CallerScript, Rule, rule

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)  # fmt: skip
NUMBER_WORDS = {
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
    11: "eleven",
    12: "twelve",
}
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?\s?m\b\.?|\b(noon|midday)\b", re.IGNORECASE)

# ---- replies computed from the agent's words ---------------------------------------------------------------


def _pick(options: list[str], which: str) -> str:
    return options[{"first": 0, "second": min(1, len(options) - 1), "last": -1}.get(which, 0)]


def _spoken_time(match: re.Match[str]) -> str:
    """An offered time as a person repeats it: "8 o'clock", "8:15" (the half of the day is understood)."""
    if match.group(4):
        return "noon"
    hour, minute = int(match.group(1)), match.group(2)
    return f"{hour} o'clock" if not minute or minute == "00" else f"{hour}:{minute}"


def pick_offered_time(script: CallerScript, agent_said: str) -> str | None:
    """Choose one of the times the agent offered and say it plainly ("8:15 AM works for me")."""
    times = [_spoken_time(m) for m in _TIME.finditer(agent_said)]
    if not times:
        return None
    which = str(script.facts.get("pick", "first"))
    chosen = _pick(times, which)
    if script.rephrasing or script.used.get("offer", 0):
        # Not understood the first time: point at it in the list instead ("the first one").
        return {"first": "The first one, please.", "second": "The second one, please."}.get(
            which, "The last one you said, please."
        )
    script.facts["time_said"] = chosen
    n = script.used.get("offer", 0) + int(script.facts.get("variant", 0)) + script.rephrased
    forms = (f"{chosen} works for me.", f"Let's do {chosen}, please.", f"I'll take {chosen}.")
    if chosen == times[0] and n % 4 == 3:
        return "The earliest one is fine."
    return forms[n % len(forms)]


def say_day(script: CallerScript, agent_said: str) -> str:
    """The day the caller wants; asked again for another day (nothing free), the next one they can do."""
    days: list[str] = script.facts["days"]
    n = script.used.get("day", 0) - (1 if script.rephrasing else 0)
    day = days[min(max(n, 0), len(days) - 1)]
    script.facts["day_said"] = day.split()[-1].lower()
    forms = (f"{day} would be good.", f"How about {day}?", f"{day}, if you can.")
    return forms[(n + int(script.facts.get("variant", 0)) + script.rephrased) % len(forms)]


_NATO = {
    "A": "Alpha", "B": "Bravo", "C": "Charlie", "D": "Delta", "E": "Echo", "F": "Foxtrot", "G": "Golf",
    "H": "Hotel", "I": "India", "J": "Juliett", "K": "Kilo", "L": "Lima", "M": "Mike", "N": "November",
    "O": "Oscar", "P": "Papa", "Q": "Quebec", "R": "Romeo", "S": "Sierra", "T": "Tango", "U": "Uniform",
    "V": "Victor", "W": "Whiskey", "X": "X-ray", "Y": "Yankee", "Z": "Zulu",
}  # fmt: skip


def nato(booking_id: str) -> str:
    """The id the way people spell it on a bad line: letters as NATO words, digits as digits."""
    return ", ".join(_NATO.get(ch, ch) for ch in booking_id.upper()) + "."


def spell_booking_id(script: CallerScript, agent_said: str) -> str | None:
    """The booking id letter by letter; asked again (or after a wrong read-back), in NATO words."""
    booking_id = script.facts.get("booking_id")
    if not booking_id:
        return "Sorry, I don't have it with me."
    if script.rephrasing or script.used.get("booking_id", 0) or script.facts.get("id_misheard"):
        return "It's " + nato(str(booking_id))
    return " ".join(str(booking_id))


def confirm(script: CallerScript, agent_said: str) -> str:
    """Yes when the read-back is right; a correction when it is not (a wrong day, party size, id)."""
    text = agent_said.lower()
    booking_id = script.facts.get("booking_id")
    if booking_id and "cancel" in text:
        letters = re.sub(r"[^a-z0-9]", "", text.rsplit("booking", 1)[-1])
        if str(booking_id).lower() not in letters:
            script.facts["id_misheard"] = True
            return "No, that's not my booking id."
    wanted = script.facts.get("day_said")
    mentioned = [d for d in _WEEKDAYS if re.search(rf"\b{d}\b", text)]
    if wanted and mentioned and wanted not in mentioned:
        return f"No, I said {wanted.capitalize()}."
    name = str(script.facts.get("name", ""))
    read_name = [
        m.group(1)
        for m in re.finditer(r"\b(?:for|under)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)", agent_said)
        if m.group(1).split()[0].lower() not in _WEEKDAYS + _MONTHS
    ]
    about_name = script.last_rule == "name" or (bool(read_name) and bool(script.used.get("name")))
    if about_name and name and not any(part.lower() in text for part in name.split()):
        return f"No, my name is {name}."
    party = script.facts.get("party_size")
    size = re.search(r"table for (\d+)", text)
    if party and size and int(size.group(1)) != int(party):
        return f"No, we're {NUMBER_WORDS.get(int(party), party)} people."
    n = script.used.get("confirm", 0) + int(script.facts.get("variant", 0)) + script.rephrased
    return ("Yes, that's right.", "Yes please, go ahead.", "Yep, sounds good.", "Sure, that's fine.")[n % 4]


def next_task(script: CallerScript, agent_said: str) -> str | None:
    return script.ask_next_task()


# ---- rules shared by the flows -----------------------------------------------------------------------------

HOURS_SAID = (
    r"\b(open|hours are)\b.*\b(monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekdays|noon)\b"
    r"|\bopens?( again)?\b.*\b(today|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday|at \d)"
)
TRANSFER_SAID = r"connecting you|putting you through|put you through|closed right now|not in right now"


def _goodbye(variant: int) -> tuple[str, ...]:
    lines = (
        "No, that's everything, thanks. Bye.",
        "Nope, that was it. Thank you, goodbye.",
        "That's all I needed, thanks a lot. Bye bye.",
    )
    return lines[variant % 3 :] + lines[: variant % 3]


def common_rules(variant: int) -> list[Rule]:
    """Rules every caller has, in the order they are tried after the flow's own."""
    bye = _goodbye(variant)
    return [
        rule(
            "name",
            r"your (full )?name|name (should|for) the|under what name|who (am i|is calling)",
            ("It's {name}.", "{name}.", "My name is {name}."),
            times=3,
        ),
        rule("phone", r"phone number|number on file", ("It's {phone}.",), times=2),
        rule(
            "confirm",
            r"shall i|should i|right\?|correct\?|is that (right|ok|okay)|do you want me to|"
            r"just to confirm|sound good",
            confirm,
            times=4,
        ),
        rule(
            "bye_done",
            r"anything else|something else|what else|how can i help|help you with|another day",
            bye,
            when="done",
            hangs_up=True,
            times=1,
        ),
        rule(
            "next_task",
            r"anything else|something else|what else|how can i help|what can i do|help you with",
            next_task,
            when="pending",
            times=3,
        ),
        rule("thanks_done", r".", bye, when="done", hangs_up=True, times=1, on_whole_turn=True),
    ]


def with_facts(rules: list[Rule], facts: dict[str, Any]) -> list[Rule]:
    """Fill ``{name}``-style placeholders of fixed phrasings from the caller's facts."""
    out = []
    for r in rules:
        if callable(r.reply):
            out.append(r)
        else:
            replies = tuple(line.format(**facts) for line in r.reply)
            out.append(Rule(r.name, r.pattern, replies, r.times, r.when, r.hangs_up, r.on_whole_turn))
    return out


def rotate(items: tuple[str, ...], variant: int) -> tuple[str, ...]:
    k = variant % len(items)
    return items[k:] + items[:k]
