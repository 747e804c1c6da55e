"""Operator authentication over real HTTP: bearer tokens, roles, session cookies, CSRF, Redis outages.

The app runs under uvicorn on a loopback port with a real Redis; operators are added through the same
OperatorStore the CLI uses. Cookie sessions are opened with ``state.auth.login`` (what the console's login
page calls) and then used by an httpx client exactly as a browser would send them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import Response
from starlette.requests import Request as StarletteRequest

from ivr.app import create_app, startup_warnings
from ivr.approvals.store import Approval, ApprovalStore
from ivr.console.auth import SESSION_COOKIE, Auth, AuthUnavailable
from ivr.console.operators import ConsoleSession, Operator, OperatorStore
from ivr.settings import Settings
from ivr.store.embedded import EmbeddedRedis
from ivr.store.keys import KeySchema
from tests.support.server import OPERATOR_TOKEN, RunningServer, make_settings, running_server

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys, redis_client, embedded_redis.


@pytest.fixture
async def operators(redis_client: aioredis.Redis, redis_keys: KeySchema) -> dict[str, str]:
    """Login tokens of an approver ``alice`` and a viewer ``vic``."""
    store = OperatorStore(redis_client, redis_keys)
    return {"alice": await store.add("alice", "approver"), "vic": await store.add("vic", "viewer")}


@pytest.fixture
async def server(redis_url: str, redis_prefix: str) -> AsyncIterator[RunningServer]:
    async with running_server(make_settings(redis_url=redis_url, redis_prefix=redis_prefix)) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(session: ConsoleSession) -> dict[str, str]:
    """The Cookie header a browser sends with the session."""
    return {"Cookie": f"{SESSION_COOKIE}={session.id}"}


async def pending(redis_client: aioredis.Redis, keys: KeySchema, n: int = 0) -> Approval:
    return await ApprovalStore(redis_client, keys).request(
        call_sid=f"CA00{n}",
        instance_id="inst-a",
        flow_id="clinic",
        tool="appointments",
        call_id=f"fc_{n}",
        arguments={"action": "book", "n": n},
        reason="bookings need a human",
        timeout_s=120.0,
    )


async def logged_in(server: RunningServer, token: str) -> ConsoleSession:
    """A console session, after the app has started (its operator store comes with the lifespan)."""
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200
    session = await server.state.auth.login(token)
    assert session is not None
    return session


async def test_operator_tokens_and_the_bootstrap_admin_work_as_bearer(
    server: RunningServer, operators: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for token in (operators["vic"], operators["alice"], OPERATOR_TOKEN):
            calls = await http.get("/api/calls", headers=bearer(token))
            assert calls.status_code == 200 and calls.json()["live"] == []
            assert (await http.get("/api/approvals", headers=bearer(token))).status_code == 200
        for headers in (
            {},
            bearer("wrong"),
            bearer(operators["vic"] + "x"),
            {"Authorization": f"Basic {operators['vic']}"},
            {"Authorization": operators["vic"]},
        ):
            refused = await http.get("/api/calls", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "ivr operators add" in refused.json()["detail"]


async def test_a_viewer_cannot_decide_and_a_decision_records_the_authenticated_name(
    server: RunningServer, operators: dict[str, str], redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    approval = await pending(redis_client, redis_keys)
    store = ApprovalStore(redis_client, redis_keys)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        refused = await http.post(
            f"/api/approvals/{approval.id}", json={"decision": "approve"}, headers=bearer(operators["vic"])
        )
        assert refused.status_code == 403 and "approver or admin role" in refused.json()["detail"]
        assert (await store.get(approval.id)).status == "pending"  # type: ignore[union-attr]

        decided = await http.post(
            f"/api/approvals/{approval.id}",
            json={"decision": "approve", "operator": "the-boss", "note": "ok"},
            headers=bearer(operators["alice"]),
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["decided_by"] == "alice"
    record = await store.get(approval.id)
    assert record is not None and record.status == "approved" and record.decided_by == "alice"
    audit = await redis_client.xrange(redis_keys.approvals_audit())
    assert [e["by"] for _, e in audit if e["action"] == "approved"] == ["alice"]


async def test_the_bootstrap_admin_decides_as_admin(
    server: RunningServer, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    approval = await pending(redis_client, redis_keys)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        decided = await http.post(
            f"/api/approvals/{approval.id}",
            json={"decision": "deny", "operator": "alice"},
            headers=bearer(OPERATOR_TOKEN),
        )
    assert decided.status_code == 200 and decided.json()["decided_by"] == "admin"


async def test_a_cookie_session_needs_the_csrf_token_and_our_origin_for_a_post(
    server: RunningServer, operators: dict[str, str], redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    approval = await pending(redis_client, redis_keys)
    session = await logged_in(server, operators["alice"])
    path = f"/api/approvals/{approval.id}"
    body = {"decision": "approve", "operator": "mallory"}
    async with httpx.AsyncClient(base_url=server.base_url, cookies={SESSION_COOKIE: session.id}) as http:
        assert (await http.get("/api/calls")).status_code == 200  # reading needs no CSRF token
        for headers, why in (
            ({}, "CSRF token"),
            ({"X-CSRF-Token": "wrong"}, "CSRF token"),
            ({"X-CSRF-Token": session.csrf, "Origin": "https://evil.example"}, "cross-site request refused"),
            ({"X-CSRF-Token": session.csrf, "Origin": "null"}, "cross-site request refused"),
            ({"X-CSRF-Token": session.csrf, "Referer": "https://evil.example/page"}, "cross-site"),
        ):
            refused = await http.post(path, json=body, headers=headers)
            assert refused.status_code == 403, headers
            assert why in refused.json()["detail"]
        assert (await ApprovalStore(redis_client, redis_keys).get(approval.id)).status == "pending"  # type: ignore[union-attr]
        decided = await http.post(
            path,
            json=body,
            headers={
                "X-CSRF-Token": session.csrf,
                "Origin": server.base_url,
                "Referer": server.base_url + "/ops/",
            },
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["decided_by"] == "alice"


async def test_a_wrong_bearer_token_is_not_rescued_by_a_cookie(
    server: RunningServer, operators: dict[str, str]
) -> None:
    session = await logged_in(server, operators["vic"])
    async with httpx.AsyncClient(base_url=server.base_url, cookies={SESSION_COOKIE: session.id}) as http:
        assert (await http.get("/api/calls", headers=bearer("wrong"))).status_code == 401
        assert (await http.get("/api/calls")).status_code == 200


async def test_logout_and_removal_end_cookie_sessions(
    server: RunningServer, operators: dict[str, str], redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    first = await logged_in(server, operators["vic"])
    second = await server.state.auth.login(operators["vic"])
    admin = await server.state.auth.login(OPERATOR_TOKEN)
    assert second is not None and admin is not None and admin.operator.bootstrap
    assert (
        await server.state.auth.login("ivrop_wrong") is None and await server.state.auth.login("  ") is None
    )
    request = StarletteRequest(
        {
            "type": "http",
            "method": "POST",
            "path": "/ops/logout",
            "headers": [(b"cookie", f"{SESSION_COOKIE}={first.id}".encode())],
        }
    )
    await server.state.auth.logout(request)
    async with httpx.AsyncClient(base_url=server.base_url) as http:

        async def status(session: ConsoleSession) -> int:
            response = await http.get("/api/calls", headers=cookie(session))
            return response.status_code

        assert await status(first) == 401
        assert await status(second) == 200 and await status(admin) == 200
        await OperatorStore(redis_client, redis_keys).remove("vic")
        assert await status(second) == 401
        assert (await http.get("/api/calls", headers=bearer(operators["vic"]))).status_code == 401
        assert await status(admin) == 200


async def test_redis_down_is_503_but_the_bootstrap_admin_still_gets_in(
    embedded_redis: EmbeddedRedis, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        token = await OperatorStore(client, KeySchema(redis_prefix)).add("alice", "approver")
    finally:
        await client.aclose()
    settings = make_settings(redis_url=embedded_redis.url, redis_prefix=redis_prefix)
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/api/calls", headers=bearer(token))).status_code == 200
        session = await server.state.auth.login(token)
        assert session is not None
        await asyncio.to_thread(embedded_redis.stop)
        started = time.perf_counter()
        for response in (
            await http.get("/api/calls", headers=bearer(token)),
            await http.get("/api/calls", headers=cookie(session)),
        ):
            assert response.status_code == 503
            assert "Redis is unreachable" in response.json()["detail"]
            assert response.headers["retry-after"] == "5"
        assert time.perf_counter() - started < 5
        assert (await http.get("/api/calls", headers=bearer(OPERATOR_TOKEN))).status_code == 200
        with pytest.raises(AuthUnavailable):
            await server.state.auth.login(token)
        assert await server.state.auth.login("not-a-token") is None  # refused without asking Redis
        await asyncio.to_thread(embedded_redis.restart)  # so the app's shutdown can flush


async def test_a_redis_outage_ends_live_streams_cleanly_and_refuses_new_ones(
    embedded_redis: EmbeddedRedis, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Headers already sent: the stream ends with a comment (no traceback); a new one is a clean 503."""
    caplog.set_level(logging.INFO)
    client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        token = await OperatorStore(client, KeySchema(redis_prefix)).add("vic", "viewer")
    finally:
        await client.aclose()
    settings = make_settings(redis_url=embedded_redis.url, redis_prefix=redis_prefix)
    async with running_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        session = await logged_in(server, token)
        server.state.auth.recheck_s = 0.2  # the stream finds out at its next check of the session
        try:
            async with http.stream("GET", "/ops/events", headers=cookie(session)) as live:
                assert live.status_code == 200
                await asyncio.to_thread(embedded_redis.stop)
                text = (await asyncio.wait_for(live.aread(), 10)).decode()
            assert text.endswith(": a Redis read failed; reconnecting\n\n"), text[-300:]
            # The bootstrap admin authenticates without Redis: the join and first replay page fail, before
            # the response starts.
            refused = await http.get("/ops/events", headers=bearer(OPERATOR_TOKEN))
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert refused.headers["content-type"].startswith("text/html")
            assert "Redis, where the console reads everything, is unreachable" in refused.text
        finally:
            await asyncio.to_thread(embedded_redis.restart)  # so the app's shutdown can flush
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ended the live stream")]
    assert ended == ["ended the live stream /ops/events: its login cannot be re-checked without Redis"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- Auth in a small app of its own: form CSRF fields, the cached form ---------------------------------------


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def form_app(redis_url: str, redis_keys: KeySchema) -> AsyncIterator[tuple[str, Auth, OperatorStore]]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = OperatorStore(client, redis_keys, bootstrap_token="boot")
    auth = Auth(Settings(operator_token="boot", public_url="https://console.example.com"), store)
    app = FastAPI()
    approver = auth.require("approver")

    @app.post("/handler-reads-form")
    async def handler_reads_form(request: Request, operator: Operator = Depends(approver)) -> dict[str, Any]:  # noqa: B008
        async with request.form() as form:
            return {"by": operator.name, "fields": {k: v for k, v in form.items() if isinstance(v, str)}}

    @app.post("/form-params")
    async def form_params(note: str = Form(...), operator: Operator = Depends(approver)) -> dict[str, str]:  # noqa: B008
        return {"by": operator.name, "note": note}

    try:
        async with serve(app) as base_url:
            yield base_url, auth, store
    finally:
        await client.aclose()


async def test_the_csrf_form_field_leaves_the_form_readable_by_the_route(
    form_app: tuple[str, Auth, OperatorStore],
) -> None:
    base_url, auth, store = form_app
    token = await store.add("alice", "approver")
    session = await auth.login(token)
    assert session is not None
    origin = {"Origin": base_url}
    async with httpx.AsyncClient(base_url=base_url, cookies={SESSION_COOKIE: session.id}) as http:
        ok = await http.post(
            "/handler-reads-form", data={"csrf": session.csrf, "note": "<b>hi</b>"}, headers=origin
        )
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"by": "alice", "fields": {"csrf": session.csrf, "note": "<b>hi</b>"}}
        # A multipart body is not parsed for the token (files would need closing): the header is needed.
        upload = {"data": {"csrf": session.csrf, "note": "n"}, "files": {"f": ("a.txt", b"x")}}
        refused = await http.post("/handler-reads-form", headers=origin, **upload)  # type: ignore[arg-type]
        assert refused.status_code == 403
        multipart = await http.post(
            "/handler-reads-form",
            headers={**origin, "X-CSRF-Token": session.csrf},
            **upload,  # type: ignore[arg-type]
        )
        assert multipart.status_code == 200 and multipart.json()["fields"] == upload["data"]
        params = await http.post(
            "/form-params", data={"csrf": session.csrf, "note": "n"}
        )  # no Origin: allowed
        assert params.status_code == 200 and params.json() == {"by": "alice", "note": "n"}
        for data in ({"note": "n"}, {"csrf": "", "note": "n"}, {"csrf": session.csrf[:-1], "note": "n"}):
            assert (await http.post("/form-params", data=data)).status_code == 403, data
        foreign = await http.post(
            "/form-params",
            data={"csrf": session.csrf, "note": "n"},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        # The public URL is an accepted origin too (the console opened under its public name).
        public = await http.post(
            "/form-params",
            data={"csrf": session.csrf, "note": "n"},
            headers={"Origin": "https://console.example.com"},
        )
        assert public.status_code == 200
    async with httpx.AsyncClient(base_url=base_url) as http:  # bearer: no CSRF token needed
        bearer_ok = await http.post("/form-params", data={"note": "n"}, headers=bearer(token))
        assert bearer_ok.status_code == 200 and bearer_ok.json()["by"] == "alice"


def test_the_session_cookie_attributes() -> None:
    session = ConsoleSession(
        id="abc", operator=Operator("a", "viewer"), csrf="c", expires_at=time.time() + 3600
    )
    for public_url, secure in (("https://agent.example.com", True), ("http://127.0.0.1:8000", False)):
        auth = Auth(Settings(public_url=public_url))
        response = Response()
        auth.set_cookie(response, session)
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=abc;")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert ("Secure" in cookie) is secure
        assert 3590 <= int(cookie.split("Max-Age=")[1].split(";")[0]) <= 3600
        cleared = Response()
        auth.clear_cookie(cleared)
        assert "Max-Age=0" in cleared.headers["set-cookie"] and "HttpOnly" in cleared.headers["set-cookie"]


async def test_auth_exists_before_start_up_and_says_so() -> None:
    app = create_app(make_settings(public_url="http://127.0.0.1:9"))
    auth = app.state.ivr.auth
    assert isinstance(auth, Auth) and auth.store is None
    request = StarletteRequest(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"cookie", f"{SESSION_COOKIE}=x".encode())],
        }
    )
    with pytest.raises(AuthUnavailable, match="still starting"):
        await auth.authenticate(request)
    bootstrap = StarletteRequest(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"authorization", f"Bearer {OPERATOR_TOKEN}".encode())],
        }
    )
    who = await auth.authenticate(bootstrap)
    assert who is not None and who.operator.bootstrap and who.session is None


def test_start_up_warning_without_a_bootstrap_token() -> None:
    warnings = startup_warnings(make_settings(operator_token="", public_url="https://a.example.com"))
    [warning] = [w for w in warnings if "IVR_OPERATOR_TOKEN" in w]
    assert "no bootstrap admin token" in warning and "ivr operators add" in warning
    assert "refuses every request" not in warning
    good = make_settings(public_url="https://a.example.com", operator_token="t" * 24)
    assert not [w for w in startup_warnings(good) if "OPERATOR" in w]


def test_start_up_warning_for_a_short_bootstrap_token() -> None:
    short = make_settings(public_url="https://a.example.com", operator_token="x" * 23)
    [warning] = [w for w in startup_warnings(short) if "IVR_OPERATOR_TOKEN" in w]
    assert "23 characters" in warning and "can be guessed" in warning
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in warning
    assert "x" * 23 not in warning  # never the token itself
