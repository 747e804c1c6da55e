"""A lean asyncio shell around the ``websockets`` sans-I/O protocol, shared by both of the call's sockets.

Every call carries two WebSockets: Twilio's media stream (we are the server) and the model's (we are the
client). Each carries 100-150 messages a second, so the per-message machinery around the wire protocol is
a large share of a call's CPU (docs/performance.md). The wire protocol itself (handshake, framing, masking,
ping/pong, the closing handshake) stays in ``websockets``' pure state machines (``ClientProtocol``,
``ServerProtocol``); this module is only the shell that runs one on an ``asyncio.Protocol``:

- **send** frames through the protocol and writes the bytes to the transport at once; it waits only when
  the kernel and the transport buffer are above a high-water mark (asyncio's ``pause_writing``);
- **receive** turns the protocol's frames into messages on a deque; a reader waits on one future, and only
  when the deque is empty; reading pauses when a slow reader lets the deque grow;
- pings from the peer are answered by the protocol itself; our own keepalive pings use timer handles
  (no task per connection); a close that the peer does not finish is cut by a timer.

:class:`SansIOWebSocket` offers the subset of ``websockets.asyncio`` connections the call uses, with the same
semantics: ``send``, ``recv``, ``async for``, ``close``, ``transport``, ``request`` and ``response``. One
difference: ``send`` on a closing socket raises :class:`ConnectionClosed` at once instead of waiting for the
TCP connection to end, so a call's audio loop never stalls on a dying socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from typing import Any, cast

from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
)
from websockets.frames import OK_CLOSE_CODES, CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, CONNECTING, OPEN, Protocol, State

__all__ = ["READ_HIGH", "READ_LOW", "WRITE_HIGH", "WRITE_LOW", "SansIOWebSocket"]

OP_TEXT = Opcode.TEXT
OP_BINARY = Opcode.BINARY
OP_CONT = Opcode.CONT
OP_PONG = Opcode.PONG

#: Write buffer high/low-water marks (bytes). Above ``high`` senders wait until it drains below ``low``.
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
#: Received messages queued for the reader before we stop reading the socket, and where reading resumes.
READ_HIGH = 64
READ_LOW = 16


class SansIOWebSocket(asyncio.Protocol):
    """One WebSocket connection, either side, run on a ``websockets`` sans-I/O protocol (module docstring).

    Subclasses add the opening handshake of their side: :class:`ivr.realtime.transport.RealtimeSocket`
    (client) and :class:`ivr.telephony.media_socket.DirectMediaSocket` (server).
    """

    def __init__(
        self,
        protocol: Protocol,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.protocol = protocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)  # set by connection_made
        self.request: Request | None = None
        self.response: Response | None = None
        self._loop = asyncio.get_running_loop()
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._reader: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._handshaking = True
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._lost_exc: BaseException | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._eof_written = False  # nothing may be written after write_eof()

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> State:
        """The WebSocket state: CONNECTING, OPEN, CLOSING or CLOSED."""
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 after an abrupt drop); ``None`` until the connection is closed."""
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received; ``None`` until the connection is closed."""
        return self.protocol.close_reason

    async def send(self, message: str | bytes | bytearray | memoryview, text: bool | None = None) -> None:
        """Send one message: ``str`` as a text frame, bytes as binary (``text=True``: bytes as text).

        The frame is written to the transport before this returns; the coroutine waits only while the
        write buffer is above the high-water mark. Raises :class:`ConnectionClosed` once the connection is
        closing or closed.
        """
        protocol = self.protocol
        if protocol.state is not OPEN:
            raise self._closed_exc()
        if self._write_paused:
            await self._wait_drained()
            if protocol.state is not OPEN:
                raise self._closed_exc()
        if isinstance(message, str):
            if text is False:
                protocol.send_binary(message.encode())
            else:
                protocol.send_text(message.encode())
        elif isinstance(message, (bytes, bytearray, memoryview)):
            if text:
                protocol.send_text(message)
            else:
                protocol.send_binary(message)
        else:
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")
        self._flush()

    async def recv(self) -> str | bytes:
        """The next message: ``str`` for a text frame, ``bytes`` for binary.

        Raises :class:`ConnectionClosedOK` after a normal close and :class:`ConnectionClosedError` after an
        abnormal one, once every message received before the close was returned. Cancelling is safe.
        """
        messages = self._messages
        while not messages:
            if self._lost.done():
                raise self._closed_exc()
            if self._reader is not None:
                raise ConcurrencyError("cannot call recv() while another coroutine is already waiting in it")
            reader = self._reader = self._loop.create_future()
            try:
                await reader
            finally:
                self._reader = None
        message = messages.popleft()
        if self._reading_paused and len(messages) <= READ_LOW:
            self._resume_reading()
        return message

    def __aiter__(self) -> SansIOWebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        """Like :meth:`recv`; a normal close ends the iteration, an abnormal one raises."""
        messages = self._messages
        while not messages:
            if self._lost.done():
                exc = self._closed_exc()
                if isinstance(exc, ConnectionClosedOK):
                    raise StopAsyncIteration
                raise exc
            if self._reader is not None:
                raise ConcurrencyError("cannot iterate while another coroutine is already waiting in recv()")
            reader = self._reader = self._loop.create_future()  # inlined: one coroutine less per wait
            try:
                await reader
            finally:
                self._reader = None
        message = messages.popleft()
        if self._reading_paused and len(messages) <= READ_LOW:
            self._resume_reading()
        return message

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the closing handshake and wait for the TCP connection to end.

        The peer gets ``close_timeout`` seconds to finish the handshake; then the connection is aborted (that
        timer runs even if this coroutine is cancelled). Idempotent.
        """
        protocol = self.protocol
        if protocol.state is OPEN:
            protocol.send_close(code, reason)
            self._flush()
            self._arm_close_timer()
        elif protocol.state is CONNECTING:
            self.transport.abort()
        await asyncio.shield(self._lost)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection has ended."""
        await asyncio.shield(self._lost)

    # ------------------------------------------------------------------ asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events: list[Any] = protocol.events_received()
        if protocol.writes:  # pongs, close echoes, EOF
            self._flush()
        if protocol.state is not OPEN:
            self._on_not_open()
        if self._handshaking:
            events = self._on_handshake_events(events)
        messages = self._messages
        queued = len(messages)
        for frame in events:
            opcode = frame.opcode
            if opcode is OP_TEXT and frame.fin:
                try:
                    messages.append(frame.data.decode())
                except UnicodeDecodeError as exc:
                    self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                    break
            elif opcode is OP_BINARY and frame.fin:
                messages.append(bytes(frame.data))
            elif opcode is OP_TEXT or opcode is OP_BINARY or opcode is OP_CONT:
                if not self._on_fragment(frame):
                    break
            elif opcode is OP_PONG:
                self._on_pong(bytes(frame.data))
        if len(messages) != queued:
            reader = self._reader
            if reader is not None and not reader.done():
                reader.set_result(None)
            if not self._reading_paused and len(messages) >= READ_HIGH:
                self._reading_paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        events = self.protocol.events_received()  # only a response read up to EOF can arrive here
        self._flush()
        if self._handshaking:
            self._on_handshake_events(events)
        self._settle_handshake()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent; the state is CLOSED from here on
        self.protocol.events_received()
        self._lost_exc = exc
        for timer in (self._close_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._ping_timer = None
        self._settle_handshake()
        if not self._lost.done():
            self._lost.set_result(None)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------ internals

    def _flush(self) -> None:
        """Write what the protocol produced; an empty chunk is end of stream (half-close; close on TLS)."""
        transport = self.transport
        for chunk in self.protocol.data_to_send():
            if self._eof_written:  # the peer ended the connection before we wrote (a refused handshake)
                break
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                self._eof_written = True
                with contextlib.suppress(OSError, RuntimeError):  # gone already; connection_lost follows
                    transport.write_eof()
            else:
                transport.close()

    async def _wait_drained(self) -> None:
        while self._write_paused:
            drain = self._drain
            if drain is None or drain.done():
                drain = self._drain = self._loop.create_future()
            await asyncio.shield(drain)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if not self._lost.done():
            self.transport.resume_reading()

    def _on_handshake_events(self, events: list[Any]) -> list[Any]:
        """During the opening handshake: settle it on the request or response, or on a failure the protocol
        noted. Returns the frames that arrived in the same read right after the handshake message."""
        protocol = self.protocol
        if events and isinstance(events[0], Response):
            self.response = events[0]
            events = events[1:]
        elif events and isinstance(events[0], Request):
            self.request = events[0]
            events = events[1:]
        elif protocol.handshake_exc is None:
            return []  # the handshake message is still incomplete
        self._settle_handshake()
        return events if protocol.handshake_exc is None else []

    def _settle_handshake(self) -> None:
        self._handshaking = False
        if not self._handshake.done():
            self._handshake.set_result(None)

    def _on_fragment(self, frame: Frame) -> bool:
        """One piece of a fragmented message; False when it is not valid UTF-8 (the connection failed)."""
        if frame.opcode is not OP_CONT:
            self._fragments = [bytes(frame.data)]
            self._fragment_text = frame.opcode is OP_TEXT
        else:
            self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return True
        data = b"".join(self._fragments)
        self._fragments = []
        if not self._fragment_text:
            self._messages.append(data)
            return True
        try:
            self._messages.append(data.decode())
        except UnicodeDecodeError as exc:
            self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            return False
        return True

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame, stop parsing, await the peer's close."""
        self.protocol.fail(code, reason)
        self._flush()
        self._arm_close_timer()

    def _on_not_open(self) -> None:
        if self.protocol.close_expected():
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._lost.done():
            self._close_timer = self._loop.call_later(self.close_timeout, self._on_close_timeout)

    def _on_close_timeout(self) -> None:
        self._close_timer = None
        self.transport.abort()

    def _closed_exc(self) -> ConnectionClosed:
        """The exception for a closing or closed connection, carrying the close frames known so far."""
        protocol = self.protocol
        if protocol.state is CLOSED:
            exc = protocol.close_exc
            if self._lost_exc is not None:
                exc.__cause__ = self._lost_exc
            return exc
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        ok = (
            rcvd is not None
            and sent is not None
            and rcvd.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
        )
        kind = ConnectionClosedOK if ok else ConnectionClosedError
        return kind(rcvd, sent, protocol.close_rcvd_then_sent)

    # keepalive: a ping every ping_interval; no pong within ping_timeout fails the connection (1011)

    def _start_keepalive(self) -> None:
        if self.ping_interval is not None and self._ping_timer is None and not self._lost.done():
            self._ping_timer = self._loop.call_later(self.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self.protocol.state is not OPEN:
            return
        payload = os.urandom(4)
        self.protocol.send_ping(payload)
        self._flush()
        if self.ping_timeout is None:
            self._start_keepalive()
            return
        self._ping_payload = payload
        self._ping_timer = self._loop.call_later(self.ping_timeout, self._on_ping_timeout)

    def _on_pong(self, data: bytes) -> None:
        if self._ping_payload is not None and data == self._ping_payload:
            self._ping_payload = None
            if self._ping_timer is not None:
                self._ping_timer.cancel()
                self._ping_timer = None
            self._start_keepalive()

    def _on_ping_timeout(self) -> None:
        self._ping_timer = None
        if self.protocol.state is OPEN:
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
        self.transport.abort()
