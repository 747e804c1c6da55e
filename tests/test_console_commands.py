"""Hang up and transfer a live call from the console: through Redis to the instance that runs it.

Two app instances on one Redis (real servers on loopback), a simulated Twilio call on instance A, commands
sent with instance B's Redis view; the hang-up and the transfer reach Twilio through the fake REST API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ivr.approvals.store import ApprovalStore
from ivr.console.commands import (
    CallNotLive,
    CommandError,
    CommandListener,
    InstanceGone,
    TransferUnavailable,
    decode_command,
    encode_command,
    send_command,
)
from ivr.console.history import HistoryFilter
from ivr.console.queries import ConsoleQueries
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.writer import ResilientWriter
from tests.support.calls import place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.server import RunningServer, make_settings, running_server

GREETING = Reply(text="Hello, test desk.", audio_ms=200)
NO_TRANSFER = "+15550100003"  # the test-passthrough flow: no transfer number


@asynccontextmanager
async def two_instances(
    fake: FakeRealtimeServer, rest: FakeTwilioRest, redis_url: str, prefix: str
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    def settings(name: str) -> Any:
        return make_settings(
            realtime_url=fake.url,
            twilio_api_base=rest.base_url,
            redis_url=redis_url,
            redis_prefix=prefix,
            instance_id=name,
        )

    async with running_server(settings("instance-a")) as a, running_server(settings("instance-b")) as b:
        yield a, b


async def ready(a: RunningServer, call_sid: str) -> None:
    """A's call is in Redis, A listens for commands and has sent a heartbeat."""
    services = a.state.services
    assert services.commands is not None and services.writer is not None and services.calls is not None
    await services.commands.wait_connected(5)
    await services.calls.heartbeat(services.instance_stats())
    assert await services.writer.flush(5)
    assert services.redis is not None
    assert await services.redis.hget(services.keys.call(call_sid), "instance_id") == "instance-a"


def queries(b: RunningServer) -> ConsoleQueries:
    services = b.state.services
    assert services.redis is not None and services.approvals is not None
    return ConsoleQueries(services.redis, services.keys, services.approvals, flows=b.state.flows)


