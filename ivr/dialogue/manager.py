"""The rule-based dialogue of a call on the local engine: what to say and which tools to call, turn by turn.

Sans-I/O and synchronous: :class:`Dialogue` takes what the caller said (recogniser text and its
confidence), tool results and approval decisions, and answers with :data:`Action` lists — :class:`Say` a
line, :class:`CallTool` run a tool — for the engine to perform in order. It never waits, sleeps or talks to
Redis; the engine runs the tools through the call runtime (stage checks and the approval gate included)
and reports each result with the same ``call_id``.

How a turn goes (docs/offline-dialogue.md has the flow author's view):

* The utterance is matched against the current stage's intents, then the flow's global ones
  (:mod:`ivr.dialogue.intents`). The intent's slots are parsed from the same utterance first
  (:mod:`ivr.dialogue.slots`), then each missing one is asked in order; an answer may fill other missing
  slots too. An ``offer`` slot calls its tool when reached and reads out the options. A clearly different
  intent ("actually, can I speak to a person") switches over while slots are being asked.
* With every slot filled (and the confirmation answered yes), the intent's steps run: ``say``, ``tool``,
  ``goto`` (a call of the current stage's move-only transition tool; the stage changes when its result
  arrives, then the new stage's ``on_enter`` steps run, the words that led there are tried again in the new
  stage, and otherwise its ``prompt`` is said), ``end_call`` and ``transfer``.
* A tool error says the step's ``on_error`` (or a generic apology), skips the remaining steps and says the
  stage prompt. A template value that does not exist is never filled in: the step fails the same way.
* A result ``{"status": "pending_approval"}`` makes the dialogue wait (``waiting == "approval"``); the
  runtime plays the hold phrase; :meth:`Dialogue.approval_decided` continues (approved: as if the tool had
  returned that output) or apologises and says the stage prompt (denied).
* Confidence comes in three bands (:mod:`ivr.dialogue.confidence`): a turn heard unsure is used only where
  it fits what is expected: a value read from it is confirmed back ("Tuesday the 10th, right?") rather than
  asked for again, and a clean yes/no to a yes/no question is taken as said.
* The recogniser's other readings of a turn (``alternatives``) are used when a slot question is open and
  the best reading gives no value for it: a close runner-up that does is taken as an unsure turn, so its
  value is read back, never acted on silently (:mod:`ivr.dialogue.nbest`). For a day, a weekday heard as
  other words ("to z would work for me") is the last resort, read back the same way
  (:mod:`ivr.dialogue.soundalike`).
* A caller may change a value already given, while another question is open or at the confirmation ("no,
  wednesday", "actually make it 3", "10:30 instead"): just that value changes, and an offer that depends
  on it is fetched again (:mod:`ivr.dialogue.corrections`).
* A turn not heard, an answer that does not fit, or no matching intent is a failure: the caller is asked
  again (``reask`` lines in turn, ``no_match``, or "Sorry, I didn't quite get that." with the question);
  the last try before giving up adds the flow's ``keypad`` line; after ``max_reasks`` failures in a row
  the ``giveup`` steps run. Giveup steps that leave the call open let the caller go on; a second giveup
  without a success in between ends the call. "Repeat that" says the last turn again.
* A read-back the caller denies (a "…, right?" check or the intent's confirmation) asks again once; the
  second no to the same slot runs the giveup steps (a transfer while open, the keypad after hours), since
  the same mishearing would be read back for ever (:data:`READBACK_TRIES`). The confirmation of a request
  of several slots ("…, under Maria. Shall I book it?") turned down twice with a plain no is different: the
  cleared answers were asked again in between (a misheard value is corrected with "no, wednesday"), so the
  caller does not want it. Nothing is done, ``phrases.dropped`` is said and the stage prompt follows;
  nobody is put through.
* A choice with ``times`` (dinner: 16:00-24:00) narrows its offer: an unfilled optional time argument of
  the offer's tool starts at the choice's times, and options outside them are not read out.
* While a tool runs, what the caller says is kept (the latest utterance only) and handled as soon as the
  dialogue listens again; while an approval is pending, the caller hears "Still checking, please hold on."
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, Literal

from ivr.dialogue import corrections, filling, nbest
from ivr.dialogue import slots as parse
from ivr.dialogue.confidence import FLOOR_FRACTION, Calibration
from ivr.dialogue.intents import STRONG, match_intent
from ivr.dialogue.soundalike import weekday_sounding
from ivr.dialogue.values import Missing, SlotValue, Values
from ivr.dialogue.words import join_words, tokens
from ivr.flows.model import Flow
from ivr.flows.offline import Intent, Offline, Phrases, Slot, Step

__all__ = ["Action", "CallTool", "Dialogue", "Say", "Waiting"]


@dataclass(frozen=True)
class Say:
    """Speak ``text`` to the caller."""

    text: str


@dataclass(frozen=True)
class CallTool:
    """Run tool ``name`` with ``arguments``; report its output with :meth:`Dialogue.tool_result`."""

    call_id: str
    name: str
    arguments: dict[str, Any]


Action = Say | CallTool
Waiting = Literal["caller", "tool", "approval", "ended"]

#: A turn below ``min_confidence`` but at least this fraction of it is used when its words fit what the
#: dialogue expects (see :mod:`ivr.dialogue.confidence` and ``Dialogue._fits``).
LOW_CONFIDENCE_FLOOR = FLOOR_FRACTION
#: A template that is one placeholder and nothing else: ``{{ time }}``.
_ONE_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
#: A slot whose read-back the caller denied this often is not read back again: the giveup steps run.
READBACK_TRIES = 2

_REPEAT_WHOLE = (
    ("pardon",),
    ("pardon", "me"),
    ("sorry",),
    ("what",),
    ("huh",),
    ("excuse", "me"),
    ("sorry", "what"),
    ("come", "again"),
)
_REPEAT_PARTS = (
    "repeat",
    "say that again",
    "say it again",
    "say again",
    "come again",
    "didn't catch",
    "did not catch",
    "what did you say",
    "what was that",
    "one more time",
)


def _is_repeat(words: list[str]) -> bool:
    if tuple(words) in _REPEAT_WHOLE:
        return True
    joined = f" {' '.join(words)} "
    return any(f" {part} " in joined for part in _REPEAT_PARTS)


def _intent(data: dict[str, Any]) -> Intent:
    return Intent.model_validate(data)


def _builtin_intents(flow: Flow) -> list[Intent]:
    """What a flow without an ``offline`` section understands: a person, and goodbye."""
    types = {t.type for t in flow.tools}
    out = []
    if "transfer_to_human" in types:
        out.append(
            _intent(
                {
                    "id": "person",
                    "examples": [
                        "can I speak to a person",
                        "put me through to someone",
                        "a real person please",
                    ],
                    "keywords": ["person", "human", "operator", "someone", "agent", "representative"],
                    "steps": [{"transfer": True}],
                }
            )
        )
    if "end_call" in types:
        out.append(
            _intent(
                {
                    "id": "goodbye",
                    "examples": ["goodbye", "bye bye", "that's all thank you", "no thanks goodbye"],
                    "keywords": ["goodbye", "bye"],
                    "steps": [{"say": "Thank you for calling. Goodbye!"}, {"end_call": True}],
                }
            )
        )
    return out


def _opening_check(flow: Flow) -> Callable[[time], bool] | None:
    """Whether a time of day falls inside the flow's weekly opening hours (on any day)."""
    hours = flow.opening_hours
    if hours is None:
        return None
    ranges: list[tuple[int, int]] = []
    for weekday in range(7):
        for text in hours.weekly(weekday):
            start, end = text.split("-")
            ranges.append((_minutes(start), _minutes(end)))
    if not ranges:
        return None
    return lambda moment: any(a <= moment.hour * 60 + moment.minute < b for a, b in ranges)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _decode(output: str | None) -> dict[str, Any]:
    """A tool output as a dict; unreadable output is an error result."""
    if output is None:
        return {"error": {"type": "tool_failed", "message": "The tool returned nothing."}}
    try:
        data = json.loads(output)
    except ValueError:
        return {"error": {"type": "tool_failed", "message": "The tool's result could not be read."}}
    if not isinstance(data, dict):
        return {"error": {"type": "tool_failed", "message": "The tool's result is not an object."}}
    return data


