"""Request limits: a body cap in front of every HTTP route, and a per-client limiter of signature failures.

Why here and not in a proxy: the webhook must read the body to check Twilio's signature (it covers the form
fields), so without a cap an unsigned 300 MiB POST is read whole into memory first. :class:`BodyLimit` is a
plain ASGI middleware: it refuses a ``Content-Length`` over the cap before reading anything, and counts a
body without one (chunked) as it arrives, answering 413 the moment the cap is passed, while the client is
still sending. At most ``max_bytes`` are ever held; the app then sees the same body as before.

:class:`FailureLimiter` is sans-I/O (the caller passes the clock): a sliding window of failure times per
client, bounded in clients and in entries per client.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyLimit", "FailureLimiter"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: HTTP request bodies larger than ``max_bytes`` get 413 without being read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int, setting: str = "IVR_MAX_BODY_BYTES") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"a body of {declared} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the client went away
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send, f"a body over {self.max_bytes} bytes")
                return
            if body:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send, what: str) -> None:
        text = (
            f"request body too large: {what}; this server accepts at most {self.max_bytes} bytes "
            f"({self.setting})\n"
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(text)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": text, "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses this before us; counting still caps it
    return None


class FailureLimiter:
    """At most ``limit`` failures per client in any ``window_s`` seconds; past that, the client waits.

    ``retry_after(client, now)`` is None while the client may go on, else the seconds until its oldest
    failure in the window leaves it. Only the last ``limit`` failure times are kept per client, and at most
    ``max_clients`` clients (least recently failing dropped first).
    """

    def __init__(self, limit: int, window_s: float, max_clients: int = 10_000) -> None:
        if limit < 1 or not window_s > 0 or max_clients < 1:
            raise ValueError("limit and max_clients must be at least 1 and window_s positive")
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str, now: float) -> float | None:
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return None
        return times[0] + self.window_s - now

    def failed(self, client: str, now: float) -> None:
        times = self._recent(client, now)
        if times is None:
            times = self._failures[client] = deque(maxlen=self.limit)
        self._failures.move_to_end(client)
        times.append(now)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def failures(self, client: str, now: float) -> int:
        times = self._recent(client, now)
        return 0 if times is None else len(times)

    def tracked_clients(self) -> int:
        return len(self._failures)
