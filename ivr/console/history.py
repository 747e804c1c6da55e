"""History filters and pages, and the search over ended calls that the history indexes cannot answer alone.

Why it works this way: a history page must render in well under 300 ms with tens of thousands of ended
calls in Redis, so it never loads what it does not show. The time range and at most one of flow / outcome /
instance are answered by a sorted-set index (``ZREVRANGEBYSCORE … LIMIT`` and ``ZCOUNT``: exact totals).
Anything else — a second index field, the caller's last digits, transcript text — is checked on the
candidates of the most selective index, newest first, in pipelined batches, and the search stops as soon as
the page is full plus one row (to know there is a next page). A cap bounds the work; the page then says how
many calls it searched (:attr:`HistoryPage.scanned`, :attr:`HistoryPage.scanned_all`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis.asyncio as aioredis

from ivr.console.rows import CallRow
from ivr.store.keys import KeySchema

__all__ = [
    "MAX_PAGE",
    "MAX_PER_PAGE",
    "HistoryFilter",
    "HistoryPage",
    "ScanResult",
    "scan_history",
]

#: Largest page the history serves (also the largest export of one request).
MAX_PER_PAGE = 200
#: Highest page number the history serves (its offset must stay a number Redis takes).
MAX_PAGE = 100_000
#: Longest transcript search text accepted.
MAX_TEXT = 200
#: Candidates read per round trip while scanning (one ZREVRANGEBYSCORE plus one pipelined HMGET): the first
#: batch is about what the page needs, each next one twice as many, up to this.
SCAN_BATCH = 1000
_DIGITS = re.compile(r"[0-9]{2,6}")


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows: ended calls whose end time is in [since, until] and that match every filter
    given (None = no filter)."""

    since: float | None = None
    """Earliest end time (epoch seconds, inclusive)."""
    until: float | None = None
    """Latest end time (epoch seconds, inclusive)."""
    flow: str | None = None
    """Flow id."""
    outcome: str | None = None
    """Outcome (``completed``, ``transferred``…)."""
    instance: str | None = None
    """Instance id that ran the call."""
    caller_digits: str | None = None
    """The last 2–6 digits of the caller's number."""
    text: str | None = None
    """Text said in the call (case-insensitive, any transcript line)."""

    def checked(self) -> HistoryFilter:
        """A normalised copy (blank → None, text trimmed); raises ValueError saying what is wrong."""

        def blank(value: str | None) -> str | None:
            value = value.strip() if isinstance(value, str) else value
            return value or None

        f = replace(
            self,
            flow=blank(self.flow),
            outcome=blank(self.outcome),
            instance=blank(self.instance),
            caller_digits=blank(self.caller_digits),
            text=blank(self.text),
        )
        for name in ("since", "until"):
            value = getattr(f, name)
            if value is not None and (not isinstance(value, int | float) or not math.isfinite(value)):
                raise ValueError(f"{name} must be a time in epoch seconds, got {value!r}")
        if f.since is not None and f.until is not None and f.since > f.until:
            raise ValueError(f"since ({f.since}) is after until ({f.until}); swap them")
        if f.caller_digits is not None and not _DIGITS.fullmatch(f.caller_digits):
            raise ValueError(
                f"caller digits must be the last 2 to 6 digits of the number (digits only), got "
                f"{f.caller_digits!r}"
            )
        if f.text is not None and len(f.text) > MAX_TEXT:
            raise ValueError(f"search text is {len(f.text)} characters long; at most {MAX_TEXT} are allowed")
        return f

    @classmethod
    def from_form(cls, params: Mapping[str, str]) -> HistoryFilter:
        """From the history page's form (``from``/``to`` are local times in the operator's zone ``tz``, an
        IANA name or an offset; ``caller`` the number's last digits); checked."""
        zone = _zone(params.get("tz", ""))
        until = _epoch(params.get("to", ""), zone, "To")
        if until is not None and len(params.get("to", "").strip()) <= 16:
            until += 59.999  # "to 10:30" includes calls that ended during that minute
        return cls(
            since=_epoch(params.get("from", ""), zone, "From"),
            until=until,
            flow=params.get("flow") or None,
            outcome=params.get("outcome") or None,
            instance=params.get("instance") or None,
            caller_digits=(params.get("caller") or "").strip() or None,
            text=params.get("text") or None,
        ).checked()

    def index_filters(self, keys: KeySchema) -> dict[str, tuple[str, str]]:
        """``{record field: (value, index key)}`` for the filters an index answers; ValueError on a bad id."""
        found: dict[str, tuple[str, str]] = {}
        if self.flow is not None:
            found["flow_id"] = (self.flow, keys.recent_calls_by_flow(self.flow))
        if self.outcome is not None:
            found["outcome"] = (self.outcome, keys.recent_calls_by_outcome(self.outcome))
        if self.instance is not None:
            found["instance_id"] = (self.instance, keys.recent_calls_by_instance(self.instance))
        return found

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HistoryPage:
    """One page of the history."""

    rows: list[CallRow]
    """The page's calls, newest end first."""
    total: int | None
    """How many calls match in all; None when unknown (a search that stopped once the page was full)."""
    page: int
    """Page number, from 1."""
    per_page: int
    """Rows per page."""
    has_next: bool
    """Whether a further page has rows."""
    scanned: int | None = None
    """How many of the newest calls in the time range a search examined; None when the indexes answered."""
    scanned_all: bool = True
    """False when the search hit its cap before the page was full: calls older than the newest
    :attr:`scanned` were not searched ("searched the newest N calls")."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanResult:
    """What :func:`scan_history` found: ``(sid, matched line)`` pairs after the offset, and how far it got."""

    picked: list[tuple[str, str | None]] = field(default_factory=list)
    #: Candidates examined, newest first.
    scanned: int = 0
    #: True when a cap stopped the walk before the page was full.
    capped: bool = False
    #: True when the walk reached the oldest candidate in the range.
    exhausted: bool = False
    #: Matches seen (those skipped for the offset included).
    matches: int = 0


def _zone(name: str) -> timezone | ZoneInfo:
    """The operator's time zone from the browser: an IANA name (``Europe/Paris``) or offset (``+02:00``)."""
    name = (name or "").strip()
    if not name:
        return UTC
    if name[0] in "+-" and len(name) in (5, 6):
        digits = name[1:].replace(":", "")
        if digits.isdigit() and len(digits) == 4:
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            return timezone(delta if name[0] == "+" else -delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use a name like Europe/Paris or an offset like +02:00"
        ) from None


