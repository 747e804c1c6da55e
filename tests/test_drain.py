"""Draining on request: ``POST /api/drain`` and ``ivr drain`` (a Kubernetes preStop hook runs it).

The drain is SIGTERM's (tests/test_serve_process.py): /readyz turns 503, new calls are refused politely, live
calls go on; under ``ivr serve`` the process exits once drained.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from types import SimpleNamespace

import httpx
import redis.asyncio as aioredis
from twilio.request_validator import RequestValidator

from ivr.console.operators import OperatorStore
from ivr.drain_cli import drain
from ivr.store.keys import KeySchema
from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.process import ServerProcess, free_port, serve_env
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, OPERATOR_TOKEN, TEST_FLOWS


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _webhook(http: httpx.AsyncClient, base: str, sid_digit: str) -> httpx.Response:
    params = {"CallSid": "CA" + sid_digit * 32, "AccountSid": ACCOUNT_SID, "From": "+15550100009", "To": "+1"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(base + "/twilio/voice", params)
    return await http.post("/twilio/voice", data=params, headers={"X-Twilio-Signature": signature})


async def test_the_drain_endpoint_needs_an_admin_and_drains_once(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        viewer = await OperatorStore(client, KeySchema(redis_prefix)).add("vic", "viewer")
    finally:
        await client.aclose()
    async with (
        app_for(fake_realtime, redis_url=redis_url, redis_prefix=redis_prefix) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        assert (await http.post("/api/drain")).status_code == 401
        refused = await http.post("/api/drain", headers=_bearer(viewer))
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        assert (await http.get("/readyz")).status_code == 200
        accepted = (await _webhook(http, server.base_url, "1")).text
        assert "<Connect" in accepted  # not draining: the call is streamed

        first = await http.post("/api/drain", headers=_bearer(OPERATOR_TOKEN))
        assert first.status_code == 202
        assert first.json()["started"] is True and first.json()["status"] == "draining"
        again = await http.post("/api/drain", headers=_bearer(OPERATOR_TOKEN))
        assert again.status_code == 202 and again.json()["started"] is False

        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200  # alive: Kubernetes must not restart it
        polite = (await _webhook(http, server.base_url, "2")).text
        assert "<Hangup" in polite and "<Connect" not in polite


async def test_ivr_drain_reports_a_failure_it_cannot_fix(fake_realtime: FakeRealtimeServer) -> None:
    """No token, a wrong token, nobody listening: exit 2 with a sentence naming what to do."""
    async with app_for(fake_realtime) as server:
        with httpx.Client(base_url=server.base_url) as http:
            # drain() blocks (it is a command-line tool): off the loop that serves the app
            out = io.StringIO()
            assert await asyncio.to_thread(drain, http, "", 0, out) == 2
            assert "IVR_OPERATOR_TOKEN" in out.getvalue()
            out = io.StringIO()
            assert await asyncio.to_thread(drain, http, "not-a-token", 0, out) == 2
            assert "HTTP 401" in out.getvalue()
            assert (await asyncio.to_thread(httpx.get, server.base_url + "/readyz")).status_code == 200
    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}") as http:
        out = io.StringIO()
        assert drain(http, OPERATOR_TOKEN, 0, out) == 2 and "is it running" in out.getvalue()


async def test_ivr_drain_gives_up_waiting_while_a_call_is_live(fake_realtime: FakeRealtimeServer) -> None:
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=300)]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        await (await fake_realtime.next_session()).wait_response_done()
        out = io.StringIO()
        with httpx.Client(base_url=server.base_url) as http:
            code = await asyncio.to_thread(drain, http, OPERATOR_TOKEN, 1.5, out)
        assert code == 1, out.getvalue()
        assert "1 call live" in out.getvalue() and "still live after 2 s" in out.getvalue()
        assert server.state.calls.draining
        result = await live.hang_up()  # the live call was not cut by the drain
        assert result.ended_by == "caller"


async def test_ivr_drain_waits_for_the_last_call_then_the_server_exits(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """The Kubernetes preStop path, with real processes: `ivr drain --wait` beside `ivr serve`, then the
    SIGTERM that follows preStop, which must not cut the call the drain is waiting for."""
    fake_realtime.default_replies = [Reply(text="Hello.", audio_ms=300)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(fake_realtime.url, IVR_DRAIN_TIMEOUT="60")
    command = [sys.executable, "-m", "ivr"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        "serve",
        "--port",
        str(port),
        "--flows",
        str(TEST_FLOWS),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    server = ServerProcess(proc)
    drainer: asyncio.subprocess.Process | None = None
    try:
        await server.wait_line("Uvicorn running on")
        live = await place_call(SimpleNamespace(base_url=base))  # type: ignore[arg-type]
        session = await fake_realtime.next_session()
        await session.wait_response_done()

        drainer = await asyncio.create_subprocess_exec(
            *command, "drain", "--url", base, "--wait", "60", env=env, stdout=asyncio.subprocess.PIPE
        )
        assert drainer.stdout is not None
        first = (await asyncio.wait_for(drainer.stdout.readline(), 20)).decode()
        assert "draining started; 1 call live" in first, first
        await server.wait_line("drain requested over the API")
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/readyz")).status_code == 503
        # Kubernetes sends SIGTERM when preStop returns (or its time is up): the drain goes on, not a stop.
        proc.send_signal(signal.SIGTERM)
        await server.wait_line("already draining")
        before = len(session.input_audio)
        await session.wait_input_audio(before + 16000)  # the call goes on while the drain waits for it
        assert drainer.returncode is None and proc.returncode is None

        await live.hang_up()
        rest = (await asyncio.wait_for(drainer.stdout.read(), 20)).decode()
        assert await asyncio.wait_for(drainer.wait(), 10) == 0, rest
        assert "no live call left" in rest or "the server has stopped" in rest, rest
        assert await asyncio.wait_for(proc.wait(), 20) == 0  # drained: `ivr serve` exits by itself
    finally:
        for child in (drainer, proc):
            if child is not None and child.returncode is None:
                child.kill()
                await child.wait()
        await server._reader
    assert not any("Traceback" in line for line in server.lines), server.lines
