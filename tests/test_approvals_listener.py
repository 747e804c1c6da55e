"""ApprovalListener against a real Redis: decisions from another connection arrive fast, deadlines expire,
and a Redis restart does not lose a decision."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from ivr.approvals.listener import ApprovalListener
from ivr.approvals.store import Approval, ApprovalNotFound, ApprovalStore
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys, embedded_redis.

LATENCY_SAMPLES = 50


@pytest.fixture
async def listener(redis_client: aioredis.Redis, redis_keys: KeySchema) -> AsyncIterator[ApprovalListener]:
    listener = ApprovalListener(redis_client, redis_keys)
    listener.start()
    await listener.wait_connected(timeout=5)
    try:
        yield listener
    finally:
        await listener.stop()


@pytest.fixture
async def operator_store(redis_url: str, redis_keys: KeySchema) -> AsyncIterator[ApprovalStore]:
    """A store on a separate connection, as an operator's CLI or another instance would have."""
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield ApprovalStore(other, redis_keys)
    finally:
        await other.aclose()


async def make(store: ApprovalStore, n: int = 0, **changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "call_sid": "CA0001",
        "instance_id": "inst-a",
        "flow_id": "shop",
        "tool": "refund",
        "call_id": f"call_{n}",
        "arguments": {"amount": 150 + n},
        "reason": "big refund",
        "timeout_s": 60.0,
    }
    fields.update(changes)
    return await store.request(**fields)


