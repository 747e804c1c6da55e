"""The demo caller's side of the conversation, as a pure state machine (no audio, no sockets, no clock).

A :class:`CallerScript` answers what the agent just said, the way a person would: a rule per kind of
question (which day, which time, your name, shall I book it…) matched on the agent's *question* — the
last sentence that asks something — and nothing else. It does not follow a fixed list, so the call still
works when the agent asks in another order, skips a question (a known caller's name), asks again (then the
caller rephrases), or reads back something wrong (then the caller corrects it).

What the caller came for is a list of :class:`Task` s (book, cancel, ask the hours…). A task is done when
the runner reports the tool result or operator decision that settles it (:meth:`CallerScript.observe_tool`,
:meth:`CallerScript.observe_approval`), or when the agent says so in words; "anything else?" is then
answered with the next task, or a goodbye. The per-flow scripts are in :mod:`ivr.demo.scripts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .goals import Goal

#: The agent asks the caller to say it again (a re-ask, a no-match, a "pardon?").
REASK = re.compile(
    r"didn'?t (quite )?(catch|get|hear|understand)|say (that|it) again|could you repeat|can you repeat|"
    r"repeat that|a (little|bit) unclear|bit noisy|pardon\?|^sorry\?$",
    re.IGNORECASE,
)

#: The agent is busy (a tool runs, an approval is pending): the caller waits for what comes next.
HOLD = re.compile(
    r"one moment|just a moment|a moment please|please hold|hold on|still checking|stay on the line|"
    r"bear with me|checking (that|this)",
    re.IGNORECASE,
)

_SENTENCE = re.compile(r"[^.?!]+[.?!]*")


def question_of(agent_said: str) -> str:
    """The part of the agent's turn the caller answers: the last sentence that asks something (ends with
    "?"), else the last sentence. "You're booked for Tuesday. Is there anything else?" → the question."""
    text = " ".join(agent_said.split())
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    if not sentences:
        return ""
    asks = [s for s in sentences if s.endswith("?")]
    return asks[-1] if asks else sentences[-1]


@dataclass(frozen=True)
class Line:
    """One thing the caller says; ``unclear`` lines are sent mumbled (the runner garbles the audio)."""

    text: str
    unclear: bool = False


Reply = Callable[["CallerScript", str], "str | None"]
"""A reply computed from the agent's words (the whole turn): pick an offered time, spell a booking id."""


@dataclass(frozen=True)
class Rule:
    """When the agent's question matches ``pattern``, answer with ``reply`` (at most ``times`` times).

    ``reply`` is a tuple of phrasings (each use takes the next; a re-ask of the same question gets the
    next one, as a person rephrases) or a :data:`Reply`. ``when`` limits the rule to before or after the
    caller's tasks are all done; ``hangs_up`` marks the caller's last line.
    """

    name: str
    pattern: re.Pattern[str]
    reply: tuple[str, ...] | Reply
    times: int = 2
    when: Literal["any", "pending", "done"] = "any"
    hangs_up: bool = False
    on_whole_turn: bool = False  # match the whole turn, not only its question


def rule(
    name: str,
    pattern: str,
    reply: str | tuple[str, ...] | Reply,
    *,
    times: int = 2,
    when: Literal["any", "pending", "done"] = "any",
    hangs_up: bool = False,
    on_whole_turn: bool = False,
) -> Rule:
    replies = (reply,) if isinstance(reply, str) else reply
    return Rule(name, re.compile(pattern, re.IGNORECASE), replies, times, when, hangs_up, on_whole_turn)


TaskKind = Literal["book", "cancel", "hours", "address", "transfer", "dish"]


@dataclass(frozen=True)
class Task:
    """Something the caller called for, and how they ask for it (phrasings, used in turn)."""

    kind: TaskKind
    asks: tuple[str, ...]
    #: Words in the agent's turn that show this task is done (the tool/approval reports are the other way).
    done_when_said: re.Pattern[str] | None = None


