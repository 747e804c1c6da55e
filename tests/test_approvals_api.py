"""The approvals HTTP API under a real uvicorn on 127.0.0.1, against a real Redis.

Authentication is the app's own (:class:`ivr.console.auth.Auth` over operators in the same Redis): the
bootstrap admin's token, plus an approver ``alice`` and a viewer ``vic`` added for each test.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from ivr.approvals.api import approvals_router
from ivr.approvals.listener import ApprovalListener
from ivr.approvals.store import Approval, ApprovalStore
from ivr.console.auth import Auth
from ivr.console.operators import OperatorStore
from ivr.settings import Settings
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys, embedded_redis.

TOKEN = "approvals-test-token"
#: The bootstrap admin (IVR_OPERATOR_TOKEN): decisions are recorded as "admin".
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_keys: KeySchema) -> ApprovalStore:
    return ApprovalStore(redis_client, redis_keys)


@pytest.fixture
async def operators(redis_client: aioredis.Redis, redis_keys: KeySchema) -> dict[str, dict[str, str]]:
    """Authorization headers of an approver ``alice`` and a viewer ``vic``."""
    store = OperatorStore(redis_client, redis_keys)
    alice = await store.add("alice", "approver")
    vic = await store.add("vic", "viewer")
    return {"alice": {"Authorization": f"Bearer {alice}"}, "vic": {"Authorization": f"Bearer {vic}"}}


@pytest.fixture
async def http(redis_url: str, redis_keys: KeySchema) -> AsyncIterator[httpx.AsyncClient]:
    """The router in a FastAPI app served by uvicorn on a loopback socket, with its own Redis redis_client."""
    server_redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app = FastAPI()
    settings = Settings(operator_token=TOKEN, public_url="http://127.0.0.1")
    auth = Auth(settings, OperatorStore(server_redis, redis_keys, bootstrap_token=TOKEN))
    app.include_router(approvals_router(ApprovalStore(server_redis, redis_keys), auth))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http_client:
            yield http_client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
        await server_redis.aclose()


async def make(store: ApprovalStore, n: int = 0, **changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "call_sid": "CA0001",
        "instance_id": "inst-a",
        "flow_id": "shop",
        "tool": "refund",
        "call_id": f"fc_{n}",
        "arguments": {"amount": 150 + n},
        "reason": "Refunds over $100 need a manager",
        "timeout_s": 60.0,
    }
    fields.update(changes)
    return await store.request(**fields)


async def test_every_route_needs_the_operator_token(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    approval = await make(store)
    for method, path, body in (
        ("GET", "/api/approvals", None),
        ("GET", f"/api/approvals/{approval.id}", None),
        ("POST", f"/api/approvals/{approval.id}", {"decision": "approve"}),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await http.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
    assert (await store.get(approval.id)).status == "pending"  # type: ignore[union-attr]


async def test_list_and_show(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    late = await make(store, 1, timeout_s=300.0)
    soon = await make(store, 2, timeout_s=30.0)
    response = await http.get("/api/approvals", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [a["id"] for a in body["approvals"]] == [soon.id, late.id]
    assert body["approvals"][0]["arguments"] == {"amount": 152}
    assert body["approvals"][0]["status"] == "pending"

    shown = await http.get(f"/api/approvals/{late.id}", headers=AUTH)
    assert shown.status_code == 200 and shown.json() == late.to_json()
    for unknown in ("ap_0000000000000000", "bad:id"):
        missing = await http.get(f"/api/approvals/{unknown}", headers=AUTH)
        assert missing.status_code == 404 and unknown in missing.json()["detail"]


async def test_approve_then_a_second_decision_is_refused(
    http: httpx.AsyncClient, store: ApprovalStore, operators: dict[str, dict[str, str]]
) -> None:
    approval = await make(store)
    response = await http.post(
        f"/api/approvals/{approval.id}",
        json={"decision": "approve", "note": "ok by phone"},
        headers=operators["alice"],
    )
    assert response.status_code == 200
    record = response.json()
    assert (
        record["status"] == "approved" and record["decided_by"] == "alice" and record["note"] == "ok by phone"
    )
    assert (await store.get(approval.id)) == Approval(**record)

    again = await http.post(f"/api/approvals/{approval.id}", json={"decision": "deny"}, headers=AUTH)
    assert again.status_code == 409
    detail = again.json()["detail"]
    assert detail["error"] == "already_decided"
    assert "already approved by alice at" in detail["message"]
    assert detail["approval"]["decided_by"] == "alice"
    assert (await store.get(approval.id)).status == "approved"  # type: ignore[union-attr]


async def test_the_bootstrap_admin_decides_as_admin(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    approval = await make(store)
    response = await http.post(f"/api/approvals/{approval.id}", json={"decision": "deny"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["status"] == "denied" and response.json()["decided_by"] == "admin"


async def test_the_body_cannot_name_another_operator(
    http: httpx.AsyncClient, store: ApprovalStore, operators: dict[str, dict[str, str]]
) -> None:
    """``operator`` in the body is accepted for older clients and ignored: the token says who decided."""
    approval = await make(store)
    response = await http.post(
        f"/api/approvals/{approval.id}",
        json={"decision": "approve", "operator": "the-boss"},
        headers=operators["alice"],
    )
    assert response.status_code == 200 and response.json()["decided_by"] == "alice"
    stored = await store.get(approval.id)
    assert stored is not None and stored.decided_by == "alice"


async def test_a_viewer_reads_but_cannot_decide(
    http: httpx.AsyncClient, store: ApprovalStore, operators: dict[str, dict[str, str]]
) -> None:
    approval = await make(store)
    listed = await http.get("/api/approvals", headers=operators["vic"])
    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert (await http.get(f"/api/approvals/{approval.id}", headers=operators["vic"])).status_code == 200
    refused = await http.post(
        f"/api/approvals/{approval.id}", json={"decision": "approve"}, headers=operators["vic"]
    )
    assert refused.status_code == 403
    assert "'vic' has the viewer role" in refused.json()["detail"]
    assert (await store.get(approval.id)).status == "pending"  # type: ignore[union-attr]


async def test_unknown_and_expired(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    unknown = await http.post(
        "/api/approvals/ap_0000000000000000", json={"decision": "approve"}, headers=AUTH
    )
    assert unknown.status_code == 404
    overdue = await make(store, timeout_s=10.0, now=time.time() - 60)
    late = await http.post(f"/api/approvals/{overdue.id}", json={"decision": "approve"}, headers=AUTH)
    assert late.status_code == 409
    assert late.json()["detail"]["error"] == "expired"
    assert "expired before this decision" in late.json()["detail"]["message"]
    assert (await store.get(overdue.id)).status == "expired"  # type: ignore[union-attr]


BAD_BODIES: list[object] = [
    {"decision": "maybe"},
    {},
    {"decision": "approve", "operatr": "alice"},
    {"decision": "approve", "operator": 5},
    {"decision": "approve", "operator": "x" * 101},
    {"decision": "approve", "note": "x" * 1001},
    {"decision": True},
    ["approve"],
    "approve",
]


async def test_bad_bodies_are_422(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    approval = await make(store)
    for body in BAD_BODIES:
        response = await http.post(f"/api/approvals/{approval.id}", json=body, headers=AUTH)
        assert response.status_code == 422, (body, response.text)
    assert (await store.get(approval.id)).status == "pending"  # type: ignore[union-attr]


async def test_malformed_json_is_422(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    approval = await make(store)
    response = await http.post(
        f"/api/approvals/{approval.id}",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


async def test_concurrent_posts_one_wins(http: httpx.AsyncClient, store: ApprovalStore) -> None:
    approval = await make(store)
    responses = await asyncio.gather(
        *(
            http.post(
                f"/api/approvals/{approval.id}",
                json={"decision": "approve" if i % 2 else "deny", "operator": f"op{i}"},
                headers=AUTH,
            )
            for i in range(10)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 9


async def test_a_posted_decision_reaches_a_waiting_call(
    http: httpx.AsyncClient,
    redis_client: aioredis.Redis,
    store: ApprovalStore,
    redis_keys: KeySchema,
    operators: dict[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    listener = ApprovalListener(redis_client, redis_keys, store=store)
    listener.start()
    try:
        approval = await make(store)
        waiter = asyncio.create_task(listener.wait(approval.id, approval.deadline))
        await listener.wait_until(lambda state: state.initial_checks >= 1, timeout=5)
        started = time.perf_counter()
        response = await http.post(
            f"/api/approvals/{approval.id}", json={"decision": "approve"}, headers=operators["alice"]
        )
        result = await asyncio.wait_for(waiter, 2)
        elapsed = time.perf_counter() - started
    finally:
        await listener.stop()
    assert response.status_code == 200
    assert result.status == "approved" and result.decided_by == "alice"
    assert elapsed < 1.0
    with capsys.disabled():
        print(f"\n[HTTP POST decision → waiting call] {elapsed * 1000:.2f} ms")
