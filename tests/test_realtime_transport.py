"""The model socket (ivr.realtime.transport) against a real ``websockets`` server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.frames import CloseCode

from ivr.realtime.transport import WRITE_HIGH, RealtimeSocket, connect_realtime

Handler = Callable[[ServerConnection], Awaitable[None]]
HEADERS = {"Authorization": "Bearer test"}


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A websockets server running ``handler`` per connection; yields its ws:// URL.

    Its close timeout is short: some handlers stop reading, and shutting them down must not take 10 s.
    """
    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None, close_timeout=0.5) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime?model=m"


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def open_socket(url: str, **kwargs: float | None) -> RealtimeSocket:
    return await connect_realtime(url, HEADERS, open_timeout=5, **kwargs)  # type: ignore[arg-type]


async def test_text_and_binary_both_ways_keep_their_type() -> None:
    async with server(echo) as url:
        sock = await open_socket(url)
        await sock.send("hello")
        await sock.send(b"\x00\x01\xff")
        await sock.send(b'{"type":"x"}', text=True)  # pre-encoded JSON goes out as a text frame
        await sock.send("as binary", text=False)
        received = [await asyncio.wait_for(sock.recv(), 5) for _ in range(4)]
        assert received == ["hello", b"\x00\x01\xff", '{"type":"x"}', b"as binary"]
        assert sock.request is not None and sock.request.headers["Authorization"] == "Bearer test"
        assert sock.response is not None and sock.response.status_code == 101
        await sock.close()


async def test_frames_over_one_mib_both_ways() -> None:
    async with server(echo) as url:
        sock = await open_socket(url)
        text = "é" * (1024 * 1024)  # 2 MiB of UTF-8
        blob = bytes(range(256)) * (12 * 1024)  # 3 MiB
        await sock.send(text)
        await sock.send(blob)
        assert await asyncio.wait_for(sock.recv(), 5) == text
        assert await asyncio.wait_for(sock.recv(), 5) == blob
        await sock.close()


async def test_fragmented_messages_are_reassembled() -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send(["frag", "ment", "é"])
        await ws.send([b"\x01", b"\x02"])
        await ws.close()

    async with server(fragments) as url:
        sock = await open_socket(url)
        assert [m async for m in sock] == ["fragmenté", b"\x01\x02"]


async def test_many_messages_arrive_in_order_through_read_pauses() -> None:
    sent = asyncio.Event()

    async def burst(ws: ServerConnection) -> None:
        for i in range(500):
            await ws.send(f"m{i}")
        sent.set()
        await ws.wait_closed()

    async with server(burst) as url:
        sock = await open_socket(url)
        await asyncio.wait_for(sent.wait(), 5)
        got = [await asyncio.wait_for(sock.recv(), 5) for _ in range(500)]
        assert got == [f"m{i}" for i in range(500)]
        assert sock.transport.is_reading()  # paused while the backlog was long, resumed once drained
        await sock.close()


