"""What a flow may declare under ``redact:``: built-in detector names and its own regular expressions.

.. code-block:: yaml

    redact:
      - card_number            # built-in detectors (ivr.redaction.DETECTORS)
      - ssn
      - dtmf                   # keypad digits in dtmf events
      - {name: member_id, pattern: "\\\\bM-[0-9]{6}\\\\b"}

Each entry is checked when the flow loads (an unknown detector name or a bad pattern is an error with its
file and line); :meth:`RedactRule.redactor` turns the list into the :class:`~ivr.redaction.Redactor` a call
applies to its transcript, events and log lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from ivr.flows.fields import Slug, Strict, did_you_mean
from ivr.redaction import DETECTORS, Redactor, compile_pattern

__all__ = ["RedactEntry", "RedactRule", "redactor_for"]


def _detector_name(value: str) -> str:
    if value not in DETECTORS:
        raise ValueError(
            f"{value!r} is not a built-in detector{did_you_mean(value, list(DETECTORS))} "
            f"(use one of: {', '.join(DETECTORS)}; or give your own as {{name: ..., pattern: ...}})"
        )
    return value


def _pattern(value: str) -> str:
    compile_pattern(value)  # raises ValueError with the reason
    return value


def _shorthand(value: Any) -> Any:
    """``card_number`` → ``{detector: card_number}`` (the name checked here, so errors point at the entry)."""
    if isinstance(value, str):
        return {"detector": _detector_name(value)}
    return value


class RedactRule(Strict):
    """One entry of ``redact:``: a built-in detector (by name) or a pattern of the flow's own."""

    #: A built-in detector (written as the bare name in YAML).
    detector: Annotated[str, AfterValidator(_detector_name)] | None = None
    #: A Python regular expression; every match is replaced by ``[name]``.
    pattern: Annotated[str, AfterValidator(_pattern)] | None = None
    #: The label of a pattern's matches (``[name]``); defaults to ``redacted``.
    name: Slug | None = Field(default=None, description="a label for the pattern's matches, e.g. member_id")

    @model_validator(mode="after")
    def _one_kind(self) -> RedactRule:
        if (self.detector is None) == (self.pattern is None):
            raise ValueError(
                "give either a built-in detector name (e.g. card_number) or a pattern "
                "({name: ..., pattern: ...})"
            )
        if self.detector is not None and self.name is not None:
            raise ValueError("name labels a pattern; a built-in detector is labelled by its own name")
        return self


RedactEntry = Annotated[RedactRule, BeforeValidator(_shorthand)]


def redactor_for(rules: Iterable[RedactRule]) -> Redactor:
    """The redactor that applies ``rules`` (a flow's ``redact:`` list)."""
    rules = list(rules)
    return Redactor.build(
        (r.detector for r in rules if r.detector is not None),
        ((r.name or "redacted", r.pattern) for r in rules if r.pattern is not None),
    )
