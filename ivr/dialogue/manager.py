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

The parts of :class:`Dialogue` live in their own modules: :mod:`ivr.dialogue.readbacks` (read-backs and
corrections), :mod:`ivr.dialogue.slot_filling` (slots asked, offers), :mod:`ivr.dialogue.steps` (steps, tool
results), :mod:`ivr.dialogue.failures` (asking again, giving up), each built on :mod:`ivr.dialogue.output`
(lines said, tool calls). This module holds the events and the turns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from ivr.dialogue import nbest
from ivr.dialogue import slots as parse
from ivr.dialogue.actions import Action, CallTool, Say, Waiting, clean_text, decode_output
from ivr.dialogue.confidence import FLOOR_FRACTION, Calibration
from ivr.dialogue.failures import Failures
from ivr.dialogue.from_flow import builtin_intents, opening_check
from ivr.dialogue.intents import STRONG, match_intent
from ivr.dialogue.readbacks import READBACK_TRIES as READBACK_TRIES
from ivr.dialogue.readbacks import ReadBacks
from ivr.dialogue.slot_filling import SlotFilling
from ivr.dialogue.soundalike import weekday_sounding
from ivr.dialogue.state import Pending, Runner, Task
from ivr.dialogue.steps import Steps
from ivr.dialogue.words import tokens
from ivr.flows.model import Flow
from ivr.flows.offline import Intent, Offline, Slot

__all__ = ["Action", "CallTool", "Dialogue", "Say", "Waiting"]

#: A turn below ``min_confidence`` but at least this fraction of it is used when its words fit what the
#: dialogue expects (see :mod:`ivr.dialogue.confidence` and ``Dialogue._fits``).
LOW_CONFIDENCE_FLOOR = FLOOR_FRACTION

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


class Dialogue(ReadBacks, SlotFilling, Steps, Failures):
    """The dialogue of one call (see the module docstring)."""

    def __init__(
        self, flow: Flow, *, stage: str | None = None, context: Mapping[str, str], today: date
    ) -> None:
        """``context`` fills call values (``Flow.call_context``); ``today`` anchors dates ("tomorrow")."""
        self.flow = flow
        self._offline = flow.offline if flow.offline is not None else Offline()
        self._global = list(flow.offline.intents) if flow.offline is not None else builtin_intents(flow)
        self._context = dict(context)
        self._today = today
        self._stage: str | None = None
        if flow.stages:
            start = stage if stage is not None else flow.start_stage_id
            if flow.stage(start) is None:
                known = ", ".join(s.id for s in flow.stages)
                raise ValueError(f"flow {flow.id!r} has no stage {start!r} (stages: {known})")
            self._stage = start
        self._plausible = opening_check(flow)
        self._results: dict[str, Any] = {}
        self._task: Task | None = None
        self._runner: Runner | None = None
        self._pending: Pending | None = None
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
        self._runner = Runner(self._offline.on_start, "start")
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
            return [Say(clean_text(self._offline.phrases.still_checking))]
        out: list[Action] = []
        self._heard(out, text, confidence, alternatives)
        return self._finish(out)

    def tool_result(self, call_id: str, output: str) -> list[Action]:
        """The output (JSON text) of the tool call ``call_id``; results of other calls are ignored."""
        pending = self._pending
        if pending is None or call_id != pending.call_id:
            return []
        data = decode_output(output)
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
            self._resume(out, pending, decode_output(output))
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
        self._runner = Runner(self._stage_offline_on_enter(), "enter")
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

        # For a day, "to z would work for me" may still be a weekday heard as other words.
        sounding = weekday_sounding if asked.type == "date" else None
        return nbest.choose(
            text, confidence, alternatives, answers, floor=self._calibration.floor, sounding=sounding
        )

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

    def _answer(self, out: list[Action], task: Task, slot: Slot, text: str, replay: bool) -> None:
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

    def _begin(self, out: list[Action], intent: Intent, text: str, replay: bool) -> None:
        self._task = task = Task(intent)
        if not replay:
            self._replay = text
        self._volunteer(task, text)
        self._advance(out)

    def _intents(self) -> list[Intent]:
        stage = self.flow.stage(self._stage) if self._stage is not None else None
        local = list(stage.offline.intents) if stage is not None and stage.offline is not None else []
        return local + self._global

    def _other(self, text: str, task: Task) -> Intent | None:
        """Another intent the utterance clearly asks for, while ``task`` is asking something."""
        others = [i for i in self._intents() if i is not task.intent]
        match = match_intent(text, others, threshold=STRONG)
        return match.intent if match is not None else None
