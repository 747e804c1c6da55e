"""ApprovalStore against a real Redis: dedup, decide-once under concurrency, expiry, audit, retention."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.approvals.store import (
    Approval,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalStore,
    arguments_digest,
)
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys, embedded_redis.

RETENTION_S = 7 * 86400.0


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_keys: KeySchema) -> ApprovalStore:
    return ApprovalStore(redis_client, redis_keys, retention_s=RETENTION_S)


async def make(store: ApprovalStore, **changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "call_sid": "CA0001",
        "instance_id": "inst-a",
        "flow_id": "dental",
        "tool": "refund",
        "call_id": "call_1",
        "arguments": {"amount": 150, "currency": "USD"},
        "reason": "Refunds over $100 need a manager",
        "timeout_s": 60.0,
    }
    fields.update(changes)
    return await store.request(**fields)


async def test_request_stores_the_record_indexes_and_events(
    store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    before = time.time()
    approval = await make(store)
    assert approval.id.startswith("ap_") and len(approval.id) == 3 + 16
    assert approval.status == "pending"
    assert approval.arguments == {"amount": 150, "currency": "USD"}
    assert approval.digest == arguments_digest("refund", {"currency": "USD", "amount": 150})
    assert before - 1 <= approval.created_at <= time.time() + 1  # the server's clock
    assert approval.deadline == pytest.approx(approval.created_at + 60.0)
    assert approval.decided_by is None and approval.decided_at is None and approval.note is None
    assert await store.get(approval.id) == approval

    pending = await redis_client.zrange(redis_keys.approvals_pending(), 0, -1, withscores=True)
    assert pending == [(approval.id, pytest.approx(approval.deadline))]
    assert await redis_client.smembers(redis_keys.call_approvals("CA0001")) == {approval.id}
    ttl = await redis_client.ttl(redis_keys.approval(approval.id))
    assert RETENTION_S < ttl <= RETENTION_S + 60  # pending records still expire eventually

    [(_, audit)] = await redis_client.xrange(redis_keys.approvals_audit())
    assert audit["action"] == "requested" and audit["approval_id"] == approval.id
    assert json.loads(audit["arguments"]) == approval.arguments
    [(_, event)] = await redis_client.xrange(redis_keys.events())
    assert event["type"] == "approval.requested" and event["call_sid"] == "CA0001"
    data = json.loads(event["data"])
    assert data["id"] == approval.id and data["tool"] == "refund"


async def test_same_pending_request_is_not_duplicated(store: ApprovalStore) -> None:
    first = await make(store, call_id="call_1")
    again = await make(store, call_id="call_2", arguments={"currency": "USD", "amount": 150})
    assert again.id == first.id
    assert again.call_id == "call_1"  # the original request, untouched
    other_args = await make(store, arguments={"amount": 151, "currency": "USD"})
    other_call = await make(store, call_sid="CA0002")
    other_tool = await make(store, tool="refund_all")
    assert len({first.id, other_args.id, other_call.id, other_tool.id}) == 4
    assert [a.id for a in await store.for_call("CA0001")] == [first.id, other_args.id, other_tool.id]


async def test_concurrent_identical_requests_create_one(store: ApprovalStore) -> None:
    results = await asyncio.gather(*(make(store, call_id=f"call_{i}") for i in range(20)))
    assert len({r.id for r in results}) == 1
    assert len(await store.pending()) == 1


async def test_a_decided_request_is_not_reused_by_request(store: ApprovalStore) -> None:
    first = await make(store)
    await store.decide(first.id, approve=False, operator="alice")
    second = await make(store)
    assert second.id != first.id and second.status == "pending"


async def test_decide_records_who_when_and_why_once(
    store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    approval = await make(store)
    decided = await store.decide(approval.id, approve=True, operator="alice", note="customer is a VIP")
    assert decided.status == "approved"
    assert decided.decided_by == "alice"
    assert decided.note == "customer is a VIP"
    assert decided.decided_at is not None and decided.decided_at >= approval.created_at
    assert await store.get(approval.id) == decided
    assert await store.pending() == []
    ttl = await redis_client.ttl(redis_keys.approval(approval.id))
    assert RETENTION_S - 5 < ttl <= RETENTION_S

    with pytest.raises(ApprovalAlreadyDecided, match="already approved by alice") as info:
        await store.decide(approval.id, approve=False, operator="bob")
    assert info.value.status == "approved" and info.value.approval.decided_by == "alice"
    with pytest.raises(ApprovalAlreadyDecided):
        await store.expire(approval.id)
    assert (await store.get(approval.id)) == decided

    audit = [fields for _, fields in await redis_client.xrange(redis_keys.approvals_audit())]
    assert [a["action"] for a in audit] == ["requested", "approved"]
    assert audit[1]["by"] == "alice" and audit[1]["note"] == "customer is a VIP"
    assert json.loads(audit[1]["arguments"]) == {"amount": 150, "currency": "USD"}
    events = [fields for _, fields in await redis_client.xrange(redis_keys.events())]
    assert [e["type"] for e in events] == ["approval.requested", "approval.decided"]
    assert json.loads(events[1]["data"])["status"] == "approved"


async def test_twenty_concurrent_decisions_exactly_one_wins(
    store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    approval = await make(store)
    outcomes = await asyncio.gather(
        *(store.decide(approval.id, approve=i % 2 == 0, operator=f"op{i}", note=f"n{i}") for i in range(20)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, Approval)]
    losers = [o for o in outcomes if isinstance(o, ApprovalAlreadyDecided)]
    assert len(winners) == 1 and len(losers) == 19
    stored = await store.get(approval.id)
    assert stored == winners[0]
    assert all(loser.approval == stored for loser in losers)  # every loser is told who won
    decisions = [
        f for _, f in await redis_client.xrange(redis_keys.approvals_audit()) if f["action"] != "requested"
    ]
    assert len(decisions) == 1 and decisions[0]["by"] == stored.decided_by


async def test_decide_after_the_deadline_expires_the_request(
    store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    approval = await make(store, timeout_s=30.0)
    with pytest.raises(ApprovalExpired) as info:
        await store.decide(approval.id, approve=True, operator="alice", now=approval.deadline + 0.001)
    expired = info.value.approval
    assert expired.status == "expired" and expired.decided_by == "timeout"
    assert await store.get(approval.id) == expired
    assert await store.pending() == []
    with pytest.raises(ApprovalAlreadyDecided, match="expired"):
        await store.decide(approval.id, approve=True, operator="alice", now=approval.created_at)
    # At the deadline exactly, a decision still counts.
    second = await make(store, arguments={"amount": 999})
    decided = await store.decide(second.id, approve=False, operator="bob", now=second.deadline)
    assert decided.status == "denied"


async def test_expire_closes_a_pending_request_and_publishes(
    store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    approval = await make(store)
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(redis_keys.approval_channel())
        confirmation = await pubsub.get_message(timeout=5)
        assert confirmation is not None and confirmation["type"] == "subscribe"
        expired = await store.expire(approval.id)
        message = await pubsub.get_message(timeout=5)
    assert expired.status == "expired" and expired.decided_by == "timeout"
    assert expired.note == "no decision before the deadline"
    assert message is not None
    assert json.loads(message["data"]) == {
        "id": approval.id,
        "call_sid": "CA0001",
        "instance_id": "inst-a",
        "status": "expired",
    }
    with pytest.raises(ApprovalAlreadyDecided):
        await store.expire(approval.id)


async def test_unknown_ids_and_bad_input(store: ApprovalStore) -> None:
    with pytest.raises(ApprovalNotFound, match="ivr approvals list"):
        await store.decide("ap_0000000000000000", approve=True, operator="alice")
    with pytest.raises(ApprovalNotFound):
        await store.expire("ap_0000000000000000")
    assert await store.get("ap_0000000000000000") is None
    assert await store.claim("ap_0000000000000000") is False
    approval = await make(store)
    with pytest.raises(ValueError, match="operator"):
        await store.decide(approval.id, approve=True, operator="  ")
    with pytest.raises(ValueError, match="reserved"):
        await store.decide(approval.id, approve=True, operator="timeout")
    with pytest.raises(ValueError, match="timeout_s"):
        await make(store, timeout_s=0.0)
    with pytest.raises(TypeError, match="JSON object"):
        await make(store, arguments=[1, 2])
    assert (await store.get(approval.id)).status == "pending"  # type: ignore[union-attr]


async def test_claim_only_once_and_only_when_approved(store: ApprovalStore) -> None:
    approval = await make(store)
    assert await store.claim(approval.id) is False  # pending
    await store.decide(approval.id, approve=True, operator="alice")
    results = await asyncio.gather(*(store.claim(approval.id) for _ in range(10)))
    assert results.count(True) == 1
    stored = await store.get(approval.id)
    assert stored is not None and stored.claimed_at is not None
    assert stored.executed_at is None  # taken to run; "executed" waits for the outcome
    assert await store.record_execution(approval.id, ok=True) is True
    assert await store.record_execution(approval.id, ok=False, error_type="x") is False  # once
    stored = await store.get(approval.id)
    assert stored is not None and stored.executed_at is not None and stored.outcome == "ok"
    denied = await make(store, arguments={"amount": 1})
    await store.decide(denied.id, approve=False, operator="alice")
    assert await store.claim(denied.id) is False
    assert await store.record_execution(denied.id, ok=True) is False  # never claimed: nothing ran


async def test_pending_is_ordered_by_deadline_and_skips_vanished_records(
    store: ApprovalStore,
    redis_client: aioredis.Redis,
    redis_keys: KeySchema,
) -> None:
    late = await make(store, arguments={"n": 1}, timeout_s=300.0)
    soon = await make(store, arguments={"n": 2}, timeout_s=10.0)
    middle = await make(store, arguments={"n": 3}, timeout_s=100.0)
    assert [a.id for a in await store.pending()] == [soon.id, middle.id, late.id]
    await redis_client.delete(redis_keys.approval(middle.id))
    assert [a.id for a in await store.pending()] == [soon.id, late.id]
    assert await redis_client.zscore(redis_keys.approvals_pending(), middle.id) is None  # index cleaned


async def test_expire_overdue_closes_only_past_deadlines(store: ApprovalStore) -> None:
    old = await make(store, arguments={"n": 1}, timeout_s=10.0, now=time.time() - 60)
    fresh = await make(store, arguments={"n": 2}, timeout_s=60.0)
    expired = await store.expire_overdue()
    assert [a.id for a in expired] == [old.id]
    assert [a.id for a in await store.pending()] == [fresh.id]


async def test_records_survive_a_second_store_on_another_connection(
    store: ApprovalStore,
    redis_url: str,
    redis_keys: KeySchema,
) -> None:
    approval = await make(store, arguments={"nested": {"ünï": ["cödé", 1.5, None, True]}})
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        seen = await ApprovalStore(other, redis_keys).get(approval.id)
    finally:
        await other.aclose()
    assert seen == approval
