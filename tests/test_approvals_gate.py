"""ApprovalGate against a real Redis: a model cannot retry, re-word or race its way past a human."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.approvals.gate import ApprovalGate, GateDecision
from ivr.approvals.listener import ApprovalListener
from ivr.approvals.policy import ApprovalPolicy
from ivr.approvals.store import ApprovalStore
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys, embedded_redis.

ALWAYS = ApprovalPolicy(required="always", reason="Refunds need a manager", timeout_s=60)
OVER_100 = ApprovalPolicy(required="when", when="amount > 100", reason="Refunds over $100", timeout_s=60)


@pytest.fixture
async def gate(redis_client: aioredis.Redis, redis_keys: KeySchema) -> AsyncIterator[ApprovalGate]:
    store = ApprovalStore(redis_client, redis_keys)
    listener = ApprovalListener(redis_client, redis_keys, store=store)
    listener.start()
    await listener.wait_connected(timeout=5)
    try:
        yield ApprovalGate(store, listener, instance_id="inst-a")
    finally:
        await listener.stop()


@pytest.fixture
async def operator(redis_url: str, redis_keys: KeySchema) -> AsyncIterator[ApprovalStore]:
    """The operator's side: its own connection, as `ivr approvals` or another instance would have."""
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield ApprovalStore(other, redis_keys)
    finally:
        await other.aclose()


async def check(
    gate: ApprovalGate, arguments: dict[str, Any], *, policy: ApprovalPolicy = ALWAYS, call_id: str = "fc_1"
) -> GateDecision:
    return await gate.check(
        call_sid="CA0001", flow_id="shop", tool="refund", call_id=call_id, policy=policy, arguments=arguments
    )


async def test_ungated_calls_run_without_touching_redis(gate: ApprovalGate) -> None:
    decision = await check(gate, {"amount": 50}, policy=OVER_100)
    assert decision == GateDecision("run", None, "")
    assert decision.arguments({"amount": 50}) == {"amount": 50}
    assert await gate.store.for_call("CA0001") == []


async def test_gated_call_is_pending_and_repeats_do_not_duplicate(gate: ApprovalGate) -> None:
    first = await check(gate, {"amount": 150}, policy=OVER_100)
    assert first.kind == "pending" and first.approval is not None
    assert "needs a person's approval (Refunds over $100)" in first.message
    assert "hold on" in first.message
    assert first.as_output() == {
        "status": "pending_approval",
        "message": first.message,
        "approval_id": first.approval.id,
    }
    repeats = await asyncio.gather(*(check(gate, {"amount": 150}, call_id=f"fc_{i}") for i in range(5)))
    assert {r.kind for r in repeats} == {"pending"}
    assert {r.approval.id for r in repeats if r.approval} == {first.approval.id}
    assert len(await gate.store.for_call("CA0001")) == 1


async def test_denied_stays_denied_for_the_same_arguments(
    gate: ApprovalGate, operator: ApprovalStore
) -> None:
    pending = await check(gate, {"amount": 500, "order": "A1"})
    assert pending.approval is not None
    await operator.decide(pending.approval.id, approve=False, operator="alice", note="fraud suspected")
    for attempt in range(3):
        again = await check(gate, {"order": "A1", "amount": 500}, call_id=f"fc_retry_{attempt}")
        assert again.kind == "denied"
        assert again.approval is not None and again.approval.id == pending.approval.id
        assert "fraud suspected" in again.message and "refused again" in again.message
    assert len(await gate.store.for_call("CA0001")) == 1  # no new request to sneak past a busy operator


async def test_changed_arguments_make_a_new_request(gate: ApprovalGate, operator: ApprovalStore) -> None:
    pending = await check(gate, {"amount": 500})
    assert pending.approval is not None
    await operator.decide(pending.approval.id, approve=False, operator="alice")
    changed = await check(gate, {"amount": 499})
    assert changed.kind == "pending"
    assert changed.approval is not None and changed.approval.id != pending.approval.id
    assert changed.approval.arguments == {"amount": 499}


async def test_expired_stays_denied(gate: ApprovalGate, operator: ApprovalStore) -> None:
    pending = await check(gate, {"amount": 700})
    assert pending.approval is not None
    await operator.expire(pending.approval.id)
    again = await check(gate, {"amount": 700})
    assert again.kind == "denied" and "no operator approved this action within 60 seconds" in again.message


