"""Calendar arithmetic for the booking tool: which start times exist, which slots an appointment covers.

Pure functions (no Redis, no clock): the booking tool asks Redis only which slots are taken. A calendar is
cut into ``step``-minute slots on a grid of local wall-clock times (09:00, 09:15, ...); an appointment
covers every slot from its start until its end. Slots are named by their UTC start
(``2026-03-03T15:30Z``), so names never repeat or collide across a daylight-saving change, and all
arithmetic after the local grid is done in UTC (adding minutes to a zoned datetime would count wall-clock
minutes, which is wrong across a clock change).

Clock changes: a wall time the clocks skip (02:30 on a spring-forward night in New York) is never
offered and cannot be booked; a wall time the clocks repeat (01:30 on a fall-back night) is two starts,
one hour apart. Such repeated times go to the model with their UTC offset (``2026-11-01T01:30-04:00``
and ``…-05:00``) and are spoken with the zone's abbreviation, so the two can be told apart; a bare
``2026-11-01T01:30`` is refused as ambiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from ivr.flows.hours import DAY_NAMES, OpeningHours, spoken_clock


@dataclass(frozen=True)
class Window:
    """The times a booking may start in: not before ``earliest``, on or before the day ``last_day``."""

    now: datetime
    earliest: datetime
    last_day: date


def window(now: datetime, zone: tzinfo, *, min_notice_minutes: int, days_ahead: int) -> Window:
    """The booking window seen at ``now``: min-notice from now up to ``days_ahead`` local days ahead."""
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    earliest = now.astimezone(UTC) + timedelta(minutes=min_notice_minutes)
    return Window(now.astimezone(UTC), earliest, now.astimezone(zone).date() + timedelta(days=days_ahead))


def slot_name(moment: datetime) -> str:
    """``2026-03-03T15:30Z``: the UTC start of a slot, as used in its Redis key."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def lane_slot_name(moment: datetime, lane: int) -> str:
    """Slot name in one lane of a calendar with capacity > 1 (lane 0 keeps the plain name)."""
    name = slot_name(moment)
    return name if lane == 0 else f"{name}#{lane}"


def covered(start: datetime, minutes: int, step: int) -> list[datetime]:
    """UTC starts of every slot an appointment of ``minutes`` from ``start`` occupies."""
    first = start.astimezone(UTC)
    return [first + timedelta(minutes=step * k) for k in range(math.ceil(minutes / step))]


class LocalTimeError(ValueError):
    """A local wall time that names no moment (skipped by the clocks) or two (repeated); says which."""


def _wall_minutes(moment: datetime) -> int:
    return moment.hour * 60 + moment.minute


def exists(moment: datetime) -> bool:
    """False for a wall time the clocks skip (it does not survive a round trip through UTC)."""
    back = moment.astimezone(UTC).astimezone(moment.tzinfo)
    return back.replace(tzinfo=None) == moment.replace(tzinfo=None)


def is_repeated(moment: datetime) -> bool:
    """True for a wall time the clocks show twice (the hour repeated when they go back)."""
    return exists(moment) and moment.replace(fold=0).utcoffset() != moment.replace(fold=1).utcoffset()


def moments_at(day: date, wall: time, zone: tzinfo) -> list[datetime]:
    """The real moments a wall time on ``day`` names, in order: none, one, or two on a fall-back night."""
    found: list[datetime] = []
    for fold in (0, 1):
        moment = datetime.combine(day, wall, tzinfo=zone).replace(fold=fold)
        if exists(moment) and all(moment.astimezone(UTC) != m.astimezone(UTC) for m in found):
            found.append(moment)
    return sorted(found, key=lambda m: m.astimezone(UTC))


