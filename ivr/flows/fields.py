"""Field types shared by the flow models, each with a message a person editing YAML can act on.

Pydantic's own wording is written for programmers; these validators say what was read and what to write
instead ("15551230001 was read as a number; quote it so YAML keeps the '+'"). They live apart from
:mod:`ivr.flows.model` so the tool configs (:mod:`ivr.flows.tool_configs`) and opening hours
(:mod:`ivr.flows.hours`) can use them without an import cycle.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-().]")
_FLOW_ID = re.compile(r"[a-z0-9-]{1,64}")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SLUG = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DTMF_KEYS = "0123456789*#"

#: Prefix of a keypad target that moves the call to a stage (``"1": "stage:booking"``).
STAGE_TARGET = "stage:"


def normalise_number(text: str) -> str:
    """Drop spaces, dashes, dots and parentheses: ``"+1 (555) 123-0001"`` → ``"+15551230001"``."""
    return _NUMBER_PUNCTUATION.sub("", text)


def in_range(low: float, high: float) -> AfterValidator:
    """A validator rejecting values outside ``[low, high]`` with the range in the message."""

    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range (use {low} to {high})")
        return value

    return AfterValidator(check)


def _phone_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value  # let the str type report the wrong type
    if isinstance(value, int):
        raise ValueError(f"{value} was read as a number; quote it so YAML keeps the '+' (e.g. \"+{value}\")")
    compact = normalise_number(value)
    if not _E164.fullmatch(compact):
        raise ValueError(
            f'{value!r} is not an E.164 number (use + country code and number, e.g. "+15551230001")'
        )
    return compact


def _flow_id(value: str) -> str:
    if not _FLOW_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id (use lowercase letters, digits and dashes, e.g. dental-clinic)"
        )
    return value


def _tool_name(value: str) -> str:
    if not _TOOL_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid tool name (use 1-64 letters, digits, '_' or '-')")
    return value


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid id (use 1-64 letters, digits, '_' or '-', e.g. booking)")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty (write some text or leave the key out)")
    return value


def _dtmf_key(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        value = str(value)
    if isinstance(value, str) and (len(value) != 1 or value not in _DTMF_KEYS):
        raise ValueError(f"{value!r} is not a keypad key (use one of 0-9, * or #, quoted)")
    return value


def _dtmf_target(value: str) -> str:
    if value.startswith(STAGE_TARGET):
        stage = value[len(STAGE_TARGET) :]
        if not _SLUG.fullmatch(stage):
            raise ValueError(f"{value!r} does not name a stage (write stage:<stage id>, e.g. stage:booking)")
        return value
    if not _TOOL_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is neither a tool name nor stage:<stage id> (e.g. transfer_to_human or stage:booking)"
        )
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a known time zone (use an IANA name such as Europe/Berlin)"
        ) from None
    return value


def is_time_zone(value: object) -> bool:
    """True when ``value`` is a time-zone name :data:`TimeZoneName` accepts."""
    if not isinstance(value, str):
        return False
    try:
        _time_zone(value)
    except ValueError:
        return False
    return True


PhoneNumber = Annotated[str, BeforeValidator(_phone_number)]
FlowId = Annotated[str, AfterValidator(_flow_id)]
ToolName = Annotated[str, AfterValidator(_tool_name)]
#: Ids of stages, calendars and datasets: letters, digits, ``_`` and ``-``.
Slug = Annotated[str, AfterValidator(_slug)]
Text = Annotated[str, AfterValidator(_non_empty)]
DtmfKey = Annotated[str, BeforeValidator(_dtmf_key)]
#: What a keypad key does: run a tool (its name) or move to a stage (``stage:<id>``).
DtmfTarget = Annotated[str, AfterValidator(_dtmf_target)]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]


class Strict(BaseModel):
    """Base for every flow model: strict types, no unknown keys, immutable once loaded."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


@dataclass(frozen=True)
class Issue:
    """A cross-field problem: the field path, what is wrong, and optionally the exact text to point at.

    Errors make a flow unusable; warnings (e.g. a stage nothing leads to) are shown by ``ivr flows check``
    but do not stop the flow from loading.
    """

    path: tuple[str | int, ...]
    message: str
    #: Text inside the field's value (e.g. a placeholder) whose line the loader should report.
    needle: str | None = None
    severity: Literal["error", "warning"] = "error"

    def under(self, *prefix: str | int) -> Issue:
        """The same issue with ``prefix`` put in front of its path (for issues of nested models)."""
        return Issue((*prefix, *self.path), self.message, self.needle, self.severity)


def dotted(path: tuple[str | int, ...]) -> str:
    """``("tools", 1, "name")`` → ``tools[1].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(
    word: str, options: list[str] | tuple[str, ...] | frozenset[str] | set[str], *, cutoff: float = 0.6
) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""
