"""The model socket: a WebSocket client on the ``websockets`` sans-I/O protocol, run by an asyncio.Protocol.

Why not ``websockets.asyncio.client``: every call carries ~100 model messages per second, and that client
pays per message for an async context manager, a drain coroutine, an assembler with its own futures and an
async generator around ``recv()``. Dropping that machinery cut the server's CPU per call by 6-15 %
(docs/performance.md). The wire protocol itself stays in ``websockets.client.ClientProtocol``, a pure state
machine; the shell around it (sending, receiving, keepalive, closing) is :class:`ivr.sansio_websocket.
SansIOWebSocket`, shared with Twilio's media socket. This module adds the client's side: the upgrade
request, TLS and the connection.

:class:`RealtimeSocket` offers the subset of ``websockets.asyncio.client.ClientConnection`` the call session
uses, with the same semantics: ``send``, ``recv``, ``async for``, ``close``, ``transport``, ``request`` and
``response``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from functools import cache
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage
from websockets.uri import parse_uri

from ..sansio_websocket import WRITE_HIGH, SansIOWebSocket

__all__ = ["WRITE_HIGH", "RealtimeSocket", "connect_realtime"]


class RealtimeSocket(SansIOWebSocket):
    """One client WebSocket connection (see the module docstring); build it with :func:`connect_realtime`."""

    protocol: ClientProtocol

    # ------------------------------------------------------------------ opening handshake

    async def handshake(self, headers: dict[str, str], user_agent: str | None) -> None:
        """Send the upgrade request with ``headers`` and wait for the server's answer.

        Raises the protocol's handshake error (``InvalidStatus`` with the response for a refusal,
        ``InvalidMessage`` when the answer is not HTTP or the connection ends first).
        """
        protocol = self.protocol
        request = protocol.connect()
        request.headers.update(headers)
        if user_agent is not None:
            request.headers.setdefault("User-Agent", user_agent)
        self.request = request
        protocol.send_request(request)
        self._flush()
        await self._handshake
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if self.response is None:  # defensive: the protocol always notes why a handshake ended early
            raise InvalidMessage("the connection closed during the opening handshake")
        self._start_keepalive()


@cache
def _tls_context() -> ssl.SSLContext:
    """One default TLS context (system CAs, hostname checks) for every connection: loading CAs costs ms."""
    return ssl.create_default_context()


async def connect_realtime(
    url: str,
    headers: dict[str, str],
    *,
    open_timeout: float | None = 10.0,
    user_agent: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    max_size: int | None = None,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 10.0,
) -> RealtimeSocket:
    """Open a WebSocket to ``url`` (ws:// or wss://) with ``headers``; no proxy, no compression.

    Raises what the steps raise: ``InvalidURI`` for a bad URL, ``OSError`` (``socket.gaierror``,
    ``ssl.SSLError``, refused) for the connection, ``InvalidHandshake`` (``InvalidStatus`` carrying the
    response) for the upgrade, and ``TimeoutError`` when all of it takes longer than ``open_timeout``.
    Handshake headers are logged at DEBUG through ``logger``, which must redact secrets.
    """
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    tls = _tls_context() if uri.secure else None

    def factory() -> RealtimeSocket:
        protocol = ClientProtocol(uri, max_size=max_size, logger=logger)
        return RealtimeSocket(
            protocol, ping_interval=ping_interval, ping_timeout=ping_timeout, close_timeout=close_timeout
        )

    async with asyncio.timeout(open_timeout):
        _, socket_ = await loop.create_connection(
            factory, uri.host, uri.port, ssl=tls, server_hostname=uri.host if tls else None
        )
        try:
            await socket_.handshake(headers, user_agent)
        except BaseException:
            socket_.transport.abort()
            raise
    return socket_
