"""Running the real app under uvicorn on a loopback socket, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from ivr.app import AppState, create_app
from ivr.flows import FlowSet
from ivr.server import media_ws_protocol
from ivr.settings import Settings
from tests.support.fixtures import OPENAI_TEST_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN

ACCOUNT_SID = TWILIO_ACCOUNT_SID
AUTH_TOKEN = TWILIO_AUTH_TOKEN
OPERATOR_TOKEN = "operator-secret-token"
TEST_FLOWS = Path(__file__).resolve().parent.parent / "data" / "flows"


@dataclass
class RunningServer:
    base_url: str
    port: int
    settings: Settings
    state: AppState
    server: uvicorn.Server


def make_settings(**overrides: object) -> Settings:
    base = Settings(
        openai_api_key=OPENAI_TEST_KEY,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        operator_token=OPERATOR_TOKEN,
        flows_dir=TEST_FLOWS,
    )
    return base.with_(**overrides)


async def _started(base_url: str, serving: asyncio.Task[None]) -> None:
    async def healthy() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            await http.get("/healthz")

    probe = asyncio.create_task(healthy())
    await asyncio.wait({probe, serving}, return_when=asyncio.FIRST_COMPLETED)
    if not probe.done():
        probe.cancel()
    with contextlib.suppress(BaseException):
        await probe


@asynccontextmanager
async def running_server(
    settings: Settings, flows: FlowSet | None = None, *, media: str = "direct"
) -> AsyncIterator[RunningServer]:
    """Bind 127.0.0.1:0 first (so the public URL is known), then serve the app on that socket.

    ``media="direct"`` carries Twilio's media socket as ``ivr serve`` does (no ASGI); ``"asgi"`` through
    uvicorn's own WebSocket protocol and Starlette, as any other ASGI server would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    if not settings.public_url:
        settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings, flows)
    ws = media_ws_protocol(app) if media == "direct" else "websockets-sansio"
    config = uvicorn.Config(app, log_config=None, lifespan="on", ws_ping_interval=None, ws=ws)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve(sockets=[sock]))  # _serve: no signal handlers in tests
    try:
        # Wait for start-up (it loads the offline engine's models, which can take seconds on a busy machine,
        # and a test's own timeouts should not include that): /healthz answers once uvicorn accepts, i.e.
        # after the lifespan's start-up. A start-up failure ends the task instead; it surfaces when the task
        # is awaited below.
        await _started(f"http://127.0.0.1:{port}", task)
        yield RunningServer(f"http://127.0.0.1:{port}", port, settings, app.state.ivr, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
