"""Model connection: URL, headers, a real WebSocket on 127.0.0.1, connect errors, reconnect backoff."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ivr.realtime.connection import (
    LinkFailures,
    RealtimeConnectError,
    is_azure_host,
    open_realtime,
    realtime_headers,
    realtime_ws_url,
)

KEY = "sk-test-VERY-SECRET-0123456789"

# -- URL -------------------------------------------------------------------------------------------------


def test_plain_url_gains_model() -> None:
    url = realtime_ws_url("wss://api.openai.com/v1/realtime", "gpt-realtime")
    assert url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"


def test_azure_url_keeps_its_query_and_gains_model() -> None:
    base = (
        "wss://acme.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-realtime"
    )
    url = realtime_ws_url(base, "gpt-realtime")
    assert url == base + "&model=gpt-realtime"
    assert parse_qsl(urlsplit(url).query) == [
        ("api-version", "2025-04-01-preview"),
        ("deployment", "gpt-realtime"),
        ("model", "gpt-realtime"),
    ]
    assert url.count("?") == 1


def test_existing_model_in_url_is_kept() -> None:
    base = "wss://proxy.example.com/v1/realtime?model=gpt-realtime-1.5&region=eu"
    assert realtime_ws_url(base, "gpt-realtime") == base


def test_model_is_query_encoded_and_fragment_dropped() -> None:
    url = realtime_ws_url("ws://127.0.0.1:9000/v1/realtime#frag", "my model&x=1")
    assert url == "ws://127.0.0.1:9000/v1/realtime?model=my+model%26x%3D1"
    assert dict(parse_qsl(urlsplit(url).query)) == {"model": "my model&x=1"}


@pytest.mark.parametrize(
    ("base", "model", "message"),
    [
        ("https://api.openai.com/v1/realtime", "gpt-realtime", "must be ws:// or wss://"),
        ("api.openai.com/v1/realtime", "gpt-realtime", "must be ws:// or wss://"),
        ("wss:///v1/realtime", "gpt-realtime", "with a host"),
        ("wss://api.openai.com/v1/realtime", "  ", "model name is empty"),
    ],
)
def test_bad_url_or_model_is_refused(base: str, model: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        realtime_ws_url(base, model)


def test_bad_url_message_hides_secrets_in_it() -> None:
    with pytest.raises(ValueError) as info:
        realtime_ws_url("https://user:pw@host.example.com/realtime?api-key=abc123", "m")
    assert "abc123" not in str(info.value) and "pw" not in str(info.value)


# -- headers ---------------------------------------------------------------------------------------------


def test_ga_headers_plain_host() -> None:
    assert realtime_headers(KEY, "ga", "wss://api.openai.com/v1/realtime") == {
        "Authorization": f"Bearer {KEY}"
    }


def test_beta_headers_plain_host() -> None:
    assert realtime_headers(KEY, "beta", "wss://api.openai.com/v1/realtime") == {
        "Authorization": f"Bearer {KEY}",
        "OpenAI-Beta": "realtime=v1",
    }


@pytest.mark.parametrize(
    "host",
    [
        "acme.openai.azure.com",
        "acme.cognitiveservices.azure.com",
        "acme.services.ai.azure.com",
        "ACME.OpenAI.Azure.com",
    ],
)
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_azure_hosts_also_get_api_key(host: str, dialect: str) -> None:
    headers = realtime_headers(KEY, dialect, f"wss://{host}/openai/realtime?api-version=2025-04-01-preview")  # type: ignore[arg-type]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["api-key"] == KEY
    assert ("OpenAI-Beta" in headers) == (dialect == "beta")


@pytest.mark.parametrize(
    "url",
    [
        "wss://openai.azure.com.evil.example/realtime",
        "wss://api.openai.com/v1/realtime",
        "wss://notazure.com/realtime",
        "wss://evil.example/realtime?host=x.openai.azure.com",
    ],
)
def test_non_azure_hosts_do_not_get_api_key(url: str) -> None:
    assert not is_azure_host(url)
    assert "api-key" not in realtime_headers(KEY, "ga", url)


@pytest.mark.parametrize(("key", "message"), [("", "empty; set OPENAI_API_KEY"), ("   ", "empty")])
def test_empty_key_is_refused(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        realtime_headers(key, "ga", "wss://api.openai.com/v1/realtime")


def test_key_with_line_break_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        realtime_headers(KEY + "\r\nX-Evil: 1", "ga", "wss://api.openai.com/v1/realtime")
    assert "line break" in str(info.value)
    assert KEY not in str(info.value)


def test_headers_refuse_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="dialect='v1'"):
        realtime_headers(KEY, "v1", "wss://api.openai.com/v1/realtime")  # type: ignore[arg-type]


# -- open_realtime against a real local server ------------------------------------------------------------


@dataclass
class LocalRealtime:
    """A websockets server on 127.0.0.1 that records handshakes and can refuse them with a status."""

    server: Server | None = None
    requests: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    refuse: tuple[int, str] | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.put_nowait(request)
        if self.refuse is not None:
            status, body = self.refuse
            return connection.respond(HTTPStatus(status), body)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(f"echo:{message}")


@pytest.fixture
async def local_realtime() -> AsyncIterator[LocalRealtime]:
    fake = LocalRealtime()
    async with serve(
        fake.handler, "127.0.0.1", 0, process_request=fake.process_request, max_size=None
    ) as server:
        fake.server = server
        yield fake


async def test_open_realtime_sends_headers_and_query(local_realtime: LocalRealtime) -> None:
    url = realtime_ws_url(local_realtime.url, "gpt-4o-realtime-preview-2025-06-03")
    headers = realtime_headers(KEY, "beta", url)
    ws = await open_realtime(url, headers, open_timeout=5)
    try:
        request = await asyncio.wait_for(local_realtime.requests.get(), 5)
        assert request.path == "/v1/realtime?model=gpt-4o-realtime-preview-2025-06-03"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["OpenAI-Beta"] == "realtime=v1"
        assert "api-key" not in request.headers
        # Like the SDK: no permessage-deflate offered; and the socket takes frames over 1 MiB.
        assert "Sec-WebSocket-Extensions" not in request.headers
        big = "x" * (2 * 1024 * 1024)
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:" + big
    finally:
        await ws.close()


async def test_open_realtime_ga_sends_no_beta_header(local_realtime: LocalRealtime) -> None:
    url = realtime_ws_url(local_realtime.url, "gpt-realtime")
    ws = await open_realtime(url, realtime_headers(KEY, "ga", url))
    try:
        request = await asyncio.wait_for(local_realtime.requests.get(), 5)
        assert "OpenAI-Beta" not in request.headers
        assert request.headers["Authorization"] == f"Bearer {KEY}"
    finally:
        await ws.close()


async def test_open_realtime_ignores_proxy_environment(
    local_realtime: LocalRealtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = _closed_port()
    for name in (
        "ws_proxy",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "WS_PROXY",
        "HTTP_PROXY",
        "HTTPS_PROXY",
    ):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    url = realtime_ws_url(local_realtime.url, "gpt-realtime")
    ws = await open_realtime(url, realtime_headers(KEY, "ga", url), open_timeout=5)
    await ws.close()


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "check OPENAI_API_KEY"),
        (403, "check OPENAI_API_KEY and IVR_REALTIME_MODEL"),
        (404, "check IVR_REALTIME_URL and IVR_REALTIME_MODEL"),
        (429, "rate limit"),
        (503, "retry"),
        (418, "check IVR_REALTIME_URL and OPENAI_API_KEY"),
    ],
)
async def test_refused_handshake_names_status_and_never_the_key(
    local_realtime: LocalRealtime, status: int, hint: str
) -> None:
    # Servers echo (parts of) a wrong key in the body; that must not reach our message.
    local_realtime.refuse = (status, f"Incorrect API key provided: {KEY}. Also sk-proj-abcdEFGH1234.\n")
    url = realtime_ws_url(local_realtime.url, "gpt-realtime")
    azure_style = {**realtime_headers(KEY, "ga", url), "api-key": KEY}
    with pytest.raises(RealtimeConnectError) as info:
        await open_realtime(url, azure_style, open_timeout=5)
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert hint in message
    assert info.value.status == status
    assert KEY not in message and "VERY-SECRET" not in message and "abcdEFGH1234" not in message
    assert "Incorrect API key provided: ***" in message
    assert "127.0.0.1" in message


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_closed_port_is_a_connect_error() -> None:
    port = _closed_port()
    with pytest.raises(RealtimeConnectError) as info:
        await open_realtime(
            f"ws://127.0.0.1:{port}/v1/realtime?model=m", realtime_headers(KEY, "ga", "ws://x")
        )
    message = str(info.value)
    assert f"cannot connect to ws://127.0.0.1:{port}/v1/realtime?model=m" in message
    assert "IVR_REALTIME_URL" in message
    assert info.value.status is None
    assert KEY not in message


async def test_unresolvable_host_is_a_connect_error() -> None:
    # ".invalid" never resolves (RFC 6761); without network the resolver may time out instead.
    with pytest.raises(RealtimeConnectError) as info:
        await open_realtime(
            "wss://realtime.invalid/v1/realtime", {"Authorization": f"Bearer {KEY}"}, open_timeout=3
        )
    message = str(info.value)
    assert (
        "cannot resolve the host of wss://realtime.invalid/v1/realtime" in message or "timed out" in message
    )
    assert KEY not in message


async def test_silent_server_times_out() -> None:
    accepted = asyncio.Event()
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RealtimeConnectError, match=r"timed out after 0\.2s"):
            await open_realtime(
                f"ws://127.0.0.1:{port}/v1/realtime", {"Authorization": f"Bearer {KEY}"}, open_timeout=0.2
            )
        assert accepted.is_set()
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_non_websocket_server_is_a_handshake_error() -> None:
    async def http_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RealtimeConnectError) as info:
            await open_realtime(
                f"ws://127.0.0.1:{port}/v1/realtime?api-key={KEY}", {"api-key": KEY}, open_timeout=5
            )
        message = str(info.value)
        assert "HTTP 200" in message
        assert KEY not in message and "api-key=%2A%2A%2A" in message
    finally:
        server.close()
        await server.wait_closed()


def test_headers_helper_types_are_plain_dict() -> None:
    headers: Any = realtime_headers(KEY, "beta", "wss://api.openai.com/v1/realtime")
    assert type(headers) is dict and Headers(headers)["openai-beta"] == "realtime=v1"


# -- failures of the link over a window, and the wait before the next attempt ----------------------------


def test_failures_count_in_a_window_whether_or_not_a_socket_opened() -> None:
    failures = LinkFailures(6, window_s=60.0, max_outage_s=100.0, jitter=0.0)
    delays = [failures.failed(now=float(t)) for t in range(6)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, None]  # the sixth in the window: give up


def test_old_failures_leave_the_window_and_health_ends_an_outage() -> None:
    failures = LinkFailures(3, window_s=10.0, max_outage_s=5.0, jitter=0.0)
    assert failures.failed(0.0) == 0.0
    failures.healthy()
    assert failures.failed(20.0) == 0.0  # the first one left the window
    assert failures.failed(21.0) == 0.25
    failures.healthy()
    assert failures.failed(22.0) is None  # three within 10 s, healthy or not in between


def test_an_outage_is_bounded_in_time() -> None:
    failures = LinkFailures(100, window_s=60.0, max_outage_s=3.0, jitter=0.0)
    assert failures.failed(0.0) == 0.0
    assert failures.failed(1.0) == 0.25
    assert failures.time_left(2.5, 10.0) == 0.5
    assert failures.failed(2.9) == pytest.approx(0.1)  # never waits past the limit
    assert failures.failed(3.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"max_failures": 0}, {"window_s": 0}, {"max_outage_s": -1}, {"initial": 0}, {"jitter": 2}],
)
def test_link_failures_refuses_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="LinkFailures"):
        LinkFailures(**kwargs)


def test_failure_jitter_comes_from_the_injected_rng() -> None:
    nominal = [0.0, 0.25, 0.5, 1.0, 2.0]
    first = LinkFailures(6, max_outage_s=100.0, rng=random.Random(7))
    second = LinkFailures(6, max_outage_s=100.0, rng=random.Random(7))
    a = [first.failed(float(t)) for t in range(5)]
    assert a == [second.failed(float(t)) for t in range(5)]
    reference = random.Random(7)
    assert a == [0.0] + [n * (1 - 0.5 * reference.random()) for n in nominal[1:]]
    assert all(n / 2 < d <= n for d, n in zip(a[1:], nominal[1:], strict=True))  # type: ignore[operator]
    assert a != nominal


def test_many_failures_do_not_overflow_the_delay() -> None:
    failures = LinkFailures(5000, window_s=1e9, max_outage_s=1e9, jitter=0.0)
    delays = [failures.failed(float(t)) for t in range(4999)]
    assert delays[-1] == 4.0 and failures.failed(5000.0) is None