def _clean(text: str) -> str:
    return " ".join(text.split())


@dataclass
class _Task:
    """An intent in progress: its filled slots, the question pending, options offered."""

    intent: Intent
    values: dict[str, SlotValue] = field(default_factory=dict)
    asking: Slot | None = None
    confirming: bool = False
    options: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    #: A time the caller mentioned, used to pick an offer without asking when exactly one option fits.
    hint: time | None = None
    #: A value heard with low confidence, being confirmed ("Tuesday the 10th, right?").
    checking: tuple[Slot, SlotValue] | None = None
    #: How often the caller said no to a read-back of each slot (a check or the confirmation).
    rejected: dict[str, int] = field(default_factory=dict)
    #: How often the caller said no to the confirmation of a request of several slots ("Shall I book it?").
    declined: int = 0


@dataclass
class _Runner:
    """Steps being run, and what happens once they are done."""

    steps: Sequence[Step]
    after: Literal["start", "enter", "intent", "giveup"]
    index: int = 0


@dataclass(frozen=True)
class _Pending:
    """The tool call whose result the dialogue waits for, and what the result is for."""

    call_id: str
    tool: str
    kind: Literal["step", "offer", "goto", "end"]
    step: Step | None = None
    slot: Slot | None = None
    target: str | None = None