async def test_decision_from_another_connection_arrives_within_a_second(
    listener: ApprovalListener, operator_store: ApprovalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    latencies: list[float] = []
    for n in range(LATENCY_SAMPLES):
        approval = await make(listener.store, n)
        resolved_at: list[float] = []
        waiter = asyncio.create_task(listener.wait(approval.id, approval.deadline))
        waiter.add_done_callback(lambda _t, box=resolved_at: box.append(time.perf_counter()))
        assert approval.id in listener.awaited  # registered when wait() is called
        # Let the waiter finish its first read of the record, so the decision travels by pub/sub.
        await listener.wait_until(lambda state, n=n: state.initial_checks > n, timeout=5)
        started = time.perf_counter()
        await operator_store.decide(approval.id, approve=n % 2 == 0, operator="alice")
        result = await asyncio.wait_for(waiter, 5)
        latencies.append(resolved_at[0] - started)
        assert result.status == ("approved" if n % 2 == 0 else "denied")
        assert result.decided_by == "alice"
    assert max(latencies) < 1.0
    assert listener.delivered_by_message == LATENCY_SAMPLES
    assert listener.delivered_by_check == 0
    with capsys.disabled():
        ms = sorted(x * 1000 for x in latencies)
        print(
            f"\n[approval decision → waiter] n={len(ms)} median={statistics.median(ms):.2f} ms "
            f"p95={ms[int(0.95 * len(ms)) - 1]:.2f} ms max={ms[-1]:.2f} ms"
        )


async def test_decision_made_before_the_listener_subscribed_is_found(
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
    operator_store: ApprovalStore,
) -> None:
    approval = await make(operator_store)
    await operator_store.decide(approval.id, approve=True, operator="bob")  # published to nobody
    listener = ApprovalListener(redis_client, redis_keys)
    listener.start()
    try:
        result = await asyncio.wait_for(listener.wait(approval.id, approval.deadline), 5)
    finally:
        await listener.stop()
    assert result.status == "approved" and result.decided_by == "bob"
    assert listener.delivered_by_check == 1 and listener.delivered_by_message == 0
    assert listener.awaited == frozenset()


async def test_deadline_expires_the_request(listener: ApprovalListener) -> None:
    approval = await make(listener.store, timeout_s=0.3)
    started = time.monotonic()
    result = await asyncio.wait_for(listener.wait(approval.id, approval.deadline), 5)
    elapsed = time.monotonic() - started
    assert result.status == "expired" and result.decided_by == "timeout"
    assert 0.2 <= elapsed < 2.0
    assert (await listener.store.get(approval.id)) == result


async def test_a_decision_that_beats_the_expiry_wins(
    listener: ApprovalListener, operator_store: ApprovalStore
) -> None:
    approval = await make(listener.store)
    await operator_store.decide(approval.id, approve=True, operator="carol")
    # The waiter's own deadline has already passed: it tries to expire, is refused, returns the decision.
    result = await listener.wait(approval.id, time.time() - 1)
    assert result.status == "approved" and result.decided_by == "carol"


async def test_several_waiters_and_malformed_messages(
    listener: ApprovalListener,
    operator_store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    approval = await make(listener.store)
    waiters = [asyncio.create_task(listener.wait(approval.id, approval.deadline)) for _ in range(3)]
    for junk in ("not json", '{"no_id": 1}', "[1, 2]", '{"id": 5}'):
        await redis_client.publish(redis_keys.approval_channel(), junk)
    await operator_store.decide(approval.id, approve=False, operator="dave", note="no")
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert {r.status for r in results} == {"denied"}
    assert listener.awaited == frozenset()


async def test_wait_requires_start(redis_client: aioredis.Redis, redis_keys: KeySchema) -> None:
    idle = ApprovalListener(redis_client, redis_keys)
    with pytest.raises(RuntimeError, match="start"):
        idle.wait("ap_0000000000000000", time.time() + 1)


async def test_unknown_id_at_the_deadline(listener: ApprovalListener) -> None:
    with pytest.raises(ApprovalNotFound):
        await listener.wait("ap_0000000000000000", time.time() + 0.05)


def _snapshot(url: str, keys: list[str]) -> dict[str, tuple[bytes, int]]:
    with redis.Redis.from_url(url) as raw:
        return {key: (raw.dump(key), raw.pttl(key)) for key in keys}  # type: ignore[misc]


def _restore(url: str, snapshot: dict[str, tuple[bytes, int]]) -> None:
    """Put keys back after a restart, as a Redis with persistence (RDB/AOF) would have them."""
    with redis.Redis.from_url(url) as raw:
        for key, (payload, pttl) in snapshot.items():
            raw.restore(key, max(0, pttl), payload, replace=True)


@pytest.mark.parametrize("resubscribed_first", [True, False], ids=["after-resubscribe", "at-once"])
async def test_listener_survives_a_redis_restart(
    embedded_redis: EmbeddedRedis,
    resubscribed_first: bool,
) -> None:
    keys = KeySchema("ivr-restart:")
    redis_client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    operator = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    listener = ApprovalListener(redis_client, keys)
    listener.start()
    try:
        await listener.wait_connected(timeout=5)
        approval = await make(listener.store)
        waiter = asyncio.create_task(listener.wait(approval.id, approval.deadline, fallback=approval))
        snapshot = _snapshot(embedded_redis.url, [keys.approval(approval.id), keys.approvals_pending()])

        await asyncio.to_thread(embedded_redis.restart)
        await asyncio.to_thread(_restore, embedded_redis.url, snapshot)
        if resubscribed_first:
            await listener.wait_until(lambda state: state.subscriptions >= 2, timeout=10)
        # Otherwise decide at once: the publish may land before the listener is back, and be lost; the
        # re-read after resubscribing must still deliver it.
        await ApprovalStore(operator, keys).decide(approval.id, approve=True, operator="erin")
        result = await asyncio.wait_for(waiter, 10)
        assert result.status == "approved" and result.decided_by == "erin"
        assert listener.subscriptions >= 2
        assert listener.delivered_by_message + listener.delivered_by_check == 1
        # The listener keeps working after the outage.
        second = await make(listener.store, 1)
        waiter2 = asyncio.create_task(listener.wait(second.id, second.deadline))
        await ApprovalStore(operator, keys).decide(second.id, approve=False, operator="erin")
        assert (await asyncio.wait_for(waiter2, 5)).status == "denied"
    finally:
        await listener.stop()
        await redis_client.aclose()
        await operator.aclose()


async def test_record_lost_in_a_restart_fails_closed_at_the_deadline(
    embedded_redis: EmbeddedRedis,
) -> None:
    keys = KeySchema("ivr-restart:")
    redis_client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    listener = ApprovalListener(redis_client, keys)
    listener.start()
    try:
        await listener.wait_connected(timeout=5)
        approval = await make(listener.store, timeout_s=1.0)
        waiter = asyncio.create_task(listener.wait(approval.id, approval.deadline, fallback=approval))
        await asyncio.to_thread(embedded_redis.restart)  # no persistence: the record is gone
        result = await asyncio.wait_for(waiter, 10)
        assert result.status == "expired" and result.id == approval.id
        assert result.arguments == approval.arguments
    finally:
        await listener.stop()
        await redis_client.aclose()


async def test_a_lost_message_is_recovered_by_the_reread_after_resubscribing(
    embedded_redis: EmbeddedRedis,
) -> None:
    """Store a decision without its pub/sub message (as if published during an outage), then drop the
    listener's connection: the re-read after it resubscribes must deliver the decision."""
    keys = KeySchema("ivr-lost:")
    redis_client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    listener = ApprovalListener(redis_client, keys)
    listener.start()
    try:
        await listener.wait_connected(timeout=5)
        approval = await make(listener.store)
        waiter = asyncio.create_task(listener.wait(approval.id, approval.deadline))
        await listener.wait_until(lambda state: state.initial_checks >= 1, timeout=5)
        await redis_client.hset(
            keys.approval(approval.id),
            mapping={"status": "approved", "decided_by": "frank", "decided_at": repr(time.time())},
        )
        assert not waiter.done()
        killed = await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed == 1
        result = await asyncio.wait_for(waiter, 10)
        assert result.status == "approved" and result.decided_by == "frank"
        assert listener.delivered_by_check == 1 and listener.delivered_by_message == 0
        assert listener.subscriptions >= 2
    finally:
        await listener.stop()
        await redis_client.aclose()
