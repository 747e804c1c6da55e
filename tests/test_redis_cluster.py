"""``REDIS_URL`` on a Redis Cluster: the URL grammar, the client factory, hash-tagged keys, and the whole call
path on three primaries.

Why: a single Redis (or a Sentinel pair) holds every call of every instance; a Cluster spreads them over
several primaries, but only if every script and transaction stays inside one hash slot and the code copes
with a cluster's client (per-node pipelines, sharded pub/sub, a node that fails alone). Everything here runs
against real ``valkey-server`` processes (:class:`tests.support.redis_ha.ValkeyCluster`) over real sockets;
the URL tests need no server. Some tests also run the Cluster code paths (hash-tagged keys) on the suite's
single server, where a crash between two steps is easy to stage.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ivr.approvals.listener import ApprovalListener
from ivr.approvals.store import ApprovalAlreadyDecided, ApprovalStore
from ivr.console.commands import CommandListener, send_command
from ivr.console.operators import OperatorStore
from ivr.flows import FlowSet
from ivr.redis_url import ClusterURL, masked, parse_cluster_url, redis_url_problem
from ivr.settings import Settings, SettingsError
from ivr.store import instances, reattach
from ivr.store.cli_redis import cli_settings, redacted
from ivr.store.client import RedisURLError, describe_redis_url, is_cluster, open_redis
from ivr.store.keys import KeySchema
from ivr.store.store import CallStore
from ivr.store.streams import append_event_ops, event_fields
from ivr.store.writer import ResilientWriter
from ivr.tools import data_cli
from ivr.tools.datasets import load_missing
from ivr.tools.registry import ToolContext, registry_for_flow
from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.redis import delete_prefix
from tests.support.redis_ha import ValkeyCluster
from tests.support.server import OPERATOR_TOKEN

CLINIC = Path(__file__).parent / "data" / "flows-clinic"
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
GREETING = Reply(text="Hello, clinic.", audio_ms=200)
SECRET = "pa:ss@w/rd?"  # every character that must be percent-encoded in a URL's userinfo


# --- the URL grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://n1.internal", ClusterURL(nodes=(("n1.internal", 6379),))),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002/0",
            ClusterURL(nodes=(("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))),
        ),
        (
            "rediss+cluster://app:pa%3Ass%40w%2Frd%3F@n1:6380,n2:6380/",
            ClusterURL(nodes=(("n1", 6380), ("n2", 6380)), username="app", password=SECRET, tls=True),
        ),
        ("REDIS+CLUSTER://:only-password@n1", ClusterURL(nodes=(("n1", 6379),), password="only-password")),
    ],
)
def test_cluster_urls_parse(url: str, expected: ClusterURL) -> None:
    parsed = parse_cluster_url(url)
    assert parsed == expected
    assert redis_url_problem(url) is None
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    for text in (repr(parsed), parsed.describe(), masked(url), describe_redis_url(url), redacted(url)):
        assert "pa%3Ass" not in text and SECRET not in text and "only-password" not in text
    assert parsed.describe().startswith("cluster nodes ")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://", "no node host in the host list"),
        ("redis+cluster://:s3cret@/0", "no node host in the host list"),
        ("redis+cluster://n1,,n2", "node number 2 in the host list 'n1,,n2' is empty"),
        ("redis+cluster://n1:port", "the port 'port' of node 'n1:port' is not a number from 1 to 65535"),
        ("redis+cluster://n1:0", "the port '0' of node 'n1:0'"),
        ("redis+cluster://fe80::1", "has more than one ':' (an IPv6 address goes in brackets)"),
        ("redis+cluster://[::1", "the IPv6 address in '[::1' is not closed"),
        ("redis+cluster://n1/3", "database 3 is not available: Redis Cluster has only database 0"),
        ("redis+cluster://n1/mymaster", "'mymaster' after the host list is not a database number"),
        ("redis+cluster://n1?password=s3cret", "a Cluster URL takes no query parameters"),
        ("redis+cluster://n1#x", "takes no #fragment"),
    ],
)
def test_bad_cluster_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(RedisURLError) as caught:
        parse_cluster_url(url)
    message = str(caught.value)
    assert problem in message, message
    assert message.startswith("REDIS_URL=") and "; expected " in message
    assert "s3cret" not in message
    assert redis_url_problem(url) == message
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"REDIS_URL": url})
    assert str(refused.value) == message
    with pytest.raises(RedisURLError):
        open_redis(url)


def test_a_host_list_in_a_plain_url_points_at_both_forms() -> None:
    message = redis_url_problem("redis://:s3cret@cache1:6379,cache2:6379/0")
    assert message is not None and "s3cret" not in message
    assert "redis+sentinel://cache1,cache2/<service-name>" in message
    assert "redis+cluster://cache1:6379,cache2:6379" in message
    unknown = redis_url_problem("cluster://n1")
    assert unknown is not None and "redis+cluster://" in unknown


def test_a_cluster_url_opens_a_cluster_client_with_the_options() -> None:
    """No connection is made until the first command; the options reach every node's connections."""
    client = open_redis(
        "rediss+cluster://app:pw@n1:7000,n2:7001",
        socket_timeout=3.0,
        socket_connect_timeout=1.5,
        health_check_interval=15,
        client_name="ivr-x",
    )
    assert isinstance(client, RedisCluster) and is_cluster(client)
    assert not is_cluster(aioredis.Redis())
    kwargs = client.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"], kwargs["decode_responses"]) == ("app", "pw", True)
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (3.0, 1.5)
    assert (kwargs["health_check_interval"], kwargs["client_name"]) == (15, "ivr-x")
    assert kwargs["connection_class"].__name__ == "SSLConnection"
    assert [(n.host, n.port) for n in client.startup_nodes] == [("n1", 7000), ("n2", 7001)]
    plain = open_redis("redis+cluster://n1", decode_responses=False)
    assert plain.get_connection_kwargs()["decode_responses"] is False
    assert plain.get_connection_kwargs()["connection_class"].__name__ == "Connection"
    with pytest.raises(TypeError, match="retry_on_timeout is not an option of a Redis Cluster client"):
        open_redis("redis+cluster://n1", retry_on_timeout=True)


