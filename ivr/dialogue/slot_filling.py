"""Slot filling: an intent's slots, filled from what the caller says and asked one at a time.

Part of :class:`~ivr.dialogue.manager.Dialogue`: values the caller gives without being asked, a slot's
default, the next question (or the offer fetched, the confirmation asked, the intent's steps run), and an
offer's options once its tool answered, narrowed to the times of a choice (dinner: 16:00-24:00). Reading a
value out of words is :mod:`ivr.dialogue.filling`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, time
from typing import TYPE_CHECKING, Any

from ivr.dialogue import filling
from ivr.dialogue import slots as parse
from ivr.dialogue.actions import Action, clean_text
from ivr.dialogue.output import Output
from ivr.dialogue.state import Runner, Task
from ivr.dialogue.values import Missing, SlotValue
from ivr.dialogue.words import join_words
from ivr.flows.offline import Offline, Slot

__all__ = ["SlotFilling"]

#: A template that is one placeholder and nothing else: ``{{ time }}``.
_ONE_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class SlotFilling(Output):
    """Slot filling (see the module docstring)."""

    # The state of Dialogue used here besides that of Output.
    _offline: Offline
    _plausible: Callable[[time], bool] | None
    _today: date

    if TYPE_CHECKING:  # defined in the other parts of Dialogue, by module
        # steps
        def _run(self, out: list[Action]) -> None: ...

    def _volunteer(self, task: Task, text: str) -> None:
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

    def _parse(self, slot: Slot, text: str, task: Task, *, strict: bool) -> SlotValue | None:
        return filling.read_slot(
            slot,
            text,
            today=self._today,
            plausible=self._plausible,
            options=task.options.get(slot.name) or [],
            strict=strict,
        )

    def _clear(self, task: Task, names: Sequence[str]) -> None:
        for name in names:
            task.values.pop(name, None)
        task.options.clear()

    def _default(self, slot: Slot, task: Task) -> SlotValue | None:
        assert slot.default is not None
        try:
            text = clean_text(self._values().text(slot.default))
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
        self._runner = Runner(task.intent.steps, "intent")
        self._run(out)

    def _ask_text(self, task: Task, slot: Slot) -> str:
        assert slot.ask is not None
        extra: dict[str, Any] = {}
        if slot.type == "offer":
            options = task.options.get(slot.name) or []
            extra["options"] = join_words([filling.option_label(slot, o) for o in options], "or")
        return self._values(extra).text(slot.ask)

    def _ask(self, out: list[Action], task: Task, slot: Slot) -> None:
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
