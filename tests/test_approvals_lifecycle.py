"""Approvals across their whole life, on a real Redis and the real app over loopback (issue 9, finding 6).

A request belongs to a call: when the call ends, its undecided requests are closed as ``abandoned`` and can no
longer be decided (409, API and console). Overdue requests expire while the server runs, swept by one
instance at a time (a Redis lease). ``executed`` is audited after the tool ran, with its outcome. A model that
repeats a pending request is never told "not approved" about an action that was approved and carried out.
With Redis down, ``GET /api/approvals`` answers 503 JSON, not a 500 with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ivr.approvals.cli import register, run
from ivr.approvals.store import ApprovalAbandoned, ApprovalStore
from ivr.approvals.sweeper import ApprovalSweeper
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from tests.support.calls import app_for, place_call
from tests.support.console import logged_in, wait_ready
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.server import OPERATOR_TOKEN, RunningServer, make_settings, running_server

CLINIC = Path(__file__).parent / "data" / "flows-clinic"
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
GREETING = Reply(text="Hello, clinic.", audio_ms=200)


# ------------------------------------------------------------------------------------------------ helpers


def _tomorrow_10() -> str:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return f"{day.isoformat()}T10:00"


def _book(start: str) -> tuple[str, dict[str, Any]]:
    return ("appointments", {"action": "book", "service": "checkup", "start": start, "name": "Ada Lovelace"})


def _outputs(session: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in session.received
        if e["type"] == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]


async def _output_of(session: Any, index: int) -> dict[str, Any]:
    await session.wait_for("conversation.item.create", lambda _e: len(_outputs(session)) > index)
    return json.loads(_outputs(session)[index]["item"]["output"])


def _system_texts(session: Any) -> list[str]:
    return [
        e["item"]["content"][0]["text"]
        for e in session.received
        if e["type"] == "conversation.item.create" and e["item"].get("role") == "system"
    ]


async def _pending_booking(session: Any) -> dict[str, Any]:
    """Greeting, into the booking stage, then a gated ``book``: the pending tool output."""
    await session.wait_response_done()
    await session.respond(Reply(function_call=("start_booking", {"reason": "check-up"})))
    await session.wait_for("session.update", lambda e: "Book the appointment" in json.dumps(e))
    # The response that made the call, then the answer the call asks for after the tool's output: starting
    # another response before both are done races the second.
    await session.wait_response_done()
    await session.wait_response_done()
    await session.respond(Reply(function_call=_book(_tomorrow_10())))
    pending = await _output_of(session, 1)
    assert pending["status"] == "pending_approval", pending
    return pending


async def _audit(client: aioredis.Redis, keys: KeySchema, aid: str) -> list[dict[str, str]]:
    return [f for _, f in await client.xrange(keys.approvals_audit()) if f.get("approval_id") == aid]


async def _await_audit(
    client: aioredis.Redis, keys: KeySchema, aid: str, action: str, timeout_s: float = 10.0
) -> None:
    """Until the audit stream has ``action`` for ``aid`` (read from the start, then blocking on new
    entries: XREAD BLOCK, no polling)."""
    last = "0-0"
    async with asyncio.timeout(timeout_s):
        while True:
            reply = await client.xread({keys.approvals_audit(): last}, block=1000)
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get("approval_id") == aid and fields.get("action") == action:
                        return


async def _wait_instance_ready(server: RunningServer, client: aioredis.Redis) -> None:
    """Until the app's start-up housekeeping ran (its first heartbeat follows it)."""
    await wait_ready(server)
    services = server.state.services
    key = services.keys.instance(services.instance_id)
    for _ in range(500):
        if await client.exists(key):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the app sent no heartbeat")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------ ended calls abandon


