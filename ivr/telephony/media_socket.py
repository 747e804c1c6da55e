"""Twilio's media stream socket, served without ASGI: the hot path of every call.

A call's media stream carries ~100 messages a second each way. Through uvicorn's WebSocket protocol, the ASGI
``receive``/``send`` hops (an ``asyncio.Queue`` and a coroutine chain per message, plus uvicorn pausing and
resuming the transport around every message) and Starlette's ``WebSocket`` wrapper, a quarter of a
passthrough call's CPU went to carrying the socket (docs/performance.md). Here ``/twilio/media`` runs on the
same lean shell as the model socket (:class:`ivr.sansio_websocket.SansIOWebSocket` around ``websockets``'
``ServerProtocol``), inside the same uvicorn server, on the same port:

- :func:`media_websocket_protocol` builds the class uvicorn is given as ``ws=``. uvicorn's HTTP protocol
  hands it every WebSocket upgrade; it reads the request line and keeps ``/twilio/media`` for
  :class:`DirectMediaSocket`, and gives any other path to uvicorn's own protocol (then the ASGI app), so
  routes and errors elsewhere behave as before.
- Both paths run the same endpoint (:func:`ivr.media_endpoint.serve_media`) through the small
  :class:`MediaSocket` interface: :class:`DirectMediaSocket` here, :class:`StarletteMediaSocket` when the
  app runs under another ASGI server (or uvicorn with a stock ``ws=``), which keeps the app portable.

Uvicorn's duties for a connection carry over: it is in ``server_state.connections`` (uvicorn's shutdown
closes it with 1012, and waits for it), its task in ``server_state.tasks``, the client address honours
``--proxy-headers``/``FORWARDED_ALLOW_IPS`` through uvicorn's own middleware, and keepalive pings follow
``ws_ping_interval``/``ws_ping_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.protocol import CONNECTING, OPEN
from websockets.server import ServerProtocol

from ..sansio_websocket import READ_LOW, SansIOWebSocket

__all__ = [
    "BINARY",
    "MEDIA_PATH",
    "TOO_BIG",
    "DirectMediaSocket",
    "MediaSocket",
    "StarletteMediaSocket",
    "media_websocket_protocol",
]

#: The path Twilio's ``<Stream url=…>`` points at (ivr.settings.Settings.media_stream_url).
MEDIA_PATH = "/twilio/media"

#: :meth:`MediaSocket.receive` returns these for a binary frame and for a frame over the size limit.
BINARY = "\x00binary"
TOO_BIG = "\x00too-big"

log = logging.getLogger("ivr.media")

# websockets logs every handshake line at DEBUG (the signature header included) and "connection open" at
# INFO; ivr logs its own line per call, so the protocol's logger only passes warnings on.
_wire_log = logging.getLogger("ivr.media.wire")
_wire_log.setLevel(logging.WARNING)


class MediaSocket(Protocol):
    """What the media endpoint needs from Twilio's socket, whichever server carries it."""

    @property
    def headers(self) -> Mapping[str, str]:
        """The upgrade request's headers (case-insensitive ``get``)."""
        ...

    @property
    def client_host(self) -> str | None:
        """The peer's address (behind a trusted proxy: the forwarded one)."""
        ...

    @property
    def open(self) -> bool:
        """Accepted and not closing: messages sent now reach the peer."""
        ...

    async def accept(self) -> None:
        """Answer the upgrade with 101."""

    async def deny(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        """Refuse the upgrade with an HTTP response (before :meth:`accept`)."""

    async def receive(self, limit: int) -> str | None:
        """The next text message; :data:`BINARY` or :data:`TOO_BIG` (over ``limit`` bytes) as markers;
        ``None`` once the socket closed."""

    async def send(self, text: str) -> None:
        """Send a text message; nothing when the socket is no longer open."""

    async def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (before :meth:`accept`: refuse with 403); idempotent; does not wait."""


def _too_big_text(text: str, limit: int) -> bool:
    # len() is free; encoding is needed only where characters could be up to 4 bytes each.
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit)


# ---------------------------------------------------------------------------------------------- ASGI path


class StarletteMediaSocket:
    """:class:`MediaSocket` over Starlette's ``WebSocket``: the app under any ASGI server."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    @property
    def headers(self) -> Mapping[str, str]:
        return self.ws.headers

    @property
    def client_host(self) -> str | None:
        client = self.ws.client
        return client.host if client is not None else None

    @property
    def open(self) -> bool:
        return self.ws.client_state is WebSocketState.CONNECTED

    async def accept(self) -> None:
        await self.ws.accept()

    async def deny(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        if "websocket.http.response" in self.ws.scope.get("extensions", {}):
            from starlette.responses import PlainTextResponse

            await self.ws.send_denial_response(
                PlainTextResponse(body, status_code=status, headers=dict(headers))
            )
        else:  # the server cannot send an HTTP answer: a 403 is what it can say
            await self.ws.close(code=1008)

    async def receive(self, limit: int) -> str | None:
        try:
            message = await self.ws.receive()
        except (RuntimeError, WebSocketDisconnect):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            data = message.get("bytes")
            return TOO_BIG if data is not None and len(data) > limit else BINARY
        return TOO_BIG if _too_big_text(text, limit) else text

    async def send(self, text: str) -> None:
        if self.ws.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # gone meanwhile: receive() says so
                await self.ws.send_text(text)

    async def close(self, code: int, reason: str = "") -> None:
        if self.ws.client_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.close(code=code, reason=reason or None)


# ---------------------------------------------------------------------------------------------- direct path


class DirectMediaSocket(SansIOWebSocket):
    """:class:`MediaSocket` on the lean shell: the server side of Twilio's socket, no ASGI in between."""

    protocol: ServerProtocol

    def __init__(
        self,
        protocol: ServerProtocol,
        *,
        server_state: ServerState,
        ping_interval: float | None,
        ping_timeout: float | None,
        trusted_proxies: list[str] | str | None,
    ) -> None:
        super().__init__(protocol, ping_interval=ping_interval, ping_timeout=ping_timeout)
        self._server_state = server_state
        self._trusted_proxies = trusted_proxies
        self._client_host: str | None = None
        self._headers: Headers = Headers()

    # -------------------------------------------------------------- MediaSocket

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def client_host(self) -> str | None:
        return self._client_host

    @property
    def open(self) -> bool:
        return self.protocol.state is OPEN

    async def accept(self) -> None:
        protocol, request = self.protocol, self.request
        if protocol.state is not CONNECTING or request is None:
            return
        response = protocol.accept(request)
        protocol.send_response(response)
        self.response = response
        self._flush()
        if response.status_code != 101:  # not a valid WebSocket upgrade: the protocol wrote why (400/426)
            log.warning("refused a media stream upgrade: %d %s", response.status_code, response.body.decode())
            self.transport.close()
            return
        self._start_keepalive()

    async def deny(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        protocol = self.protocol
        if protocol.state is not CONNECTING:
            return
        response = protocol.reject(status, body)
        response.headers.update(headers)
        protocol.send_response(response)
        self.response = response
        self._flush()
        self.transport.close()

    async def receive(self, limit: int) -> str | None:
        messages = self._messages
        while not messages:  # inlined recv(): this runs for every media frame of every call
            if self._lost.done():
                return None
            reader = self._reader = self._loop.create_future()
            try:
                await reader
            finally:
                self._reader = None
        message = messages.popleft()
        if self._reading_paused and len(messages) <= READ_LOW:
            self._resume_reading()
        if isinstance(message, str):
            return TOO_BIG if _too_big_text(message, limit) else message
        return TOO_BIG if len(message) > limit else BINARY

    async def send(self, text: str) -> None:  # type: ignore[override]  # MediaSocket.send: str, never raises
        protocol = self.protocol
        if protocol.state is not OPEN:
            return
        if self._write_paused:
            await self._wait_drained()
            if protocol.state is not OPEN:
                return
        protocol.send_text(text.encode())
        self._flush()

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        protocol = self.protocol
        if protocol.state is OPEN:
            protocol.send_close(code, reason)
            self._flush()
            self._arm_close_timer()
        elif protocol.state is CONNECTING:
            await self.deny(403, "", {})

    # -------------------------------------------------------------- uvicorn's bookkeeping

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server_state.connections.add(cast(Any, self))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server_state.connections.discard(cast(Any, self))

    def shutdown(self) -> None:
        """uvicorn is stopping (after ivr's drain): close with 1012 ("service restart")."""
        protocol = self.protocol
        if protocol.state is OPEN:
            protocol.send_close(CloseCode.SERVICE_RESTART)
            self._flush()
            self._arm_close_timer()
        else:
            self.transport.close()

    async def resolve_client(self) -> None:
        """Note the request's headers and the peer's address, through uvicorn's proxy-headers middleware
        when ``--proxy-headers`` is on (``FORWARDED_ALLOW_IPS`` names the proxies trusted)."""
        peer = self.transport.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self._headers = self.request.headers if self.request is not None else Headers()
        self._client_host = client[0] if client else None
        if self._trusted_proxies is None or client is None:
            return
        scope: dict[str, Any] = {
            "type": "websocket",
            "client": client,
            "scheme": "ws",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self._headers.raw_items()
            ],
        }
        middleware = ProxyHeadersMiddleware(self._note_client, trusted_hosts=self._trusted_proxies)
        await middleware(cast(Any, scope), cast(Any, None), cast(Any, None))

    async def _note_client(self, scope: Any, _receive: Any, _send: Any) -> None:
        found = scope.get("client")
        self._client_host = str(found[0]) if found else None


MediaHandler = Callable[[MediaSocket], Awaitable[None]]


def media_websocket_protocol(handler: MediaHandler, max_size: int | None = None) -> type[asyncio.Protocol]:
    """The class to give uvicorn as ``ws=``: ``/twilio/media`` runs ``handler`` on a
    :class:`DirectMediaSocket`; every other WebSocket path goes to uvicorn's sans-I/O protocol (ASGI)."""

    class MediaRouter(asyncio.Protocol):
        def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any]) -> None:
            self.config, self.server_state, self.app_state = config, server_state, app_state
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            # uvicorn's HTTP protocol hands over the whole upgrade request in this first call.
            transport = self.transport
            assert transport is not None
            target = data.split(b" ", 2)[1] if data.count(b" ", 0, 2048) >= 2 else b""
            protocol: asyncio.Protocol
            if target.split(b"?", 1)[0] == MEDIA_PATH.encode():
                protocol = _direct(self.config, self.server_state, handler, max_size)
            else:
                protocol = WebSocketsSansIOProtocol(self.config, self.server_state, self.app_state)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            protocol.data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:  # before any request byte: nothing to do
            pass

    return MediaRouter


