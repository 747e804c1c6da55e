"""The demo caller's side of the conversation, as a pure state machine.

The caller answers what the agent just said: a rule per kind of question (which day, which time, your
name, shall I book it…), matched on the agent's words, and a first line that starts the conversation. It
does not follow a fixed list, so the call still works when the agent asks in another order or asks again
(then the caller repeats itself, as people do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    """When the agent's last words match ``pattern``, say ``line`` (at most ``times`` times)."""

    name: str
    pattern: re.Pattern[str]
    line: str
    times: int = 2


def rule(name: str, pattern: str, line: str, times: int = 2) -> Rule:
    return Rule(name, re.compile(pattern, re.IGNORECASE), line, times)


@dataclass
class CallerScript:
    """Decides the caller's next line from what the agent said."""

    opening: str
    rules: list[Rule]
    max_turns: int = 12
    said: list[str] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    finished: bool = False

    def first_line(self) -> str:
        self.said.append(self.opening)
        return self.opening

    def next_line(self, agent_said: str) -> str | None:
        """The caller's answer to the agent's last turn; ``None`` when the caller has nothing more to say."""
        if self.finished or len(self.said) >= self.max_turns:
            return None
        text = " ".join(agent_said.split())
        for r in self.rules:
            if r.pattern.search(text) and self.used.get(r.name, 0) < r.times:
                self.used[r.name] = self.used.get(r.name, 0) + 1
                self.said.append(r.line)
                if r.name == "goodbye":
                    self.finished = True
                return r.line
        if re.search(r"didn't catch|say (that|it) again|sorry\??$|repeat", text, re.IGNORECASE) and self.said:
            line = self.said[-1]
            self.said.append(line)
            return line
        return None


def dental_booking_script(name: str = "Maria Gonzalez") -> CallerScript:
    """A patient books a cleaning at the dental clinic (flows/dental-clinic.yaml)."""
    return CallerScript(
        opening="Hi, I would like to book a cleaning please.",
        rules=[
            rule("goodbye", r"anything else|something else|else i can", "No thanks, that's all. Goodbye."),
            rule("service", r"cleaning, a check|which (service|kind)|what (kind|type)", "A cleaning please."),
            rule(
                "confirm", r"shall i|should i|is that (right|correct)|book it\?|confirm", "Yes, that's right."
            ),
            rule(
                "day", r"which day|what day|another day|other day|when would", "On Tuesday, please.", times=1
            ),
            rule(
                "other_day", r"which day|what day|another day|other day|when would", "How about Wednesday?", 1
            ),
            rule("time", r"which (one|time)|would you like|i have|available", "The first one please."),
            rule("name", r"your (full )?name|who am i|may i have your", f"My name is {name}."),
        ],
    )