class Dialogue:
    """The dialogue of one call (see the module docstring)."""

    def __init__(
        self, flow: Flow, *, stage: str | None = None, context: Mapping[str, str], today: date
    ) -> None:
        """``context`` fills call values (``Flow.call_context``); ``today`` anchors dates ("tomorrow")."""
        self.flow = flow
        self._offline = flow.offline if flow.offline is not None else Offline()
        self._global = list(flow.offline.intents) if flow.offline is not None else _builtin_intents(flow)
        self._context = dict(context)
        self._today = today
        self._stage: str | None = None
        if flow.stages:
            start = stage if stage is not None else flow.start_stage_id
            if flow.stage(start) is None:
                known = ", ".join(s.id for s in flow.stages)
                raise ValueError(f"flow {flow.id!r} has no stage {start!r} (stages: {known})")
            self._stage = start
        self._plausible = _opening_check(flow)
        self._results: dict[str, Any] = {}
        self._task: _Task | None = None
        self._runner: _Runner | None = None
        self._pending: _Pending | None = None
        self._waiting: Waiting = "caller"
        self._failures = 0
        self._reask_turn = 0
        self._forgive = False
        self._calibration = Calibration(self._offline.min_confidence)
        #: The turn being handled was heard with low confidence: values read from it are confirmed.
        self._unsure = False
        #: The giveup steps ran and nothing has succeeded since.
        self._gave_up = False
        self._said: list[str] = []
        self._last_prompt = self._greeting()
        self._calls = 0
        #: The words that started an intent in this turn, tried again in the stage a goto leads to.
        self._replay: str | None = None
        self._queued: tuple[str, float, Sequence[tuple[str, float]]] | None = None
        #: How often the caller talked over the agent.
        self.interruptions = 0

    # -- state ------------------------------------------------------------------------------------------

    @property
    def stage(self) -> str | None:
        """The current stage (``None`` for a flow without stages)."""
        return self._stage

    @property
    def waiting(self) -> Waiting:
        """What the dialogue waits for: the caller, a tool result, an approval, or nothing (ended)."""
        return self._waiting

    @property
    def last_prompt(self) -> str | None:
        """What the agent said in its last turn (the greeting at first), for "repeat that"."""
        return self._last_prompt

    @property
    def results(self) -> Mapping[str, Any]:
        """Tool results saved with ``as`` so far."""
        return dict(self._results)

    # -- events -----------------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """Begin the call (after the greeting): ``on_start``, then the stage's ``on_enter`` and prompt."""
        out: list[Action] = []
        self._said = []
        self._runner = _Runner(self._offline.on_start, "start")
        self._run(out)
        return self._finish(out)

    def heard(
        self, text: str, confidence: float, alternatives: Sequence[tuple[str, float]] = ()
    ) -> list[Action]:
        """One caller turn: recogniser text (or typed text) and its confidence in 0..1; ``alternatives``:
        the recogniser's other readings as (text, confidence), used when ``text`` does not answer the
        question asked (:mod:`ivr.dialogue.nbest`)."""
        if self._waiting == "ended":
            return []
        if self._waiting == "tool":
            self._queued = (text, confidence, tuple(alternatives))
            return []
        if self._waiting == "approval":
            return [Say(_clean(self._offline.phrases.still_checking))]
        out: list[Action] = []
        self._heard(out, text, confidence, alternatives)
        return self._finish(out)

    def tool_result(self, call_id: str, output: str) -> list[Action]:
        """The output (JSON text) of the tool call ``call_id``; results of other calls are ignored."""
        pending = self._pending
        if pending is None or call_id != pending.call_id:
            return []
        data = _decode(output)
        if data.get("status") == "pending_approval":
            self._waiting = "approval"
            return []
        self._pending = None
        out: list[Action] = []
        if data.get("status") == "denied":
            self._denied(out, str(data.get("message") or ""))
        else:
            self._resume(out, pending, data)
        return self._finish(out)

    def approval_decided(self, tool: str, approved: bool, output: str | None, message: str) -> list[Action]:
        """An operator decided a pending action; ``output`` is the tool's result when it ran (approved)."""
        pending = self._pending
        if self._waiting != "approval" or pending is None or tool != pending.tool:
            return []
        self._pending = None
        self._waiting = "tool"
        out: list[Action] = []
        if approved:
            self._resume(out, pending, _decode(output))
        else:
            self._denied(out, message)
        return self._finish(out)

    def interrupted(self) -> None:
        """The caller talked over the agent: the next failed turn is asked again without counting."""
        self.interruptions += 1
        self._forgive = True

    def stage_changed(self, stage: str) -> list[Action]:
        """The runtime moved the call to ``stage`` (a keypad key): forget the intent and enter the stage.

        A move the dialogue asked for itself (a ``goto``) may be reported here before its tool result; it
        then counts as that result.
        """
        if self._waiting == "ended" or stage == self._stage or self.flow.stage(stage) is None:
            return []
        out: list[Action] = []
        pending = self._pending
        if pending is not None and pending.kind == "goto" and pending.target == stage:
            # Our own move, reported before its tool result: carry on as if the result had come.
            self._pending = None
            self._resume(out, pending, {"status": "ok"})
            return self._finish(out)
        self._stage = stage
        self._task = None
        self._pending = None
        self._replay = None
        self._said = []
        self._runner = _Runner(self._stage_offline_on_enter(), "enter")
        self._run(out)
        return self._finish(out)

    # -- turns ------------------------------------------------------------------------------------------

    def _finish(self, out: list[Action]) -> list[Action]:
        if self._queued is not None and self._waiting == "caller":
            text, confidence, alternatives = self._queued
            self._queued = None
            self._heard(out, text, confidence, alternatives)
        if self._said:
            self._last_prompt = " ".join(self._said)
        return out

    def _heard(
        self, out: list[Action], text: str, confidence: float, alternatives: Sequence[tuple[str, float]] = ()
    ) -> None:
        band = self._calibration.band(text, confidence)
        rescued = self._rescue(text, confidence, alternatives)
        if rescued is not None:  # a runner-up answers the question: use it, and read its value back
            text, confidence = rescued
            band = "unsure"
        words = tokens(text)
        if band == "unheard":
            self._fail(out, "low")
            return
        if _is_repeat(words):
            if self._last_prompt:
                out.append(Say(self._last_prompt))
            else:
                self._fail(out, "low")
            return
        if band == "unsure" and not self._fits(text):
            self._fail(out, "low")
            return
        self._said = []
        self._replay = None
        self._unsure = band == "unsure"
        try:
            self._hear(out, text, replay=False)
        finally:
            self._unsure = False

    def _rescue(
        self, text: str, confidence: float, alternatives: Sequence[tuple[str, float]]
    ) -> tuple[str, float] | None:
        """A close alternative reading that answers the open slot question when ``text`` gives nothing the
        dialogue can use (no value for the asked slot, for any other slot of the intent, nor a clear
        request for another intent); for a day, also a reading with a weekday heard as other words
        (:mod:`ivr.dialogue.soundalike`). Only for a slot question: not at a confirmation or a read-back."""
        task = self._task
        if task is None or task.asking is None:
            return None
        if task.confirming or task.checking is not None or _is_repeat(tokens(text)):
            return None
        asked = task.asking
        if asked.type in ("yes_no", "text"):  # "yes, right?" helps nobody; any words are a text answer
            return None
        if any(self._parse(s, text, task, strict=True) is not None for s in task.intent.slots):
            return None  # a volunteered value or a correction: the best reading is used
        if self._other(text, task) is not None:
            return None

        def answers(words: str) -> bool:
            return self._parse(asked, words, task, strict=False) is not None

        floor = self._calibration.floor
        found = nbest.rescue(text, confidence, alternatives, answers, floor=floor)
        if found is None and asked.type == "date":  # "to z would work for me": a weekday heard as words
            found = nbest.respell(text, confidence, alternatives, weekday_sounding, answers, floor=floor)
        return found

    def _fits(self, text: str) -> bool:
        """Whether a turn heard with low confidence fits what the dialogue expects, so its words are used.

        A clean yes or no to a confirmation (or to "…, right?") is taken: the recogniser's score is poorly
        calibrated on one-word replies, and asking again after a yes is the loop callers hate. An answer to
        an open question fits when the asked slot can be read from it (the value is then confirmed back,
        not taken as said). With no question open, the words must strongly match an expected intent
        (:data:`STRONG`).
        """
        task = self._task
        if task is not None and (task.confirming or task.checking is not None):
            if parse.parse_yes_no(text) is not None:
                return True
            slot = task.checking[0] if task.checking is not None else None
            return slot is not None and self._parse(slot, text, task, strict=False) is not None
        if task is not None and task.asking is not None:
            return self._parse(task.asking, text, task, strict=False) is not None
        return match_intent(text, self._intents(), threshold=STRONG) is not None

    def _hear(self, out: list[Action], text: str, *, replay: bool) -> None:
        task = self._task
        if task is not None and task.checking is not None:
            self._check_answer(out, task, text, replay)
            return
        if task is not None and task.confirming:
            self._confirmation(out, task, text, replay)
            return
        if task is not None and task.asking is not None:
            self._answer(out, task, task.asking, text, replay)
            return
        match = match_intent(text, self._intents())
        intent = match.intent if match is not None else self._named_choice(text)
        if intent is not None:
            self._succeeded()
            self._begin(out, intent, text, replay)
        elif replay:
            self._listen(out, prompt=True)
        else:
            self._fail(out, "no_match")

    def _named_choice(self, text: str) -> Intent | None:
        """The one intent with a choice slot the words name ("do you have tiramisu": a dish, though no example
        of the intent matches): the choice is as good as a keyword. ``None`` if no intent or several fit."""
        if self._unsure:
            return None
        hits = [
            intent
            for intent in self._intents()
            if any(s.type == "choice" and parse.parse_choice(text, s.choices or {}) for s in intent.slots)
        ]
        return hits[0] if len(hits) == 1 else None

    def _confirmation(self, out: list[Action], task: _Task, text: str, replay: bool) -> None:
        if self._correct(task, text):  # "no, wednesday", "actually make it three": change just that
            self._succeeded()
            task.confirming = False
            self._advance(out)
            return
        answer = parse.parse_yes_no(text)
        if answer is True:
            self._succeeded()
            task.confirming = False
            self._runner = _Runner(task.intent.steps, "intent")
            self._run(out)
            return
        if answer is False:
            self._succeeded()
            task.confirming = False
            clears = task.intent.confirm_no_clears
            if clears == []:  # nothing to ask again: the caller dropped the request
                self._task = None
                self._listen(out, prompt=True)
                return
            names = [s.name for s in task.intent.slots] if clears is None else clears
            filled = [n for n in names if n in task.values]
            task.declined += len(task.intent.slots) > 1  # a summary of the request, not one value read back
            if task.declined >= READBACK_TRIES:
                # The whole request turned down twice: the caller does not want it (a mishearing would
                # have been corrected in the answers asked again), so nothing is done; no hand-over.
                self._task = None
                self._say(out, self._render_or(self._offline.phrases.dropped))
                self._listen(out, prompt=True)
                return
            if self._rejected(out, task, filled):
                return
            self._clear(task, names)
            self._volunteer(task, text)
            self._advance(out)
            return
        other = self._other(text, task)
        if other is not None:
            self._begin(out, other, text, replay)
        else:
            self._fail(out, "unclear")

    def _answer(self, out: list[Action], task: _Task, slot: Slot, text: str, replay: bool) -> None:
        other = self._other(text, task)
        if other is not None and slot.type in ("name", "text"):  # free answers cannot rule out a request
            self._begin(out, other, text, replay)
            return
        value = self._parse(slot, text, task, strict=False)
        if value is not None and self._unsure:
            self._check(out, task, slot, value)
            return
        before = len(task.values)
        if value is not None:
            task.values[slot.name] = value
        elif slot.type == "offer" and self._corrected(task, slot, text):
            self._succeeded()
            self._advance(out)  # "have you got anything on wednesday?": new options for the new day
            return
        changed = self._correct(task, text, skip=slot.name)
        self._volunteer(task, text)
        if value is not None or changed or len(task.values) > before:
            self._succeeded()
            task.asking = None
            self._advance(out)
        elif other is not None:
            self._begin(out, other, text, replay)
        else:
            self._fail(out, "unclear")

    def _check(self, out: list[Action], task: _Task, slot: Slot, value: SlotValue) -> None:
        """Confirm a value heard with low confidence instead of asking for it again."""
        try:
            text = self._check_text(slot, value)
        except Missing:
            self._fail(out, "low")
            return
        task.asking = slot
        task.checking = (slot, value)
        self._question(out, text)

    def _check_text(self, slot: Slot, value: SlotValue) -> str:
        return self._values({"value": filling.check_spoken(slot, value)}).text(self._offline.phrases.check)

    def _check_answer(self, out: list[Action], task: _Task, text: str, replay: bool) -> None:
        """The answer to "Tuesday the 10th, right?": yes takes the value, another value replaces it, no asks
        the question again."""
        assert task.checking is not None
        slot, value = task.checking
        answer = parse.parse_yes_no(text)
        fresh = self._parse(slot, text, task, strict=False)
        if fresh is not None and fresh.value != value.value:
            task.checking = None
            if self._unsure:
                self._check(out, task, slot, fresh)
                return
            self._succeeded()
            task.values[slot.name] = fresh
            self._volunteer(task, text)
            self._advance(out)
            return
        if answer is True or (fresh is not None and answer is None):
            self._succeeded()
            task.checking = None
            task.values[slot.name] = value
            self._advance(out)
            return
        if answer is False:
            task.checking = None
            if self._rejected(out, task, [slot.name]):
                return
            if not self._count_failure(out):
                self._ask(out, task, slot)
            return
        other = self._other(text, task)
        if other is not None:
            self._begin(out, other, text, replay)
        else:
            self._fail(out, "unclear")

    def _correct(self, task: _Task, text: str, *, skip: str | None = None) -> bool:
        """Replace filled values the caller changed ("no, wednesday", "actually make it 3", "can we do
        10:30 instead"); offers that depend on a changed value are fetched again. Whether anything
        changed."""
        cue = corrections.has_cue(text)
        changed: list[str] = []
        for slot in task.intent.slots:
            current = task.values.get(slot.name)
            if current is None or slot.name == skip or slot.type in ("offer", "yes_no", "text"):
                continue
            if slot.type == "choice" and not cue:
                continue
            value = self._parse(slot, text, task, strict=True)
            if value is None and slot.type == "number":
                number = corrections.replacing_number(text)
                if number is not None:
                    value = filling.read_slot(slot, str(number), today=self._today, plausible=None)
            if value is None or value.value == current.value:
                continue
            if slot.type == "date" and not cue and corrections.same_weekday(current.value, value.value, text):
                continue  # "tuesday at 9" about the tuesday already chosen
            task.values[slot.name] = value
            changed.append(slot.name)
        for name in changed:
            for offer in corrections.dependents(task.intent.slots, name):
                task.values.pop(offer, None)
                task.options.pop(offer, None)
                task.hint = parse.parse_time(text, strict=True, plausible=self._plausible) or task.hint
        moved = self._retime(task, text, skip=skip) if not changed else False
        return bool(changed) or moved

    def _retime(self, task: _Task, text: str, *, skip: str | None) -> bool:
        """A new time for an offer already chosen ("actually, 10:30 instead"): the option at that time
        when exactly one fits, else the offer is asked again."""
        if not corrections.has_cue(text):
            return False
        wanted = parse.parse_time(text, strict=True, plausible=self._plausible)
        if wanted is None:  # "actually 1230 instead", "no, 12 30": a bare clock only for an offered time
            return self._repick(task, text, skip=skip)
        moved = False
        for slot in task.intent.slots:
            current = task.values.get(slot.name)
            if slot.type != "offer" or current is None or slot.name == skip:
                continue
            options = task.options.get(slot.name) or []
            if parse.option_time(str(current.value), current.spoken) == wanted:
                continue
            picked = filling.hinted(slot, options, wanted)
            if picked is None:
                task.values.pop(slot.name, None)
                task.hint = wanted
            else:
                task.values[slot.name] = picked
            moved = True
        return moved

    def _repick(self, task: _Task, text: str, *, skip: str | None) -> bool:
        """Another offered option, named by a time written as Whisper writes it ("1230", "12 30", "a15"),
        which reads as a time only next to the options offered. Whether one was picked."""
        for slot in task.intent.slots:
            current = task.values.get(slot.name)
            options = task.options.get(slot.name) or []
            if slot.type != "offer" or current is None or slot.name == skip or not options:
                continue
            labels = [filling.option_label(slot, o) for o in options]
            values = [str(filling.option_value(slot, o)) for o in options]
            index = parse.option_at_time(text, labels, values)
            if index is not None and values[index] != str(current.value):
                task.values[slot.name] = filling.chosen(slot, options[index])
                return True
        return False

    def _corrected(self, task: _Task, offer: Slot, text: str) -> bool:
        """Whether the answer to an offer changed one of its inputs (its ``none_clears`` slots) instead."""
        changed = False
        for slot in task.intent.slots:
            if slot.name not in offer.none_clears or slot.type == "offer":
                continue
            value = self._parse(slot, text, task, strict=True)
            current = task.values.get(slot.name)
            if value is not None and (current is None or current.value != value.value):
                task.values[slot.name] = value
                changed = True
        if changed:
            task.options.clear()
        return changed

    def _begin(self, out: list[Action], intent: Intent, text: str, replay: bool) -> None:
        self._task = task = _Task(intent)
        if not replay:
            self._replay = text
        self._volunteer(task, text)
        self._advance(out)

    def _intents(self) -> list[Intent]:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        local = list(stage.offline.intents) if stage is not None and stage.offline is not None else []
        return local + self._global

    def _other(self, text: str, task: _Task) -> Intent | None:
        """Another intent the utterance clearly asks for, while ``task`` is asking something."""
        others = [i for i in self._intents() if i is not task.intent]
        match = match_intent(text, others, threshold=STRONG)
        return match.intent if match is not None else None

    # -- slots ------------------------------------------------------------------------------------------

    def _volunteer(self, task: _Task, text: str) -> None:
        """Fill missing slots the caller mentioned without being asked (strict parsing)."""
        for slot in task.intent.slots:
            if slot.name in task.values or slot.type == "offer":
                continue
            value = self._parse(slot, text, task, strict=True)
            if value is not None:
                task.values[slot.name] = value
        hint = parse.parse_time(text, strict=True, plausible=self._plausible)
        if hint is not None:
            task.hint = hint
        for slot in task.intent.slots:  # "at 7.30": dinner, when the flow gives the choices' times
            if slot.type == "choice" and slot.times and slot.name not in task.values and hint is not None:
                picked = filling.choice_at(slot, hint)
                if picked is not None:
                    task.values[slot.name] = picked

    def _parse(self, slot: Slot, text: str, task: _Task, *, strict: bool) -> SlotValue | None:
        return filling.read_slot(
            slot,
            text,
            today=self._today,
            plausible=self._plausible,
            options=task.options.get(slot.name) or [],
            strict=strict,
        )

    def _clear(self, task: _Task, names: Sequence[str]) -> None:
        for name in names:
            task.values.pop(name, None)
        task.options.clear()

    def _default(self, slot: Slot, task: _Task) -> SlotValue | None:
        assert slot.default is not None
        try:
            text = _clean(self._values().text(slot.default))
        except Missing:
            return None
        if not text:
            return None
        if slot.type in ("name", "text"):
            return SlotValue(text, text)
        return self._parse(slot, text, task, strict=False)

    def _advance(self, out: list[Action]) -> None:
        """Ask for the next missing slot, fetch an offer, confirm, or run the steps."""
        task = self._task
        assert task is not None
        task.asking = None
        for slot in task.intent.slots:
            if slot.name in task.values or slot.optional:
                continue
            if slot.default is not None:
                value = self._default(slot, task)
                if value is not None:
                    task.values[slot.name] = value
                    continue
            if slot.type == "offer":
                options = task.options.get(slot.name)
                if options is None:
                    self._fetch(out, slot)
                    return
                picked = filling.hinted(slot, options, task.hint)
                if picked is not None:
                    task.values[slot.name] = picked
                    task.hint = None
                    continue
            self._ask(out, task, slot)
            return
        if task.intent.confirm is not None:
            try:
                text = self._values().text(task.intent.confirm)
            except Missing:
                self._abort(out, self._offline.phrases.missing)
                return
            task.confirming = True
            self._question(out, text)
            return
        self._runner = _Runner(task.intent.steps, "intent")
        self._run(out)

    def _ask_text(self, task: _Task, slot: Slot) -> str:
        assert slot.ask is not None
        extra: dict[str, Any] = {}
        if slot.type == "offer":
            options = task.options.get(slot.name) or []
            extra["options"] = join_words([filling.option_label(slot, o) for o in options], "or")
        return self._values(extra).text(slot.ask)

    def _ask(self, out: list[Action], task: _Task, slot: Slot) -> None:
        try:
            text = self._ask_text(task, slot)
        except Missing:
            self._abort(out, self._offline.phrases.missing)
            return
        task.asking = slot
        self._question(out, text)

    def _fetch(self, out: list[Action], slot: Slot) -> None:
        assert slot.tool is not None
        try:
            arguments = self._arguments(slot.arguments)
        except Missing:
            self._abort(out, self._offline.phrases.missing)
            return
        self._narrow(arguments, slot)
        self._call(out, slot.tool, arguments, "offer", slot=slot)

    def _window(self) -> tuple[int, int] | None:
        """The times of day of the choice the caller made, when it has ``times`` (dinner: 16:00-24:00)."""
        task = self._task
        if task is None:
            return None
        for slot in task.intent.slots:
            value = task.values.get(slot.name)
            if slot.type == "choice" and slot.times and value is not None:
                span = filling.window(slot, value.value)
                if span is not None:
                    return span
        return None

    def _narrow(self, arguments: dict[str, Any], offer: Slot) -> None:
        """An offer argument that is just an optional time slot the caller did not give ("after_time:
        {{ time }}") starts at the chosen choice's times instead: dinner is searched from 16:00, so the
        tool's first free times are not lunch times."""
        task, span = self._task, self._window()
        if task is None or span is None:
            return
        times = {s.name for s in task.intent.slots if s.type == "time" and s.name not in task.values}
        for key, template in offer.arguments.items():
            alone = _ONE_PLACEHOLDER.fullmatch(template.strip()) if isinstance(template, str) else None
            if key not in arguments and alone is not None and alone.group(1) in times:
                arguments[key] = f"{span[0] // 60:02d}:{span[0] % 60:02d}"

    def _offer_result(self, out: list[Action], slot: Slot, data: Mapping[str, Any]) -> None:
        task = self._task
        if task is None:
            self._listen(out, prompt=True)
            return
        if isinstance(data.get("error"), Mapping):
            self._abort(out, self._offline.phrases.tool_error)
            return
        options = filling.usable_options(slot, data, within=self._window())
        if options:
            task.options[slot.name] = options
            self._advance(out)
            return
        text = self._offline.phrases.none
        if slot.none is not None:
            with contextlib.suppress(Missing):
                text = self._values().text(slot.none)
        self._clear(task, slot.none_clears)
        cleared = [s for s in task.intent.slots if s.name in slot.none_clears]
        if cleared:
            task.asking = cleared[0]
            self._question(out, text)
        else:
            self._task = None
            self._say(out, text)
            self._listen(out, prompt=True)

    # -- steps ------------------------------------------------------------------------------------------

    def _run(self, out: list[Action]) -> None:
        """Run steps until one waits for a tool, or they end."""
        while self._runner is not None:
            runner = self._runner
            if runner.index >= len(runner.steps):
                self._runner = None
                self._after(out, runner.after)
                return
            step = runner.steps[runner.index]
            runner.index += 1
            values = self._values()
            if step.when is not None and not values.condition(step.when):
                continue
            if step.unless is not None and values.condition(step.unless):
                continue
            if step.say is not None:
                try:
                    self._say(out, values.text(step.say))
                except Missing:
                    self._abort(out, self._offline.phrases.missing)
                    return
                continue
            self._act(out, step)
            return

    def _act(self, out: list[Action], step: Step) -> None:
        """A step that calls a tool (a declared tool, a stage move, hang-up or transfer)."""
        if step.tool is not None:
            try:
                arguments = self._arguments(step.arguments)
            except Missing:
                self._abort(out, self._offline.phrases.missing)
                return
            config = self.flow.tool(step.tool)
            ends = config is not None and config.type in ("end_call", "transfer_to_human")
            self._call(out, step.tool, arguments, "end" if ends else "step", step=step)
            if ends:
                self._waiting = "ended"
            return
        if step.goto is not None:
            if step.goto == self._stage:
                self._run(out)
                return
            tool = self._transition_tool(step.goto)
            if tool is None:  # the flow checks rule this out; stay safe anyway
                self._abort(out, self._offline.phrases.tool_error)
                return
            self._call(out, tool, {"reason": self._reason()}, "goto", step=step, target=step.goto)
            return
        kind = "end_call" if step.end_call else "transfer_to_human"
        name = next((t.name for t in self.flow.tools if t.type == kind), None)
        if name is None:
            self._abort(out, self._offline.phrases.tool_error)
            return
        self._call(out, name, {"reason": self._reason()}, "end", step=step)
        self._waiting = "ended"

    def _after(self, out: list[Action], after: str) -> None:
        if after == "start":
            self._runner = _Runner(self._stage_offline_on_enter(), "enter")
            self._run(out)
        elif after == "enter":
            replay, self._replay = self._replay, None
            if replay is not None:
                self._hear(out, replay, replay=True)
            else:
                self._listen(out, prompt=True)
        elif after == "intent":
            self._task = None
            self._listen(out, prompt=False)
        else:  # giveup that did not end the call
            self._failures = 0
            self._task = None
            self._listen(out, prompt=True)

    def _resume(self, out: list[Action], pending: _Pending, data: Mapping[str, Any]) -> None:
        """Carry on after a tool result (or an approved action's result)."""
        error = data.get("error") if isinstance(data.get("error"), Mapping) else None
        step = pending.step
        if pending.kind == "offer":
            assert pending.slot is not None
            self._offer_result(out, pending.slot, data)
        elif error is not None and not (step is not None and step.optional and pending.kind == "step"):
            self._waiting = "caller"
            text = self._offline.phrases.tool_error
            if step is not None and step.on_error is not None:
                with contextlib.suppress(Missing):
                    text = self._values({"error": error}).text(step.on_error)
            self._abort(out, text)
        elif pending.kind == "end":
            self._waiting = "ended"
        elif pending.kind == "goto":
            assert pending.target is not None
            self._task = None
            self._stage = pending.target
            self._runner = _Runner(self._stage_offline_on_enter(), "enter")
            self._run(out)
        else:
            if error is None and step is not None and step.as_ is not None:
                self._results[step.as_] = dict(data)
            self._run(out)

    def _denied(self, out: list[Action], message: str) -> None:
        phrases = self._offline.phrases
        try:
            text = self._values({"message": message} if message.strip() else {}).text(phrases.not_approved)
        except Missing:
            text = Phrases().not_approved
        self._abort(out, text)

    def _call(
        self,
        out: list[Action],
        name: str,
        arguments: dict[str, Any],
        kind: Literal["step", "offer", "goto", "end"],
        *,
        step: Step | None = None,
        slot: Slot | None = None,
        target: str | None = None,
    ) -> None:
        """Ask the engine to run a tool, and wait for its result."""
        self._calls += 1
        call_id = f"local_{self._calls}"
        self._pending = _Pending(call_id, name, kind, step, slot, target)
        self._waiting = "tool"
        out.append(CallTool(call_id, name, arguments))

    def _arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        task = self._task
        optional = (
            frozenset(s.name for s in task.intent.slots if s.optional) if task is not None else frozenset()
        )
        rendered = self._values().argument(dict(arguments), optional)
        assert isinstance(rendered, dict)
        return rendered

    def _transition_tool(self, target: str) -> str | None:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        if stage is None:
            return None
        return next((t.tool for t in stage.transitions if t.to == target), None)

    def _reason(self) -> str:
        return f"offline dialogue: {self._task.intent.id}" if self._task is not None else "offline dialogue"

    def _stage_offline_on_enter(self) -> Sequence[Step]:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        return stage.offline.on_enter if stage is not None and stage.offline is not None else ()

    # -- speaking ---------------------------------------------------------------------------------------

    def _values(self, extra: Mapping[str, Any] | None = None) -> Values:
        context = dict(self._context)
        if self._stage is not None:
            context["stage"] = self._stage
        slots = self._task.values if self._task is not None else {}
        return Values(slots=slots, results=self._results, context=context, extra=extra)

    def _say(self, out: list[Action], text: str, *, remember: bool = True) -> None:
        text = _clean(text)
        if not text:
            return
        out.append(Say(text))
        if remember:
            self._said.append(text)

    def _question(self, out: list[Action], text: str) -> None:
        self._say(out, text)
        self._replay = None
        self._waiting = "caller"

    def _prompt(self) -> str | None:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        if stage is None or stage.offline is None or stage.offline.prompt is None:
            return None
        try:
            return self._values().text(stage.offline.prompt)
        except Missing:
            return None

    def _listen(self, out: list[Action], *, prompt: bool) -> None:
        self._waiting = "caller"
        text = self._prompt() if prompt else None
        if text:
            self._question(out, text)

    def _abort(self, out: list[Action], text: str) -> None:
        """Say ``text``, drop the intent and any remaining steps, say the stage prompt and listen."""
        self._runner = None
        self._task = None
        self._pending = None
        with contextlib.suppress(Missing):
            text = self._values().text(text)
        self._say(out, text)
        self._listen(out, prompt=True)

    def _greeting(self) -> str | None:
        if self.flow.greeting is None:
            return None
        try:
            return _clean(self.flow.render(self.flow.greeting, self._context))
        except ValueError:
            return None

    # -- failures ---------------------------------------------------------------------------------------

    def _succeeded(self) -> None:
        self._failures = 0
        self._forgive = False
        self._gave_up = False

    def _rejected(self, out: list[Action], task: _Task, names: Sequence[str]) -> bool:
        """The caller said no to a read-back of ``names``. The second no to the same slot gives up on this
        line (the giveup steps: a transfer, or the keypad): asking once more would read the same mishearing
        back again, and the caller would loop until the call ends. Whether it gave up."""
        for name in names:
            task.rejected[name] = task.rejected.get(name, 0) + 1
        if not any(task.rejected.get(name, 0) >= READBACK_TRIES for name in names):
            return False
        self._give_up(out)
        return True

    def _count_failure(self, out: list[Action]) -> bool:
        """Count a failed turn; when it is one too many, run the giveup steps and return True.

        Giveup steps that leave the call open (the flow offers the keypad or another try) are followed, if
        the caller still cannot be understood, by the default giveup, which ends the call.
        """
        if self._forgive:
            self._forgive = False
        else:
            self._failures += 1
        if self._failures <= self._offline.max_reasks:
            return False
        self._give_up(out)
        return True

    def _give_up(self, out: list[Action]) -> None:
        """Run the giveup steps (the default giveup, which ends the call, after a giveup that did not)."""
        self._failures = 0
        self._task = None
        self._said = []
        steps = self._default_giveup() if self._gave_up else self._giveup_steps()
        self._gave_up = True
        self._runner = _Runner(steps, "giveup")
        self._run(out)

    def _fail(self, out: list[Action], kind: Literal["low", "unclear", "no_match"]) -> None:
        if self._count_failure(out):
            return
        self._waiting = "caller"
        last_try = self._failures == self._offline.max_reasks and self._offline.keypad is not None
        if kind == "low":
            lines = self._offline.reask
            line = lines[self._reask_turn % len(lines)]
            self._reask_turn += 1
            self._say(out, self._render_or(line), remember=False)
        elif kind == "no_match":
            self._say(out, self._render_or(self._offline.no_match), remember=False)
        else:
            self._say(out, self._render_or(self._offline.phrases.unclear), remember=False)
        if last_try:
            assert self._offline.keypad is not None
            self._say(out, self._render_or(self._offline.keypad), remember=False)
        if kind == "unclear":
            question = self._pending_question()
            if question:
                self._say(out, question)

    def _render_or(self, text: str) -> str:
        try:
            return self._values().text(text)
        except Missing:
            return text

    def _pending_question(self) -> str | None:
        task = self._task
        try:
            if task is not None and task.checking is not None:
                return self._check_text(*task.checking)
            if task is not None and task.confirming and task.intent.confirm is not None:
                return self._values().text(task.intent.confirm)
            if task is not None and task.asking is not None:
                return self._ask_text(task, task.asking)
        except Missing:
            return None
        return self._prompt()

    def _giveup_steps(self) -> list[Step]:
        if self._offline.giveup is not None:
            return list(self._offline.giveup)
        return self._default_giveup()

    def _default_giveup(self) -> list[Step]:
        steps = [Step.model_validate({"say": self._offline.phrases.giveup})]
        if any(t.type == "end_call" for t in self.flow.tools):
            steps.append(Step.model_validate({"end_call": True}))
        return steps