@dataclass
class CallerScript:
    """Decides the caller's next line from what the agent said (see the module docstring)."""

    flow_id: str
    scenario: str
    tasks: list[Task]
    rules: list[Rule]
    goal: Goal = field(default_factory=lambda: Goal("booked", "book an appointment"))
    #: What the caller knows (name, day, party size, booking id…); the runner adds a seeded booking id.
    facts: dict[str, Any] = field(default_factory=dict)
    #: The operator decision this scenario needs (False for "deny"); None leaves it to the options.
    approve: bool | None = None
    #: A booking to create for the caller before the call (service name), for cancel and move.
    seed_booking: str | None = None
    #: The first line is mumbled (the "unclear line, then recovery" scenario).
    unclear_opening: bool = False
    max_turns: int = 14
    said: list[str] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)  # task kinds settled, in order
    outcomes: dict[str, str] = field(default_factory=dict)  # task kind → "ok" | "denied"
    finished: bool = False
    #: True while a computed reply is asked for again (say the same thing in other words).
    rephrasing: bool = False
    rephrased: int = 0
    _last_rule: str | None = None
    _answered_turn: str = ""
    _task_asks: dict[int, int] = field(default_factory=dict)

    # ---- what the caller is after ----------------------------------------------------------------------

    @property
    def pending(self) -> Task | None:
        for task in self.tasks:
            if task.kind not in self.done:
                return task
        return None

    @property
    def all_done(self) -> bool:
        return self.pending is None

    def settle(self, kind: str, outcome: str = "ok") -> None:
        if kind not in self.done:
            self.done.append(kind)
            self.outcomes[kind] = outcome

    def observe_tool(self, name: str, output: Any) -> None:
        """A tool the agent ran, with its output (a dict when it was JSON): settles book/cancel/dish."""
        data = output if isinstance(output, Mapping) else {}
        status = data.get("status")
        if status == "booked" and data.get("booking_id"):
            self.settle("book")
        elif status == "cancelled" and data.get("booking_id"):
            self.settle("cancel")
        elif name == "menu_item" and data.get("found"):
            self.settle("dish")
        elif name == "transfer_to_human" and "error" not in data:
            self.settle("transfer")

    def observe_approval(self, decision: str, arguments: Mapping[str, Any] | None = None) -> None:
        """An operator decision on a gated tool: a denied booking or cancellation settles that task."""
        if decision != "deny":
            return
        action = (arguments or {}).get("action")
        kind = "cancel" if action == "cancel" else "book"
        self.settle(kind, "denied")

    # ---- the conversation ------------------------------------------------------------------------------

    def first_line(self) -> Line:
        text = self._ask_for(self.tasks[0])
        self.said.append(text)
        self._last_rule = None
        return Line(text, unclear=self.unclear_opening)

    @property
    def last_rule(self) -> str | None:
        """The rule behind the caller's last line (None for a request of their own)."""
        return self._last_rule

    def holding(self, agent_said: str) -> bool:
        """The agent's turn ends with a hold phrase ("One moment please, I'm checking that for you."):
        a person waits for the answer rather than replying to it."""
        sentences = [s.strip() for s in _SENTENCE.findall(" ".join(agent_said.split())) if s.strip()]
        return bool(sentences) and bool(HOLD.search(sentences[-1]))

    def next_line(self, agent_said: str) -> Line | None:
        """The caller's answer to the agent's last turn; ``None`` when the caller has nothing more to say."""
        if self.finished or len(self.said) >= self.max_turns:
            return None
        whole = " ".join(agent_said.split())
        if not whole:
            return None
        for task in self.tasks:
            if task.done_when_said is not None and task.done_when_said.search(whole):
                self.settle(task.kind)
        question = question_of(whole)
        if REASK.search(question) and self.said:
            return self._say(self._rephrase(), self._last_rule)
        for r in self.rules:
            if (r.when == "pending" and self.all_done) or (r.when == "done" and not self.all_done):
                continue
            if not r.pattern.search(whole if r.on_whole_turn else question):
                continue
            if self.used.get(r.name, 0) >= r.times:
                continue
            text = self._reply(r, whole)
            if text is None:
                continue
            self.used[r.name] = self.used.get(r.name, 0) + 1
            if r.hangs_up:
                self.finished = True
            self._answered_turn = whole
            return self._say(text, r.name)
        return None

    def _say(self, text: str, rule_name: str | None) -> Line:
        self.said.append(text)
        self._last_rule = rule_name
        return Line(text)

    def _reply(self, r: Rule, whole: str) -> str | None:
        if callable(r.reply):
            return r.reply(self, whole)
        return r.reply[self.used.get(r.name, 0) % len(r.reply)]

    def _ask_for(self, task: Task) -> str:
        index = self.tasks.index(task)
        n = self._task_asks.get(index, 0)
        self._task_asks[index] = n + 1
        return task.asks[n % len(task.asks)]

    def ask_next_task(self) -> str | None:
        """The line for the next task not done yet (answers "anything else?" / "how can I help?"); mid-call
        it drops the opening's "Hi," and starts with "Yes," as people do."""
        task = self.pending
        if task is None:
            return None
        text = self._ask_for(task)
        if self.done:
            rest = re.sub(r"^(hi|hello)( there)?,?\s*", "", text, flags=re.IGNORECASE)
            text = "Yes, " + rest[:1].lower() + rest[1:]
        return text

    def _rephrase(self) -> str:
        """Asked to say it again: the same answer in other words when there are some, else the same words."""
        last = self.said[-1]
        if self._last_rule in (None, "next_task"):  # an opening or a task request
            task = self.pending
            if task is not None and len(task.asks) > 1:
                return self._ask_for(task)
            return last
        r = next((r for r in self.rules if r.name == self._last_rule), None)
        self.rephrased += 1
        if r is not None and callable(r.reply):
            self.rephrasing = True
            try:
                return r.reply(self, self._answered_turn) or last
            finally:
                self.rephrasing = False
        if r is None or len(r.reply) < 2:
            return last
        text = self._reply(r, "")
        self.used[r.name] = self.used.get(r.name, 0) + 1
        return text or last
