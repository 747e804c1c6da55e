"""Calendar arithmetic for the booking tool: which start times exist, which slots an appointment covers.

Pure functions (no Redis, no clock): the booking tool asks Redis only which slots are taken. A calendar is
cut into ``step``-minute slots on a grid of local wall-clock times (09:00, 09:15, ...); an appointment
covers every slot from its start until its end. Slots are named by their UTC start
(``2026-03-03T15:30Z``), so names never repeat or collide across a daylight-saving change, and all
arithmetic after the local grid is done in UTC (adding minutes to a zoned datetime would count wall-clock
minutes, which is wrong across a clock change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from ivr.flows.hours import DAY_NAMES, OpeningHours


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


def _wall_minutes(moment: datetime) -> int:
    return moment.hour * 60 + moment.minute


def starts_on(
    hours: OpeningHours,
    day: date,
    *,
    minutes: int,
    step: int,
    after: time | None = None,
) -> list[datetime]:
    """Every grid start on ``day`` (local, aware) where an appointment of ``minutes`` fits in one interval."""
    out: list[datetime] = []
    zone = hours.zone
    for open_at, close_at in hours.intervals(day):
        first = _wall_minutes(open_at)
        last = 1440 if close_at.date() > day else _wall_minutes(close_at)
        if after is not None:
            first = max(first, after.hour * 60 + after.minute)
        minute = math.ceil(first / step) * step
        close_utc = close_at.astimezone(UTC)
        while minute + minutes <= last:
            start = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
            if start.astimezone(UTC) + timedelta(minutes=minutes) <= close_utc:
                out.append(start)
            minute += step
    return out


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
    if local not in starts_on(hours, local.date(), minutes=minutes, step=step):
        if not hours.is_open(start):
            return f"{format_local(local)} is outside the opening hours"
        return f"{format_local(local)} is not an available start time for a {minutes}-minute appointment"
    return None


def parse_local(text: str, zone: tzinfo) -> datetime | None:
    """An ISO date-time as the model sends it: naive means local to ``zone``; an offset is honoured."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=zone, second=0, microsecond=0) if moment.second == 0 else None
    return moment.astimezone(zone)


def format_local(moment: datetime) -> str:
    """``2026-03-03T09:30``: how start times go to and come from the model (local, no offset)."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def spoken(moment: datetime) -> str:
    """``Tuesday, March 3 at 09:30``: a label the model can read out."""
    return (
        f"{DAY_NAMES[moment.weekday()]}, {moment.strftime('%B')} {moment.day} at {moment.strftime('%H:%M')}"
    )
