"""Reading one slot's value out of an utterance, and the options of an ``offer`` slot.

Glue between the slot types of a flow (:class:`~ivr.flows.offline.Slot`) and the parsers of
:mod:`ivr.dialogue.slots`: each type gets its machine form (what tool arguments receive) and its spoken form
(what the caller hears) as a :class:`~ivr.dialogue.values.SlotValue`. Offers take their options from a tool
result (``options``/``value``/``label`` of the slot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, time
from typing import Any

from ivr.dialogue import slots as parse
from ivr.dialogue.values import Missing, SlotValue, apply_filters, lookup
from ivr.flows.offline import Slot, split_filters

__all__ = [
    "check_spoken",
    "choice_at",
    "chosen",
    "hinted",
    "option_label",
    "option_value",
    "read_slot",
    "usable_options",
]


def read_slot(
    slot: Slot,
    text: str,
    *,
    today: date,
    plausible: Callable[[time], bool] | None,
    options: Sequence[Mapping[str, Any]] = (),
    strict: bool = False,
) -> SlotValue | None:
    """The value of ``slot`` in ``text``, or ``None``.

    ``strict`` is for text that did not answer this slot's question: only dates, times, numbers, names,
    choices and booking ids with a clear cue are read then (see :mod:`ivr.dialogue.slots`).
    """
    kind = slot.type
    if kind == "date":
        day = parse.parse_date(text, today, strict=strict)
        return SlotValue(day.isoformat(), parse.spoken_date(day)) if day else None
    if kind == "time":
        moment = parse.parse_time(text, strict=strict, plausible=plausible)
        return SlotValue(moment.strftime("%H:%M"), parse.spoken_time(moment)) if moment else None
    if kind == "number":
        number = parse.parse_number(text, strict=strict)
        if number is None or (slot.min is not None and number < slot.min):
            return None
        if slot.max is not None and number > slot.max:
            return None
        return SlotValue(number, str(number))
    if kind == "choice":
        choice = parse.parse_choice(text, slot.choices or {})
        return SlotValue(choice, choice.replace("_", " ")) if choice else None
    if kind == "name":
        name = parse.parse_name(text, strict=strict)
        return SlotValue(name, name) if name else None
    if kind == "booking_id":
        found = parse.parse_booking_id(text, strict=strict)
        return SlotValue(found, parse.spell(found)) if found else None
    if strict:
        return None
    if kind == "yes_no":
        answer = parse.parse_yes_no(text)
        return SlotValue(answer, "yes" if answer else "no") if answer is not None else None
    if kind == "text":
        said = " ".join(text.split())
        return SlotValue(said, said) if said else None
    if kind in ("phone", "digits"):
        digits = parse.parse_phone(text) if kind == "phone" else parse.parse_digits(text)
        return SlotValue(digits, parse.spoken_digits(digits)) if digits else None
    labels = [option_label(slot, option) for option in options]
    values = [str(option_value(slot, option)) for option in options]
    index = parse.pick_option(text, labels, values)
    return chosen(slot, options[index]) if index is not None else None


def option_label(slot: Slot, option: Mapping[str, Any]) -> str:
    """What is said for an option: its ``label`` field, filters applied."""
    assert slot.label is not None
    path, filters = split_filters(slot.label)
    return apply_filters(lookup(option, path), filters, path)


def option_value(slot: Slot, option: Mapping[str, Any]) -> Any:
    """What is kept for an option: its ``value`` field."""
    assert slot.value is not None
    return lookup(option, tuple(slot.value.split(".")))


def chosen(slot: Slot, option: Mapping[str, Any]) -> SlotValue:
    """The slot value for a picked option (its fields stay readable as ``{{ slot.<field> }}``)."""
    return SlotValue(option_value(slot, option), option_label(slot, option), dict(option))


def usable_options(
    slot: Slot, data: Mapping[str, Any], within: tuple[int, int] | None = None
) -> list[Mapping[str, Any]]:
    """The options in a tool result that have a value and a label, at most ``max_options`` of them;
    ``within`` (minutes of the day, from :func:`window`): only options at a time in that range."""
    assert slot.options is not None
    try:
        found = lookup(data, tuple(slot.options.split(".")))
    except Missing:
        return []
    usable = []
    for option in found if isinstance(found, list) else []:
        if not isinstance(option, Mapping):
            continue
        try:
            option_label(slot, option)
            option_value(slot, option)
        except Missing:
            continue
        if within is not None:
            moment = parse.option_time(str(option_value(slot, option)), option_label(slot, option))
            if moment is not None and not within[0] <= moment.hour * 60 + moment.minute < within[1]:
                continue  # a lunch time for a caller who asked for dinner
        usable.append(option)
    return usable[: slot.max_options]


def hinted(slot: Slot, options: Sequence[Mapping[str, Any]], hint: time | None) -> SlotValue | None:
    """The one option at the time the caller already mentioned ("… at ten thirty"), if exactly one fits."""
    if hint is None:
        return None
    times = [parse.option_time(str(option_value(slot, o)), option_label(slot, o)) for o in options]
    hits = [i for i, moment in enumerate(times) if moment == hint]
    return chosen(slot, options[hits[0]]) if len(hits) == 1 else None


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def check_spoken(slot: Slot, value: SlotValue) -> str:
    """How a value heard with low confidence is read back: a day as "Tuesday the 10th", else its spoken
    form ("10:30 AM", "4", "Maria Gonzalez")."""
    if slot.type == "date":
        try:
            day = date.fromisoformat(str(value.value))
        except ValueError:
            return value.spoken
        return f"{day.strftime('%A')} the {_ordinal(day.day)}"
    return value.spoken


def _span(text: str) -> tuple[int, int]:
    start, end = (int(a) * 60 + int(b) for a, b in (part.split(":") for part in text.split("-")))
    return start, end


def window(slot: Slot, choice: Any) -> tuple[int, int] | None:
    """The times of day (minutes, start inclusive, end exclusive) of a choice with ``times`` (dinner:
    16:00-24:00), or ``None``."""
    span = (slot.times or {}).get(str(choice))
    return _span(span) if span else None


def choice_at(slot: Slot, moment: time) -> SlotValue | None:
    """The choice whose ``times`` range holds ``moment`` ("at 7.30 pm" → dinner), if exactly one does."""
    minutes = moment.hour * 60 + moment.minute
    hits = []
    for choice, span in (slot.times or {}).items():
        start, end = _span(span)
        if start <= minutes < end:
            hits.append(choice)
    return SlotValue(hits[0], hits[0].replace("_", " ")) if len(hits) == 1 else None
