"""Running the app under uvicorn with a graceful drain on SIGTERM.

uvicorn's own shutdown closes every WebSocket at once (code 1012), which would drop live phone calls. So the
first SIGTERM/SIGINT only starts a drain: the webhook answers new calls politely, ``/readyz`` turns 503, live
calls go on until they end or ``IVR_DRAIN_TIMEOUT`` passes; then uvicorn shuts down. A second signal stops
at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from .app import AppState
from .media_endpoint import serve_media
from .telephony.media_socket import MediaSocket, media_websocket_protocol

#: How far above IVR_MAX_WS_MESSAGE_BYTES the WebSocket protocol's own frame limit is set.
PROTOCOL_HEADROOM_BYTES = 64 * 1024

#: Seconds uvicorn waits for open connections after the drain before it closes them.
SHUTDOWN_GRACE_S = 10.0

log = logging.getLogger("ivr.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: AppState, drain_timeout: float) -> None:
        super().__init__(config)
        self._state = state
        self._drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._signalled = False  # a first SIGTERM/SIGINT arrived
        state.drain_hook = self._drain_requested  # POST /api/drain (``ivr drain``) drains as SIGTERM does

    def _drain_requested(self) -> None:
        """Called on the event loop by :meth:`AppState.request_drain`."""
        if self._drain_task is None and not self.should_exit:
            log.info("drain requested over the API: draining")
            self._start_drain()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets is not None and self.started:  # `ivr serve` binds first; uvicorn logs only its own binds
            self._log_started_message(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # The first signal drains; a second one stops at once. A drain asked for over the API (`ivr drain`
        # in a Kubernetes preStop hook, which SIGTERM follows) is not a signal: the SIGTERM after it lets
        # the drain go on.
        if not self._signalled and not self.should_exit and self._loop is not None:
            self._signalled = True
            if self._drain_task is None:
                log.info("signal %d: draining (send it again to stop now)", sig)
                self._loop.call_soon_threadsafe(self._start_drain)
            else:
                log.info("signal %d: already draining (send it again to stop now)", sig)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        await self._state.drain(self._drain_timeout)
        self.should_exit = True


def media_ws_protocol(app: FastAPI) -> type[asyncio.Protocol]:
    """uvicorn's ``ws=`` for this app: ``/twilio/media`` served directly, the rest through ASGI."""
    state: AppState = app.state.ivr

    async def handler(sock: MediaSocket) -> None:
        await serve_media(sock, state)

    return media_websocket_protocol(handler)


def make_server(
    app: FastAPI, host: str, port: int, drain_timeout: float, log_level: str = "info"
) -> DrainingServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        # Twilio's media messages are well under 1 KiB. The app refuses a message over the cap itself (close
        # 1009, counted and logged with the reason: ivr.media_endpoint); the protocol's hard limit sits a
        # little above it, so it only stops what is far too big to assemble: the app's check acts first.
        ws_max_size=app.state.ivr.settings.max_ws_message_bytes + PROTOCOL_HEADROOM_BYTES,
        # Twilio's media stream skips ASGI (ivr.telephony.media_socket: 13-15 % less CPU per passthrough call
        # and 4-9 % per resampling call, measured side by side in docs/performance.md); every other WebSocket
        # path goes to uvicorn's sans-I/O protocol, 20-30 % cheaper than its "websockets" or "wsproto" ones.
        ws=media_ws_protocol(app),
        loop="auto",  # uvloop when installed (server.run() honours it), else asyncio's loop
        lifespan="on",
        # Once drained, connections still open (an operator's event stream, say) get this long before the
        # process exits anyway.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    return DrainingServer(config, app.state.ivr, drain_timeout)
