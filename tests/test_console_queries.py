"""The console's read side against a real Redis, over data written by the real CallStore and ApprovalStore:
history indexes and filters, paging, the transcript search, the fleet, one call's page, the approvals queue,
masking and the CSV/JSON exports."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.approvals.store import ApprovalStore
from ivr.console.history import HistoryFilter
from ivr.console.queries import ConsoleQueries, rows_to_csv, rows_to_json
from ivr.console.rows import split_heard
from ivr.store.indexes import FLEET_KEEP_S
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.writer import ResilientWriter

RETENTION = 7 * 86400
T0 = time.time() - 3600  # an hour ago: every seeded call ended within the retention window


def sid(n: int) -> str:
    return f"CA{n:032x}"


@dataclass
class World:
    redis: aioredis.Redis
    keys: KeySchema
    writer: ResilientWriter
    stores: dict[str, CallStore]
    approvals: ApprovalStore
    queries: ConsoleQueries

    def store(self, instance: str) -> CallStore:
        if instance not in self.stores:
            self.stores[instance] = CallStore(
                self.redis, self.keys, instance_id=instance, retention_s=RETENTION, writer=self.writer
            )
        return self.stores[instance]

    def call(
        self,
        n: int,
        *,
        flow: str = "desk",
        caller: str = "+15550001111",
        outcome: str | None = "completed",
        instance: str = "node-a",
        ended_at: float | None = None,
        lines: tuple[tuple[str, str], ...] = (),
        **fields: Any,
    ) -> str:
        """Write one call through the CallStore: start, transcript lines, end (unless outcome is None)."""
        store = self.store(instance)
        started = (ended_at or T0 + n) - 30
        store.call_started(
            {"call_sid": sid(n), "flow_id": flow, "caller": caller, "called": "+15550100002", **fields}
            | {"started_at": started, "model": "gpt-realtime", "engine": "realtime"}
        )
        for i, (role, text) in enumerate(lines):
            store.transcript(sid(n), role, text, ts=started + i)
        if outcome is not None:
            store.call_ended(
                sid(n),
                {"flow_id": flow, "outcome": outcome, "ended_at": ended_at or T0 + n, "duration_s": 30.0},
            )
        return sid(n)

    async def flush(self) -> None:
        assert await self.writer.flush(5)


@pytest.fixture
async def world(redis_client: aioredis.Redis, redis_keys: KeySchema) -> AsyncIterator[World]:
    writer = ResilientWriter(redis_client)
    writer.start()
    approvals = ApprovalStore(redis_client, redis_keys, retention_s=RETENTION)
    flows = {
        "desk": SimpleNamespace(transfer=SimpleNamespace(number="+15550009999")),
        "bar": SimpleNamespace(transfer=None),
    }
    queries = ConsoleQueries(redis_client, redis_keys, approvals, flows=flows)
    try:
        yield World(redis_client, redis_keys, writer, {}, approvals, queries)
    finally:
        assert await writer.stop(5)
        assert (writer.dropped, writer.failed) == (0, 0)


def sids(rows: list[Any]) -> list[str]:
    return [row.call_sid for row in rows]


# ------------------------------------------------------------------------------------------ indexes


async def test_call_end_writes_the_history_indexes_trimmed_to_the_retention(world: World) -> None:
    keys, r = world.keys, world.redis
    world.call(1, flow="desk", outcome="transferred", instance="node-a", ended_at=T0)
    # An end older than the retention window is trimmed by the next end that touches the same index.
    world.call(2, flow="desk", outcome="transferred", instance="node-a", ended_at=T0 - RETENTION - 10)
    world.call(3, flow="desk", outcome="transferred", instance="node-a", ended_at=T0 + 5)
    await world.flush()
    for key in (
        keys.recent_calls(),
        keys.recent_calls_by_flow("desk"),
        keys.recent_calls_by_outcome("transferred"),
        keys.recent_calls_by_instance("node-a"),
        keys.recent_calls_by_caller("11"),
    ):
        assert await r.zrange(key, 0, -1, withscores=True) == [(sid(1), T0), (sid(3), T0 + 5)], key
    for key in (keys.recent_calls_by_flow("desk"), keys.recent_calls_by_outcome("transferred")):
        assert RETENTION - 60 < await r.ttl(key) <= RETENTION
    # The record holds what the history table and its caller filter need, without the full number.
    record = await r.hmget(keys.call(sid(1)), ["caller_masked", "caller_tail"])
    assert record == ["+1********11", "001111"]


async def test_call_end_copies_the_transcript_as_text_for_the_search(world: World) -> None:
    world.call(1, lines=(("agent", "Hello."), ("caller", "Two\nlines, é")))
    world.call(2)  # no transcript: no field
    await world.flush()
    text = await world.redis.hmget(world.keys.call(sid(1)), ["transcript_text", "_json"])
    assert text[0] == "agent: Hello.\ncaller: Two lines, é"
    assert "transcript_text" not in text[1].split(",")
    assert await world.redis.hget(world.keys.call(sid(2)), "transcript_text") is None
    page = await world.queries.history(HistoryFilter(text="LINES, É"))
    assert sids(page.rows) == [sid(1)] and page.rows[0].matched_line == "caller: Two lines, é"


async def test_text_search_reads_the_stream_of_calls_without_transcript_text(world: World) -> None:
    world.call(1, lines=(("caller", "old call about parking"),))
    world.call(2, lines=(("caller", "new call about parking"),))
    await world.flush()
    await world.redis.hdel(world.keys.call(sid(1)), "transcript_text")  # as if it ended before the field
    page = await world.queries.history(HistoryFilter(text="parking"))
    assert (
        sids(page.rows) == [sid(2), sid(1)] and page.rows[1].matched_line == "caller: old call about parking"
    )


async def test_a_call_end_without_its_flow_is_indexed_by_the_flow_it_started_with(world: World) -> None:
    store = world.store("node-a")
    store.call_started({"call_sid": sid(9), "flow_id": "bar", "caller": "+15550002222"})
    store.call_ended(sid(9), {"outcome": "caller-hung-up", "ended_at": T0})
    await world.flush()
    assert await world.redis.zscore(world.keys.recent_calls_by_flow("bar"), sid(9)) == T0


async def test_an_id_unfit_for_a_key_skips_that_index_but_the_end_is_stored(world: World) -> None:
    world.call(4, outcome="odd outcome", ended_at=T0)
    await world.flush()
    assert await world.redis.hget(world.keys.call(sid(4)), "outcome") == "odd outcome"
    assert await world.redis.zscore(world.keys.recent_calls_by_flow("desk"), sid(4)) == T0


async def test_reconcile_indexes_the_calls_it_ends(world: World, redis_client: aioredis.Redis) -> None:
    world.call(5, flow="desk", outcome=None)
    await world.flush()
    restarted = CallStore(
        redis_client, world.keys, instance_id="node-a", retention_s=RETENTION, writer=world.writer
    )
    assert await restarted.reconcile(set()) == [sid(5)]
    page = await world.queries.history(HistoryFilter(outcome="instance-restart", flow="desk"))
    assert sids(page.rows) == [sid(5)] and page.rows[0].instance_id == "node-a"


# ------------------------------------------------------------------------------------------ history


async def test_history_pages_newest_first_with_exact_totals(world: World) -> None:
    for n in range(1, 8):
        world.call(n)
    world.call(99, outcome=None)  # live: not in the history
    await world.flush()
    first = await world.queries.history(HistoryFilter(), per_page=3)
    assert sids(first.rows) == [sid(7), sid(6), sid(5)]
    assert (first.total, first.has_next, first.scanned, first.scanned_all) == (7, True, None, True)
    last = await world.queries.history(HistoryFilter(), page=3, per_page=3)
    assert sids(last.rows) == [sid(1)] and not last.has_next
    assert (await world.queries.history(HistoryFilter(), page=4, per_page=3)).rows == []
    row = first.rows[0]
    assert (row.flow_id, row.outcome, row.caller, row.called) == (
        "desk",
        "completed",
        "+1********11",
        "+1********02",
    )
    assert (row.ended_at, row.duration_s, row.live, row.instance_id) == (T0 + 7, 30.0, False, "node-a")
    with pytest.raises(ValueError, match="per_page must be between 1 and 200"):
        await world.queries.history(HistoryFilter(), per_page=201)
    with pytest.raises(ValueError, match="page must be 1 or more"):
        await world.queries.history(HistoryFilter(), page=0)


async def test_history_filters_each(world: World) -> None:
    world.call(1, flow="desk", outcome="completed", instance="node-a", caller="+15550001234")
    world.call(2, flow="bar", outcome="completed", instance="node-b", caller="+15550005678")
    world.call(3, flow="desk", outcome="transferred", instance="node-b", caller="+15550009234")
    world.call(4, flow="bar", outcome="caller-hung-up", instance="node-a", caller="+44 20 7946 1234")
    await world.flush()
    q = world.queries

    async def found(**f: Any) -> list[str]:
        return sids((await q.history(HistoryFilter(**f))).rows)

    assert await found(since=T0 + 2, until=T0 + 3) == [sid(3), sid(2)]  # inclusive at both ends
    assert await found(since=T0 + 4) == [sid(4)]
    assert await found(until=T0 + 1) == [sid(1)]
    assert await found(flow="desk") == [sid(3), sid(1)]
    assert await found(outcome="completed") == [sid(2), sid(1)]
    assert await found(instance="node-b") == [sid(3), sid(2)]
    assert await found(flow="nothing") == []
    # Two index fields: one index is walked, the other field checked on the records; the total is exact
    # because the walk reached the end.
    both = await q.history(HistoryFilter(flow="desk", outcome="completed", instance="node-a"))
    assert sids(both.rows) == [sid(1)] and both.total == 1 and both.scanned_all
    # The caller's last digits match the end of the number's digits, whatever its formatting.
    assert await found(caller_digits="1234") == [sid(4), sid(1)]
    assert await found(caller_digits="234") == [sid(4), sid(3), sid(1)]
    assert await found(caller_digits="61234") == [sid(4)]
    assert await found(caller_digits=" 34 ", flow="desk", since=T0 + 2) == [sid(3)]


@pytest.mark.parametrize("digits", ["1", "1234567", "12a4", "+1234", "12-34"])
async def test_caller_digits_must_be_2_to_6_digits(world: World, digits: str) -> None:
    with pytest.raises(ValueError, match="last 2 to 6 digits"):
        await world.queries.history(HistoryFilter(caller_digits=digits))


async def test_bad_filters_say_what_is_wrong(world: World) -> None:
    with pytest.raises(ValueError, match=r"since .* is after until"):
        await world.queries.history(HistoryFilter(since=T0 + 10, until=T0))
    with pytest.raises(ValueError, match="flow id='a:b' contains ':'"):
        await world.queries.history(HistoryFilter(flow="a:b"))
    with pytest.raises(ValueError, match="From must be a date and time"):
        HistoryFilter.from_form({"from": "yesterday"})
    with pytest.raises(ValueError, match="unknown time zone"):
        HistoryFilter.from_form({"from": "2030-01-15T09:00", "tz": "Mars/Olympus"})
    form = {"from": "1970-01-01T00:01:40", "tz": "+00:00", "flow": " desk ", "text": "", "caller": "42"}
    f = HistoryFilter.from_form(form)
    assert (f.since, f.flow, f.text, f.caller_digits) == (100.0, "desk", None, "42")


async def test_text_search_pages_and_says_how_far_it_searched(world: World) -> None:
    for n in range(1, 11):
        said = "I need a DENTAL check-up" if n % 2 == 0 else "What are your opening hours?"
        world.call(n, lines=(("agent", "Hello, desk."), ("caller", said)))
    await world.flush()
    q = world.queries
    page = await q.history(HistoryFilter(text="dental"), per_page=2)
    assert sids(page.rows) == [sid(10), sid(8)]
    assert page.has_next and page.total is None and page.scanned_all
    assert page.rows[0].matched_line == "caller: I need a DENTAL check-up"
    assert page.scanned == 5  # stopped at the match after the page (sid 6), to know there is a next page
    last = await q.history(HistoryFilter(text="dental"), page=3, per_page=2)
    assert sids(last.rows) == [sid(2)] and not last.has_next and last.total == 5
    assert (await q.history(HistoryFilter(text="no such words"))).rows == []
    # With a cap, the page says it searched only the newest calls.
    capped = ConsoleQueries(world.redis, world.keys, world.approvals, text_scan_limit=3)
    short = await capped.history(HistoryFilter(text="opening hours"), per_page=5)
    assert sids(short.rows) == [sid(9)]  # sid 7 and older were not searched
    assert not short.scanned_all and short.scanned == 3 and not short.has_next and short.total is None
    # Combined with an index filter and the caller's digits.
    mixed = await q.history(HistoryFilter(text="HOURS", flow="desk", caller_digits="11", until=T0 + 5))
    assert sids(mixed.rows) == [sid(5), sid(3), sid(1)] and mixed.total == 3


async def test_scan_cap_on_record_filters(world: World) -> None:
    for n in range(1, 6):
        world.call(n, caller="+15550000042" if n != 1 else "+15550004242")
    world.call(6, caller="+15550001111")  # another bucket of the caller index: never examined
    await world.flush()
    capped = ConsoleQueries(world.redis, world.keys, world.approvals, scan_limit=3)
    page = await capped.history(HistoryFilter(caller_digits="4242"))
    assert page.rows == [] and not page.scanned_all and page.scanned == 3
    full = await world.queries.history(HistoryFilter(caller_digits="4242"))
    assert sids(full.rows) == [sid(1)] and full.scanned == 5 and full.total == 1  # only the "…42" calls


# ------------------------------------------------------------------------------------------ exports


async def test_csv_export_has_a_header_escapes_transcripts_and_masks_numbers(world: World) -> None:
    tricky = 'He said "hi, there"\nthen left, 2 lines'
    world.call(1, lines=(("caller", tricky), ("agent", '=HYPERLINK("x")')), caller="+15551234567")
    world.call(2)
    await world.flush()
    page = await world.queries.history(HistoryFilter(), with_transcript=True)
    text = rows_to_csv(page.rows)
    assert "5551234567" not in text and "+15550100002" not in text
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0][:6] == ["call_sid", "started_at", "ended_at", "duration_s", "flow_id", "caller"]
    assert len(parsed) == 3 and all(len(line) == len(parsed[0]) for line in parsed)
    row = dict(zip(parsed[0], parsed[2], strict=True))
    assert row["call_sid"] == sid(1) and row["caller"] == "+1********67"
    assert row["transcript"] == f'caller: {tricky}\nagent: =HYPERLINK("x")'
    assert row["ended_at"].endswith("Z") and row["duration_s"] == "30.0"
    # A free-text cell a spreadsheet would run as a formula is defused.
    world.call(3, stage="=cmd|' /C calc'!A0")
    await world.flush()
    newest = await world.queries.history(HistoryFilter(), per_page=1)
    cells = list(csv.reader(io.StringIO(rows_to_csv(newest.rows))))[1]
    assert cells[parsed[0].index("stage")] == "'=cmd|' /C calc'!A0"


async def test_json_export_is_plain_data(world: World) -> None:
    world.call(1, caller="+15551234567", lines=(("caller", "hello"),))
    await world.flush()
    page = await world.queries.history(HistoryFilter(), with_transcript=True)
    data = rows_to_json(page.rows)
    assert json.loads(json.dumps(data)) == data
    assert data[0]["call_sid"] == sid(1) and data[0]["caller"] == "+1********67"
    assert data[0]["transcript"] == "caller: hello"
    assert "5551234567" not in json.dumps(page.as_dict())


# ------------------------------------------------------------------------------------------ fleet


async def test_fleet_shows_live_instances_and_gone_ones(world: World, redis_client: aioredis.Redis) -> None:
    a, b = world.store("node-a"), world.store("node-b")
    await a.heartbeat(
        {
            "live_calls": 3,
            "draining": False,
            "writer_backlog": 7,
            "writer_dropped": 0,
            "writer_failures": 1,
            "errors": {"bad_signatures": 2, "internal_errors": 1},
            "version": "9.9.9",
        }
    )
    await b.heartbeat({"live_calls": 0, "draining": True})
    world.call(50, instance="node-b", outcome=None)  # a call node-b still owns
    await world.flush()
    fleet = await world.queries.fleet()
    assert [(r.instance_id, r.alive) for r in fleet] == [("node-a", True), ("node-b", True)]
    node_a = fleet[0]
    assert (node_a.live_calls, node_a.draining, node_a.writer_backlog, node_a.writer_failures) == (
        3,
        False,
        7,
        1,
    )
    assert node_a.errors == {"bad_signatures": 2, "internal_errors": 1} and node_a.errors_total == 3
    assert node_a.version == "9.9.9" and node_a.pid and node_a.host
    assert fleet[1].draining is True
    beat_b = await redis_client.hgetall(world.keys.instance("node-b"))
    # node-b stops beating: its hash expires (here: is deleted), the fleet index keeps its last beat.
    await redis_client.delete(world.keys.instance("node-b"))
    fleet = await world.queries.fleet()
    gone = fleet[1]
    assert (gone.instance_id, gone.alive, gone.host, gone.owned_calls) == ("node-b", False, "", 1)
    assert gone.last_seen == pytest.approx(float(beat_b["last_seen"]), abs=0.01)
    # Gone for longer than the keep window: hidden, and trimmed by the next heartbeat of anyone.
    await redis_client.zadd(world.keys.instances(), {"node-b": time.time() - FLEET_KEEP_S - 5})
    assert [r.instance_id for r in await world.queries.fleet()] == ["node-a"]
    await a.heartbeat()
    assert await redis_client.zscore(world.keys.instances(), "node-b") is None


async def test_heartbeat_replaces_the_hash_and_has_a_short_ttl(
    world: World, redis_client: aioredis.Redis
) -> None:
    a = world.store("node-a")
    await a.heartbeat({"live_calls": 1, "old_figure": 5})
    await a.heartbeat({"live_calls": 2})
    beat = await redis_client.hgetall(world.keys.instance("node-a"))
    assert beat["live_calls"] == "2" and "old_figure" not in beat and beat["instance_id"] == "node-a"
    assert 0 < await redis_client.ttl(world.keys.instance("node-a")) <= 20


# ------------------------------------------------------------------------------------------ one call


async def test_call_page_of_an_ended_call_whose_instance_is_gone(world: World) -> None:
    store = world.store("node-gone")
    s = world.call(
        1,
        instance="node-gone",
        outcome=None,
        caller="+15551234567",
        lines=(("agent", "Hello, desk."), ("caller", "Book me for Tuesday, my number is +15551234567.")),
    )
    store.transcript(
        s,
        "agent",
        "We have openings at nine and at eleven in the morning",
        ts=T0,
        extra={"interrupted": True, "heard_ms": 1000, "total_ms": 4000, "item_id": "item_1"},
    )
    store.event(s, "stage.changed", {"previous": "reception", "stage": "booking", "from": "reception"})
    store.event(
        s,
        "tool.called",
        {
            "name": "appointments",
            "arguments": {"action": "book", "phone": "+15551234567", "party_size": 2},
            "ok": True,
            "error_type": None,
            "duration_ms": 12.5,
            "output": '{"status": "booked", "id": "bk_1", "phone": "+15551234567"}',
        },
    )
    store.call_updated(
        s,
        {
            "usage": {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150},
            "cost_usd": 0.0123,
            "greeting_ms": 420.0,
            "turns": [
                {"n": 1, "latency_ms": 610.5, "at": T0 + 5},
                {"n": 2, "latency_ms": 580.0, "at": T0 + 9},
            ],
            "counters": {"barge_ins": 1},
        },
    )
    store.call_ended(s, {"outcome": "completed", "ended_at": T0 + 60, "duration_s": 90.0})
    await world.flush()
    approval = await world.approvals.request(
        call_sid=s,
        instance_id="node-gone",
        flow_id="desk",
        tool="appointments",
        call_id="c1",
        arguments={"action": "book", "phone": "+15551234567"},
        reason="front desk confirms",
        timeout_s=60,
    )
    # node-gone has no heartbeat: the page comes from Redis alone.
    detail = await world.queries.call(s)
    assert detail is not None
    call = detail.call
    assert (call.outcome, call.live, call.instance_alive, call.flow_id) == ("completed", False, False, "desk")
    assert (call.caller, call.cost_usd, call.total_tokens) == ("+1********67", 0.0123, 150)
    assert [line.role for line in detail.transcript] == ["agent", "caller", "agent"]
    cut = detail.transcript[2]
    assert cut.interrupted and (cut.heard_ms, cut.total_ms) == (1000.0, 4000.0)
    assert (cut.heard_text, cut.cut_text) == ("We have openings", "at nine and at eleven in the morning")
    assert detail.transcript[0].heard_text == "Hello, desk." and detail.transcript[0].cut_text == ""
    types = [e.type for e in detail.events]
    assert types == ["call.started", "stage.changed", "tool.called", "call.ended"]
    assert detail.events[1].data["from"] == "reception"  # a stage name is not a number
    assert detail.events[0].data["caller"] == "+1********67"
    (tool,) = detail.tool_calls
    assert (tool.name, tool.ok, tool.duration_ms) == ("appointments", True, 12.5)
    assert tool.arguments["phone"] == "+1********67"
    assert tool.arguments_text == "action: book\nphone: +1********67\nparty size: 2"
    assert "+1********67" in tool.output and "5551234567" not in tool.output
    assert [a.id for a in detail.approvals] == [approval.id]
    assert detail.approvals[0].arguments_text == "action: book\nphone: +1********67"
    assert detail.greeting_ms == 420.0 and detail.turns[0] == {"n": 1, "latency_ms": 610.5, "at": T0 + 5}
    assert detail.usage["total_tokens"] == 150 and detail.counters == {"barge_ins": 1}
    # The transcript is what was said; everything else carries masked numbers only.
    dumped = json.dumps({**detail.as_dict(), "transcript": None})
    assert "5551234567" not in dumped
    assert await world.queries.call(sid(404)) is None


# ------------------------------------------------------------------------------------------ live, approvals


async def test_live_calls_with_last_line_transfer_and_owner(world: World) -> None:
    world.call(1, outcome=None, lines=(("agent", "Hello."), ("caller", "Hi, a table for two?")))
    world.call(2, outcome=None, flow="bar", instance="node-b")
    world.call(3)  # ended
    await world.flush()
    await world.store("node-a").heartbeat()
    live = await world.queries.live_calls()
    assert sids(live) == [sid(2), sid(1)]  # newest first
    assert live[1].last_line == "caller: Hi, a table for two?" and live[0].last_line is None
    assert (live[1].transfer_available, live[0].transfer_available) == (True, False)
    assert (live[1].instance_alive, live[0].instance_alive) == (True, False)
    assert all(row.live and row.outcome == "in-progress" for row in live)
    assert sids(await world.queries.rows([sid(3), sid(404), sid(1)])) == [
        sid(3),
        sid(1),
    ]  # any calls, in order
    plain = ConsoleQueries(world.redis, world.keys, world.approvals)
    assert {row.transfer_available for row in await plain.live_calls()} == {None}


async def test_pending_approvals_carry_the_call_context(world: World) -> None:
    s = world.call(
        1,
        outcome=None,
        caller="+15551234567",
        lines=(("caller", "Can I book Tuesday at ten?"), ("agent", "Let me check.")),
    )
    await world.flush()
    now = time.time()
    first = await world.approvals.request(
        call_sid=s,
        instance_id="node-a",
        flow_id="desk",
        tool="appointments",
        call_id="c1",
        arguments={"start": "2026-03-03T10:00", "name": "Ada", "phone": "+15551234567"},
        reason="front desk confirms",
        timeout_s=120,
        now=now,
    )
    other = await world.approvals.request(
        call_sid=sid(77),  # its record is gone: the row still shows, without context
        instance_id="node-a",
        flow_id="desk",
        tool="refund",
        call_id="c2",
        arguments={"amount": 10},
        reason="money",
        timeout_s=30,
        now=now,
    )
    rows = await world.queries.pending_approvals()
    assert [r.id for r in rows] == [other.id, first.id]  # soonest deadline first
    row = rows[1]
    assert (row.caller, row.caller_last_line, row.flow_id, row.tool) == (
        "+1********67",
        "Can I book Tuesday at ten?",
        "desk",
        "appointments",
    )
    # Stored arguments come back in key order.
    assert row.arguments_text == "name: Ada\nphone: +1********67\nstart: 2026-03-03T10:00"
    assert row.deadline == pytest.approx(now + 120) and row.status == "pending"
    assert (rows[0].caller, rows[0].caller_last_line) == ("-", None)
    assert "5551234567" not in json.dumps(rows_to_json(rows))


# ------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("heard", "total", "expected"),
    [
        (0, 1000, ("", "one two three four")),
        (1000, 1000, ("one two three four", "")),
        (500, 1000, ("one two", "three four")),  # 9 of 18 chars falls in "three": its start is nearer
        (250, 1000, ("one", "two three four")),
        (None, 1000, ("one two three four", "")),
        (300, 0, ("one two three four", "")),
    ],
)
def test_split_heard_cuts_at_a_word_boundary(
    heard: float | None, total: float, expected: tuple[str, str]
) -> None:
    assert split_heard("one two three four", heard, total) == expected
