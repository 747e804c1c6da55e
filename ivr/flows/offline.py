"""The ``offline:`` sections of a flow: how a call runs on the local engine, without a language model.

A flow (and each of its stages) may say what the rule-based dialogue of :mod:`ivr.dialogue` does: the
intents a caller can have (with example sentences and keywords), the slots each intent needs (a day, a
time, a name, one of a tool's offers …), an optional confirmation, and the steps that run once the slots
are filled (say something, call a tool, move to another stage, hang up, transfer). docs/offline-dialogue.md
is the reference for people writing these sections.

Templates in offline texts are richer than the ``{{ name }}`` of prompts: a placeholder is a dotted path
with optional filters, ``{{ booking.booking_id | spell }}``. :func:`references` finds them and
:func:`offline_issues` checks every one against the names that will exist when it is rendered (the
intent's slots, earlier tool results saved with ``as``, the flow's variables and call context), as well as
tool names, stage moves and slot settings (:mod:`ivr.flows.offline_checks`), so a mistake is reported
with its line when the flow loads rather than heard by a caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from ivr.flows.fields import Slug, Strict, Text, ToolName, in_range

__all__ = [
    "FILTERS",
    "SLOT_TYPES",
    "Intent",
    "Offline",
    "Phrases",
    "Reference",
    "Slot",
    "StageOffline",
    "Step",
    "malformed",
    "references",
    "split_filters",
    "substitute",
    "whole_reference",
]

#: Filters a placeholder may apply: ``spell`` reads letters and digits one by one ("A B 3 K"),
#: ``digits`` reads a number digit by digit ("5 5 5 1"), ``time`` says the time of an ISO date-time or
#: ``HH:MM`` ("10:30 AM"), ``date`` says the day of an ISO date ("Tuesday, March 10").
FILTERS = ("spell", "digits", "time", "date")

SlotType = Literal[
    "date", "time", "number", "name", "yes_no", "choice", "text", "offer", "phone", "digits", "booking_id"
]
SLOT_TYPES: tuple[str, ...] = (
    "date",
    "time",
    "number",
    "name",
    "yes_no",
    "choice",
    "text",
    "offer",
    "phone",
    "digits",
    "booking_id",
)

DEFAULT_REASK = "Sorry, I didn't catch that. Could you say it again?"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_PLACEHOLDER = re.compile(
    r"\{\{\s*(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*(?P<filters>(?:\|\s*[A-Za-z_]+\s*)*)\}\}"
)
_OPENING = re.compile(r"\{\{")


# --- templates -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One placeholder as written: ``{{ booking.booking_id | spell }}``."""

    path: tuple[str, ...]
    filters: tuple[str, ...]
    #: The exact text, to find its line in the source.
    text: str

    @property
    def name(self) -> str:
        """The first part of the path (a slot, a saved tool result or a context name)."""
        return self.path[0]


def references(text: str) -> list[Reference]:
    """Every well-formed placeholder in ``text``, in order."""
    out = []
    for m in _PLACEHOLDER.finditer(text):
        filters = tuple(f.strip() for f in m.group("filters").split("|")[1:])
        out.append(Reference(tuple(m.group("path").split(".")), filters, m.group(0)))
    return out


def whole_reference(text: str) -> Reference | None:
    """The placeholder when ``text`` is exactly one placeholder (so its value keeps its type), else None."""
    m = _PLACEHOLDER.fullmatch(text.strip())
    return references(m.group(0))[0] if m else None


def substitute(text: str, value_of: Any) -> str:
    """Replace each placeholder by ``value_of(reference)`` (a callable returning text)."""

    def one(m: re.Match[str]) -> str:
        return str(value_of(references(m.group(0))[0]))

    return _PLACEHOLDER.sub(one, text)


def malformed(text: str) -> list[str]:
    """Snippets of ``{{`` openings that are not a valid ``{{ path | filter }}`` placeholder."""
    valid = {m.start() for m in _PLACEHOLDER.finditer(text)}
    bad: list[str] = []
    position = 0
    for m in _OPENING.finditer(text):
        if m.start() < position:
            continue
        if m.start() in valid:
            position = m.start() + 2
            continue
        end = text.find("}}", m.start())
        stop = min(end + 2 if end != -1 else len(text), m.start() + 40)
        bad.append(text[m.start() : stop].split("\n", 1)[0])
        position = m.start() + 2
    return bad


# --- field types -----------------------------------------------------------------------------------------


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name (use letters, digits and '_', e.g. booking)")
    return value


def _path(value: str) -> str:
    text = value.strip()
    if text.startswith("not "):
        raise ValueError(f"{value!r}: write unless: {text[4:].strip()} instead of 'not'")
    if not _PATH.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a value path (write a name or a dotted path such as caller.found)"
        )
    return text


