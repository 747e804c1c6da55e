"""Test helpers for the operations console: logged-in HTTP clients and a server-sent-events reader."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from tests.support.server import RunningServer

__all__ = ["ConsoleClient", "Sse", "logged_in", "wait_ready"]


@dataclass
class ConsoleClient:
    """An operator logged in through the console's login form: a cookie-carrying client and its CSRF token."""

    name: str
    token: str
    client: httpx.AsyncClient
    csrf: str


async def wait_ready(server: RunningServer) -> None:
    """Until the app's lifespan has started its Redis services (running_server does not wait for it)."""
    async with httpx.AsyncClient(base_url=server.base_url) as probe:
        for _ in range(200):
            if server.state.services.operators is not None:
                return
            await probe.get("/healthz")
            await asyncio.sleep(0.02)
    raise TimeoutError("the app's Redis services did not start")


@asynccontextmanager
async def logged_in(server: RunningServer, name: str, role: str) -> AsyncIterator[ConsoleClient]:
    """Add an operator (as `ivr operators add` does) and log in with their token through POST /ops/login."""
    await wait_ready(server)
    store = server.state.services.operators
    assert store is not None
    token = await store.add(name, role)  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        response = await client.post("/ops/login", data={"token": token})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/ops/"
        page = await client.get("/ops/fleet")
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        assert csrf, page.text[:500]
        yield ConsoleClient(name, token, client, csrf.group(1))


class Sse:
    """Reads server-sent events from a streaming response, message by message, across several calls.

    Keep one per response: an abandoned line iterator is finalised by the garbage collector, which closes the
    response's connection.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def take(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        """The next ``count`` messages that carry an id: [(id, data)] (comments and id-less ones skipped)."""
        found: list[tuple[str, str]] = []

        async def read() -> None:
            current_id, data = None, []
            async for line in self.lines:
                if line.startswith("id: "):
                    current_id = line[4:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "":
                    if current_id is not None:
                        found.append((current_id, "\n".join(data)))
                        if len(found) >= count:
                            return
                    current_id, data = None, []

        await asyncio.wait_for(read(), timeout)
        return found

    async def until(self, text: str, timeout: float = 5.0) -> tuple[str, str]:
        """The first message (with an id) whose data contains ``text``; earlier ones are skipped."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no event containing {text!r} within {timeout} s")
            (message,) = await self.take(1, left)
            if text in message[1]:
                return message
