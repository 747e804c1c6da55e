"""Opening hours: a weekly schedule in the flow's time zone, closed dates, and what to do after hours.

Pure and synchronous (no clock inside): every question takes the moment it is about, so the webhook, the
booking tool and the tests all ask the same functions with their own ``now``. Intervals are built as
aware datetimes in the schedule's zone, which keeps daylight-saving days right (a 08:00-12:00 interval
is four hours of wall time on either side of a clock change) and lets callers compare them with any
aware datetime. ``24:00`` ends an interval at the next midnight; an interval never crosses midnight
(write ``22:00-24:00`` on one day and ``00:00-02:00`` on the next).
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BeforeValidator, Field

from ivr.flows.fields import Issue, PhoneNumber, Strict, Text, TimeZoneName

if TYPE_CHECKING:
    from ivr.flows.model import Flow

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

#: Said before hanging up after hours when the flow gives no message of its own.
DEFAULT_CLOSED_MESSAGE = (
    "Thank you for calling. We are closed right now; please call again during our opening hours. Goodbye."
)

_INTERVAL = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
#: How far ahead :meth:`OpeningHours.next_opening` looks before answering "never".
_SEARCH_DAYS = 370


def _interval(value: str) -> str:
    match = _INTERVAL.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a time range (write HH:MM-HH:MM, e.g. 08:00-12:00)")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
        raise ValueError(f"{value!r} has an impossible time (hours 00-23, minutes 00-59; 24:00 ends a day)")
    if (eh, em) <= (sh, sm):
        raise ValueError(
            f"{value!r} ends before it starts (a range cannot cross midnight: "
            "use 22:00-24:00 on one day and 00:00-02:00 on the next)"
        )
    return f"{sh:02d}:{sm:02d}-{eh:02d}:{em:02d}"


def _day(value: object) -> object:
    """Friendly spellings of one day: ``closed``/null → no intervals; one range as text → a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [] if value.strip().lower() == "closed" else [value]
    return value


def _closed_date(value: object) -> object:
    if isinstance(value, datetime):
        raise ValueError(f"{value} is a date and time; give only the date (e.g. 2026-12-25)")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date (write YYYY-MM-DD, e.g. 2026-12-25)") from None
    return value