async def test_hang_up_abandons_the_pending_request_and_deciding_it_is_409(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            app_for(
                fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix
            ) as server,
            httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
        ):
            live = await place_call(server, to_number="+15550100004")
            session = await fake_realtime.next_session()
            aid = (await _pending_booking(session))["approval_id"]
            await live.hang_up()

            stored = await client.hgetall(keys.approval(aid))
            assert stored["status"] == "abandoned", stored
            assert await client.zscore(keys.approvals_pending(), aid) is None
            actions = [a["action"] for a in await _audit(client, keys, aid)]
            assert actions == ["requested", "abandoned"]
            listing = (await http.get("/api/approvals")).json()
            assert aid not in [a["id"] for a in listing["approvals"]]

            api = await http.post(f"/api/approvals/{aid}", json={"decision": "approve"})
            assert api.status_code == 409, api.text
            detail = api.json()["detail"]
            assert detail["error"] == "abandoned"
            assert "call ended" in detail["message"] and "nothing" in detail["message"]
            assert detail["approval"]["status"] == "abandoned"

            async with logged_in(server, "ann", "approver") as ann:
                headers = {"HX-Request": "true", "X-CSRF-Token": ann.csrf}
                fragment = await ann.client.post(
                    f"/ops/approvals/{aid}", data={"decision": "approve"}, headers=headers
                )
                assert fragment.status_code == 409, fragment.text
                assert "call ended" in fragment.text
                plain = await ann.client.post(
                    f"/ops/approvals/{aid}", data={"decision": "deny", "csrf": ann.csrf}
                )
                assert plain.status_code == 409 and "call ended" in plain.text

            assert (await client.hgetall(keys.approval(aid)))["status"] == "abandoned"
            assert await client.zcard(keys.calendar_bookings("test-clinic")) == 0
            assert [a["action"] for a in await _audit(client, keys, aid)] == ["requested", "abandoned"]
    finally:
        await client.aclose()