def test_the_cli_and_the_app_pick_hash_tags_from_the_url() -> None:
    settings, keys = cli_settings(Settings(redis_url="redis+cluster://n1,n2", redis_prefix="acme:"))
    assert keys == KeySchema("acme:", hash_tags=True) and settings.redis_prefix == "acme:"
    assert redacted("redis+cluster://:s3cret@n1:7000") == "cluster nodes n1:7000"
    _, plain = cli_settings(Settings(redis_url="redis://n1:6379/0"))
    assert not plain.hash_tags


# --- a three-primary cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    """Three primaries shared by this module's tests (each on its own key prefix); stopped at the end."""
    cluster = ValkeyCluster()
    try:
        cluster.start()
        print(f"\nRedis Cluster (3 primaries) ready in {cluster.startup_s:.2f} s")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_keys(valkey_cluster: ValkeyCluster) -> Iterator[KeySchema]:
    """A hash-tagged key schema on a unique prefix; every key under it is deleted afterwards."""
    prefix = f"ivr-test-{secrets.token_hex(6)}:"
    try:
        yield KeySchema.for_url(valkey_cluster.url, prefix)
    finally:
        delete_prefix(valkey_cluster.url, prefix)


@pytest.fixture
async def cluster_client(valkey_cluster: ValkeyCluster) -> AsyncIterator[aioredis.Redis]:
    client = open_redis(valkey_cluster.url, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


def _sid_apart(cluster: ValkeyCluster, keys: KeySchema) -> str:
    """A call sid whose keys are on another primary than the global keys (so the split steps cross nodes)."""
    home = cluster.port_for_key(keys.events())
    for n in range(1000):
        sid = f"CA{secrets.token_hex(15)}{n:02d}"
        if cluster.port_for_key(keys.call(sid)) != home:
            return sid
    raise AssertionError("no sid off the global node")  # pragma: no cover


async def _store(
    client: aioredis.Redis, keys: KeySchema, iid: str, *, clock: Any = time.time
) -> tuple[CallStore, ResilientWriter]:
    writer = ResilientWriter(client)
    writer.start()
    return CallStore(client, keys, instance_id=iid, writer=writer, retention_s=3600, clock=clock), writer


async def test_delete_prefix_walks_every_primary(
    valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis
) -> None:
    prefix = f"ivr-test-{secrets.token_hex(6)}:"
    keys = [f"{prefix}{n}" for n in range(60)]
    for key in keys:
        await cluster_client.set(key, "x")
    assert len({valkey_cluster.port_for_key(k) for k in keys}) == 3  # on every primary
    assert await asyncio.to_thread(delete_prefix, valkey_cluster.url, prefix) == 60
    assert [k async for k in cluster_client.scan_iter(match=prefix + "*")] == []


async def test_a_call_store_writes_every_event_once_across_nodes(
    valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """The call's stream and the global stream are on different primaries: each event lands in both exactly
    once, also when its operation is sent again (a lost reply) or only its first step had run (a crash)."""
    keys = cluster_keys
    sid = _sid_apart(valkey_cluster, keys)
    store, writer = await _store(cluster_client, keys, "inst-a")
    try:
        store.call_started({"call_sid": sid, "flow_id": "clinic", "caller": "+15550100001"})
        store.transcript(sid, "agent", "Hello.")
        for n in range(3):
            store.event(sid, "stage.changed", {"n": n})
        again = store._event_ops(sid, "tool.called", {"tool": "lookup"}, time.time())
        writer.submit("event", again)
        writer.submit("event", again)  # the same batch sent twice: the second is a duplicate
        # A crash after the call step of an event, before its global step; the re-sent batch finishes it.
        entry_id, entry = store._next_id(), event_fields(sid, "dtmf", {"digit": "5"}, time.time())

        def call_step_only(pipe: Any) -> None:
            append_event_ops(pipe, keys, sid, entry_id, entry, 3600, writer="inst-a", global_step=False)

        def both_steps(pipe: Any) -> None:
            append_event_ops(pipe, keys, sid, entry_id, entry, 3600, writer="inst-a")

        writer.submit("event", call_step_only)
        writer.submit("event", both_steps)
        store.call_ended(sid, {"outcome": "completed"})
        assert await writer.flush(10)
        assert writer.failed == 0 and writer.duplicates == 2, writer.counters()
    finally:
        await writer.stop()

    expected = ["call.started", "stage.changed", "stage.changed", "stage.changed", "tool.called", "dtmf"]
    expected.append("call.ended")
    call_entries = await cluster_client.xrange(keys.call_events(sid))
    assert [f["type"] for _, f in call_entries] == expected
    global_entries = [f for _, f in await cluster_client.xrange(keys.events()) if f["call_sid"] == sid]
    assert [f["type"] for f in global_entries] == expected
    assert [f["event_id"] for f in global_entries] == [entry_id for entry_id, _ in call_entries]
    hwm = await cluster_client.hgetall(keys.events_hwm(sid))
    assert hwm == {"inst-a": call_entries[-1][0]}
    assert [f["text"] for _, f in await cluster_client.xrange(keys.transcript(sid))] == ["Hello."]
    record = await store.get_call(sid)
    assert record is not None and record["outcome"] == "completed"
    assert await cluster_client.zscore(keys.recent_calls(), sid) is not None
    assert await cluster_client.zscore(keys.active_calls(), sid) is None
    assert valkey_cluster.port_for_key(keys.call(sid)) != valkey_cluster.port_for_key(keys.events())


async def test_approvals_on_the_cluster(
    valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """Request, decide (delivered to the waiting call by a sharded message), claim and record the run: each
    once; the audit and the global stream say so once each."""
    keys = cluster_keys
    sid = _sid_apart(valkey_cluster, keys)
    store = ApprovalStore(cluster_client, keys, retention_s=3600.0)
    listener = ApprovalListener(cluster_client, keys, store=store)
    assert store.split and store.sharded and listener.sharded
    listener.start()
    try:
        await listener.wait_connected(10)
        request = {
            "call_sid": sid,
            "instance_id": "inst-a",
            "flow_id": "clinic",
            "tool": "refund",
            "call_id": "fc_1",
            "arguments": {"amount": 150, "card": "4111"},
            "reason": "Refunds over $100 need a manager",
            "timeout_s": 60.0,
        }
        first, created = await store.request_for_gate(**request, shown={"amount": 150, "card": "****"})
        again, created_again = await store.request_for_gate(**request, shown={"amount": 150, "card": "****"})
        assert (created, created_again, again.id) == (True, False, first.id)
        other = await store.request(**{**request, "arguments": {"amount": 200}})
        assert other.id != first.id
        assert [a.id for a in await store.pending()] == [first.id, other.id]  # soonest deadline first
        waiting = asyncio.create_task(listener.wait(first.id, time.time() + 30))
        await listener.wait_until(lambda lis: lis.initial_checks >= 1, 10)
        decided = await store.decide(first.id, approve=True, operator="alice")
        assert decided.status == "approved" and decided.decided_by == "alice"
        delivered = await asyncio.wait_for(waiting, 10)
        assert delivered.status == "approved" and listener.delivered_by_message == 1
        with pytest.raises(ApprovalAlreadyDecided):
            await store.decide(first.id, approve=False, operator="bob")
        assert await store.claim(first.id, instance_id="inst-a") is True
        assert await store.claim(first.id, instance_id="inst-b") is False
        assert await store.record_execution(first.id, ok=True, instance_id="inst-a") is True
        assert await store.record_execution(first.id, ok=True, instance_id="inst-a") is False
        assert [a.id for a in await store.pending()] == [other.id]
        assert [a.id for a in await store.for_call(sid)] == [first.id, other.id]
        stored = await store.get(first.id)
        assert (
            stored is not None
            and stored.outcome == "ok"
            and stored.arguments == {"amount": 150, "card": "****"}
        )
        # The call ends: the other request is abandoned, once.
        await cluster_client.hset(keys.call(sid), "ended_at", str(time.time()))
        assert await store.abandon_call(sid, instance_id="inst-a") == [other.id]
        assert await store.abandon_call(sid, instance_id="inst-a") == []
    finally:
        await listener.stop()
    audit = [(f["approval_id"], f["action"]) for _, f in await cluster_client.xrange(keys.approvals_audit())]
    assert audit == [
        (first.id, "requested"),
        (other.id, "requested"),
        (first.id, "approved"),
        (first.id, "executed"),
        (other.id, "abandoned"),
    ]
    shown = [f["arguments"] for _, f in await cluster_client.xrange(keys.approvals_audit())]
    assert all("4111" not in a for a in shown)  # the audit only ever shows the masked arguments
    events = [f["type"] for _, f in await cluster_client.xrange(keys.events()) if f["call_sid"] == sid]
    assert events == [
        "approval.requested",
        "approval.requested",
        "approval.decided",
        "approval.executed",
        "approval.decided",
    ]
    assert await cluster_client.zcard(keys.approvals_pending()) == 0


@pytest.mark.parametrize("where", ["cluster", "single"])
async def test_a_crash_between_the_approval_steps_is_repaired_once(
    where: str,
    valkey_cluster: ValkeyCluster,
    cluster_client: aioredis.Redis,
    cluster_keys: KeySchema,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    """Only the call step of a decision ran (the process died before the global step): the decision stands,
    and the sweeper — or a repeated decision — writes the audit entry, the event and the notification once.
    On the Cluster and with the same (hash-tagged) keys on one server."""
    client = cluster_client if where == "cluster" else redis_client
    keys = cluster_keys if where == "cluster" else KeySchema(redis_prefix, hash_tags=True)
    store = ApprovalStore(client, keys, retention_s=3600.0)
    sid = "CA" + secrets.token_hex(16)
    pending = await store.request(
        call_sid=sid,
        instance_id="inst-a",
        flow_id="clinic",
        tool="refund",
        call_id="fc_1",
        arguments={"amount": 150},
        reason="over $100",
        timeout_s=60.0,
    )
    # The call step alone, as ApprovalStore._finish_split runs it first.
    await store._decide_call(
        keys=[keys.approval(pending.id, sid), keys.call(sid)],
        args=["approved", "alice", "", "", "3600.0", "x", "timeout", "y", "call-ended"],
    )
    assert [f["action"] for _, f in await client.xrange(keys.approvals_audit())] == ["requested"]
    assert await client.zscore(keys.approvals_pending(), pending.id) is not None  # not yet closed globally
    swept = await store.sweep()
    assert swept.expired == [] and swept.abandoned == []
    with pytest.raises(ApprovalAlreadyDecided):  # a repeated decision finds it decided and repeats nothing
        await store.decide(pending.id, approve=True, operator="alice")
    await store.sweep()
    audit = [f["action"] for _, f in await client.xrange(keys.approvals_audit())]
    assert audit == ["requested", "approved"]
    decided = [f for _, f in await client.xrange(keys.events()) if f["type"] == "approval.decided"]
    assert len(decided) == 1 and json.loads(decided[0]["data"])["decided_by"] == "alice"
    assert await client.zscore(keys.approvals_pending(), pending.id) is None
    record = await store.get(pending.id)
    assert record is not None and record.status == "approved"


async def test_an_overdue_request_expires_on_the_cluster(
    cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    store = ApprovalStore(cluster_client, cluster_keys, retention_s=3600.0)
    request = await store.request(
        call_sid="CA" + secrets.token_hex(16),
        instance_id="inst-a",
        flow_id="clinic",
        tool="refund",
        call_id="fc_1",
        arguments={},
        reason="r",
        timeout_s=5.0,
        now=time.time() - 60,
    )
    swept = await store.sweep()
    assert [a.id for a in swept.expired] == [request.id] and swept.expired[0].status == "expired"
    assert (await store.sweep()).expired == []
    actions = [f["action"] for _, f in await cluster_client.xrange(cluster_keys.approvals_audit())]
    assert actions == ["requested", "expired"]


async def test_the_takeover_of_a_lost_instance_on_the_cluster(
    valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """A survivor ends a lost instance's call exactly once (the call's slot in a transaction, then the global
    indexes); a crash between the two parts is repaired by the next takeover, without a second event."""
    keys = cluster_keys
    sid = _sid_apart(valkey_cluster, keys)
    long_ago = time.time() - 120
    lost, lost_writer = await _store(cluster_client, keys, "lost-1", clock=lambda: long_ago)
    try:
        lost.call_started({"call_sid": sid, "flow_id": "clinic", "caller": "+15550100042"})
        lost.transcript(sid, "caller", "Hello?")
        assert await lost_writer.flush(10)
        await lost.heartbeat()
    finally:
        await lost_writer.stop()
    survivor, writer = await _store(cluster_client, keys, "survivor")
    try:
        assert await survivor.take_over_lost(15.0) == {"lost-1": [sid]}
        assert await survivor.take_over_lost(15.0) == {}

        async def global_ends() -> list[dict[str, str]]:
            return [
                f
                for _, f in await cluster_client.xrange(keys.events())
                if f["call_sid"] == sid and f["type"] == "call.ended"
            ]

        record = await survivor.get_call(sid)
        assert record is not None and record["outcome"] == "instance-lost"
        assert record["transcript_text"] == "caller: Hello?"
        assert await cluster_client.zscore(keys.active_calls(), sid) is None
        assert await cluster_client.zscore(keys.recent_calls_by_outcome("instance-lost"), sid) is not None
        assert not await cluster_client.exists(keys.instance_calls("lost-1"))
        (ended,) = await global_ends()
        assert json.loads(ended["data"])["ended_by"] == "survivor"

        # The state a crash between the two parts leaves: ended in the call's slot, not in the global one.
        await cluster_client.zadd(keys.active_calls(), {sid: long_ago})
        await cluster_client.sadd(keys.instance_calls("lost-1"), sid)
        await cluster_client.zrem(keys.recent_calls(), sid)
        await cluster_client.zrem(keys.recent_calls_by_outcome("instance-lost"), sid)
        await cluster_client.delete(keys.events_hwm(sid))
        global_ids = [i for i, f in await cluster_client.xrange(keys.events()) if f["call_sid"] == sid]
        await cluster_client.xdel(keys.events(), global_ids[-1])
        assert await global_ends() == []
        assert await survivor.take_over_lost(15.0) == {}  # nothing left to end: the end is repaired
        assert await cluster_client.zscore(keys.active_calls(), sid) is None
        assert await cluster_client.zscore(keys.recent_calls(), sid) is not None
        assert await cluster_client.zscore(keys.recent_calls_by_outcome("instance-lost"), sid) is not None
        assert len(await global_ends()) == 1
        await survivor.take_over_lost(15.0)
        assert len(await global_ends()) == 1
    finally:
        await writer.stop()
    call_types = [f["type"] for _, f in await cluster_client.xrange(keys.call_events(sid))]
    assert call_types == ["call.started", "call.ended"]


async def test_the_reattach_steps_on_the_cluster(
    valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """Issue a resumed stream, adopt it once (the adopter's call set, in the global slot, follows), refuse a
    second adoption and the old holder's release."""
    keys = cluster_keys
    sid = _sid_apart(valkey_cluster, keys)
    store, writer = await _store(cluster_client, keys, "inst-a")
    try:
        record = {"call_sid": sid, "flow_id": "clinic", "caller": "+1555", "called": "+1666"}
        store.call_started({**record, "outcome": "in-progress"})
        assert await writer.flush(10)
    finally:
        await writer.stop()
    resumable = await reattach.issue_resume(cluster_client, keys, sid, now=time.time())
    assert isinstance(resumable, reattach.Resumable) and resumable.number == 1
    adopted = await reattach.adopt(cluster_client, keys, sid, "inst-b", 1)
    assert adopted == reattach.Adoption(True, previous="inst-a")
    assert await cluster_client.smembers(keys.instance_calls("inst-b")) == {sid}
    assert await cluster_client.smembers(keys.instance_calls("inst-a")) == set()
    refused = await reattach.adopt(cluster_client, keys, sid, "inst-c", 1)
    assert refused == reattach.Adoption(False, why="adopted already")
    assert await cluster_client.smembers(keys.instance_calls("inst-c")) == set()  # taken out again
    again = await reattach.adopt(cluster_client, keys, sid, "inst-b", 1)
    assert not again.adopted and await cluster_client.smembers(keys.instance_calls("inst-b")) == {sid}
    assert await reattach.release(cluster_client, keys, sid, "inst-a") is False
    assert await reattach.release(cluster_client, keys, sid, "inst-b") is True
    assert await reattach.issue_resume(cluster_client, keys, sid, now=time.time()) == (
        "the call was ended on purpose"
    )


async def test_an_operator_command_is_delivered_by_a_sharded_message(
    cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """``delivered`` counts the instance's sharded subscription exactly; with nobody listening it is False."""
    keys = cluster_keys
    sid = "CA" + secrets.token_hex(16)
    got: list[tuple[str, str, str]] = []
    arrived = asyncio.Event()

    async def handler(call_sid: str, action: Any, by: str) -> None:
        got.append((call_sid, action, by))
        arrived.set()

    await cluster_client.hset(keys.call(sid), mapping={"instance_id": "inst-a", "ended_at": "null"})
    await instances.heartbeat(cluster_client, keys, "inst-a", started_at=time.time(), now=time.time())
    listener = CommandListener(cluster_client, keys, "inst-a", handler)
    listener.start()
    try:
        await listener.wait_connected(10)
        result = await send_command(cluster_client, keys, sid, "hangup", "alice")
        assert result.delivered
        await asyncio.wait_for(arrived.wait(), 10)
        assert got == [(sid, "hangup", "alice")]
    finally:
        await listener.stop()
    result = await send_command(cluster_client, keys, sid, "hangup", "alice")
    assert not result.delivered


async def test_operators_and_sessions_on_the_cluster(
    cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """Operators, tokens and sessions are global keys: their scripts and transactions stay in one slot."""
    operators = OperatorStore(cluster_client, cluster_keys)
    token = await operators.add("bea", "approver")
    operator = await operators.by_token(token)
    assert operator is not None and operator.name == "bea" and operator.can_decide
    session = await operators.open_session(operator)
    reopened = await operators.session(session.id)
    assert reopened is not None and reopened.operator.name == "bea"
    assert [o.name for o in await operators.list()] == ["bea"]
    assert await operators.remove("bea") is True
    assert await operators.by_token(token) is None and await operators.session(session.id) is None
    assert [k async for k in cluster_client.scan_iter(match=cluster_keys.prefix + "*")] == []


async def test_datasets_load_and_look_up_on_the_cluster(
    tmp_path: Path, valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    flows = _flows_with_lookup(tmp_path)
    reports = await load_missing(cluster_client, cluster_keys, flows)
    assert [(r.dataset, r.records) for r in reports] == [("patients", 2)]
    node = valkey_cluster.port_for_key(cluster_keys.dataset_meta("patients"))
    with valkey_cluster.node(node, decode_responses=True) as direct:  # all of the dataset on its tag's node
        assert direct.hgetall(cluster_keys.dataset_record("patients", "13125550101")) == {
            "first_name": "Maria"
        }
    flow = next(iter(flows))
    ctx = ToolContext(
        call_sid="CA1", flow=flow, call=_NoCall(), caller_number="+1", redis=cluster_client, keys=cluster_keys
    )
    outcome = await registry_for_flow(flow).dispatch(
        "find_patient", json.dumps({"key": "+1 312-555-0102"}), "fc1", ctx
    )
    assert json.loads(outcome.output) == {"found": True, "first_name": "James"}
    assert await load_missing(cluster_client, cluster_keys, flows) == []  # already there: untouched


class _NoCall:
    """A call control for a tool that never touches the call (the lookup tool)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the lookup tool must not use the call ({name})")


PATIENTS = "phone,first_name\n+1 312-555-0101,Maria\n+1 312-555-0102,James\n"
LOOKUP_TOOL = """\
  - type: lookup
    name: find_patient
    description: "Find a patient by phone number."
    dataset: patients
    source: data/patients.csv
    key_field: phone
    normalize: phone
    fields: [first_name]
"""


def _flows_with_lookup(folder: Path) -> FlowSet:
    """The test clinic's flow plus a lookup tool (in the reception stage) over a small patients file."""
    text = (CLINIC / "clinic.yaml").read_text(encoding="utf-8")
    text = text.replace("tools:\n", "tools:\n" + LOOKUP_TOOL, 1)
    text = text.replace("    tools: [end_call]\n", "    tools: [end_call, find_patient]\n", 1)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    (folder / "clinic.yaml").write_text(text, encoding="utf-8")
    return FlowSet.load(folder)


# --- the whole call path through the app ------------------------------------------------------------------


def _tomorrow_10() -> str:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return f"{day.isoformat()}T10:00"


def _outputs(session: FakeSession) -> list[dict[str, Any]]:
    return [
        e
        for e in session.received
        if e["type"] == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]


async def _output_of(session: FakeSession, index: int) -> dict[str, Any]:
    await session.wait_for("conversation.item.create", lambda _e: len(_outputs(session)) > index)
    return json.loads(_outputs(session)[index]["item"]["output"])


class _Feed:
    """The call's live event feed (the caller's ``on_event``), awaitable by predicate."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        self.items.append(event)
        self._changed.set()

    async def said(self, role: str, text: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(
                e["type"] == "transcript" and e["role"] == role and e["text"] == text for e in self.items
            ):
                self._changed.clear()
                await self._changed.wait()

    def lines(self) -> list[tuple[str, str]]:
        return [(e["role"], e["text"]) for e in self.items if e["type"] == "transcript"]


async def _turn(session: FakeSession, feed: _Feed, caller: str, agent: str) -> None:
    await session.speech_started()
    await session.speech_stopped()
    await session.user_said(caller)
    await feed.said("caller", caller)
    await session.respond(Reply(text=agent, audio_ms=100))
    await session.wait_response_done()
    await feed.said("agent", agent)


@pytest.mark.slow
async def test_a_whole_call_on_the_cluster(
    tmp_path: Path,
    fake_realtime: FakeRealtimeServer,
    fake_twilio_rest: FakeTwilioRest,
    valkey_cluster: ValkeyCluster,
    cluster_keys: KeySchema,
    cluster_client: aioredis.Redis,
) -> None:
    """A call on a ``redis+cluster://`` URL through the real app: the dataset loaded at start-up answers a
    lookup, transcript lines and events land once and in order (also in the global stream), a booking waits
    for the front desk, is approved through the operator API and runs once, the console reads the call and
    its history, and the operator's hang-up from the console reaches the instance by a sharded message."""
    fake_realtime.default_replies = [GREETING]
    _flows_with_lookup(tmp_path)
    keys = cluster_keys
    feed = _Feed()
    async with (
        app_for(
            fake_realtime,
            fake_twilio_rest,
            flows_dir=tmp_path,
            redis_url=valkey_cluster.url,
            redis_prefix=keys.prefix,
            instance_id="cluster-a",
        ) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http,
    ):
        services = server.state.services
        assert is_cluster(services.redis) and services.keys == keys
        live = await place_call(server, to_number="+15550100004", on_event=feed)
        sid = live.call.call_sid
        session = await fake_realtime.next_session()
        await feed.said("agent", "Hello, clinic.")
        for n in range(3):
            await _turn(session, feed, f"Caller line {n}.", f"Agent line {n}.")

        await session.respond(Reply(function_call=("find_patient", {"key": "+1 312-555-0101"})))
        assert await _output_of(session, 0) == {"found": True, "first_name": "Maria"}
        await session.wait_response_done()
        await session.wait_response_done()

        await session.respond(Reply(function_call=("start_booking", {"reason": "check-up"})))
        await session.wait_for("session.update", lambda e: "Book the appointment" in json.dumps(e))
        await session.wait_response_done()
        await session.wait_response_done()
        book = {"action": "book", "service": "checkup", "start": _tomorrow_10(), "name": "Ada Lovelace"}
        await session.respond(Reply(function_call=("appointments", book)))
        pending = await _output_of(session, 2)
        assert pending["status"] == "pending_approval"
        await session.wait_response_done()
        await session.wait_response_done()
        listing = (await http.get("/api/approvals")).json()["approvals"]
        assert [a["id"] for a in listing if a["call_sid"] == sid] == [pending["approval_id"]]
        decided = await http.post(f"/api/approvals/{pending['approval_id']}", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        news = await session.wait_for(
            "conversation.item.create",
            lambda e: e["item"].get("role") == "system" and "approved" in json.dumps(e),
            timeout=15.0,
        )
        assert "booked" in news["item"]["content"][0]["text"]
        for n in range(3, 5):
            await _turn(session, feed, f"Caller line {n}.", f"Agent line {n}.")

        # The console reads the live call from the cluster.
        writer = services.writer
        assert writer is not None and await writer.flush(10)
        calls = (await http.get("/api/calls")).json()
        assert calls["active_everywhere"] == [sid]
        assert (await http.get(f"/api/calls/{sid}")).json()["call_sid"] == sid
        board = await http.get("/ops/")
        assert board.status_code == 200 and sid in board.text
        assert services.commands is not None
        await services.commands.wait_connected(10)
        await services.calls.heartbeat(services.instance_stats())  # type: ignore[union-attr]
        hangup = await http.post(f"/ops/calls/{sid}/hangup")
        assert hangup.status_code == 200, hangup.text
        update = await fake_twilio_rest.wait_for_update(lambda u: u.call_sid == sid, timeout=10)
        assert update.status == "completed"
        result = await live.result()
        assert result.ended_by == "server"
        assert await writer.flush(10)
        assert writer.counters()["failed"] == 0 and writer.counters()["dropped"] == 0

        detail = (await http.get(f"/api/calls/{sid}")).json()  # from Redis now: the call has ended here
        assert detail["outcome"] == "operator-hangup"
        stored = [(line["role"], line["text"]) for line in detail["transcript"]]
        history = await http.get("/ops/history", params={"outcome": "operator-hangup"})
        assert history.status_code == 200 and sid in history.text
        page = await http.get(f"/ops/calls/{sid}")
        assert page.status_code == 200 and "operator-hangup" in page.text
        replay = await http.get(f"/api/calls/{sid}/events")  # followed from the call's stream in Redis
        assert replay.status_code == 200
        kinds = [line[len("event: ") :] for line in replay.text.splitlines() if line.startswith("event: ")]
        assert kinds[0] == "call.started" and kinds[-1] == "call.ended" and kinds.count("call.ended") == 1

    assert stored == feed.lines()  # every line once, in order, as the live feed showed it
    caller = [text for role, text in stored if role == "caller"]
    assert caller == [f"Caller line {n}." for n in range(5)]
    call_events = await cluster_client.xrange(keys.call_events(sid))
    types = [f["type"] for _, f in call_events]
    assert types[0] == "call.started" and types.count("call.ended") == 1 and types.count("call.started") == 1
    assert "operator.action" in types and types.count("tool.called") >= 3
    copies = [f for _, f in await cluster_client.xrange(keys.events()) if f.get("call_sid") == sid]
    store_copies = [f for f in copies if "event_id" in f]
    assert [f["event_id"] for f in store_copies] == [entry_id for entry_id, _ in call_events]
    assert [f["type"] for f in store_copies] == types
    audit = [f["action"] for _, f in await cluster_client.xrange(keys.approvals_audit())]
    assert audit == ["requested", "approved", "executed"]
    assert await cluster_client.zcard(keys.calendar_bookings("test-clinic")) == 1
    nodes = {
        valkey_cluster.port_for_key(k) for k in (keys.call(sid), keys.events(), keys.dataset_meta("patients"))
    }
    print(f"\ncall, global and dataset keys on {len(nodes)} of the 3 primaries")


@pytest.mark.slow
async def test_the_writer_retries_the_writes_of_a_killed_primary(caplog: pytest.LogCaptureFixture) -> None:
    """A primary is SIGKILLed while the writer sends a call's lines: the writes it did not take come back as
    connection errors (per command, not raised), are queued again and land once it is back — every line and
    event once, in order; nothing dropped or failed."""
    cluster = ValkeyCluster(durable=True)  # what a node acknowledged is there when it comes back
    await asyncio.to_thread(cluster.start)
    client = open_redis(cluster.url, socket_timeout=2.0, socket_connect_timeout=1.0)
    keys = KeySchema(f"ivr-test-{secrets.token_hex(4)}:", hash_tags=True)
    try:
        victim_sid = _sid_apart(cluster, keys)
        victim = cluster.port_for_key(keys.call(victim_sid))
        candidates = (f"CA{secrets.token_hex(16)}" for _ in range(1000))
        other_sid = next(sid for sid in candidates if cluster.port_for_key(keys.call(sid)) != victim)
        store, writer = await _store(client, keys, "inst-a")
        try:
            lines = [f"Line {n}." for n in range(400)]

            def say(n: int) -> None:
                for sid in (victim_sid, other_sid):
                    store.transcript(sid, "caller", lines[n])
                    if n % 50 == 0:
                        store.event(sid, "stage.changed", {"n": n})

            for sid in (victim_sid, other_sid):
                store.call_started({"call_sid": sid, "flow_id": "clinic"})
            for n in range(100):  # acknowledged before the kill (durable: still there after the restart)
                say(n)
            assert await writer.flush(10)
            before = writer.written
            killing = asyncio.create_task(asyncio.to_thread(cluster.kill, victim))
            for n in range(100, 400):
                say(n)
                if n % 10 == 0:
                    await asyncio.sleep(0.002)  # pacing: batches keep going out while the node dies
            await killing
            assert await writer.wait_until(lambda w: w.retries > 0 and w.redis_down, 30), writer.counters()
            assert writer.pending > 0
            down = writer.counters()
            restart_s = await asyncio.to_thread(cluster.restart, victim)
            assert await writer.flush(60), writer.counters()
            counters = writer.counters()
            print(
                f"\nprimary killed mid-call: {down['written'] - before} write(s) of the second half went "
                f"through before it was seen down, {down['pending']} pending while it was down, "
                f"{counters['retries']} retries; it rejoined in {restart_s:.2f} s; "
                f"written {counters['written']}"
            )
            assert counters["failed"] == 0 and counters["dropped"] == 0, counters
            # The dead node's writes came back as per-command errors (not raised) and were queued again.
            refused = [r.getMessage() for r in caplog.records if "Redis refused write" in r.getMessage()]
            assert refused and ("ConnectionError" in refused[0] or "ClusterDown" in refused[0]), refused
            for sid in (victim_sid, other_sid):
                stored = [f["text"] for _, f in await client.xrange(keys.transcript(sid))]
                assert stored == lines, (sid, len(stored))
                types = [f["type"] for _, f in await client.xrange(keys.call_events(sid))]
                assert types == ["call.started"] + ["stage.changed"] * 8
                copies = [f["type"] for _, f in await client.xrange(keys.events()) if f["call_sid"] == sid]
                assert copies == types
        finally:
            await writer.stop()
    finally:
        await client.aclose()
        await asyncio.to_thread(cluster.stop)


async def test_ivr_data_load_writes_the_tagged_keys_on_the_cluster(
    tmp_path: Path, valkey_cluster: ValkeyCluster, cluster_client: aioredis.Redis, cluster_keys: KeySchema
) -> None:
    """`ivr data load` with a Cluster REDIS_URL uses the tagged key schema the app reads."""
    _flows_with_lookup(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    settings = Settings(redis_url=valkey_cluster.url, redis_prefix=cluster_keys.prefix)
    assert await data_cli.load_all(tmp_path, None, settings, out=out, err=err) == 0, err.getvalue()
    record = await cluster_client.hgetall(cluster_keys.dataset_record("patients", "13125550102"))
    assert record == {"first_name": "James"}
