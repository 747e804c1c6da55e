"""Booking results tell the truth, only the booking's caller may change it, and clock changes are exact.

Real Redis (tests/conftest.py). Issue 9, finding 5: the idempotency memory must never answer with
something that is not stored (book → cancel → book; move chains), another caller's number cannot move or
cancel a booking, and daylight-saving days neither offer non-existent local times nor lose or merge the
repeated hour.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from ivr.flows import Flow
from ivr.store.keys import KeySchema
from ivr.tools import calendar as cal
from ivr.tools.booking import digest, may_change
from ivr.tools.registry import ToolContext, ToolOutcome, registry_for_flow
from tests.support.redis import redis_prefix, redis_url  # noqa: F401  (fixtures)

CHICAGO = ZoneInfo("America/Chicago")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
#: Monday 2 March 2026, 07:00 in Chicago: before the clinic opens.
MONDAY_7AM = datetime(2026, 3, 2, 7, 0, tzinfo=CHICAGO)
BOOKER = "+13125550100"
STRANGER = "+13125550199"


@dataclass
class RecordingCall:
    hangups: list[str] = field(default_factory=list)
    transfers: list[tuple[str, str | None]] = field(default_factory=list)

    def request_hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def request_transfer(self, number: str, announcement: str | None) -> None:
        self.transfers.append((number, announcement))


def clinic(**booking: Any) -> Flow:
    return Flow.model_validate(
        {
            "id": "clinic",
            "instructions": "hi",
            "timezone": "America/Chicago",
            "opening_hours": {"mon": ["08:00-12:00", "13:00-17:00"], "tue": ["08:00-12:00"]},
            "tools": [
                {
                    "type": "booking",
                    "name": "appointments",
                    "calendar": "clinic",
                    "durations": {"checkup": 30, "cleaning": 60},
                    "slot_step_minutes": 15,
                    "days_ahead": 7,
                    **booking,
                },
                {
                    "type": "lookup",
                    "name": "find_patient",
                    "description": "Find a patient by phone.",
                    "dataset": "patients",
                    "source": "data/patients.csv",
                    "key_field": "phone",
                    "normalize": "phone",
                    "fields": ["first_name"],
                },
            ],
        }
    )


def night_line(zone: str) -> Flow:
    """A line open on Sunday nights across the clock change, with 30-minute slots."""
    return Flow.model_validate(
        {
            "id": "night",
            "instructions": "hi",
            "timezone": zone,
            "opening_hours": {"sun": ["00:00-04:00"]},
            "tools": [
                {
                    "type": "booking",
                    "name": "appointments",
                    "calendar": f"night-{zone.replace('/', '-').lower()}",
                    "durations": {"visit": 30},
                    "slot_step_minutes": 30,
                    "days_ahead": 7,
                    "max_slots": 20,
                }
            ],
        }
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:  # noqa: F811
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def keys(redis_prefix: str) -> KeySchema:  # noqa: F811
    return KeySchema(redis_prefix)


def context(
    flow: Flow,
    redis: Redis,
    keys: KeySchema,
    *,
    sid: str = "CA1",
    number: str = BOOKER,
    now: datetime = MONDAY_7AM,
) -> ToolContext:
    return ToolContext(
        call_sid=sid,
        flow=flow,
        call=RecordingCall(),
        caller_number=number,
        redis=redis,
        keys=keys,
        now=lambda: now,
    )


async def call(flow: Flow, ctx: ToolContext, tool: str = "appointments", **args: Any) -> ToolOutcome:
    return await registry_for_flow(flow).dispatch(tool, json.dumps(args), "fc1", ctx)


def output(outcome: ToolOutcome) -> dict[str, Any]:
    return dict(json.loads(outcome.output))


async def stored(redis: Redis, keys: KeySchema, bid: str) -> dict[str, str]:
    return dict(await redis.hgetall(keys.booking(bid)))


# --- results reflect what is stored ------------------------------------------------------------------------


async def test_book_cancel_book_again_books_for_real(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys)
    args = {"action": "book", "service": "checkup", "start": "2026-03-02T10:00", "name": "Ana"}
    first = output(await call(flow, ctx, **args))
    cancelled = await call(flow, ctx, action="cancel", booking_id=first["booking_id"])
    assert output(cancelled)["status"] == "cancelled"

    again = await call(flow, ctx, **args)
    assert again.ok, again.output
    result = output(again)
    assert result["status"] == "booked"
    record = await stored(redis, keys, result["booking_id"])
    assert record["status"] == "booked", f"told 'booked' with booking {result['booking_id']} that is {record}"
    assert record["start"] == result["start"] == "2026-03-02T10:00"
    assert result["booking_id"] != first["booking_id"]
    assert await redis.zrange(keys.calendar_bookings("clinic"), 0, -1) == [result["booking_id"]]
    assert await redis.get(keys.calendar_slot("clinic", "2026-03-02T16:00Z")) == result["booking_id"]

    # a plain repeat of the new booking still replays it (no second booking)
    repeat = output(await call(flow, ctx, **args))
    assert repeat == result
    assert await redis.zcard(keys.calendar_bookings("clinic")) == 1


async def test_move_chain_back_to_an_earlier_time_moves_it_back(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys)
    bid = output(
        await call(flow, ctx, action="book", service="checkup", start="2026-03-02T10:00", name="Bo")
    )["booking_id"]
    said = []
    for start in ("2026-03-02T11:00", "2026-03-02T14:00", "2026-03-02T11:00"):
        moved = await call(flow, ctx, action="reschedule", booking_id=bid, start=start)
        assert moved.ok, moved.output
        said.append(output(moved)["start"])
        record = await stored(redis, keys, bid)
        assert record["start"] == output(moved)["start"], f"said {output(moved)} but stored {record}"
    assert said == ["2026-03-02T11:00", "2026-03-02T14:00", "2026-03-02T11:00"]
    assert output(moved)["previous_start"] == "2026-03-02T14:00"
    slot = lambda hhmm: keys.calendar_slot("clinic", f"2026-03-02T{hhmm}Z")  # noqa: E731
    assert [await redis.get(slot(t)) for t in ("17:00", "17:15")] == [bid, bid]  # 11:00 CST
    assert [await redis.get(slot(t)) for t in ("20:00", "20:15")] == [None, None]  # 14:00 released
    assert (
        await redis.zscore(keys.calendar_bookings("clinic"), bid)
        == datetime(2026, 3, 2, 11, 0, tzinfo=CHICAGO).timestamp()
    )


async def test_a_replay_after_someone_else_changed_the_booking_is_not_stale(
    redis: Redis, keys: KeySchema
) -> None:
    flow = clinic()
    mine = context(flow, redis, keys, sid="CA1")
    bid = output(
        await call(flow, mine, action="book", service="checkup", start="2026-03-02T09:00", name="Cy")
    )["booking_id"]
    first = output(await call(flow, mine, action="reschedule", booking_id=bid, start="2026-03-02T10:00"))
    # the same caller moves it again from another call
    other = context(flow, redis, keys, sid="CA2")
    assert (await call(flow, other, action="reschedule", booking_id=bid, start="2026-03-02T13:00")).ok
    # the first call repeats its earlier move: it must move it back, not replay a result no longer true
    again = output(await call(flow, mine, action="reschedule", booking_id=bid, start="2026-03-02T10:00"))
    assert again["start"] == first["start"] == "2026-03-02T10:00"
    assert again["previous_start"] == "2026-03-02T13:00"
    assert (await stored(redis, keys, bid))["start"] == "2026-03-02T10:00"


# --- only the booking's caller may change it ---------------------------------------------------------------


async def test_another_number_cannot_move_or_cancel_a_booking(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    bid = output(
        await call(
            flow,
            context(flow, redis, keys, sid="CAowner"),
            action="book",
            service="checkup",
            start="2026-03-02T10:00",
            name="Di Owner",
        )
    )["booking_id"]
    before = await stored(redis, keys, bid)
    stranger = context(flow, redis, keys, sid="CAstranger", number=STRANGER)
    for args in (
        {"action": "cancel", "booking_id": bid},
        {"action": "reschedule", "booking_id": bid, "start": "2026-03-02T11:00"},
    ):
        refused = await call(flow, stranger, **args)
        assert refused.error_type == "not_booking_owner", refused.output
        message = output(refused)["error"]["message"]
        assert bid in message and "another phone number" in message
        assert "Di Owner" not in message and "10:00" not in message  # nothing about the booking leaks
    assert await stored(redis, keys, bid) == before
    assert await redis.get(keys.calendar_slot("clinic", "2026-03-02T16:00Z")) == bid

    # the booking's own number may, whatever its formatting and from any call
    owner_again = context(flow, redis, keys, sid="CAowner2", number="+1 (312) 555-0100")
    assert (await call(flow, owner_again, action="cancel", booking_id=bid)).ok
    assert (await stored(redis, keys, bid))["status"] == "cancelled"


async def test_looking_up_someone_elses_number_does_not_make_their_booking_yours(
    redis: Redis, keys: KeySchema
) -> None:
    flow = clinic()
    await redis.hset(keys.dataset_record("patients", "13125550100"), mapping={"first_name": "Ed"})
    await redis.hset(keys.dataset_meta("patients"), mapping={"rows": "1"})
    owner = context(flow, redis, keys, sid="CAowner")
    assert output(await call(flow, owner, "find_patient", key=BOOKER))["found"] is True
    bid = output(
        await call(flow, owner, action="book", service="checkup", start="2026-03-02T10:00", name="Ed")
    )["booking_id"]

    stranger = context(flow, redis, keys, sid="CAstranger", number=STRANGER)
    found = output(await call(flow, stranger, "find_patient", key=BOOKER))  # a number the caller said
    assert found["found"] is True
    refused = await call(flow, stranger, action="cancel", booking_id=bid)
    assert refused.error_type == "not_booking_owner"
    assert (await stored(redis, keys, bid))["status"] == "booked"


async def test_withheld_numbers_never_match_each_other(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    anonymous = context(flow, redis, keys, sid="CAanon1", number="anonymous")
    bid = output(
        await call(flow, anonymous, action="book", service="checkup", start="2026-03-02T10:00", name="Fi")
    )["booking_id"]
    # the call that booked it may still change it
    assert (await call(flow, anonymous, action="reschedule", booking_id=bid, start="2026-03-02T10:30")).ok
    for number in ("anonymous", "+266696687", ""):
        other = context(flow, redis, keys, sid=f"CAanon-{number}", number=number)
        refused = await call(flow, other, action="cancel", booking_id=bid)
        assert refused.error_type == "not_booking_owner", (number, refused.output)


async def test_an_operator_approval_lets_another_caller_change_it(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    bid = output(
        await call(
            flow,
            context(flow, redis, keys, sid="CAowner"),
            action="book",
            service="checkup",
            start="2026-03-02T10:00",
            name="Gi",
        )
    )["booking_id"]
    stranger = context(flow, redis, keys, sid="CAstranger", number=STRANGER)
    args = json.dumps({"action": "cancel", "booking_id": bid})
    registry = registry_for_flow(flow)
    assert (await registry.dispatch("appointments", args, "fc1", stranger)).error_type == "not_booking_owner"
    approved = await registry.dispatch("appointments", args, "fc1_approved", stranger, approved=True)
    assert approved.ok, approved.output
    assert (await stored(redis, keys, bid))["status"] == "cancelled"


# --- daylight-saving days ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "missing"),
    [
        (NEW_YORK, date(2026, 3, 8), ["02:00", "02:30"]),  # 02:00 EST -> 03:00 EDT
        (LONDON, date(2026, 3, 29), ["01:00", "01:30"]),  # 01:00 GMT -> 02:00 BST
    ],
)
def test_spring_forward_offers_no_time_that_does_not_exist(
    zone: ZoneInfo, day: date, missing: list[str]
) -> None:
    flow = night_line(str(zone))
    assert flow.opening_hours is not None
    starts = cal.starts_on(flow.opening_hours, day, minutes=30, step=30)
    walls = [s.strftime("%H:%M") for s in starts]
    assert not set(missing) & set(walls), walls
    utc = [s.astimezone(UTC) for s in starts]
    assert utc == sorted(set(utc))  # distinct real instants, in order
    for start in starts:  # every offered time exists: it survives a round trip through UTC
        assert start.astimezone(UTC).astimezone(zone).strftime("%H:%M") == start.strftime("%H:%M")
    assert len(starts) == 6  # 4 hours of wall clock, one of them skipped


@pytest.mark.parametrize(
    ("zone", "day", "repeated"),
    [
        (NEW_YORK, date(2026, 11, 1), ["01:00", "01:30"]),  # 02:00 EDT -> 01:00 EST
        (LONDON, date(2026, 10, 25), ["01:00", "01:30"]),  # 02:00 BST -> 01:00 GMT
    ],
)
def test_fall_back_offers_the_repeated_hour_twice(zone: ZoneInfo, day: date, repeated: list[str]) -> None:
    flow = night_line(str(zone))
    assert flow.opening_hours is not None
    starts = cal.starts_on(flow.opening_hours, day, minutes=30, step=30)
    utc = [s.astimezone(UTC) for s in starts]
    assert utc == sorted(set(utc)) and len(starts) == 10  # 5 real hours
    for wall in repeated:
        twins = [s for s in starts if s.strftime("%H:%M") == wall]
        assert len(twins) == 2, [s.isoformat() for s in starts]
        assert (twins[1].astimezone(UTC) - twins[0].astimezone(UTC)).total_seconds() == 3600
        labels = {cal.format_local(t) for t in twins}
        assert len(labels) == 2, labels  # the model can tell them apart
        assert len({cal.spoken(t) for t in twins}) == 2


async def test_spring_forward_day_through_the_tool(redis: Redis, keys: KeySchema) -> None:
    flow = night_line("America/New_York")
    now = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)
    ctx = context(flow, redis, keys, now=now)
    found = output(await call(flow, ctx, action="find_slots", service="visit", date="2026-03-08"))
    starts = [s["start"] for s in found["slots"]]
    assert starts == [
        "2026-03-08T00:00",
        "2026-03-08T00:30",
        "2026-03-08T01:00",
        "2026-03-08T01:30",
        "2026-03-08T03:00",
        "2026-03-08T03:30",
    ]
    refused = await call(flow, ctx, action="book", service="visit", start="2026-03-08T02:30", name="Hu")
    assert not refused.ok
    message = output(refused)["error"]["message"]
    assert "does not exist" in message and "2026-03-08T02:30" in message
    assert await redis.zcard(keys.calendar_bookings(flow.tools[0].calendar)) == 0  # type: ignore[union-attr]


async def test_fall_back_day_through_the_tool_books_both_repeated_hours(
    redis: Redis, keys: KeySchema
) -> None:
    flow = night_line("America/New_York")
    calendar = flow.tools[0].calendar  # type: ignore[union-attr]
    now = datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK)
    ctx = context(flow, redis, keys, now=now)
    found = output(await call(flow, ctx, action="find_slots", service="visit", date="2026-11-01"))
    starts = [s["start"] for s in found["slots"]]
    assert len(starts) == len(set(starts)) == 10, starts
    twins = [s for s in starts if s.startswith("2026-11-01T01:30")]
    assert len(twins) == 2, starts

    booked = [
        output(await call(flow, ctx, action="book", service="visit", start=start, name=f"N{i}"))
        for i, start in enumerate(twins)
    ]
    assert [b["status"] for b in booked] == ["booked", "booked"]
    assert booked[0]["booking_id"] != booked[1]["booking_id"]
    assert [b["start"] for b in booked] == twins  # told the time it offered, exactly
    # two different real half-hours are held: 01:30 EDT = 05:30Z and 01:30 EST = 06:30Z
    assert await redis.get(keys.calendar_slot(calendar, "2026-11-01T05:30Z")) == booked[0]["booking_id"]
    assert await redis.get(keys.calendar_slot(calendar, "2026-11-01T06:30Z")) == booked[1]["booking_id"]
    left = output(await call(flow, ctx, action="find_slots", service="visit", date="2026-11-01"))
    assert not {s["start"] for s in left["slots"]} & set(twins)
    assert len(left["slots"]) == 8

    # a bare 01:00 on that day is ambiguous: the model is asked to use the time as find_slots gave it
    vague = await call(flow, ctx, action="book", service="visit", start="2026-11-01T01:00", name="Ov")
    assert vague.error_type == "invalid_arguments", vague.output
    assert "happens twice" in output(vague)["error"]["message"]


async def test_a_record_found_by_the_callers_own_number_is_verified(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    await redis.hset(keys.dataset_record("patients", "13125550100"), mapping={"first_name": "Ed"})
    await redis.hset(keys.dataset_record("patients", "13125550199"), mapping={"first_name": "Jo"})
    await redis.hset(keys.dataset_meta("patients"), mapping={"rows": "2"})
    ctx = context(flow, redis, keys, number=BOOKER)
    assert output(await call(flow, ctx, "find_patient", key=STRANGER))["found"] is True
    assert ctx.verified_records == set()  # a number the caller said proves nothing
    assert output(await call(flow, ctx, "find_patient", key="+1 312 555 0100"))["found"] is True
    assert ctx.verified_records == {"patients:13125550100"}
    bid = output(
        await call(flow, ctx, action="book", service="checkup", start="2026-03-02T10:00", name="Ed")
    )["booking_id"]
    record = await stored(redis, keys, bid)
    assert record["caller"] == "13125550100" and json.loads(record["records"]) == ["patients:13125550100"]

    # the rule itself: a call holding the same verified record may change it, whatever its number says
    other = context(flow, redis, keys, sid="CAother", number="anonymous")
    assert not may_change(record, other)
    other.verified_records.add("patients:13125550100")
    assert may_change(record, other)
    # bookings stored before `caller` existed are matched by their phone field
    legacy = {k: v for k, v in record.items() if k not in ("caller", "records")}
    assert may_change(legacy, context(flow, redis, keys, sid="CAx", number="+1 312 555 0100"))
    assert not may_change(legacy, context(flow, redis, keys, sid="CAx", number=STRANGER))


async def test_results_stored_before_revisions_are_checked_against_the_booking(
    redis: Redis, keys: KeySchema
) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys)
    args = {"action": "book", "service": "checkup", "start": "2026-03-02T10:00", "name": "Ana"}
    first = output(await call(flow, ctx, **args))
    key = keys.booking_idempotency("CA1", digest("appointments", "clinic", args))
    await redis.set(key, json.dumps(first))  # the format before revisions: the bare result
    assert output(await call(flow, ctx, **args)) == first  # still true: replayed
    assert (await call(flow, ctx, action="cancel", booking_id=first["booking_id"])).ok
    await redis.set(key, json.dumps(first))
    again = output(await call(flow, ctx, **args))  # no longer true: booked afresh
    assert again["booking_id"] != first["booking_id"]
    assert (await stored(redis, keys, again["booking_id"]))["status"] == "booked"