async def test_approved_runs_exactly_once(gate: ApprovalGate, operator: ApprovalStore) -> None:
    pending = await check(gate, {"amount": 300})
    assert pending.approval is not None
    await operator.decide(pending.approval.id, approve=True, operator="alice")
    # Ten racing tool calls for the same approved action: exactly one runs.
    racers = await asyncio.gather(*(check(gate, {"amount": 300}, call_id=f"fc_{i}") for i in range(10)))
    runs = [r for r in racers if r.kind == "run"]
    assert len(runs) == 1
    assert runs[0].approval is not None and runs[0].approval.id == pending.approval.id
    assert runs[0].arguments({"amount": 1}) == {"amount": 300}  # the stored arguments, not the model's
    # The others now wait on one fresh request: repeating the action needs a new approval.
    others = {r.approval.id for r in racers if r.kind == "pending" and r.approval}
    assert len(others) == 1 and pending.approval.id not in others
    stored = await gate.store.get(pending.approval.id)
    assert stored is not None and stored.claimed_at is not None
    assert await gate.claim(pending.approval.id) is False


async def test_settle_waits_for_the_operator_on_another_connection(
    gate: ApprovalGate, operator: ApprovalStore
) -> None:
    pending = await check(gate, {"amount": 250, "order": "B7"})
    assert pending.approval is not None
    settled = asyncio.create_task(gate.settle(pending.approval))
    await gate.listener.wait_until(lambda state: state.initial_checks >= 1, timeout=5)
    assert not settled.done()
    await operator.decide(pending.approval.id, approve=True, operator="bob")
    decision = await asyncio.wait_for(settled, 2)
    assert decision.kind == "run"
    assert decision.arguments({"amount": 999999}) == {"amount": 250, "order": "B7"}
    # The same approval cannot be settled into a second run, and is never called a refusal either.
    again = await gate.settle(pending.approval)
    assert again.kind == "done" and "carried out once" in again.message
    assert again.as_output()["status"] == "approved"
    # And a later identical tool call is a new request, not a free run.
    later = await check(gate, {"amount": 250, "order": "B7"})
    assert later.kind == "pending" and later.approval is not None
    assert later.approval.id != pending.approval.id


async def test_settle_denied_and_timed_out(gate: ApprovalGate, operator: ApprovalStore) -> None:
    pending = await check(gate, {"amount": 800})
    assert pending.approval is not None
    settled = asyncio.create_task(gate.settle(pending.approval))
    await operator.decide(pending.approval.id, approve=False, operator="carol", note="call back tomorrow")
    denied = await asyncio.wait_for(settled, 2)
    assert denied.kind == "denied" and "call back tomorrow" in denied.message
    assert denied.as_output()["status"] == "denied"

    quick = ApprovalPolicy(required="always", timeout_s=5)
    timed = await check(gate, {"amount": 801}, policy=quick)
    assert timed.approval is not None
    # Settle at a deadline that has already passed: the request is expired in Redis, and denied.
    expired = await gate.settle(replace(timed.approval, deadline=timed.approval.created_at))
    assert expired.kind == "denied" and "no operator approved" in expired.message
    stored = await gate.store.get(timed.approval.id)
    assert stored is not None and stored.status == "expired"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_fails_closed(redis_keys: KeySchema) -> None:
    dead = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{_closed_port()}/0", decode_responses=True, socket_connect_timeout=1
    )
    try:
        store = ApprovalStore(dead, redis_keys)
        gate = ApprovalGate(store, ApprovalListener(dead, redis_keys, store=store), instance_id="inst-a")
        decision = await check(gate, {"amount": 150})
        assert decision.kind == "denied" and decision.approval is None
        assert "approval service is unreachable" in decision.message
        assert (await check(gate, {"amount": 5}, policy=OVER_100)).kind == "run"  # ungated still works
    finally:
        await dead.aclose()


async def test_gate_needs_an_instance_id(redis_client: aioredis.Redis, redis_keys: KeySchema) -> None:
    store = ApprovalStore(redis_client, redis_keys)
    with pytest.raises(ValueError, match="instance_id"):
        ApprovalGate(store, ApprovalListener(redis_client, redis_keys), instance_id="")
