"""What every console route shares: the app state, templates, the SSE hub, auth helpers, security headers,
and the HTML answers to errors.

Services are looked up lazily (``state.services`` starts with the app's lifespan, after the routes exist),
so the router can be built when the app is created and still find Redis, operators and approvals once the
app is running; until then a route answers 503 with a sentence saying so.

Errors of console routes (401, 403, 503… raised as ``HTTPException``, and Redis failures) are answered in
HTML, because the console's script shows only HTML answers (:meth:`ConsoleContext.error_response`): a small
fragment for htmx requests, a page otherwise, and a redirect to the login page for a browser that is not
logged in.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import redis.asyncio as aioredis
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivr.console.render import environment
from ivr.console.sse import SseHub
from ivr.store.client import open_redis

if TYPE_CHECKING:
    from ivr.app import AppState
    from ivr.approvals.store import ApprovalStore
    from ivr.console.auth import Auth, Authenticated
    from ivr.console.operators import Operator
    from ivr.console.queries import ConsoleQueries
    from ivr.store.keys import KeySchema

__all__ = [
    "CSP",
    "ConsoleContext",
    "Page",
    "StaticFile",
    "is_htmx",
    "redis_failure",
    "safe_console_path",
    "security_headers",
]

#: Console pages run only the package's own scripts and styles: no inline script, no eval, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Blocking XREADs of the hub's readers; its own client's socket timeout is above it.
HUB_BLOCK_MS = 1000
#: Titles of error pages by status.
_TITLES = {
    400: "Not understood",
    401: "Not logged in",
    403: "Not allowed",
    404: "Not found",
    409: "Not changed",
    422: "Not understood",
    503: "Unavailable",
}


def security_headers(response: Response, *, cache: str = "no-store") -> Response:
    """Add the console's security headers (CSP, no framing, …) and a Cache-Control to a response."""
    for name, value in _PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Cache-Control"] = cache
    return response


def is_htmx(request: Request) -> bool:
    """True for a request htmx made (it answers into part of a page)."""
    return request.headers.get("hx-request") == "true"


def safe_console_path(value: Any) -> str:
    """A console path to send a browser to (after login, a Back link), else ``/ops/``: no open redirect.

    A full URL (a ``Referer``) keeps only its path, and the path must be the console's (``/ops…``, never
    ``//host``, which a browser reads as another site).
    """
    if not isinstance(value, str):
        return "/ops/"
    if not value.startswith("/"):
        try:
            value = urlsplit(value).path
        except ValueError:
            return "/ops/"
    if value.startswith("/ops") and not value.startswith("//"):
        return value
    return "/ops/"


def redis_failure(exc: BaseException) -> HTTPException:
    """What to answer when a Redis command failed: 503 "unreachable" only when it could not be reached.

    Connection errors and time-outs (and OS-level socket errors) are an outage, worth retrying; any other
    ``RedisError`` (a refused or malformed command) is a fault of this server, said as such (500).
    """
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return HTTPException(
            503,
            "Redis, where the console reads everything, is unreachable right now; try again shortly.",
            headers={"Retry-After": "5"},
        )
    return HTTPException(
        500,
        f"Redis refused the console's request ({type(exc).__name__}: {str(exc)[:200]}). This is a fault of "
        "the server, not an outage: retrying will not help; the server's log has the details.",
    )


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    version: str  # content hash: the URL carries it, so the file may be cached for a year


