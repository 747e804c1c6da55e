"""Who a caller is, as far as tools may rely on it: the caller's number, reduced to a comparable form.

The number comes from the call's signed webhook (see docs/security.md), not from anything the model or
the caller says. A withheld number is no identity at all: Twilio reports it as ``anonymous`` or as one
of a few placeholder numbers that every withheld caller shares, so those never match anyone.

Pure functions, no I/O.
"""

from __future__ import annotations

import re

__all__ = ["WITHHELD_NUMBERS", "caller_identity"]

_NOT_DIGIT = re.compile(r"\D")

#: Digits of the placeholders carriers send for withheld numbers (ANONYMOUS, RESTRICTED, BLOCKED,
#: UNKNOWN, UNAVAILABLE spelled on a keypad).
WITHHELD_NUMBERS = frozenset({"266696687", "7378742833", "2562533", "8656696", "86282452253"})

#: Fewer digits than this is no real phone number (short codes, "anonymous", empty).
_MIN_DIGITS = 6


def caller_identity(number: str) -> str:
    """The digits of ``number`` (``+1 (312) 555-0100`` → ``13125550100``), or ``""`` when it names no one."""
    digits = _NOT_DIGIT.sub("", number or "")
    if len(digits) < _MIN_DIGITS or digits in WITHHELD_NUMBERS:
        return ""
    return digits