async def test_server_ping_is_answered_without_reading() -> None:
    latency: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def pinger(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there")
        latency.set_result(await asyncio.wait_for(pong, 5))
        await ws.wait_closed()

    async with server(pinger) as url:
        sock = await open_socket(url)
        assert await asyncio.wait_for(latency, 5) >= 0  # nobody called recv(): the protocol answered
        await sock.close()


async def test_normal_close_by_server_ends_iteration_after_pending_messages() -> None:
    async def talk_then_close(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.send("two")
        await ws.close(1000, "bye")

    async with server(talk_then_close) as url:
        sock = await open_socket(url)
        assert [m async for m in sock] == ["one", "two"]
        assert sock.close_code == 1000 and sock.close_reason == "bye"
        with pytest.raises(ConnectionClosed) as info:
            await sock.send("late")
        assert info.value.rcvd is not None and info.value.rcvd.code == 1000


async def test_error_close_by_server_raises_connection_closed_error() -> None:
    async def fail(ws: ServerConnection) -> None:
        await ws.send("before")
        await ws.close(CloseCode.INTERNAL_ERROR, "server error")

    async with server(fail) as url:
        sock = await open_socket(url)
        got: list[str | bytes] = []
        with pytest.raises(ConnectionClosedError) as info:
            async for message in sock:
                got.append(message)
        assert got == ["before"]
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        assert info.value.rcvd.reason == "server error"


async def test_abrupt_tcp_drop_raises_connection_closed_error() -> None:
    async def drop(ws: ServerConnection) -> None:
        await ws.send("last words")
        ws.transport.abort()

    async with server(drop) as url:
        sock = await open_socket(url)
        with pytest.raises(ConnectionClosedError) as info:
            async for message in sock:
                assert message == "last words"
        assert info.value.rcvd is None  # no close frame: 1006
        assert sock.close_code == CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(ConnectionClosedError):
            await sock.send("anyone?")


async def test_close_handshake_then_send_raises() -> None:
    seen: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def watch(ws: ServerConnection) -> None:
        await ws.wait_closed()
        seen.set_result(ws.close_code)

    async with server(watch) as url:
        sock = await open_socket(url)
        await asyncio.wait_for(sock.close(), 5)
        assert await asyncio.wait_for(seen, 5) == 1000
        assert sock.close_code == 1000
        assert [m async for m in sock] == []  # a normal close ends iteration at once
        with pytest.raises(ConnectionClosed) as info:
            await sock.send("after close")
        assert info.value.sent is not None and info.value.sent.code == 1000
        await sock.close()  # idempotent


async def test_close_gives_up_on_a_peer_that_never_answers() -> None:
    async def deaf(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # never sees our close frame
        await ws.wait_closed()

    async with server(deaf) as url:
        sock = await open_socket(url, close_timeout=0.2)
        await asyncio.wait_for(sock.close(), 5)  # returns after the close timeout aborted the connection
        assert sock.close_code == CloseCode.ABNORMAL_CLOSURE


async def test_send_waits_when_the_peer_stops_reading_and_never_buffers_unboundedly() -> None:
    received: list[int] = []
    reading = asyncio.Event()

    async def slow(ws: ServerConnection) -> None:
        ws.transport.pause_reading()
        await reading.wait()
        ws.transport.resume_reading()
        async for message in ws:
            received.append(len(message))

    chunk = b"x" * (256 * 1024)
    async with server(slow) as url:
        sock = await open_socket(url)
        sends = 0
        blocked: asyncio.Task[None] | None = None
        try:
            while blocked is None and sends < 400:  # 100 MiB: far beyond any kernel buffer
                task = asyncio.ensure_future(sock.send(chunk))
                done, _ = await asyncio.wait({task}, timeout=0.5)
                sends += 1
                assert sock.transport.get_write_buffer_size() <= WRITE_HIGH + len(chunk) + 64
                if not done:
                    blocked = task
                else:
                    task.result()
            assert blocked is not None, "send never waited although the peer stopped reading"
        finally:
            reading.set()
        await asyncio.wait_for(blocked, 10)
        await sock.close()
        assert received == [len(chunk)] * sends


async def test_keepalive_fails_a_connection_whose_peer_went_silent() -> None:
    async def silent(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # our pings are never answered
        await ws.wait_closed()

    async with server(silent) as url:
        sock = await open_socket(url, ping_interval=0.05, ping_timeout=0.2)
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(sock.recv(), 5)
        assert info.value.sent is not None and info.value.sent.code == CloseCode.INTERNAL_ERROR
        assert "keepalive" in info.value.sent.reason


async def test_invalid_utf8_text_fails_the_connection_with_1007() -> None:
    async def garbage(ws: ServerConnection) -> None:
        await ws.send(b"\xff\xfe not utf-8", text=True)
        await ws.wait_closed()

    async with server(garbage) as url:
        sock = await open_socket(url)
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(sock.recv(), 5)
        assert info.value.sent is not None and info.value.sent.code == CloseCode.INVALID_DATA


async def test_two_concurrent_readers_are_refused() -> None:
    async with server(echo) as url:
        sock = await open_socket(url)
        first = asyncio.ensure_future(sock.recv())
        second = asyncio.ensure_future(sock.recv())  # tasks start in order: the first is already waiting
        with pytest.raises(ConcurrencyError):
            await asyncio.wait_for(second, 5)
        await sock.send("for the first")
        assert await asyncio.wait_for(first, 5) == "for the first"
        await sock.close()


async def test_send_refuses_other_types() -> None:
    async with server(echo) as url:
        sock = await open_socket(url)
        with pytest.raises(TypeError, match="not int"):
            await sock.send(42)  # type: ignore[arg-type]
        await sock.close()


async def test_frames_in_the_same_read_as_the_101_response_are_kept() -> None:
    """A raw server writes the upgrade response and two frames in one write()."""

    async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        frames = b"\x81\x05first" + b"\x82\x03\x01\x02\x03" + b"\x88\x02\x03\xe8"  # text, binary, close 1000
        writer.write(response + frames)
        await writer.drain()
        echo = await reader.readexactly(8)  # the client's masked close frame: 2 + 4 (mask) + 2 (code)
        assert echo[0] == 0x88
        writer.close()  # the server ends the TCP connection first (RFC 6455 §7.1.1)

    srv = await asyncio.start_server(raw, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        sock = await open_socket(f"ws://127.0.0.1:{port}/")
        assert [m async for m in sock] == ["first", b"\x01\x02\x03"]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_refused_upgrade_raises_invalid_status_with_the_response() -> None:
    async def never(ws: ServerConnection) -> None:  # pragma: no cover - the handshake is refused
        raise AssertionError

    def refuse(connection: ServerConnection, request: object) -> object:
        return connection.respond(401, "bad key\n")

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as srv:  # type: ignore[arg-type]
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(InvalidStatus) as info:
            await open_socket(f"ws://127.0.0.1:{port}/")
        assert info.value.response.status_code == 401
        assert info.value.response.body == b"bad key\n"


async def test_refusal_whose_body_ends_at_eof_is_still_reported() -> None:
    """No Content-Length: the body runs to the end of the stream, so the response completes only at EOF."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\nnot for you")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(InvalidStatus) as info:
            await open_socket(f"ws://127.0.0.1:{port}/")
        assert info.value.response.status_code == 403
        assert info.value.response.body == b"not for you"
    finally:
        srv.close()
        await srv.wait_closed()
