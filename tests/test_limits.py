"""Finding 8: request bodies and WebSocket messages are capped, signature failures rate-limited (issue 9).

Over real sockets: a raw TCP client for the HTTP body cap (so the test controls exactly how much it sends),
``websockets`` for the media socket, ``httpx`` from two loopback addresses for the per-client limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from ivr.app import create_app
from ivr.limits import FailureLimiter
from ivr.server import PROTOCOL_HEADROOM_BYTES, make_server
from ivr.settings import Settings, SettingsError
from tests.support.calls import app_for, ws_close_code
from tests.support.fake_realtime import FakeRealtimeServer
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer, make_settings

CAP = 64 * 1024
FORM = {
    "AccountSid": ACCOUNT_SID,
    "CallSid": "CA" + "7" * 32,
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": "+15550100001",
    "To": "+15550100002",
}


def _sign(url: str, params: dict[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, params)


async def _status_line(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.readline()


def _head(server: RunningServer, extra: str) -> bytes:
    return (
        f"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{extra}\r\n"
    ).encode()


# ------------------------------------------------------------------------------------------- body cap


async def test_a_declared_huge_body_is_refused_413_before_it_is_sent(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """300 MiB announced, 1 KiB sent: the answer is 413 at once, not a wait for (and a read of) the rest."""
    async with app_for(fake_realtime) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(_head(server, f"Content-Length: {300 * 1024 * 1024}\r\n") + b"a=" + b"x" * 1024)
            await writer.drain()
            line = await _status_line(reader)
            assert line.startswith(b"HTTP/1.1 413"), line
            rest = await asyncio.wait_for(reader.read(4096), 5.0)
            assert b"IVR_MAX_BODY_BYTES" in rest
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert server.state.counters.get("bad_signatures", 0) == 0  # never got as far as the signature


async def test_a_chunked_body_over_the_cap_is_refused_while_the_client_is_still_sending(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """No Content-Length to check: the body is counted as it streams in and cut at the cap."""
    total = 64 * 1024 * 1024
    async with app_for(fake_realtime) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        sent = 0
        try:
            writer.write(_head(server, "Transfer-Encoding: chunked\r\n"))
            answer = asyncio.create_task(_status_line(reader, timeout=20.0))
            chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
            with contextlib.suppress(ConnectionError):
                while sent < total and not answer.done():
                    writer.write(chunk)
                    await writer.drain()
                    sent += 16384
            line = await answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert line.startswith(b"HTTP/1.1 413"), line
        assert sent < total, "the server read the whole 64 MiB before answering"
        print(f"chunked body refused after the client had sent {sent / 1024 / 1024:.1f} MiB (cap 64 KiB)")


async def test_a_signed_webhook_just_under_the_cap_is_served(fake_realtime: FakeRealtimeServer) -> None:
    async with app_for(fake_realtime) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        form = {**FORM, "Padding": "p" * (CAP - 1024)}
        url = server.settings.public_url + "/twilio/voice"
        response = await http.post(
            "/twilio/voice", data=form, headers={"X-Twilio-Signature": _sign(url, form)}
        )
        assert response.status_code == 200, response.text
        too_big = {**FORM, "Padding": "p" * CAP}
        refused = await http.post(
            "/twilio/voice", data=too_big, headers={"X-Twilio-Signature": _sign(url, too_big)}
        )
        assert refused.status_code == 413


# ------------------------------------------------------------------------------------------- WS message cap
# (the app's own 1009 and the media upgrade's 1008/429 run on both carriers in tests/test_media_socket.py)


async def _signed_socket(server_url: str) -> websockets.ClientConnection:
    return await websockets.connect(
        server_url, additional_headers={"x-twilio-signature": _sign(server_url, {})}, max_size=None
    )


@contextlib.asynccontextmanager
async def _served_by_make_server(settings: Settings) -> AsyncIterator[tuple[int, Settings]]:
    """The production server (ivr.server.make_server) on a loopback socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    server = make_server(create_app(settings), "127.0.0.1", port, drain_timeout=1.0)
    assert server.config.ws_max_size == settings.max_ws_message_bytes + PROTOCOL_HEADROOM_BYTES
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        yield port, settings, server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_the_production_server_refuses_oversized_frames_in_the_protocol(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """uvicorn's ws_max_size: a 1 MiB frame is refused (1009) before it is assembled for the app."""
    settings = make_settings(realtime_url=fake_realtime.url)
    async with _served_by_make_server(settings) as (_port, settings, _server):
        ws = await _signed_socket(settings.media_stream_url)
        await ws.send("x" * (1024 * 1024))
        assert await ws_close_code(ws) == 1009


async def test_the_production_server_lets_the_app_count_a_message_just_over_the_cap(
    fake_realtime: FakeRealtimeServer,
) -> None:
    """Just over IVR_MAX_WS_MESSAGE_BYTES, the app (not the protocol) refuses it: counted and logged, so an
    operator sees why a stream was closed."""
    settings = make_settings(realtime_url=fake_realtime.url)
    async with _served_by_make_server(settings) as (_port, settings, server):
        ws = await _signed_socket(settings.media_stream_url)
        await ws.send('{"event":"x","pad":"' + "x" * (settings.max_ws_message_bytes + 100) + '"}')
        assert await ws_close_code(ws) == 1009
        assert server.config.app.state.ivr.counters.get("ws_message_too_big") == 1


# ------------------------------------------------------------------------------------------- rate limit


async def test_repeated_signature_failures_get_429_with_retry_after_for_that_client_only(
    fake_realtime: FakeRealtimeServer,
) -> None:
    async with app_for(fake_realtime, signature_failure_limit=3) as server:
        url = server.settings.public_url + "/twilio/voice"
        good = {"X-Twilio-Signature": _sign(url, FORM)}
        async with httpx.AsyncClient(base_url=server.base_url) as attacker:
            codes = [
                (
                    await attacker.post("/twilio/voice", data=FORM, headers={"X-Twilio-Signature": "bad"})
                ).status_code
                for _ in range(4)
            ]
            assert codes == [403, 403, 403, 429]
            blocked = await attacker.post("/twilio/voice", data=FORM, headers={"X-Twilio-Signature": "bad"})
            assert blocked.status_code == 429
            assert 1 <= int(blocked.headers["Retry-After"]) <= 60
            assert "IVR_SIGNATURE_FAILURE_LIMIT" not in blocked.text  # the client is told when, not how
            # Twilio's egress addresses are shared by every Twilio account: someone else's bad requests from
            # the same address must never block a correctly signed one.
            signed = await attacker.post("/twilio/voice", data=FORM, headers=good)
            assert signed.status_code == 200, signed.text
        assert server.state.counters["bad_signatures"] == 5
        assert server.state.counters["rate_limited"] == 2


def test_limiter_window_slides_and_retry_after_counts_down() -> None:
    limiter = FailureLimiter(limit=3, window_s=60.0)
    for t in (0.0, 10.0, 20.0):
        assert limiter.retry_after("a", now=t) is None
        limiter.failed("a", now=t)
    assert limiter.retry_after("a", now=30.0) == pytest.approx(30.0)  # the failure at 0 leaves at 60
    assert limiter.retry_after("b", now=30.0) is None
    assert limiter.retry_after("a", now=60.5) is None  # one failure fell out of the window
    limiter.failed("a", now=61.0)
    assert limiter.retry_after("a", now=61.0) == pytest.approx(9.0)  # now the one at 10 must leave


def test_limiter_memory_is_bounded_by_clients_and_failures() -> None:
    limiter = FailureLimiter(limit=5, window_s=60.0, max_clients=100)
    for n in range(10_000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}", now=float(n) / 1000)
    assert limiter.tracked_clients() <= 100
    for _ in range(1000):
        limiter.failed("x", now=1.0)
    assert limiter.failures("x", now=1.0) == 5  # never more kept than needed to decide


def test_settings_read_the_limits() -> None:
    env = {
        "IVR_MAX_BODY_BYTES": "2048",
        "IVR_MAX_WS_MESSAGE_BYTES": "4096",
        "IVR_SIGNATURE_FAILURE_LIMIT": "7",
        "IVR_SIGNATURE_FAILURE_WINDOW": "30",
    }
    settings = Settings.from_env(env)
    assert settings.max_body_bytes == 2048 and settings.max_ws_message_bytes == 4096
    assert settings.signature_failure_limit == 7 and settings.signature_failure_window_s == 30.0
    defaults = Settings()
    assert (defaults.max_body_bytes, defaults.max_ws_message_bytes) == (CAP, CAP)
    with pytest.raises(SettingsError, match="IVR_MAX_BODY_BYTES"):
        Settings.from_env({"IVR_MAX_BODY_BYTES": "10"})