async def test_hangup_sent_through_b_ends_the_call_on_a(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with two_instances(fake_realtime, fake_twilio_rest, redis_url, redis_prefix) as (a, b):
        live = await place_call(a)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        sid = live.call.call_sid
        await ready(a, sid)
        q = queries(b)
        (row,) = await q.live_calls()
        assert (row.call_sid, row.instance_id, row.instance_alive, row.transfer_available) == (
            sid,
            "instance-a",
            True,
            True,
        )
        fleet = {r.instance_id: r for r in await q.fleet()}
        assert fleet["instance-a"].alive and fleet["instance-a"].live_calls == 1
        assert fleet["instance-a"].version and fleet["instance-a"].errors.get("bad_signatures") == 0

        services = b.state.services
        assert services.redis is not None
        result = await send_command(services.redis, services.keys, sid, "hangup", "alice")
        assert (result.delivered, result.instance_id, result.by) == (True, "instance-a", "alice")
        update = await fake_twilio_rest.wait_for_update(lambda u: u.call_sid == sid, timeout=5)
        assert update.status == "completed" and update.twiml is None
        ended = await live.result()
        assert ended.ended_by == "server"
        assert a.state.services.writer is not None and await a.state.services.writer.flush(5)

        detail = await q.call(sid)
        assert detail is not None and detail.call.outcome == "operator-hangup" and not detail.call.live
        actions = [e.data for e in detail.events if e.type == "operator.action"]
        assert actions == [{"action": "hangup", "by": "alice"}]
        types = [e.type for e in detail.events]
        assert types.index("operator.action") < types.index("call.ended")
        history = await q.history(HistoryFilter(outcome="operator-hangup"))
        assert [r.call_sid for r in history.rows] == [sid]
        # The call is over: a second command is refused before anything is sent.
        with pytest.raises(CallNotLive, match="already ended") as info:
            await send_command(services.redis, services.keys, sid, "hangup", "alice")
        assert info.value.status == 404


async def test_transfer_sent_through_b_dials_the_flow_number(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [GREETING]
    async with two_instances(fake_realtime, fake_twilio_rest, redis_url, redis_prefix) as (a, b):
        live = await place_call(a)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        sid = live.call.call_sid
        await ready(a, sid)
        services = b.state.services
        assert services.redis is not None
        result = await send_command(
            services.redis, services.keys, sid, "transfer", "bob", flows=b.state.flows
        )
        assert result.delivered
        update = await fake_twilio_rest.wait_for_update(lambda u: u.call_sid == sid, timeout=5)
        assert update.twiml is not None
        assert "<Dial><Number>+15550009999</Number></Dial>" in update.twiml
        assert "Connecting you to a person now." in update.twiml
        assert (await live.result()).ended_by == "server"
        assert a.state.services.writer is not None and await a.state.services.writer.flush(5)
        detail = await queries(b).call(sid)
        assert detail is not None and detail.call.outcome == "transferred"
        (action,) = [e.data for e in detail.events if e.type == "operator.action"]
        assert action == {"action": "transfer", "by": "bob", "to": "+1********99"}


async def test_transfer_of_a_flow_without_a_number_is_refused(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest, redis_url: str, redis_prefix: str
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, passthrough desk.", audio_ms=200)]
    async with two_instances(fake_realtime, fake_twilio_rest, redis_url, redis_prefix) as (a, b):
        live = await place_call(a, to_number=NO_TRANSFER)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        sid = live.call.call_sid
        await ready(a, sid)
        (row,) = await queries(b).live_calls()
        assert row.transfer_available is False  # the console knows before anyone clicks
        services = b.state.services
        assert services.redis is not None
        with pytest.raises(TransferUnavailable, match="flow test-passthrough has no transfer number") as info:
            await send_command(services.redis, services.keys, sid, "transfer", "bob", flows=b.state.flows)
        assert info.value.status == 409
        # Sent anyway (a console without the flows): the owning instance refuses it, and says so.
        commands = a.state.services.commands
        assert commands is not None
        assert (await send_command(services.redis, services.keys, sid, "transfer", "bob")).delivered
        await commands.wait_until(lambda listener: listener.failed >= 1, timeout=5)
        feed = a.state.calls.get(sid)
        assert feed is not None
        (refusal,) = [e for e in feed.events if e["type"] == "operator.action"]
        assert refusal["by"] == "bob" and "add transfer.number" in refusal["refused"]
        assert fake_twilio_rest.requests == [] and not feed.ended  # the call goes on
        await live.hang_up()


async def test_draining_is_on_the_fleet_page_at_once(
    fake_realtime: FakeRealtimeServer, fake_twilio_rest: FakeTwilioRest, redis_url: str, redis_prefix: str
) -> None:
    async with two_instances(fake_realtime, fake_twilio_rest, redis_url, redis_prefix) as (a, b):
        for server in (a, b):  # answered once start-up (Redis services included) is done
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                assert (await http.get("/healthz")).status_code == 200
        assert (await a.state.drain(0.0)) is True  # no live call: drained at once
        q = queries(b)
        deadline = time.monotonic() + 3.0  # the heartbeat goes out on its own task: poll Redis briefly
        while not any(r.instance_id == "instance-a" and r.draining for r in await q.fleet()):
            assert time.monotonic() < deadline, "instance-a never reported draining"
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------ refusals


@pytest.fixture
async def store(redis_client: aioredis.Redis, redis_keys: KeySchema) -> AsyncIterator[CallStore]:
    writer = ResilientWriter(redis_client)
    writer.start()
    try:
        yield CallStore(redis_client, redis_keys, instance_id="node-a", writer=writer)
    finally:
        assert await writer.stop(5)


async def test_commands_for_calls_that_cannot_take_them_are_refused(
    store: CallStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    r, keys = redis_client, redis_keys
    with pytest.raises(CallNotLive, match=r"no call CA0+ in Redis"):
        await send_command(r, keys, "CA" + "0" * 32, "hangup", "alice")
    store.call_started({"call_sid": "CAlive", "flow_id": "desk"})
    store.call_started({"call_sid": "CAdone", "flow_id": "desk"})
    store.call_ended("CAdone", {"outcome": "completed"})
    assert await store.writer.flush(5)
    with pytest.raises(CallNotLive, match="CAdone has already ended \\(outcome completed\\)"):
        await send_command(r, keys, "CAdone", "hangup", "alice")
    # node-a never sent a heartbeat (or it expired): the call cannot be reached.
    with pytest.raises(InstanceGone, match="instance node-a, which runs call CAlive, is gone") as gone:
        await send_command(r, keys, "CAlive", "hangup", "alice")
    assert gone.value.status == 503
    await store.heartbeat()
    await r.delete(keys.instance("node-a"))  # its heartbeat expired a moment ago
    with pytest.raises(InstanceGone, match=r"last seen \d+ s ago"):
        await send_command(r, keys, "CAlive", "hangup", "alice")
    with pytest.raises(CommandError, match="unknown action 'mute'"):
        await send_command(r, keys, "CAlive", "mute", "alice")  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="operator name"):
        await send_command(r, keys, "CAlive", "hangup", " ")
    with pytest.raises(CommandError, match="not a call id"):
        await send_command(r, keys, "CA:1", "hangup", "alice")
    # Alive, but nobody listens on its channel right now: sent, and reported as not delivered.
    await store.heartbeat()
    result = await send_command(r, keys, "CAlive", "hangup", "alice")
    assert not result.delivered and "did not receive" in result.message
    # The flows are known and the call's flow has no transfer: refused before sending.
    with pytest.raises(TransferUnavailable, match="flow desk has no transfer number"):
        await send_command(r, keys, "CAlive", "transfer", "alice", flows={"desk": None})


# ------------------------------------------------------------------------------------------ the listener


def test_messages_are_validated() -> None:
    keys = KeySchema()
    assert decode_command(encode_command("CA1", "hangup", "alice"), keys) == ("CA1", "hangup", "alice")
    bad = {
        "not json": "not JSON",
        '{"type": "other"}': "not a 'call.command' object",
        '{"type": "call.command", "call_sid": "CA:1", "action": "hangup", "by": "a"}': "contains ':'",
        '{"type": "call.command", "call_sid": "CA1", "action": "mute", "by": "a"}': "unknown action 'mute'",
        '{"type": "call.command", "call_sid": "CA1", "action": "hangup", "by": ""}': "operator name",
        '{"type": "call.command", "call_sid": 5, "action": "hangup", "by": "a"}': "must be a string",
    }
    for raw, reason in bad.items():
        with pytest.raises(ValueError, match=reason):
            decode_command(raw, keys)


async def test_listener_survives_bad_messages_failing_handlers_and_lost_connections(
    embedded_redis: EmbeddedRedis,
) -> None:
    keys = KeySchema("ivr-cmd:")
    client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    seen: list[tuple[str, str, str]] = []

    async def handler(call_sid: str, action: str, by: str) -> None:
        seen.append((call_sid, action, by))
        if call_sid == "CAbad":
            raise RuntimeError("the call refused it")

    listener = CommandListener(client, keys, "node-a", handler)  # type: ignore[arg-type]
    listener.start()
    channel = keys.instance_channel("node-a")
    try:
        await listener.wait_connected(5)
        for junk in ("{", '{"type": "call.command"}', "[]"):
            await client.publish(channel, junk)
        await client.publish(channel, encode_command("CAbad", "transfer", "carol"))
        await client.publish(channel, encode_command("CAgood", "hangup", "carol"))
        await listener.wait_until(lambda s: s.handled + s.failed == 2, timeout=5)
        assert (listener.malformed, listener.received, listener.failed, listener.handled) == (3, 2, 1, 1)
        assert seen == [("CAbad", "transfer", "carol"), ("CAgood", "hangup", "carol")]
        # The connection drops: the listener subscribes again and keeps working.
        assert await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        await listener.wait_until(lambda s: s.subscriptions >= 2, timeout=5)
        assert listener.disconnects >= 1
        await client.publish(channel, encode_command("CAagain", "hangup", "dave"))
        await listener.wait_until(lambda s: s.handled == 2, timeout=5)
        assert seen[-1] == ("CAagain", "hangup", "dave")
    finally:
        await listener.stop()
        await client.aclose()


async def test_pending_approvals_work_with_an_empty_store(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    q = ConsoleQueries(redis_client, redis_keys, ApprovalStore(redis_client, redis_keys))
    assert await q.pending_approvals() == [] and await q.live_calls() == [] and await q.fleet() == []