def _epoch(local: str, zone: timezone | ZoneInfo, what: str) -> float | None:
    if not local.strip():
        return None
    try:
        naive = datetime.fromisoformat(local.strip())
    except ValueError:
        raise ValueError(f"{what} must be a date and time like 2026-03-02T09:30, got {local!r}") from None
    if naive.tzinfo is not None:
        return naive.timestamp()
    return naive.replace(tzinfo=zone).timestamp()


def _first_line(text: str, needle: str) -> str | None:
    for line in text.split("\n"):
        if needle in line.casefold():
            return line
    return None


def _legacy_text(entries: Sequence[tuple[str, Mapping[str, str]]]) -> str:
    """``transcript_text`` for a call that ended before the field existed, from its stream entries."""
    return "\n".join(f"{f.get('role', '')}: {' '.join(f.get('text', '').splitlines())}" for _, f in entries)


async def scan_history(
    redis: aioredis.Redis,
    keys: KeySchema,
    index: str,
    lo: float | str,
    hi: float | str,
    *,
    checks: Mapping[str, str],
    caller_digits: str | None,
    text: str | None,
    offset: int,
    want: int,
    scan_limit: int,
    text_scan_limit: int,
    read_transcripts: Callable[[Sequence[str]], Awaitable[list[list[tuple[str, dict[str, str]]]]]],
) -> ScanResult:
    """Walk ``index`` newest first over [lo, hi]; keep calls whose record has each ``checks`` field equal to
    its value, whose ``caller_tail`` ends in ``caller_digits`` and whose transcript contains ``text``
    (case-insensitive); skip the first ``offset`` matches and stop after ``want`` more, after ``scan_limit``
    candidates, or once ``text_scan_limit`` transcripts were searched.

    One HMGET per candidate reads only the fields the filters need (``transcript_text`` for a text search);
    records written before ``transcript_text`` existed are searched through ``read_transcripts``.
    """
    needle = text.casefold() if text else None
    fields = ["call_sid", *checks]
    if caller_digits is not None:
        fields.append("caller_tail")
    if needle is not None:
        fields.append("transcript_text")
    result = ScanResult()
    position = 0
    searched = 0
    batch = max(2 * want, 50)
    while True:
        n = min(batch, scan_limit - result.scanned)
        batch = min(2 * batch, SCAN_BATCH)
        if n <= 0:
            result.capped = True
            return result
        sids: list[str] = await redis.zrevrangebyscore(index, hi, lo, start=position, num=n)
        position += len(sids)
        async with redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hmget(keys.call(sid), fields)
            rows = [dict(zip(fields, values, strict=True)) for values in await pipe.execute()]
        passing = [
            row["call_sid"] is not None  # else the record expired before its index entry was trimmed
            and all(row[name] == value for name, value in checks.items())
            and (caller_digits is None or (row["caller_tail"] or "").endswith(caller_digits))
            for row in rows
        ]
        if needle is not None:
            budget = max(text_scan_limit - searched, 0)
            legacy = [
                sid
                for sid, row, ok in zip(sids, rows, passing, strict=True)
                if ok and row["transcript_text"] is None
            ]
            legacy = legacy[:budget]
            if legacy:
                texts = dict(zip(legacy, await read_transcripts(legacy), strict=True))
                for sid, row in zip(sids, rows, strict=True):
                    if sid in texts:
                        row["transcript_text"] = _legacy_text(texts[sid])
        for sid, row, ok in zip(sids, rows, passing, strict=True):
            line = None
            if ok and needle is not None:
                if searched >= text_scan_limit:
                    result.capped = True
                    return result
                searched += 1
                line = _first_line(row["transcript_text"] or "", needle)
                ok = line is not None
            result.scanned += 1
            if not ok:
                continue
            result.matches += 1
            if result.matches > offset:
                result.picked.append((sid, line))
                if len(result.picked) >= want:
                    return result
        if len(sids) < n:
            result.exhausted = True
            return result
