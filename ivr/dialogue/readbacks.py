"""Read-backs and corrections: what the caller says about values already heard.

Part of :class:`~ivr.dialogue.manager.Dialogue`: the answer to the intent's confirmation ("…, under Maria.
Shall I book it?") and to the check of a value heard with low confidence ("Tuesday the 10th, right?"), a
read-back denied too often (:data:`READBACK_TRIES`), and values the caller changes while another question
is open or at the confirmation ("no, wednesday", "actually make it 3", "10:30 instead"; the pure helpers
are in :mod:`ivr.dialogue.corrections`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, time
from typing import TYPE_CHECKING, Literal

from ivr.dialogue import corrections, filling
from ivr.dialogue import slots as parse
from ivr.dialogue.actions import Action
from ivr.dialogue.output import Output
from ivr.dialogue.state import Runner, Task
from ivr.dialogue.values import Missing, SlotValue
from ivr.flows.offline import Intent, Offline, Slot

__all__ = ["READBACK_TRIES", "ReadBacks"]

#: A slot whose read-back the caller denied this often is not read back again: the giveup steps run.
READBACK_TRIES = 2


class ReadBacks(Output):
    """Read-backs and corrections (see the module docstring)."""

    # The state of Dialogue used here besides that of Output.
    _offline: Offline
    _plausible: Callable[[time], bool] | None
    _today: date
    _unsure: bool

    if TYPE_CHECKING:  # defined in the other parts of Dialogue, by module
        # manager
        def _begin(self, out: list[Action], intent: Intent, text: str, replay: bool) -> None: ...
        def _other(self, text: str, task: Task) -> Intent | None: ...
        # slot_filling
        def _advance(self, out: list[Action]) -> None: ...
        def _ask(self, out: list[Action], task: Task, slot: Slot) -> None: ...
        def _clear(self, task: Task, names: Sequence[str]) -> None: ...
        def _parse(self, slot: Slot, text: str, task: Task, *, strict: bool) -> SlotValue | None: ...
        def _volunteer(self, task: Task, text: str) -> None: ...
        # steps
        def _run(self, out: list[Action]) -> None: ...
        # failures
        def _count_failure(self, out: list[Action]) -> bool: ...
        def _fail(self, out: list[Action], kind: Literal["low", "unclear", "no_match"]) -> None: ...
        def _give_up(self, out: list[Action]) -> None: ...
        def _render_or(self, text: str) -> str: ...
        def _succeeded(self) -> None: ...

    # -- read-backs -------------------------------------------------------------------------------------

    def _confirmation(self, out: list[Action], task: Task, text: str, replay: bool) -> None:
        if self._correct(task, text):  # "no, wednesday", "actually make it three": change just that
            self._succeeded()
            task.confirming = False
            self._advance(out)
            return
        answer = parse.parse_yes_no(text)
        if answer is True:
            self._succeeded()
            task.confirming = False
            self._runner = Runner(task.intent.steps, "intent")
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
        self._elsewhere(out, task, text, replay)

    def _check(self, out: list[Action], task: Task, slot: Slot, value: SlotValue) -> None:
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

    def _check_answer(self, out: list[Action], task: Task, text: str, replay: bool) -> None:
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
        self._elsewhere(out, task, text, replay)

    def _elsewhere(self, out: list[Action], task: Task, text: str, replay: bool) -> None:
        """Neither yes, no nor a value: another request of the caller's, else the question again."""
        other = self._other(text, task)
        if other is not None:
            self._begin(out, other, text, replay)
        else:
            self._fail(out, "unclear")

    def _rejected(self, out: list[Action], task: Task, names: Sequence[str]) -> bool:
        """The caller said no to a read-back of ``names``. The second no to the same slot gives up on this
        line (the giveup steps: a transfer, or the keypad): asking once more would read the same mishearing
        back again, and the caller would loop until the call ends. Whether it gave up."""
        for name in names:
            task.rejected[name] = task.rejected.get(name, 0) + 1
        if not any(task.rejected.get(name, 0) >= READBACK_TRIES for name in names):
            return False
        self._give_up(out)
        return True

    # -- corrections ------------------------------------------------------------------------------------

    def _correct(self, task: Task, text: str, *, skip: str | None = None) -> bool:
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

    def _retime(self, task: Task, text: str, *, skip: str | None) -> bool:
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

    def _repick(self, task: Task, text: str, *, skip: str | None) -> bool:
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

    def _corrected(self, task: Task, offer: Slot, text: str) -> bool:
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
