"""Slot values (a machine form for tool arguments, a spoken form for speech) and template rendering.

A filled slot is a :class:`SlotValue`: ``day`` is ``2026-11-24`` in tool arguments and "Tuesday, November
24" in what the caller hears. :class:`Values` resolves the placeholders of an offline template
(``{{ day }}``, ``{{ start.label }}``, ``{{ booking.booking_id | spell }}``) against the slots of the
current intent, tool results saved with ``as``, and the call context, and refuses to make anything up: a
value that does not exist (or is empty) raises :class:`Missing`, and the dialogue says so instead of
speaking a sentence with a hole in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, Literal

from ivr.dialogue.slots import spell, spoken_date, spoken_digits, spoken_time
from ivr.dialogue.words import join_words
from ivr.flows.offline import Reference, references, substitute, whole_reference

__all__ = ["Missing", "SlotValue", "Values", "apply_filters", "as_text", "lookup", "truthy"]

Mode = Literal["say", "args"]


class Missing(LookupError):
    """A template named a value that does not exist at this point of the call."""

    def __init__(self, path: tuple[str, ...]) -> None:
        super().__init__(".".join(path))
        self.path = path


@dataclass(frozen=True)
class SlotValue:
    """A filled slot: ``value`` goes into tool arguments, ``spoken`` into speech.

    For an offer, ``fields`` is the chosen option (``{{ start.<field> }}`` reads it) and ``spoken`` its
    label.
    """

    value: Any
    spoken: str
    fields: Mapping[str, Any] = field(default_factory=dict)


#: Marks an argument left out because it names an optional slot the caller did not fill.
OMIT: Any = object()


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path into nested dicts (and lists by index); :class:`Missing` when it ends early."""
    current = data
    for part in path:
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise Missing(path)
    return current


def truthy(value: Any) -> bool:
    """Truth for ``when:``/``unless:``: empty, zero, false, "no" and "false" are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "no", "false", "0", "none", "null")
    return bool(value)


def as_text(value: Any, path: tuple[str, ...]) -> str:
    """A value as words: numbers without a needless ``.0``, lists as "a, b and c", booleans yes/no."""
    if value is None:
        raise Missing(path)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else str(int(value))
    if isinstance(value, list):
        items = [as_text(v, path) for v in value]
        if not items:
            raise Missing(path)
        return join_words(items, "and")
    if isinstance(value, dict):
        raise Missing(path)
    text = str(value)
    if not text.strip():
        raise Missing(path)
    return text


def _time(text: str) -> str:
    """``2026-03-10T10:30`` or ``10:30`` → ``10:30 AM``; empty when it is not a time."""
    clock = text.strip().rsplit("T", 1)[-1][:5]
    try:
        return spoken_time(time.fromisoformat(clock))
    except ValueError:
        return ""


def _date(text: str) -> str:
    """``2026-03-10`` (or a date-time) → ``Tuesday, March 10``; empty when it is not a date."""
    try:
        return spoken_date(date.fromisoformat(text.strip()[:10]))
    except ValueError:
        return ""


_FILTERS: dict[str, Callable[[str], str]] = {
    "spell": spell,
    "digits": spoken_digits,
    "time": _time,
    "date": _date,
}


def apply_filters(value: Any, filters: tuple[str, ...], path: tuple[str, ...]) -> str:
    """``value`` as text with ``filters`` applied; :class:`Missing` when the result is empty."""
    text = as_text(value, path)
    for name in filters:
        text = _FILTERS[name](text)
    if not text.strip():
        raise Missing(path)
    return text


class Values:
    """Resolves placeholders for one rendering: slots, saved results, extras and the call context."""

    def __init__(
        self,
        *,
        slots: Mapping[str, SlotValue],
        results: Mapping[str, Any],
        context: Mapping[str, str],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.slots = slots
        self.results = results
        self.context = context
        self.extra = dict(extra or {})

    def get(self, path: tuple[str, ...], mode: Mode) -> Any:
        """The raw value at ``path`` (``mode`` picks a slot's machine or spoken form)."""
        name, rest = path[0], path[1:]
        if name in self.extra:
            return lookup(self.extra[name], rest)
        if name in self.slots:
            slot = self.slots[name]
            if not rest:
                return slot.value if mode == "args" else slot.spoken
            if rest == ("value",):
                return slot.value
            if rest in (("spoken",), ("label",)):
                return slot.spoken
            return lookup(slot.fields, rest)
        if name in self.results:
            return lookup(self.results[name], rest)
        if name in self.context and not rest:
            return self.context[name]
        raise Missing(path)

    def resolve(self, ref: Reference, mode: Mode) -> Any:
        value = self.get(ref.path, mode)
        return apply_filters(value, ref.filters, ref.path) if ref.filters else value

    def text(self, template: str, mode: Mode = "say") -> str:
        """Render a template into text; :class:`Missing` if any placeholder has no value."""
        return substitute(template, lambda ref: as_text(self.resolve(ref, mode), ref.path))

    def argument(self, value: Any, optional: frozenset[str] = frozenset()) -> Any:
        """Render a tool argument: a lone placeholder keeps its type (a number stays a number).

        A lone placeholder naming an unfilled slot in ``optional`` gives :data:`OMIT`.
        """
        if isinstance(value, str):
            whole = whole_reference(value)
            if whole is not None:
                if whole.name in optional and whole.name not in self.slots and len(whole.path) == 1:
                    return OMIT
                resolved = self.resolve(whole, "args")
                if resolved is None or (isinstance(resolved, str) and not resolved.strip()):
                    raise Missing(whole.path)
                return resolved
            if references(value):
                return self.text(value, "args")
            return value
        if isinstance(value, dict):
            out = {k: self.argument(v, optional) for k, v in value.items()}
            return {k: v for k, v in out.items() if v is not OMIT}
        if isinstance(value, list):
            return [v for v in (self.argument(item, optional) for item in value) if v is not OMIT]
        return value

    def condition(self, path: str) -> bool:
        """Whether the value at a ``when:`` path is truthy (a missing value is false)."""
        try:
            return truthy(self.get(tuple(path.split(".")), "args"))
        except Missing:
            return False