def starts_on(
    hours: OpeningHours,
    day: date,
    *,
    minutes: int,
    step: int,
    after: time | None = None,
) -> list[datetime]:
    """Every grid start on ``day`` (local, aware) where an appointment of ``minutes`` fits in one interval.

    In time order; skipped wall times are left out and repeated ones appear twice (see the module doc).
    """
    out: list[datetime] = []
    zone = hours.zone
    for open_at, close_at in hours.intervals(day):
        first = _wall_minutes(open_at)
        last = 1440 if close_at.date() > day else _wall_minutes(close_at)
        if after is not None:
            first = max(first, after.hour * 60 + after.minute)
        minute = math.ceil(first / step) * step
        open_utc, close_utc = open_at.astimezone(UTC), close_at.astimezone(UTC)
        while minute < last:
            for start in moments_at(day, time(minute // 60, minute % 60), zone):
                start_utc = start.astimezone(UTC)
                if open_utc <= start_utc and start_utc + timedelta(minutes=minutes) <= close_utc:
                    out.append(start)
            minute += step
    return sorted(out, key=lambda m: m.astimezone(UTC))


def unbookable_reason(
    hours: OpeningHours,
    start: datetime,
    *,
    minutes: int,
    step: int,
    bounds: Window,
) -> str | None:
    """Why ``start`` cannot be booked (in words for the model), or ``None`` when it can."""
    local = start.astimezone(hours.zone)
    if start.astimezone(UTC) < bounds.now:
        return f"{format_local(local)} is in the past"
    if start.astimezone(UTC) < bounds.earliest:
        return f"{format_local(local)} is too soon (bookings need more notice)"
    if local.date() > bounds.last_day:
        return f"{format_local(local)} is too far ahead (bookings go up to {bounds.last_day.isoformat()})"
    offered = {s.astimezone(UTC) for s in starts_on(hours, local.date(), minutes=minutes, step=step)}
    if start.astimezone(UTC) not in offered:  # compared in UTC: equal wall times in one zone may differ
        if not hours.is_open(start):
            return f"{format_local(local)} is outside the opening hours"
        return f"{format_local(local)} is not an available start time for a {minutes}-minute appointment"
    return None


def parse_local(text: str, zone: tzinfo) -> datetime | None:
    """An ISO date-time as the model sends it: naive means local to ``zone``; an offset is honoured.

    ``None`` when it is not a date-time; :class:`LocalTimeError` when it is a naive wall time the clocks
    skip or repeat in ``zone`` (the message names both readings of a repeated one).
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return moment.astimezone(zone)
    if moment.second != 0 or moment.microsecond != 0:
        return None
    moments = moments_at(moment.date(), moment.time(), zone)
    wall = format_local(moment)
    if not moments:
        raise LocalTimeError(f"{wall} does not exist in {zone} (the clocks go forward over it)")
    if len(moments) > 1:
        readings = " or ".join(format_local(m) for m in moments)
        raise LocalTimeError(f"{wall} happens twice in {zone} (the clocks go back); say which: {readings}")
    return moments[0]


def format_local(moment: datetime) -> str:
    """``2026-03-03T09:30``: how start times go to and come from the model (local, no offset).

    A wall time the clocks repeat keeps its UTC offset (``2026-11-01T01:30-04:00``) so the two differ.
    """
    if moment.tzinfo is not None and is_repeated(moment):
        return moment.isoformat(timespec="minutes")
    return moment.strftime("%Y-%m-%dT%H:%M")


def spoken(moment: datetime) -> str:
    """``Tuesday, March 3 at 9:30 AM``: a label the model, or the offline voice, can read out to a caller.

    A repeated wall time says which one: ``at 1:30 AM EDT, before the clocks go back``.
    """
    label = f"{DAY_NAMES[moment.weekday()]}, {moment.strftime('%B')} {moment.day} at {spoken_clock(moment)}"
    if moment.tzinfo is not None and is_repeated(moment):
        first = moment.utcoffset() == moment.replace(fold=0).utcoffset()
        label += f" {moment.tzname()}, {'before' if first else 'after'} the clocks go back"
    return label
