"""Masking caller data (card numbers, SSNs, e-mail addresses, phone numbers, keypad digits) in calls.

A flow declares what to mask with ``redact:`` — names of the built-in detectors in :data:`DETECTORS` and/or
its own regular expressions — and :class:`Redactor` applies them to every event of the call (transcript
lines, tool arguments and results…) before the event reaches Redis, the live feed or a log line. Pure
functions only: no I/O, no logging, no globals that change.

Detectors are written for speech as well as text: a transcript may hold ``4111 1111-1111 1111``,
``4111111111111111`` or ``four one one one …``. Digits are read as *tokens* (numerals or spoken digit words
such as ``oh``, ``double five``) joined by spaces, dashes, dots or commas; a card number is any window of
consecutive tokens holding 13 to 19 digits that passes the Luhn check, so a card number said next to other
numbers is still found, and a random number is rarely taken for one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DETECTORS",
    "DTMF_DETECTOR",
    "NOTHING",
    "STRUCTURAL_KEYS",
    "Detector",
    "Redactor",
    "compile_pattern",
    "issued_card_spans",
    "luhn_ok",
]

#: Event fields that are identifiers or the event's own shape, never caller data: left as they are.
STRUCTURAL_KEYS = frozenset(
    {"type", "ts", "call_sid", "stream_sid", "item_id", "response_id", "call_id", "approval_id", "role"}
)

#: The detector name that masks keypad digits in ``dtmf`` events (it matches no free text).
DTMF_DETECTOR = "dtmf"

# --- digit tokens: numerals and spoken digits --------------------------------------------------------------

_WORD_DIGITS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_DIGIT_WORD = "|".join(sorted(_WORD_DIGITS, key=len, reverse=True))
#: One token: a numeral (not glued to letters, so ids like CA12ab… are not read as numbers), a spoken digit,
#: or "double five" / "triple oh".
_TOKEN = re.compile(
    rf"(?<![A-Za-z0-9_])\d+(?![A-Za-z0-9_])"
    rf"|\b(?:(?:double|triple)\s+)?(?:{_DIGIT_WORD})\b",
    re.IGNORECASE,
)
#: What may stand between two tokens of one number.
_JOINER = re.compile(r"[ \t,.\-/]{1,3}|\s+")


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    digits: str
    spoken: bool


def _digits_of(text: str) -> tuple[str, bool]:
    if text[0].isdigit():
        return text, False
    words = text.lower().split()
    if len(words) == 2:
        times = 2 if words[0] == "double" else 3
        return _WORD_DIGITS[words[1]] * times, True
    return _WORD_DIGITS[words[0]], True


#: Numerals only (log lines: no spoken digits, and much cheaper to scan).
_NUMERAL = re.compile(r"(?<![A-Za-z0-9_])\d+(?![A-Za-z0-9_])")


def _runs(text: str, token: re.Pattern[str] = _TOKEN) -> list[list[_Token]]:
    """Maximal runs of digit tokens that follow each other with only separators between them."""
    runs: list[list[_Token]] = []
    current: list[_Token] = []
    for match in token.finditer(text):
        digits, spoken = _digits_of(match.group(0))
        token = _Token(match.start(), match.end(), digits, spoken)
        if current and not _JOINER.fullmatch(text, current[-1].end, token.start):
            runs.append(current)
            current = []
        current.append(token)
    if current:
        runs.append(current)
    return runs


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


Span = tuple[int, int]


def _windows(
    runs: list[list[_Token]], accept: Callable[[Sequence[_Token], str], bool], most: int
) -> list[Span]:
    """Spans of the longest accepted window of consecutive tokens, scanning left to right, no overlaps."""
    spans: list[Span] = []
    for run in runs:
        i = 0
        while i < len(run):
            best = -1
            digits = ""
            for j in range(i, len(run)):
                digits += run[j].digits
                if len(digits) > most:
                    break
                if accept(run[i : j + 1], digits):
                    best = j
            if best >= 0:
                spans.append((run[i].start, run[best].end))
                i = best + 1
            else:
                i += 1
    return spans


def _card(tokens: Sequence[_Token], digits: str) -> bool:
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _issued_card(tokens: Sequence[_Token], digits: str) -> bool:
    """A written card number of a major issuer (first digit 2-6): the always-on check for log lines."""
    return digits[0] in "23456" and not any(t.spoken for t in tokens) and _card(tokens, digits)


def _ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


def _ssn(tokens: Sequence[_Token], digits: str) -> bool:
    if len(digits) != 9 or not _ssn_valid(digits):
        return False
    if any(t.spoken for t in tokens):
        return True
    return [len(t.digits) for t in tokens] in ([9], [3, 2, 4])


#: A written SSN inside a longer run of numbers ("123-45-6789, 42").
_SSN_DASHED = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")


def _spoken_phone(tokens: Sequence[_Token], digits: str) -> bool:
    return 7 <= len(digits) <= 15 and sum(t.spoken for t in tokens) >= 4


# Written phone numbers: E.164, NANP with brackets/dots/dashes, and grouped international numbers.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w])"
    r"|(?<![\w+])\+\d{8,15}(?![\w])"
    r"|(?<![\w+])\d{10,11}(?![\w])"
    r"|(?<![\w+-])\d{3}-\d{4}(?![\w-])"
)

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w])")
_SPOKEN_EMAIL = re.compile(
    r"\b[a-z0-9._-]+(?:\s+(?:dot|underscore|dash)\s+[a-z0-9_-]+)*\s+at\s+[a-z0-9-]+(?:\s+dot\s+[a-z]{2,})+\b",
    re.IGNORECASE,
)


def _regex_spans(*patterns: re.Pattern[str]) -> Callable[[str], list[Span]]:
    def find(text: str) -> list[Span]:
        return [m.span() for p in patterns for m in p.finditer(text) if m.end() > m.start()]

    return find


def _card_spans(text: str) -> list[Span]:
    return _windows(_runs(text), _card, 19)


def issued_card_spans(text: str) -> list[Span]:
    """Written card numbers of the major issuers; :mod:`ivr.logs` masks these in every log line."""
    return _windows(_runs(text, _NUMERAL), _issued_card, 19)


def _ssn_spans(text: str) -> list[Span]:
    """Whole runs of nine digits (an SSN said or written on its own), and dashed SSNs anywhere."""
    spans = [(run[0].start, run[-1].end) for run in _runs(text) if _ssn(run, "".join(t.digits for t in run))]
    spans.extend(m.span() for m in _SSN_DASHED.finditer(text) if _ssn_valid("".join(m.groups())))
    return spans


def _phone_spans(text: str) -> list[Span]:
    return _regex_spans(_PHONE)(text) + _windows(_runs(text), _spoken_phone, 15)


@dataclass(frozen=True)
class Detector:
    """Finds one kind of data in free text; each hit is replaced by ``[label]``."""

    name: str
    find: Callable[[str], list[Span]]
    description: str = ""

    @property
    def label(self) -> str:
        return f"[{self.name}]"


#: The built-in detectors a flow may name under ``redact:``, in the order they run.
DETECTORS: Mapping[str, Detector] = {
    "card_number": Detector(
        "card_number",
        _card_spans,
        "payment card numbers (13-19 digits passing the Luhn check), written or spoken",
    ),
    "ssn": Detector("ssn", _ssn_spans, "US social security numbers (123-45-6789, 123456789, or spoken)"),
    "email": Detector(
        "email", _regex_spans(_EMAIL, _SPOKEN_EMAIL), "e-mail addresses, also 'ada at example dot com'"
    ),
    "phone": Detector(
        "phone", _phone_spans, "phone numbers (E.164, (555) 123-4567, or spoken digit by digit)"
    ),
    DTMF_DETECTOR: Detector(DTMF_DETECTOR, lambda _text: [], "keypad digits in dtmf events"),
}


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A flow's own pattern, or :class:`ValueError` saying what is wrong with it."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
    if compiled.fullmatch(""):
        raise ValueError(f"{pattern!r} matches empty text (make it match at least one character)")
    return compiled


def _merge(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class Redactor:
    """Applies a flow's detectors to text, JSON-like values and call events."""

    def __init__(self, detectors: Sequence[Detector] = (), *, mask_dtmf: bool = False) -> None:
        self.detectors = tuple(detectors)
        self.mask_dtmf = mask_dtmf

    @classmethod
    def build(cls, builtins: Iterable[str] = (), patterns: Iterable[tuple[str, str]] = ()) -> Redactor:
        """From built-in detector names and ``(name, regex)`` pairs; unknown names raise :class:`KeyError`.

        Custom patterns run first (a deployment's own ids win over the generic detectors), then the
        built-ins in :data:`DETECTORS` order.
        """
        names = set(builtins)
        unknown = names - set(DETECTORS)
        if unknown:
            raise KeyError(f"unknown detector(s) {sorted(unknown)} (use one of: {', '.join(DETECTORS)})")
        detectors = [Detector(name, _regex_spans(compile_pattern(regex))) for name, regex in patterns]
        detectors.extend(d for n, d in DETECTORS.items() if n in names and n != DTMF_DETECTOR)
        return cls(detectors, mask_dtmf=DTMF_DETECTOR in names)

    @property
    def active(self) -> bool:
        return bool(self.detectors) or self.mask_dtmf

    def text(self, text: str) -> str:
        """``text`` with every hit of every detector replaced by its label."""
        for detector in self.detectors:
            spans = _merge(detector.find(text))
            if not spans:
                continue
            parts: list[str] = []
            at = 0
            for start, end in spans:
                parts.append(text[at:start])
                parts.append(detector.label)
                at = end
            parts.append(text[at:])
            text = "".join(parts)
        return text

    def value(self, value: Any) -> Any:
        """A JSON-like value with its strings (and whole numbers that read as caller data) redacted."""
        if not self.detectors:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            text = str(value)
            cleaned = self.text(text)
            return value if cleaned == text else cleaned
        if isinstance(value, Mapping):
            return {k: v if k in STRUCTURAL_KEYS else self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A call event with caller data masked (structural fields such as ids and ``type`` untouched)."""
        out = dict(event)
        if self.mask_dtmf:
            if out.get("type") == "dtmf" and "digit" in out:
                out["digit"] = "*"
            trigger = out.get("trigger")
            if isinstance(trigger, str) and trigger.startswith("key:"):  # a stage change by a keypad key
                out["trigger"] = "key:*"
        if not self.detectors:
            return out
        return {k: v if k in STRUCTURAL_KEYS else self.value(v) for k, v in out.items()}


#: A redactor that changes nothing (flows without ``redact:``).
NOTHING = Redactor()