def _direct(config: Config, server_state: ServerState, handler: MediaHandler, max_size: int | None) -> Any:
    sock = DirectMediaSocket(
        ServerProtocol(max_size=max_size if max_size is not None else config.ws_max_size, logger=_wire_log),
        server_state=server_state,
        ping_interval=config.ws_ping_interval,
        ping_timeout=config.ws_ping_timeout,
        trusted_proxies=config.forwarded_allow_ips if config.proxy_headers else None,
    )

    async def run() -> None:
        await sock._handshake  # the request (or the reason there is none) is in
        if sock.request is None:  # not a request the protocol could read (uvicorn parsed it, so rare)
            if not sock.transport.is_closing():
                sock.transport.write(
                    sock.protocol.reject(400, "invalid WebSocket upgrade request\n").serialize()
                )
                sock.transport.close()
            return
        try:
            await sock.resolve_client()
            await handler(sock)
        except Exception:
            log.exception("the media stream handler failed")
            if sock.protocol.state is CONNECTING:
                await sock.deny(500, "Internal Server Error\n", {})
        finally:
            await sock.close(CloseCode.NORMAL_CLOSURE)

    task = asyncio.get_running_loop().create_task(run())
    server_state.tasks.add(task)
    task.add_done_callback(server_state.tasks.discard)
    return sock