async def test_a_request_whose_call_ended_elsewhere_cannot_be_decided(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """The call's record says it ended (its instance's finish, or a reconciler): deciding abandons, 409."""
    store = ApprovalStore(redis_client, redis_keys)
    request = await store.request(
        call_sid="CA" + "e1" * 16,
        instance_id="gone",
        flow_id="shop",
        tool="refund",
        call_id="fc_1",
        arguments={"amount": 500},
        reason="Refunds need a manager",
        timeout_s=60,
    )
    await redis_client.hset(
        redis_keys.call(request.call_sid),
        mapping={"ended_at": repr(time.time()), "outcome": "instance-restart"},
    )
    with pytest.raises(ApprovalAbandoned, match="call ended") as caught:
        await store.decide(request.id, approve=True, operator="alice")
    assert caught.value.approval.status == "abandoned"
    assert (await store.get(request.id)).status == "abandoned"  # type: ignore[union-attr]
    assert await store.pending() == []


async def test_abandoning_a_call_closes_undecided_and_unclaimed_requests_only(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    store = ApprovalStore(redis_client, redis_keys)
    sid = "CA" + "a7" * 16

    async def ask(amount: int) -> Any:
        return await store.request(
            call_sid=sid,
            instance_id="inst-a",
            flow_id="shop",
            tool="refund",
            call_id=f"fc_{amount}",
            arguments={"amount": amount},
            reason="r",
            timeout_s=60,
        )

    pending, approved, running, denied = [await ask(n) for n in (1, 2, 3, 4)]
    for approval, approve in ((approved, True), (running, True), (denied, False)):
        await store.decide(approval.id, approve=approve, operator="alice")
    assert await store.claim(running.id, instance_id="inst-a")  # taken to run: left alone
    assert sorted(await store.abandon_call(sid, instance_id="inst-a")) == sorted([pending.id, approved.id])
    assert await store.abandon_call(sid) == []  # repeating is harmless
    after = {a.id: a for a in await store.for_call(sid)}
    assert after[pending.id].status == "abandoned" and after[pending.id].decided_by == "call-ended"
    assert after[approved.id].status == "abandoned" and after[approved.id].decided_by == "alice"
    assert after[approved.id].note == "the call ended before the approved action ran"
    assert after[running.id].status == "approved" and after[denied.id].status == "denied"
    assert await store.claim(approved.id) is False  # an abandoned approval never runs
    assert await store.record_execution(running.id, ok=True)  # the running one still reports its outcome
    with pytest.raises(ApprovalAbandoned, match="approved action ran"):
        await store.decide(approved.id, approve=False, operator="bob")
    audit = [f for _, f in await redis_client.xrange(redis_keys.approvals_audit())]
    assert sorted(a["approval_id"] for a in audit if a["action"] == "abandoned") == sorted(
        [pending.id, approved.id]
    )
    assert {a["by"] for a in audit if a["action"] == "abandoned"} == {"instance:inst-a"}


async def test_the_sweep_abandons_requests_of_calls_that_ended_without_closing_them(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """The call's instance died; a reconciler recorded the call's end: the next sweep abandons its request."""
    store = ApprovalStore(redis_client, redis_keys)
    request = await store.request(
        call_sid="CA" + "b8" * 16,
        instance_id="dead",
        flow_id="shop",
        tool="refund",
        call_id="fc_1",
        arguments={"amount": 5},
        reason="r",
        timeout_s=600,
    )
    live = await store.request(
        call_sid="CA" + "b9" * 16,
        instance_id="alive",
        flow_id="shop",
        tool="refund",
        call_id="fc_1",
        arguments={"amount": 6},
        reason="r",
        timeout_s=600,
    )
    await redis_client.hset(redis_keys.call(live.call_sid), mapping={"ended_at": "null"})  # still running
    assert (await store.sweep()).abandoned == []
    await redis_client.hset(redis_keys.call(request.call_sid), mapping={"ended_at": repr(time.time())})
    swept = await store.sweep()
    assert [a.id for a in swept.abandoned] == [request.id] and swept.expired == []
    assert [a.id for a in await store.pending()] == [live.id]


# ---------------------------------------------------------------------------------- continuous expiry


async def test_overdue_requests_expire_while_the_server_runs(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = KeySchema(redis_prefix)
    pubsub = client.pubsub()
    try:
        async with running_server(make_settings(redis_url=redis_url, redis_prefix=redis_prefix)) as server:
            await _wait_instance_ready(server, client)  # start-up's one-off expiry is behind us
            await pubsub.subscribe(keys.approval_channel())
            store = ApprovalStore(client, keys)
            overdue = await store.request(
                call_sid="CA" + "d0" * 16,
                instance_id="crashed-instance",
                flow_id="shop",
                tool="refund",
                call_id="fc_1",
                arguments={"amount": 900},
                reason="r",
                timeout_s=5,
                now=time.time() - 60,  # its deadline passed long ago, and nobody waits for it
            )
            message = await _next_message(pubsub, timeout=15.0)
            assert json.loads(message["data"])["id"] == overdue.id
            assert json.loads(message["data"])["status"] == "expired"
            assert (await store.get(overdue.id)).status == "expired"  # type: ignore[union-attr]
            assert await client.get(keys.approvals_sweeper()) == server.state.services.instance_id
    finally:
        await pubsub.aclose()
        await client.aclose()


async def _next_message(pubsub: Any, timeout: float) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                return message  # type: ignore[no-any-return]

    return await asyncio.wait_for(read(), timeout)


async def test_one_instance_at_a_time_holds_the_sweep_lease(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    store = ApprovalStore(redis_client, redis_keys)
    a = ApprovalSweeper(store, instance_id="inst-a", lease_s=30)
    b = ApprovalSweeper(store, instance_id="inst-b", lease_s=30)
    overdue = [
        await store.request(
            call_sid="CA" + "d1" * 16,
            instance_id="gone",
            flow_id="shop",
            tool="refund",
            call_id=f"fc_{i}",
            arguments={"amount": 100 + i},
            reason="r",
            timeout_s=5,
            now=time.time() - 60,
        )
        for i in range(3)
    ]
    first = await asyncio.gather(a.tick(), b.tick())
    assert sorted(r.held for r in first) == [False, True]  # exactly one swept
    holder, other = (a, b) if first[0].held else (b, a)
    assert sum(len(r.expired) for r in first) == 3
    assert await redis_client.get(redis_keys.approvals_sweeper()) == holder.instance_id
    for approval in overdue:
        actions = [x["action"] for x in await _audit(redis_client, redis_keys, approval.id)]
        assert actions == ["requested", "expired"]
    assert (await holder.tick()).held and not (await other.tick()).held  # the holder renews, the other waits
    # The holder stops: it lets go of the lease, and the other takes over at its next round.
    await holder.release()
    assert (await other.tick()).held
    # The new holder dies without letting go: the lease lapses by itself (simulated: its TTL runs out).
    await redis_client.pexpire(redis_keys.approvals_sweeper(), 1)
    while await redis_client.exists(redis_keys.approvals_sweeper()):
        await asyncio.sleep(0.005)
    assert (await holder.tick()).held


# --------------------------------------------------------------------------------- executed with outcome

FAILING_TOOL_FLOW = """
id: refunds
default: true
numbers: ["+15550100009"]
timezone: UTC
model: {{voice: marin, audio: pcmu}}
greeting: "Hello, refunds."
instructions: "You refund orders."
hold_phrase: "Please hold while I check with a colleague."
opening_hours: {{mon: "00:00-24:00", tue: "00:00-24:00", wed: "00:00-24:00", thu: "00:00-24:00",
                fri: "00:00-24:00", sat: "00:00-24:00", sun: "00:00-24:00"}}
tools:
  - {{type: end_call, name: end_call, description: "Hang up after saying goodbye."}}
  - type: http
    name: refund
    description: "Refund an order."
    url: "http://127.0.0.1:{port}/refund"
    method: POST
    parameters:
      type: object
      properties: {{order: {{type: string}}}}
      required: [order]
      additionalProperties: false
    timeout_s: 2
    retries: 0
    approval: {{required: always, reason: "Refunds need a manager.", timeout_s: 60}}
"""


async def test_executed_is_audited_after_the_tool_ran_with_its_failure(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The refund service is down: the approved refund runs and fails, and the audit says so."""
    (tmp_path / "refunds.yaml").write_text(FAILING_TOOL_FLOW.format(port=_closed_port()))
    fake_realtime.default_replies = [Reply(text="Hello, refunds.", audio_ms=200)]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            app_for(
                fake_realtime, flows_dir=tmp_path, redis_url=redis_url, redis_prefix=redis_prefix
            ) as server,
            httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
        ):
            live = await place_call(server, to_number="+15550100009")
            session = await fake_realtime.next_session()
            await session.wait_response_done()
            await session.respond(Reply(function_call=("refund", {"order": "A17"})))
            pending = await _output_of(session, 0)
            assert pending["status"] == "pending_approval", pending
            aid = pending["approval_id"]
            assert await http.post(f"/api/approvals/{aid}", json={"decision": "approve"}) is not None
            await session.wait_for(
                "conversation.item.create",
                lambda e: e["item"].get("role") == "system" and "Update on refund" in json.dumps(e),
            )
            audit = await _audit(client, keys, aid)
            assert [a["action"] for a in audit] == ["requested", "approved", "executed"]
            executed = audit[-1]
            assert executed["outcome"] == "failed", executed
            assert executed["error_type"], executed
            record = await client.hgetall(keys.approval(aid))
            assert record["outcome"] == "failed" and record["executed_at"], record
            assert float(record["executed_at"]) >= float(record["claimed_at"])
            await live.hang_up()
    finally:
        await client.aclose()


async def test_an_approved_action_under_way_at_hang_up_finishes_and_is_audited_after(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The refund service answers only when the test says so: no ``executed`` before it has answered, even
    though the caller hung up meanwhile; then ``executed``, ``ok``."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def refund_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()
        await release.wait()
        body = b'{"refunded": true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    service = await asyncio.start_server(refund_service, "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    flow = FAILING_TOOL_FLOW.format(port=port).replace("timeout_s: 2", "timeout_s: 20")
    (tmp_path / "refunds.yaml").write_text(flow)
    fake_realtime.default_replies = [Reply(text="Hello, refunds.", audio_ms=200)]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            app_for(
                fake_realtime, flows_dir=tmp_path, redis_url=redis_url, redis_prefix=redis_prefix
            ) as server,
            httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
        ):
            live = await place_call(server, to_number="+15550100009")
            session = await fake_realtime.next_session()
            await session.wait_response_done()
            await session.respond(Reply(function_call=("refund", {"order": "B2"})))
            aid = (await _output_of(session, 0))["approval_id"]
            assert (await http.post(f"/api/approvals/{aid}", json={"decision": "approve"})).status_code == 200
            await asyncio.wait_for(arrived.wait(), 10)  # the refund is under way…
            await live.hang_up()  # …when the caller hangs up
            assert [a["action"] for a in await _audit(client, keys, aid)] == ["requested", "approved"]
            record = await client.hgetall(keys.approval(aid))
            assert record["status"] == "approved" and record["claimed_at"] and "executed_at" not in record
            release.set()
            await _await_audit(client, keys, aid, "executed")
            audit = await _audit(client, keys, aid)
            assert [a["action"] for a in audit] == ["requested", "approved", "executed"]
            assert audit[-1]["outcome"] == "ok" and audit[-1]["error_type"] == ""
    finally:
        service.close()
        await client.aclose()


# -------------------------------------------------------------------------- repeats are never "not approved"


async def test_a_repeated_pending_request_is_never_reported_not_approved(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            app_for(
                fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix
            ) as server,
            httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
        ):
            live = await place_call(server, to_number="+15550100004")
            session = await fake_realtime.next_session()
            first = await _pending_booking(session)
            await session.wait_response_done()  # the response that asked for the booking
            await session.wait_response_done()  # the hold line
            # The model asks again for the same booking while it waits: still the same pending request.
            await session.respond(Reply(function_call=_book(_tomorrow_10())))
            repeat = await _output_of(session, 2)
            assert repeat["status"] == "pending_approval" and repeat["approval_id"] == first["approval_id"]
            await session.wait_response_done()
            aid = first["approval_id"]
            response = await http.post(f"/api/approvals/{aid}", json={"decision": "approve"})
            assert response.status_code == 200, response.text
            await session.wait_for(
                "conversation.item.create",
                lambda e: e["item"].get("role") == "system" and "approved" in json.dumps(e),
            )
            # Each waiter acts as soon as the decision arrives; the executed audit entry comes after the
            # booking, so by then every waiter has had its say.
            await _await_audit(client, keys, aid, "executed")
            await live.hang_up()
            notices = [t for t in _system_texts(session) if t.startswith("Update on appointments")]
            assert notices and all("not approved" not in t for t in notices), notices
            assert len(notices) == 1, notices
            assert await client.zcard(keys.calendar_bookings("test-clinic")) == 1
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------- Redis down → 503


@pytest.fixture
async def private_redis() -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_api_approvals_with_redis_down_answers_503_json(
    private_redis: EmbeddedRedis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(
        make_settings(redis_url=private_redis.url, redis_prefix=redis_prefix)
    ) as server:
        await wait_ready(server)
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=20) as http:
            assert (await http.get("/api/approvals")).status_code == 200
            await asyncio.to_thread(private_redis.stop)
            caplog.clear()
            with caplog.at_level(logging.INFO):
                listing = await http.get("/api/approvals")
                shown = await http.get("/api/approvals/ap_0123456789abcdef")
                decided = await http.post("/api/approvals/ap_0123456789abcdef", json={"decision": "deny"})
    for response in (listing, shown, decided):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers.get("retry-after")
        detail = response.json()["detail"]
        assert detail["error"] == "redis_unreachable"
        assert detail["message"].startswith("Redis is unreachable")
    assert not [r for r in caplog.records if r.exc_info], [
        r.getMessage() for r in caplog.records if r.exc_info
    ]
    assert "Traceback" not in caplog.text


# ------------------------------------------------------------------------------------------------- the CLI


def test_the_cli_refuses_to_decide_an_abandoned_request(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_REDIS_PREFIX", redis_prefix)
    keys = KeySchema(redis_prefix)

    async def setup() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = ApprovalStore(client, keys)
            request = await store.request(
                call_sid="CA" + "c3" * 16,
                instance_id="inst-a",
                flow_id="shop",
                tool="refund",
                call_id="fc_1",
                arguments={"amount": 7},
                reason="r",
                timeout_s=60,
            )
            await store.abandon_call(request.call_sid, instance_id="inst-a")
            return request.id
        finally:
            await client.aclose()

    aid = asyncio.run(setup())
    parser = argparse.ArgumentParser(prog="ivr")
    register(parser.add_subparsers(dest="command", required=True))
    for argv in (["approve", aid, "--operator", "alice"], ["show", aid]):
        out, err = io.StringIO(), io.StringIO()
        code = run(parser.parse_args(["approvals", *argv]), out=out, err=err)
        if argv[0] == "approve":
            assert code == 1 and "the call ended before a decision" in err.getvalue(), err.getvalue()
            assert "nothing will be carried out" in err.getvalue()
        else:
            assert code == 0 and "status:     abandoned (the call ended before a decision)" in out.getvalue()


# ------------------------------------------------------------------------ approval lets another caller act

CANCEL_APPROVED_FLOW = """\
id: cancel-desk
default: true
timezone: UTC
model: {voice: marin, audio: pcmu}
greeting: "Hello, desk."
instructions: "You answer the phone for a test desk."
opening_hours: {mon: "00:00-24:00", tue: "00:00-24:00", wed: "00:00-24:00", thu: "00:00-24:00",
                fri: "00:00-24:00", sat: "00:00-24:00", sun: "00:00-24:00"}
tools:
  - {type: end_call, name: end_call, description: "Hang up after saying goodbye."}
  - type: booking
    name: appointments
    description: "Find free times, book, move or cancel an appointment."
    calendar: cancel-desk
    durations: {checkup: 30}
    days_ahead: 14
    approval:
      required: when
      when: "action == 'cancel'"
      reason: "Cancellations are confirmed by the front desk."
      timeout_s: 60
"""


async def test_an_approved_cancel_by_another_caller_is_carried_out(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Only the caller who booked may cancel, or an operator's approval: the approved run must count as one
    (the tool sees ``ctx.approved``), or the operator approves and nothing happens."""
    (tmp_path / "desk.yaml").write_text(CANCEL_APPROVED_FLOW)
    fake_realtime.default_replies = [Reply(text="Hello, desk.", audio_ms=200)]
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with (
            app_for(
                fake_realtime, flows_dir=tmp_path, redis_url=redis_url, redis_prefix=redis_prefix
            ) as server,
            httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
        ):
            owner = await place_call(server, from_number="+15550107001")
            session = await fake_realtime.next_session()
            await session.wait_response_done()
            book = {"action": "book", "service": "checkup", "start": _tomorrow_10(), "name": "Ada Lovelace"}
            await session.respond(Reply(function_call=("appointments", book)))
            booked = await _output_of(session, 0)
            assert booked.get("status") == "booked", booked
            booking_id = booked["booking_id"]
            await owner.hang_up()

            other = await place_call(server, from_number="+15550107002")
            session = await fake_realtime.next_session()
            await session.wait_response_done()
            cancel = {"action": "cancel", "booking_id": booking_id}
            await session.respond(Reply(function_call=("appointments", cancel)))
            pending = await _output_of(session, 0)
            assert pending["status"] == "pending_approval", pending
            answer = await http.post(f"/api/approvals/{pending['approval_id']}", json={"decision": "approve"})
            assert answer.status_code == 200, answer.text
            await session.wait_for(
                "conversation.item.create",
                lambda e: e["item"].get("role") == "system" and "Update on appointments" in json.dumps(e),
            )
            update = _system_texts(session)[-1]
            assert "not_booking_owner" not in update, update
            stored = await client.hgetall(keys.booking(booking_id))
            assert stored["status"] == "cancelled", stored
            await other.hang_up()
    finally:
        await client.aclose()


async def test_api_decision_during_a_failover_answers_503_not_500(
    private_redis: EmbeddedRedis, redis_prefix: str
) -> None:
    """A primary turned replica (a failover in progress) refuses writes with READONLY: that is a moment to
    wait, like an outage (503 with Retry-After), not a server fault (500)."""
    async with running_server(
        make_settings(redis_url=private_redis.url, redis_prefix=redis_prefix)
    ) as server:
        await wait_ready(server)
        client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
        store = ApprovalStore(client, KeySchema(redis_prefix))
        try:
            approval = await store.request(
                call_sid="CA" + "7" * 32,
                instance_id="elsewhere",
                flow_id="desk",
                tool="refund",
                call_id="fc_1",
                arguments={"x": 1},
                reason="r",
                timeout_s=60,
            )
            await client.execute_command("REPLICAOF", "127.0.0.1", str(_closed_port()))
            async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=20) as http:
                decided = await http.post(f"/api/approvals/{approval.id}", json={"decision": "deny"})
            assert decided.status_code == 503, decided.text
            assert decided.headers.get("retry-after")
        finally:
            await client.execute_command("REPLICAOF", "NO", "ONE")
            await client.aclose()


async def test_the_audit_and_closed_records_keep_only_the_masked_arguments(
    redis_url: str, redis_prefix: str
) -> None:
    """A flow's ``redact:`` masks what approvals keep: the audit stream never holds the real values, and a
    closed request (denied, or run) keeps only the masked ones; an open one keeps the real ones, because an
    approved action runs with exactly what was approved."""
    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = ApprovalStore(client, keys)
    real = {"card": "4111 1111 1111 1111", "amount": 20}
    shown = {"card": "[card_number]", "amount": 20}

    async def ask(call: str) -> Any:
        approval, created = await store.request_for_gate(
            call_sid=call,
            instance_id="node-a",
            flow_id="pay",
            tool="refund",
            call_id="fc_1",
            arguments=real,
            reason="refunds are checked",
            timeout_s=60,
            shown=shown,
        )
        assert created
        return approval

    try:
        denied = await ask("CA" + "1" * 32)
        assert (await store.get(denied.id)).arguments == real  # open: the real values, for the decision
        await store.decide(denied.id, approve=False, operator="alice")
        assert (await store.get(denied.id)).arguments == shown

        ran = await ask("CA" + "2" * 32)
        await store.decide(ran.id, approve=True, operator="alice")
        assert (await store.get(ran.id)).arguments == real  # approved, not run yet: it needs them
        assert await store.claim(ran.id, instance_id="node-a")
        await store.record_execution(ran.id, ok=True, error_type=None, instance_id="node-a")
        assert (await store.get(ran.id)).arguments == shown

        audit = [f for _, f in await client.xrange(keys.approvals_audit())]
        assert [a["action"] for a in audit] == ["requested", "denied", "requested", "approved", "executed"]
        assert all("4111" not in a["arguments"] for a in audit), audit
    finally:
        await client.aclose()