def load_static() -> dict[str, StaticFile]:
    """Every file under ``static/`` (the console's CSS/JS and the vendored htmx), read once at start-up."""
    files: dict[str, StaticFile] = {}
    root = resources.files("ivr.console") / "static"

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = prefix + child.name
            if child.is_dir():
                walk(child, name + "/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            if suffix not in _TYPES:
                continue
            body = child.read_bytes()
            files[name] = StaticFile(body, _TYPES[suffix], hashlib.sha256(body).hexdigest()[:12])

    walk(root, "")
    return files


@dataclass
class Page:
    """An authenticated console request: who, and the session's CSRF token for the page's forms."""

    operator: Operator
    csrf: str


class ConsoleContext:
    """Shared by the console's routes; one per app."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.env = environment()
        self.static = load_static()
        self.env.globals["static"] = self.static_url
        self.hub = SseHub(self._hub_client, block_ms=HUB_BLOCK_MS)
        self._queries: ConsoleQueries | None = None

    # -- services (lazy) -------------------------------------------------------------------------------------
    def services_ready(self) -> None:
        if self.state.services.redis is None:
            raise HTTPException(503, "the server is still starting (Redis is not connected yet); try again")

    @property
    def auth(self) -> Auth:
        return self.state.auth

    @property
    def redis(self) -> aioredis.Redis:
        self.services_ready()
        assert self.state.services.redis is not None
        return self.state.services.redis

    @property
    def keys(self) -> KeySchema:
        return self.state.services.keys

    @property
    def approvals(self) -> ApprovalStore:
        self.services_ready()
        assert self.state.services.approvals is not None
        return self.state.services.approvals

    @property
    def queries(self) -> ConsoleQueries:
        if self._queries is None:
            from ivr.console.queries import ConsoleQueries

            self._queries = ConsoleQueries(self.redis, self.keys, self.approvals, flows=self.state.flows)
        return self._queries

    def _hub_client(self) -> aioredis.Redis:
        """The hub's own client: its blocking XREADs must not hold the shared client's connections."""
        self.services_ready()
        return open_redis(
            self.state.services.url,
            decode_responses=True,
            socket_timeout=HUB_BLOCK_MS / 1000 + 5.0,
            socket_connect_timeout=5.0,
            health_check_interval=15,
        )

    async def close(self) -> None:
        await self.hub.close()

    # -- auth ------------------------------------------------------------------------------------------------
    async def who(self, request: Request) -> Authenticated | None:
        self.services_ready()
        return await self.auth.authenticate(request)

    async def page(self, request: Request) -> Page:
        """The operator of a page request, with the session's CSRF token for its forms; else 401 (which
        :meth:`error_response` turns into the login page for a browser)."""
        who = await self.who(request)
        if who is None:
            raise HTTPException(
                401,
                "log in at /ops/login, or send `Authorization: Bearer <token>` (ivr operators add)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Page(who.operator, who.session.csrf if who.session is not None else "")

    # -- errors ----------------------------------------------------------------------------------------------
    def error_response(self, request: Request, exc: HTTPException) -> Response:
        """An error of a console route in HTML (autoescaped), with the error's status and headers.

        htmx requests get a one-line fragment (the console's script swaps error answers in place when they
        are HTML); a browser opening a page while not logged in is sent to the login page (and back to the
        page after login); anything else gets a small page saying what went wrong (a 401 with a link to the
        login page).
        """
        status, message = exc.status_code, str(exc.detail)
        message = message[:1].upper() + message[1:]
        headers = dict(exc.headers or {})
        if is_htmx(request):
            return self.fragment(message, status, error=True, headers=headers)
        link: dict[str, str] = {}
        if status == 401:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            else:  # a form sent after the session ended: back to the page it was sent from
                target = safe_console_path(request.headers.get("referer"))
            login = f"/ops/login?next={quote(target, safe='/')}"
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return security_headers(RedirectResponse(login, 303))  # a browser opening a page
            link = {"back": login, "back_label": "Log in"}
        known = self.auth.known(request)
        page = Page(known.operator, known.session.csrf if known.session else "") if known else None
        response = self.html(
            "message.html",
            page,
            status=status,
            title=_TITLES.get(status, "Something went wrong" if status >= 500 else "Not done"),
            message=message,
            error=True,
            **link,
        )
        response.headers.update(headers)
        return response

    def fragment(
        self, message: str, status: int, *, error: bool, headers: dict[str, str] | None = None
    ) -> Response:
        """A one-line result for htmx to swap where the action was (its message escaped)."""
        html = f'<span class="{"error" if error else "notice"}" role="status">{escape(message)}</span>'
        return security_headers(HTMLResponse(html, status_code=status, headers=headers))

    # -- rendering -------------------------------------------------------------------------------------------
    def static_url(self, name: str) -> str:
        found = self.static.get(name)
        if found is None:
            raise KeyError(f"no console static file {name!r}")
        return f"/ops/static/{name}?v={found.version}"

    def render(self, template: str, **context: Any) -> str:
        context.setdefault("now", time.time())
        return self.env.get_template(template).render(**context)

    def html(self, template: str, who: Page | None, /, *, status: int = 200, **context: Any) -> HTMLResponse:
        """A full page with the operator's name, role and CSRF token, and the console's security headers."""
        if who is not None:
            context.setdefault("me", who.operator)
            context.setdefault("csrf", who.csrf)
            context.setdefault("me_can_decide", who.operator.can_decide)
        context.setdefault("csrf", "")
        return security_headers(HTMLResponse(self.render(template, **context), status_code=status))  # type: ignore[return-value]
