"""The booking tool against a real Redis: the race for one slot, idempotency, moves, cancels, free times."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from ivr.flows import Flow
from ivr.store.keys import KeySchema
from ivr.tools.booking import BookingTool, digest
from ivr.tools.registry import ToolContext, ToolOutcome, registry_for_flow
from tests.support.redis import redis_prefix, redis_url  # noqa: F401  (fixtures)

CHICAGO = ZoneInfo("America/Chicago")
#: Monday 2 March 2026, 07:00 in Chicago: before the clinic opens.
MONDAY_7AM = datetime(2026, 3, 2, 7, 0, tzinfo=CHICAGO)


@dataclass
class RecordingCall:
    hangups: list[str] = field(default_factory=list)
    transfers: list[tuple[str, str | None]] = field(default_factory=list)

    def request_hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def request_transfer(self, number: str, announcement: str | None) -> None:
        self.transfers.append((number, announcement))


def clinic(**booking: Any) -> Flow:
    tool = {
        "type": "booking",
        "name": "appointments",
        "calendar": "clinic",
        "durations": {"checkup": 30, "cleaning": 60},
        "slot_step_minutes": 15,
        "days_ahead": 7,
        "max_slots": 5,
        **booking,
    }
    return Flow.model_validate(
        {
            "id": "clinic",
            "instructions": "hi",
            "timezone": "America/Chicago",
            "opening_hours": {
                "mon": ["08:00-12:00", "13:00-17:00"],
                "tue": ["08:00-12:00"],
                "closed_dates": ["2026-03-04"],
            },
            "tools": [tool],
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
    flow: Flow, redis: Redis | None, keys: KeySchema | None, *, sid: str = "CA1", now: datetime = MONDAY_7AM
) -> ToolContext:
    return ToolContext(
        call_sid=sid,
        flow=flow,
        call=RecordingCall(),
        caller_number="+13125550100",
        redis=redis,
        keys=keys,
        now=lambda: now,
    )


async def call(flow: Flow, ctx: ToolContext, **args: Any) -> ToolOutcome:
    return await registry_for_flow(flow).dispatch("appointments", json.dumps(args), "fc1", ctx)


def output(outcome: ToolOutcome) -> dict[str, Any]:
    return dict(json.loads(outcome.output))


# --- the race ----------------------------------------------------------------------------------------------


async def test_twenty_calls_racing_for_one_slot_book_it_exactly_once(
    redis_url: str,  # noqa: F811
    keys: KeySchema,
) -> None:
    flow = clinic()
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(4)]  # like several instances
    try:
        attempts = [
            call(
                flow,
                context(flow, clients[i % 4], keys, sid=f"CA{i:02d}"),
                action="book",
                service="cleaning",
                start="2026-03-02T09:00",
                name=f"Caller {i}",
            )
            for i in range(20)
        ]
        outcomes = await asyncio.gather(*attempts)
    finally:
        for client in clients:
            await client.aclose()
    winners = [o for o in outcomes if o.ok]
    losers = [o for o in outcomes if not o.ok]
    print(f"booking race: {len(outcomes)} attempts, {len(winners)} winner(s)")
    assert len(winners) == 1
    assert {o.error_type for o in losers} == {"slot_taken"}
    assert all("find_slots" in output(o)["error"]["message"] for o in losers)
    booking_id = output(winners[0])["booking_id"]
    async with Redis.from_url(redis_url, decode_responses=True) as check:
        # every 15-minute slot of the hour belongs to the winner, and only one booking exists
        for minute in (0, 15, 30, 45):
            slot = f"2026-03-02T15:{minute:02d}Z"  # 09:00 CST is 15:00 UTC
            assert await check.get(keys.calendar_slot("clinic", slot)) == booking_id
        assert await check.zrange(keys.calendar_bookings("clinic"), 0, -1) == [booking_id]


async def test_overlapping_appointments_race_and_capacity_lanes(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    attempts = [
        call(
            flow,
            context(flow, redis, keys, sid=f"CA{i}"),
            action="book",
            service="cleaning" if i % 2 else "checkup",
            start="2026-03-02T09:15" if i % 2 else "2026-03-02T09:45",
            name="X",
        )
        for i in range(10)
    ]  # a 60-minute 09:15 and a 30-minute 09:45 share the 09:45 slot
    outcomes = await asyncio.gather(*attempts)
    assert sum(o.ok for o in outcomes) == 1

    two_chairs = clinic(calendar="two-chairs", capacity=2)
    outcomes = await asyncio.gather(
        *[
            call(
                two_chairs,
                context(two_chairs, redis, keys, sid=f"CB{i}"),
                action="book",
                service="checkup",
                start="2026-03-02T10:00",
                name="Y",
            )
            for i in range(12)
        ]
    )
    assert sum(o.ok for o in outcomes) == 2
    free = output(
        await call(
            two_chairs,
            context(two_chairs, redis, keys),
            action="find_slots",
            service="checkup",
            date="2026-03-02",
            after_time="09:30",
        )
    )
    assert [s["start"] for s in free["slots"]] == [
        "2026-03-02T09:30",  # 09:30-10:00 fits before the full 10:00 slot
        "2026-03-02T10:30",
        "2026-03-02T10:45",
        "2026-03-02T11:00",
        "2026-03-02T11:15",
    ]


# --- idempotency -------------------------------------------------------------------------------------------


async def test_same_call_same_arguments_returns_the_first_result(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys, sid="CAsame")
    args = {"action": "book", "service": "checkup", "start": "2026-03-02T08:30", "name": "Ana"}
    first, again, *concurrent = await asyncio.gather(*[call(flow, ctx, **args) for _ in range(5)])
    assert first.ok and again.ok and all(o.ok for o in concurrent)
    assert len({output(o)["booking_id"] for o in (first, again, *concurrent)}) == 1
    assert await redis.zcard(keys.calendar_bookings("clinic")) == 1
    key = keys.booking_idempotency("CAsame", digest("appointments", "clinic", args))
    assert 0 < await redis.ttl(key) <= 24 * 3600

    # another call with the same arguments is a different caller: the slot is taken
    other = await call(flow, context(flow, redis, keys, sid="CAother"), **args)
    assert other.error_type == "slot_taken"
    # the same call with other arguments is a new action
    second = await call(flow, ctx, **{**args, "start": "2026-03-02T09:00"})
    assert second.ok and output(second)["booking_id"] != output(first)["booking_id"]


# --- reschedule and cancel ---------------------------------------------------------------------------------


async def test_reschedule_moves_atomically_and_may_overlap_itself(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys)
    booked = output(
        await call(flow, ctx, action="book", service="cleaning", start="2026-03-02T09:00", name="Bo")
    )
    bid = booked["booking_id"]
    moved = await call(flow, ctx, action="reschedule", booking_id=bid.lower(), start="2026-03-02T09:30")
    assert moved.ok, moved.output
    assert output(moved)["previous_start"] == "2026-03-02T09:00"
    assert output(moved)["start"] == "2026-03-02T09:30" and output(moved)["end"] == "2026-03-02T10:30"
    slot = lambda hhmm: keys.calendar_slot("clinic", f"2026-03-02T{hhmm}Z")  # noqa: E731
    assert await redis.get(slot("15:00")) is None and await redis.get(slot("15:15")) is None
    assert [await redis.get(slot(t)) for t in ("15:30", "15:45", "16:00", "16:15")] == [bid] * 4
    record = await redis.hgetall(keys.booking(bid))
    assert record["start"] == "2026-03-02T09:30" and record["status"] == "booked"
    assert record["phone"] == "+13125550100" and record["call_sid"] == "CA1"

    # another booking now blocks a move onto it
    other = output(
        await call(
            flow,
            context(flow, redis, keys, sid="CA2"),
            action="book",
            service="checkup",
            start="2026-03-02T11:00",
            name="Cy",
        )
    )
    blocked = await call(flow, ctx, action="reschedule", booking_id=bid, start="2026-03-02T10:30")
    assert blocked.error_type == "slot_taken"
    assert await redis.get(slot("15:30")) == bid  # nothing released on failure
    assert other["booking_id"] != bid


async def test_cancel_releases_the_slots_once(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys)
    bid = output(
        await call(flow, ctx, action="book", service="checkup", start="2026-03-02T13:00", name="Di")
    )["booking_id"]
    cancelled = await call(flow, ctx, action="cancel", booking_id=bid)
    assert output(cancelled)["status"] == "cancelled" and output(cancelled)["start"] == "2026-03-02T13:00"
    assert await redis.hget(keys.booking(bid), "status") == "cancelled"
    assert await redis.zcard(keys.calendar_bookings("clinic")) == 0
    assert await redis.get(keys.calendar_slot("clinic", "2026-03-02T19:00Z")) is None
    # a repeat from the same call replays the first result; another call hears it was already cancelled
    assert output(await call(flow, ctx, action="cancel", booking_id=bid)) == output(cancelled)
    again = output(await call(flow, context(flow, redis, keys, sid="CA9"), action="cancel", booking_id=bid))
    assert again["note"] == "This booking was already cancelled."
    # the freed time can be booked again, and a cancelled booking cannot be moved
    rebook = await call(
        flow,
        context(flow, redis, keys, sid="CA3"),
        action="book",
        service="checkup",
        start="2026-03-02T13:00",
        name="Ed",
    )
    assert rebook.ok
    move = await call(flow, ctx, action="reschedule", booking_id=bid, start="2026-03-02T14:00")
    assert move.error_type == "booking_cancelled"


async def test_unknown_booking_ids(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys)
    for bid in ("ZZZZZZ", "not an id!"):
        outcome = await call(flow, ctx, action="cancel", booking_id=bid)
        assert outcome.error_type == "booking_not_found"
        assert "letter by letter" in output(outcome)["error"]["message"]
    other_calendar = clinic(calendar="elsewhere")
    bid = output(
        await call(other_calendar, ctx, action="book", service="checkup", start="2026-03-02T08:00", name="F")
    )["booking_id"]
    assert (await call(flow, ctx, action="cancel", booking_id=bid)).error_type == "booking_not_found"


# --- free times --------------------------------------------------------------------------------------------


async def test_find_slots_respects_hours_durations_bookings_and_notice(redis: Redis, keys: KeySchema) -> None:
    flow = clinic(min_notice_minutes=60)
    ctx = context(flow, redis, keys, now=MONDAY_7AM.replace(hour=10, minute=10))  # earliest start 11:10

    def starts(result: dict[str, Any]) -> list[str]:
        return [s["start"][-5:] for s in result["slots"]]

    checkups = output(await call(flow, ctx, action="find_slots", service="checkup"))
    assert starts(checkups) == ["11:15", "11:30", "13:00", "13:15", "13:30"]  # 11:45 would end after 12:00
    assert checkups["slots"][0] == {"start": "2026-03-02T11:15", "spoken": "Monday, March 2 at 11:15 AM"}
    assert checkups["duration_minutes"] == 30 and checkups["timezone"] == "America/Chicago"
    cleanings = output(await call(flow, ctx, action="find_slots", service="cleaning"))
    assert starts(cleanings) == ["13:00", "13:15", "13:30", "13:45", "14:00"]

    booked = await call(
        flow,
        context(flow, redis, keys, sid="CA2", now=ctx.now()),
        action="book",
        service="checkup",
        start="2026-03-02T13:15",
        name="Gi",
    )
    assert booked.ok
    assert starts(output(await call(flow, ctx, action="find_slots", service="checkup"))) == [
        "11:15",
        "11:30",
        "13:45",  # 13:00-13:30 overlaps the 13:15 booking
        "14:00",
        "14:15",
    ]
    assert starts(output(await call(flow, ctx, action="find_slots", service="cleaning"))) == [
        "13:45",
        "14:00",
        "14:15",
        "14:30",
        "14:45",
    ]

    tuesday = output(
        await call(flow, ctx, action="find_slots", service="checkup", date="2026-03-03", after_time="11:00")
    )
    assert [s["start"] for s in tuesday["slots"]] == [
        "2026-03-03T11:00",
        "2026-03-03T11:15",
        "2026-03-03T11:30",
    ]
    closed = output(await call(flow, ctx, action="find_slots", service="checkup", date="2026-03-04"))
    assert closed["slots"] == [] and "No free time for checkup on 2026-03-04" in closed["note"]
    far = output(await call(flow, ctx, action="find_slots", service="checkup", date="2026-03-20"))
    assert far["slots"] == [] and "from 2026-03-02 to 2026-03-09" in far["note"]


async def test_find_slots_moves_on_to_the_next_open_day(redis: Redis, keys: KeySchema) -> None:
    flow = clinic()
    late = context(flow, redis, keys, now=MONDAY_7AM.replace(hour=16, minute=40))
    found = output(await call(flow, late, action="find_slots", service="cleaning"))
    assert [s["start"] for s in found["slots"]] == [
        "2026-03-03T08:00",
        "2026-03-03T08:15",
        "2026-03-03T08:30",
        "2026-03-03T08:45",
        "2026-03-03T09:00",
    ]


@pytest.mark.parametrize(
    ("start", "service", "reason"),
    [
        ("2026-03-02T06:00", "checkup", "2026-03-02T06:00 is in the past"),
        ("2026-03-02T12:30", "checkup", "2026-03-02T12:30 is outside the opening hours"),
        ("2026-03-02T09:05", "checkup", "2026-03-02T09:05 is not an available start time for a 30-minute"),
        ("2026-03-02T11:30", "cleaning", "2026-03-02T11:30 is not an available start time for a 60-minute"),
        ("2026-03-04T09:00", "checkup", "2026-03-04T09:00 is outside the opening hours"),
        ("2026-03-16T09:00", "checkup", "2026-03-16T09:00 is too far ahead (bookings go up to 2026-03-09)"),
    ],
)
async def test_unbookable_starts_tell_the_model_to_call_find_slots(
    redis: Redis, keys: KeySchema, start: str, service: str, reason: str
) -> None:
    flow = clinic()
    ctx = context(flow, redis, keys, now=MONDAY_7AM)
    outcome = await call(flow, ctx, action="book", service=service, start=start, name="Hu")
    assert outcome.error_type == "slot_unavailable"
    message = output(outcome)["error"]["message"]
    assert message.startswith(reason) and message.endswith(
        "Call find_slots and offer the caller one of the times it returns."
    )
    assert await redis.zcard(keys.calendar_bookings("clinic")) == 0


async def test_notice_offsets_and_argument_errors(redis: Redis, keys: KeySchema) -> None:
    flow = clinic(min_notice_minutes=120)
    ctx = context(flow, redis, keys, now=MONDAY_7AM)
    soon = await call(flow, ctx, action="book", service="checkup", start="2026-03-02T08:30", name="Iv")
    assert soon.error_type == "slot_unavailable" and "is too soon" in output(soon)["error"]["message"]
    utc = await call(flow, ctx, action="book", service="checkup", start="2026-03-02T15:00:00Z", name="Jo")
    assert utc.ok and output(utc)["start"] == "2026-03-02T09:00"  # 15:00 UTC is 09:00 in Chicago

    missing = await call(flow, ctx, action="book", service="checkup", start="2026-03-02T10:00")
    assert (
        missing.error_type == "invalid_arguments" and "book needs name" in output(missing)["error"]["message"]
    )
    garbled = await call(flow, ctx, action="book", service="checkup", start="next tuesday", name="Ka")
    assert garbled.error_type == "invalid_arguments"
    unknown_service = await call(flow, ctx, action="find_slots", service="whitening")
    assert unknown_service.error_type == "invalid_arguments"  # the schema's enum lists the services
    bad_date = await call(flow, ctx, action="find_slots", service="checkup", date="2026-02-30")
    assert bad_date.error_type == "invalid_arguments"

    tables = clinic(calendar="tables", max_party_size=10)
    no_party = await call(tables, ctx, action="book", service="checkup", start="2026-03-02T10:00", name="Li")
    assert no_party.error_type == "invalid_arguments" and "party_size" in output(no_party)["error"]["message"]
    party = await call(
        tables, ctx, action="book", service="checkup", start="2026-03-02T10:00", name="Li", party_size=4
    )
    assert party.ok and output(party)["party_size"] == 4
    assert await redis.hget(keys.booking(output(party)["booking_id"]), "party_size") == "4"
    too_many = await call(
        tables, ctx, action="book", service="checkup", start="2026-03-02T10:30", name="Mo", party_size=11
    )
    assert too_many.error_type == "invalid_arguments"


async def test_without_redis_the_tool_says_it_is_unavailable() -> None:
    flow = clinic()
    outcome = await call(flow, context(flow, None, None), action="find_slots", service="checkup")
    assert outcome.error_type == "unavailable"
    assert "offer to transfer" in output(outcome)["error"]["message"]


def test_spec_lists_services_and_party_size_only_when_configured() -> None:
    plain = BookingTool(clinic().tools[0])  # type: ignore[arg-type]
    assert plain.spec.parameters["properties"]["service"]["enum"] == ["checkup", "cleaning"]
    assert "party_size" not in plain.spec.parameters["properties"]
    assert plain.spec.description.endswith(
        "Services: checkup (30 min), cleaning (60 min). Only offer times that find_slots returned."
    )
    tables = BookingTool(clinic(max_party_size=12).tools[0])  # type: ignore[arg-type]
    assert tables.spec.parameters["properties"]["party_size"]["maximum"] == 12