def split_filters(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``"start | time"`` → ``(("start",), ("time",))``: a value path and the filters applied to it."""
    path, *filters = (part.strip() for part in text.split("|"))
    return tuple(path.split(".")), tuple(filters)


def _label(value: str) -> str:
    path, filters = split_filters(value)
    if not _PATH.fullmatch(".".join(path)) or not all(_IDENTIFIER.fullmatch(f) for f in filters):
        raise ValueError(
            f"{value!r} is not a field path with optional filters (e.g. spoken, or start | time)"
        )
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter {unknown[0]!r} (filters: {', '.join(FILTERS)})")
    return value


def _plain(value: Any) -> Any:
    """YAML reads 2026-03-03 as a date; tool arguments are JSON, so keep dates as ISO text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _choices(value: Any) -> Any:
    """``[cleaning, checkup]`` is short for ``{cleaning: [cleaning], checkup: [checkup]}``."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {v: [v] for v in value}
    if isinstance(value, dict):
        return {k: ([v] if isinstance(v, str) else v) for k, v in value.items()}
    return value


_TIME_RANGE = re.compile(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d")


def _time_range(value: str) -> str:
    if not _TIME_RANGE.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not a time range; write it as HH:MM-HH:MM, e.g. 18:00-23:00")
    return value.strip()


def _phrase(value: Any) -> Any:
    if isinstance(value, bool):
        said = "yes" if value else "no"
        raise ValueError(
            f'{value} was read as a boolean (YAML reads yes, no, on and off that way); quote it: "{said}"'
        )
    return value


def _non_empty_list(value: list[Any]) -> list[Any]:
    if not value:
        raise ValueError("must not be empty (give at least one entry, or leave the key out)")
    return value


def _step_list(value: Any) -> Any:
    """A single step mapping is accepted where a list of steps is expected."""
    return [value] if isinstance(value, dict) else value


Identifier = Annotated[str, AfterValidator(_identifier)]
#: An example sentence, keyword or choice phrase.
Phrase = Annotated[Text, BeforeValidator(_phrase)]
ValuePath = Annotated[str, AfterValidator(_path)]
LabelPath = Annotated[str, AfterValidator(_label)]
Arguments = Annotated[dict[str, Any], BeforeValidator(_plain)]


# --- steps, slots, intents -------------------------------------------------------------------------------

_ACTIONS = ("say", "tool", "goto", "end_call", "transfer")


class Step(Strict):
    """One thing to do: ``say``, call a ``tool``, ``goto`` a stage, ``end_call`` or ``transfer``.

    ``when``/``unless`` name a value (``caller.found``, ``open_now``) that must be truthy / falsy for the
    step to run. A tool step may save its result under ``as`` for later templates; ``on_error`` is said
    when it fails (then the remaining steps are skipped), unless ``optional`` makes the failure silent.
    """

    say: Text | None = None
    tool: ToolName | None = None
    arguments: Arguments = Field(default_factory=dict)
    as_: Identifier | None = Field(default=None, alias="as")
    on_error: Text | None = None
    #: A failing tool is skipped silently (its ``as`` stays unset) instead of ending the steps.
    optional: bool = False
    goto: Slug | None = None
    end_call: Literal[True] | None = None
    transfer: Literal[True] | None = None
    when: ValuePath | None = None
    unless: ValuePath | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [name for name in _ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"found {' and '.join(given)}" if given else "found none"
            raise ValueError(
                f"a step does exactly one thing ({found}); write one of say:, tool:, goto:, end_call: true "
                "or transfer: true per step"
            )
        if self.tool is None:
            extra = [
                key
                for key, used in (
                    ("arguments", bool(self.arguments)),
                    ("as", self.as_ is not None),
                    ("on_error", self.on_error is not None),
                    ("optional", self.optional),
                )
                if used
            ]
            if extra:
                raise ValueError(f"{', '.join(extra)} only go with tool: (this step is a {given[0]} step)")
        return self

    @property
    def action(self) -> str:
        """Which of say/tool/goto/end_call/transfer this step does."""
        return next(name for name in _ACTIONS if getattr(self, name) is not None)


Steps = Annotated[list[Step], BeforeValidator(_step_list)]


class Slot(Strict):
    """A piece of information an intent needs, asked for when the caller has not said it yet."""

    name: Identifier = Field(description="a name for the slot, e.g. day")
    type: SlotType = Field(description=f"one of {', '.join(SLOT_TYPES)}")
    #: What to say to ask for it; required unless the slot is optional.
    ask: Text | None = None
    #: Optional slots are never asked; they are filled only when the caller volunteers them.
    optional: bool = False
    #: A template used instead of asking when all its values exist (e.g. the caller's name on file).
    default: Text | None = None
    #: ``choice``: value → words and phrases that select it.
    choices: Annotated[dict[str, list[Phrase]] | None, BeforeValidator(_choices)] = None
    #: ``choice``: value → a time of day range ("18:00-23:00"); a time the caller says in one range
    #: selects that choice ("at 7.30" → dinner) so it is not asked.
    times: dict[str, Annotated[str, AfterValidator(_time_range)]] | None = None
    #: ``number``: smallest and largest accepted answer.
    min: int | None = None
    max: int | None = None
    #: ``offer``: the tool whose result lists the options, and its arguments (templates).
    tool: ToolName | None = None
    arguments: Arguments = Field(default_factory=dict)
    #: ``offer``: dotted path to the list in the tool's result, and the fields of one option: ``value``
    #: is kept (and goes into arguments), ``label`` is said (a field, optionally filtered: ``start | time``).
    options: ValuePath | None = None
    value: ValuePath | None = None
    label: LabelPath | None = None
    #: ``offer``: how many options are read out (and can be picked).
    max_options: Annotated[int, in_range(1, 10)] = 3
    #: ``offer``: said when the tool returns no options; ``none_clears`` are then cleared and asked again.
    none: Text | None = None
    none_clears: list[Identifier] = Field(default_factory=list)


class Intent(Strict):
    """Something a caller wants, recognised from example sentences and keywords."""

    id: Slug = Field(description="an id such as book")
    examples: list[Phrase] = Field(default_factory=list)
    keywords: list[Phrase] = Field(default_factory=list)
    slots: list[Slot] = Field(default_factory=list)
    #: A yes/no question asked once every slot is filled; "no" clears ``confirm_no_clears`` (default all).
    confirm: Text | None = None
    confirm_no_clears: list[Identifier] | None = None
    steps: Steps = Field(default_factory=list)


class Phrases(Strict):
    """The built-in lines of the dialogue, for flows in another language or tone."""

    #: Said when the caller speaks while an approval is pending.
    still_checking: Text = "Still checking, please hold on."
    #: Said when an operator denies an action; ``{{ message }}`` is the runtime's explanation.
    not_approved: Text = "I'm sorry, that wasn't approved, so I haven't done it."
    #: Said when a tool fails and its step has no ``on_error``.
    tool_error: Text = "Sorry, something went wrong on my side."
    #: Said when a template needs a value that does not exist (nothing is made up instead).
    missing: Text = "Sorry, I couldn't find that."
    #: Said before asking again when an answer did not fit the question.
    unclear: Text = "Sorry, I didn't quite get that."
    #: Said when an offer's tool returns no options and the slot has no ``none``.
    none: Text = "Sorry, there's nothing available for that."
    #: Said by the default ``giveup`` before hanging up.
    giveup: Text = "I'm sorry, I'm having trouble understanding. Please call again later. Goodbye."
    #: Asked to confirm an answer heard with low confidence; ``{{ value }}`` is what was understood.
    check: Text = "{{ value }}, right?"
    #: Said when the caller turns a whole request down a second time at its confirmation ("Shall I book
    #: it?" → "no", twice): nothing is done and the stage prompt follows.
    dropped: Text = "All right, I'll leave that, then."


class StageOffline(Strict):
    """A stage's part of the offline dialogue."""

    #: Run each time the call enters the stage (and at the start of the call for the start stage).
    on_enter: Steps = Field(default_factory=list)
    #: Said when the call enters the stage and after an error, then the caller is heard.
    prompt: Text | None = None
    #: Tried before the flow's global intents while the call is in this stage.
    intents: list[Intent] = Field(default_factory=list)


class Offline(Strict):
    """How a call runs on the local engine (speech recognition, rules and local speech; no LLM)."""

    #: The local voice; only ``heart`` ships with the engine.
    voice: Literal["heart"] = "heart"
    speed: Annotated[float, in_range(0.5, 2.0)] = 1.0
    #: Recognitions below this confidence are unsure: used only where they fit what is expected, and a
    #: value read from them is confirmed back; below half of it they are asked again
    #: (:mod:`ivr.dialogue.confidence`). 0.45 is set from Whisper's measured scores.
    min_confidence: Annotated[float, in_range(0.0, 1.0)] = 0.45
    #: Lines for asking again, used in turn.
    reask: Annotated[list[Text], AfterValidator(_non_empty_list)] = Field(
        default_factory=lambda: [DEFAULT_REASK]
    )
    #: How many times in a row the caller is asked again before ``giveup`` runs.
    max_reasks: Annotated[int, in_range(0, 10)] = 2
    #: Run after too many failures; default: say ``phrases.giveup`` and hang up (if end_call is declared).
    #: Giveup steps that do not end the call let the caller try again; if the next turns fail as well, the
    #: default giveup ends the call.
    giveup: Annotated[list[Step] | None, BeforeValidator(_step_list)] = None
    #: Said with the last re-ask before ``giveup``: another way through, such as the keypad or a person.
    keypad: Text | None = None
    #: Said when an utterance matches no intent (counts as a failure).
    no_match: Text = "Sorry, I didn't understand that. Could you put it another way?"
    intents: list[Intent] = Field(default_factory=list)
    #: Run right after the greeting, before the caller is heard.
    on_start: Steps = Field(default_factory=list)
    phrases: Phrases = Field(default_factory=Phrases)