Interval = Annotated[str, AfterValidator(_interval)]
DayHours = Annotated[list[Interval], BeforeValidator(_day)]
ClosedDate = Annotated[date, BeforeValidator(_closed_date)]


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _at(day: date, minutes: int, zone: tzinfo) -> datetime:
    """The aware moment ``minutes`` after local midnight of ``day`` (1440 → next midnight)."""
    extra, minutes = divmod(minutes, 1440)
    return datetime.combine(day + timedelta(days=extra), time(minutes // 60, minutes % 60), tzinfo=zone)


def _aware(moment: datetime) -> datetime:
    """A naive datetime is read as UTC, as everywhere else in the flows."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class OpeningHours(Strict):
    """When the line is open: intervals per weekday, minus closed dates, in one time zone."""

    mon: DayHours = Field(default_factory=list)
    tue: DayHours = Field(default_factory=list)
    wed: DayHours = Field(default_factory=list)
    thu: DayHours = Field(default_factory=list)
    fri: DayHours = Field(default_factory=list)
    sat: DayHours = Field(default_factory=list)
    sun: DayHours = Field(default_factory=list)
    #: Days closed whatever the weekday says (holidays).
    closed_dates: list[ClosedDate] = Field(default_factory=list)
    #: Zone of the times above; the flow's ``timezone`` fills it in when left out (UTC if neither is set).
    timezone: TimeZoneName | None = None

    @cached_property
    def zone(self) -> tzinfo:
        return ZoneInfo(self.timezone) if self.timezone else UTC

    @cached_property
    def _closed(self) -> frozenset[date]:
        return frozenset(self.closed_dates)

    def weekly(self, weekday: int) -> list[str]:
        """The ranges of a weekday (0 = Monday), as written (normalised to HH:MM-HH:MM)."""
        return list(getattr(self, DAYS[weekday]))

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """Open intervals of a local calendar day, as aware datetimes in :attr:`zone`, in order."""
        if day in self._closed:
            return []
        out = []
        for text in sorted(self.weekly(day.weekday())):
            start, end = text.split("-")
            out.append((_at(day, _minutes(start), self.zone), _at(day, _minutes(end), self.zone)))
        return out

    def is_open(self, moment: datetime) -> bool:
        """True when ``moment`` falls inside an interval (start inclusive, end exclusive)."""
        moment = _aware(moment)
        local = moment.astimezone(self.zone)
        return any(start <= moment < end for start, end in self.intervals(local.date()))

    def next_opening(self, moment: datetime) -> datetime | None:
        """The first moment at or after ``moment`` when the line is open (``moment`` itself if open now).

        ``None`` when nothing opens within about a year (no hours at all, or every day closed).
        """
        moment = _aware(moment)
        day = moment.astimezone(self.zone).date()
        for offset in range(_SEARCH_DAYS):
            for start, end in self.intervals(day + timedelta(days=offset)):
                if end > moment:
                    return max(start, moment).astimezone(self.zone)
        return None

    def describe_day(self, day: date) -> str:
        """``08:00-12:00, 13:00-18:00`` for a day, or ``closed``."""
        if day in self._closed:
            return "closed (closed date)"
        ranges = sorted(self.weekly(day.weekday()))
        return ", ".join(ranges) if ranges else "closed"

    def describe_week(self) -> str:
        """The weekly schedule on one line, consecutive equal days grouped: ``mon-thu 08:00-18:00; ...``."""
        groups: list[tuple[int, int, str]] = []
        for index in range(7):
            text = ", ".join(sorted(self.weekly(index))) or "closed"
            if groups and groups[-1][2] == text:
                groups[-1] = (groups[-1][0], index, text)
            else:
                groups.append((index, index, text))
        parts = [
            (DAYS[first] if first == last else f"{DAYS[first]}-{DAYS[last]}") + f" {text}"
            for first, last, text in groups
        ]
        return "; ".join(parts)

    def issues(self) -> list[Issue]:
        """Overlapping ranges on one day and repeated closed dates (paths relative to this model)."""
        issues: list[Issue] = []
        for name in DAYS:
            ranges = getattr(self, name)
            spans = sorted(
                (_minutes(r.split("-")[0]), _minutes(r.split("-")[1]), i) for i, r in enumerate(ranges)
            )
            for (_, end_a, i), (start_b, _, j) in itertools.pairwise(spans):
                if start_b < end_a:
                    first, second = sorted((i, j))
                    issues.append(
                        Issue(
                            (name, second),
                            f"{ranges[second]} overlaps {ranges[first]} ({name}[{first}]); "
                            "join them into one range or fix the times",
                        )
                    )
        seen: dict[date, int] = {}
        for i, day in enumerate(self.closed_dates):
            if day in seen:
                issues.append(
                    Issue(("closed_dates", i), f"{day} is listed twice (also closed_dates[{seen[day]}])")
                )
            seen.setdefault(day, i)
        return issues


class AfterHours(Strict):
    """What a call gets when it arrives while the line is closed."""

    #: ``message_and_hangup``: say ``message`` and hang up; ``transfer``: connect to ``number`` (or the flow's
    #: transfer number), saying ``message`` first if given; ``continue``: answer as usual with
    #: ``{{ open_now }}`` = no, so the instructions can adapt.
    action: Literal["message_and_hangup", "transfer", "continue"] = "continue"
    message: Text | None = None
    #: Number for ``action: transfer``; defaults to the flow's ``transfer.number``.
    number: PhoneNumber | None = None


def after_hours_decision(flow: Flow, now: datetime) -> AfterHours | None:
    """What to do with a call arriving at ``now``: ``None`` when the line is open (or has no hours).

    The returned :class:`AfterHours` is resolved: a ``message_and_hangup`` always carries a message (the
    default one when the flow gives none) and a ``transfer`` carries its number. The message may contain
    placeholders; render it with ``flow.render(decision.message, context)``.
    """
    hours = flow.opening_hours
    if hours is None or hours.is_open(now):
        return None
    after = flow.after_hours
    if after.action == "message_and_hangup" and after.message is None:
        return after.model_copy(update={"message": DEFAULT_CLOSED_MESSAGE})
    if after.action == "transfer" and after.number is None:
        return after.model_copy(update={"number": flow.transfer.number if flow.transfer else None})
    return after


def spoken_clock(moment: time | datetime) -> str:
    """``10:30 AM``, ``2:15 PM``, ``noon``, ``midnight``: a time of day as it is said to a caller (speech
    reads the digits)."""
    if (moment.hour, moment.minute) == (12, 0):
        return "noon"
    if (moment.hour, moment.minute) == (0, 0):
        return "midnight"
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def describe_opening(opening: datetime | None, now: datetime) -> str:
    """How a person would say when the line opens: ``now``, ``today at 1:00 PM``, ``Monday at 8:00 AM``, ...

    ``opening`` is in the schedule's zone (as :meth:`OpeningHours.next_opening` returns it).
    """
    if opening is None:
        return "not scheduled"
    now = _aware(now).astimezone(opening.tzinfo)
    if opening <= now:
        return "now"
    days = (opening.date() - now.date()).days
    clock = spoken_clock(opening)
    if days == 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    weekday = DAY_NAMES[opening.weekday()]
    if days < 7:
        return f"{weekday} at {clock}"
    return f"{weekday}, {opening.strftime('%B')} {opening.day} at {clock}"
