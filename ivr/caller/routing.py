"""Where the simulated Twilio sends each request: the public origin, a local address, or a pool of backends.

Why: Twilio only knows the public URL (``IVR_PUBLIC_URL``) and signs every request over it; what answers is a
load balancer in front of one or more ``ivr serve`` instances. To exercise "a call outlives the instance that
carried it" without a real load balancer, :class:`Router` plays one: every HTTP request and WebSocket connect
goes to the first backend that accepts the connection (a refused or reset connection moves on to the next),
trying those whose ``/readyz`` answers 200 first (a draining instance last), while the URLs that are *signed*
stay the public ones. Without backends it keeps the older, simpler rules:
HTTP to ``base_url``, the media WebSocket to the TwiML's host or to ``connect_to``.

This module holds no call state; :mod:`ivr.caller.client` owns one :class:`Router` per call.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["Router", "WsTarget", "check_backends", "split_host_port"]

#: Seconds a backend's ``/readyz`` may take before the simulated load balancer counts it unhealthy.
HEALTH_TIMEOUT_S = 1.0


def split_host_port(value: str, *, option: str = "connect_to") -> tuple[str, int]:
    """``"HOST:PORT"`` → ``(host, port)``; IPv6 brackets are removed. ValueError names ``option``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option}={value!r} must be HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port)


def check_backends(backends: Any) -> tuple[str, ...]:
    """Validate ``CallOptions.backends`` (http(s) base URLs); return them without a trailing slash."""
    if isinstance(backends, str) or not isinstance(backends, tuple | list):
        raise ValueError(
            f"backends must be a tuple of base URLs such as ('http://127.0.0.1:8001',), got {backends!r}"
        )
    out: list[str] = []
    for backend in backends:
        parts = urlsplit(backend) if isinstance(backend, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"backend {backend!r} must be an http(s) base URL such as http://127.0.0.1:8001")
        if parts.query or parts.fragment:
            raise ValueError(f"backend {backend!r} must not carry a query string or fragment")
        out.append(backend.rstrip("/"))
    return tuple(out)


@dataclass(frozen=True)
class WsTarget:
    """One way to open the media WebSocket: the URL to dial and the socket to dial it on (None: its host)."""

    url: str  # scheme + the TwiML host (kept for the Host header and TLS name) + path
    host: str | None = None
    port: int | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.host is not None else urlsplit(self.url).netloc


@dataclass(frozen=True)
class Router:
    """Maps the URLs Twilio would request (public ones) to where this simulated call really sends them."""

    public: str  # the public origin (and any path prefix) without a trailing slash
    base: str  # CallOptions.base_url without a trailing slash
    backends: tuple[str, ...] = ()
    connect_to: str | None = None

    def _below_public(self, url: str) -> str | None:
        """What follows the public prefix in ``url`` ("/twilio/voice", "?a=1", "/"); None if outside it."""
        if url == self.public:
            return "/"
        for sep in ("/", "?"):
            if url.startswith(self.public + sep):
                return url[len(self.public) :]
        return None

    async def healthy_first(self, http: httpx.AsyncClient | None = None) -> tuple[str, ...]:
        """The backends, those whose ``GET /readyz`` answers 200 first, as a load balancer's health checks
        order them (a draining instance answers 503: it gets new requests only when nothing else answers)."""
        if len(self.backends) < 2:
            return self.backends
        ready: list[str] = []
        rest: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            client = http or await stack.enter_async_context(httpx.AsyncClient())
            for backend in self.backends:
                try:
                    ok = (await client.get(backend + "/readyz", timeout=HEALTH_TIMEOUT_S)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                (ready if ok else rest).append(backend)
        return (*ready, *rest)

    def http_targets(self, url: str, order: tuple[str, ...] | None = None) -> list[str]:
        """The URLs to try, in order, for a request Twilio makes to the public ``url``.

        With backends: each backend + the path (and query) below the public prefix — or the URL's own path
        when it lies outside the public origin, since the load balancer answers for every name it carries.
        Without: ``base_url`` + that path when ``url`` is under the public URL, else ``url`` itself.
        """
        below = self._below_public(url)
        if self.backends:
            if below is None:
                parts = urlsplit(url)
                below = urlunsplit(("", "", parts.path or "/", parts.query, ""))
            return [backend + below for backend in order or self.backends]
        if below is not None:
            return [self.base + below]
        return [url]

    def ws_targets(self, url: str, order: tuple[str, ...] | None = None) -> list[WsTarget]:
        """The ways to try, in order, to open the media WebSocket the TwiML names (``ws(s)://host/path``)."""
        parts = urlsplit(url)
        path = parts.path or "/"
        if self.backends:
            targets: list[WsTarget] = []
            for backend in order or self.backends:
                b = urlsplit(backend)
                secure = b.scheme == "https"
                port = b.port or (443 if secure else 80)
                dial = urlunsplit(("wss" if secure else "ws", parts.netloc, path, parts.query, ""))
                targets.append(WsTarget(dial, b.hostname, port))
            return targets
        if self.connect_to:
            host, port = split_host_port(self.connect_to)
            return [WsTarget(urlunsplit(("ws", parts.netloc, path, parts.query, "")), host, port)]
        return [WsTarget(url)]

    def describe(self) -> str:
        """Where requests go, for error messages."""
        if self.backends:
            return "backends " + ", ".join(self.backends)
        return self.base

    async def request(
        self, http: httpx.AsyncClient, method: str, url: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send one request for the public ``url`` to the first target that accepts the connection.

        Only connection failures move on to the next target: refused, reset or timed out while connecting,
        or, behind several backends, a kept-alive connection the backend dropped before answering (it died:
        a load balancer's health checks would have taken it out, and Twilio's request would reach another).
        Once a backend answers, its answer — whatever the status — is the answer, as with a load balancer.
        Raises the last :class:`httpx.HTTPError` when no target accepted. With ``stream=True`` the caller must
        ``aclose()`` the response.
        """
        targets = self.http_targets(url, await self.healthy_first(http))
        retried: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
        if self.backends:
            retried += (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
        for i, target in enumerate(targets):
            request = http.build_request(method, target, **kwargs)
            try:
                return await http.send(request, stream=stream)
            except retried:
                if i == len(targets) - 1:
                    raise
        raise AssertionError("unreachable: http_targets() is never empty")
