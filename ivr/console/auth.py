"""Who is asking: operator tokens (``Authorization: Bearer``) and console session cookies, roles, CSRF.

One :class:`Auth` per app. Routes declare what they need with ``Depends(auth.require("approver"))``; the
dependency answers

* **401** (with ``WWW-Authenticate: Bearer``) when there are no valid credentials,
* **403** when the operator's role is too low, or when a cookie-authenticated unsafe request (POST, PUT,
  PATCH, DELETE) lacks the session's CSRF token or comes from a foreign origin,
* **503** when Redis, which holds operators and sessions, cannot be reached (the bootstrap admin's bearer
  token still works then: it is compared with ``IVR_OPERATOR_TOKEN`` without Redis).

Why bearer requests need no CSRF token: browsers never attach an ``Authorization`` header on their own, so a
forged cross-site request cannot carry one. Cookies they do attach, hence the token and the origin check.

The origin check accepts ``IVR_PUBLIC_URL`` and the origin the request itself was sent to (its ``Host``):
a browser's cross-site request carries the attacker's ``Origin`` with our ``Host``, so it is refused either
way, while the console keeps working when opened as ``localhost`` rather than the public name. The login form
uses the same check (:meth:`Auth.check_origin`).

Long-lived responses (the console's live streams, ``/api/calls/{sid}/events``) outlive the request's
credentials: they call :meth:`Auth.still_allowed` every :attr:`Auth.recheck_s` seconds and end once the
session is logged out or expired, or its operator removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response
from redis.exceptions import RedisError

from ivr.settings import Settings

from .operators import BOOTSTRAP_ADMIN, ConsoleSession, Operator, OperatorStore, Role

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Auth",
    "AuthUnavailable",
    "Authenticated",
]

log = logging.getLogger("ivr.console.auth")

SESSION_COOKIE = "ivr_session"
#: Hidden form field and request header that carry a session's CSRF token.
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Seconds between two checks of a live stream's credentials (:meth:`Auth.still_allowed`).
RECHECK_S = 15.0
_FORM_TYPE = "application/x-www-form-urlencoded"
_STATE_ATTR = "ivr_auth"
_UNSET = object()
_WHAT_NEEDS = {
    "viewer": "this needs an operator login",
    "approver": "approving, denying, hanging up and transferring need the approver or admin role",
    "admin": "this needs the admin role",
}


class AuthUnavailable(HTTPException):
    """503: operators and sessions live in Redis, which cannot be reached (or is not started yet)."""

    def __init__(self, why: str) -> None:
        super().__init__(503, why, headers={"Retry-After": "5"})


@dataclass(frozen=True)
class Authenticated:
    operator: Operator
    session: ConsoleSession | None  # None for Bearer requests (no CSRF needed: not sent by browsers)


class Auth:
    """Authentication and authorisation for ``/api/…``, ``/ops/…`` and ``/metrics``.

    ``store`` may be the :class:`OperatorStore` or a function returning it (None until the app's Redis
    services have started), so the app can create its ``Auth`` before its lifespan runs.
    """

    def __init__(
        self, settings: Settings, store: OperatorStore | Callable[[], OperatorStore | None] | None = None
    ) -> None:
        self.settings = settings
        self._store = store
        self._secure = settings.public_url.startswith("https://")
        #: How often a long-lived stream re-checks its credentials (tests make it short).
        self.recheck_s = RECHECK_S

    @property
    def store(self) -> OperatorStore | None:
        if self._store is None or isinstance(self._store, OperatorStore):
            return self._store
        return self._store()

    def _need_store(self) -> OperatorStore:
        store = self.store
        if store is None:
            raise AuthUnavailable("the server is still starting (operators live in Redis); try again shortly")
        return store

    # -- who is it ----------------------------------------------------------------------------------------
    async def authenticate(self, request: Request) -> Authenticated | None:
        """The operator behind this request, or None. Cached on the request, so it is cheap to call again.

        An ``Authorization`` header, when present, is the only credential looked at (a wrong token is not
        rescued by a cookie). Raises :class:`AuthUnavailable` when Redis cannot be reached.
        """
        cached = getattr(request.state, _STATE_ATTR, _UNSET)
        if cached is not _UNSET:
            return cached  # type: ignore[return-value]
        result = await self._credentials(request)
        setattr(request.state, _STATE_ATTR, result)
        return result

    def known(self, request: Request) -> Authenticated | None:
        """Who :meth:`authenticate` found for this request already, if it ran; never asks Redis."""
        cached = getattr(request.state, _STATE_ATTR, None)
        return cached if isinstance(cached, Authenticated) else None

    async def still_allowed(self, request: Request, role: Role = "viewer") -> bool:
        """Whether the request's credentials still hold *now*, for a response that outlives its request.

        Checked afresh (not the per-request cache): the session must still be open (not logged out, not
        expired) and its operator still exist with at least ``role``; a bearer token must still be valid.
        Raises :class:`AuthUnavailable` when Redis cannot be reached.
        """
        who = await self._credentials(request)
        return who is not None and who.operator.allows(role)

    async def while_allowed(
        self, request: Request, chunks: AsyncIterator[bytes], role: Role = "viewer"
    ) -> AsyncIterator[bytes]:
        """``chunks`` (a streaming response's body) until the request's credentials stop holding.

        For streams that may stay idle for long: the next chunk is awaited in a task, so the credentials are
        re-checked every :attr:`recheck_s` seconds even when nothing arrives. The stream then ends with an
        SSE comment saying why; ``chunks`` is closed in every case.
        """
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes] | None = None
        async with contextlib.aclosing(chunks):
            try:
                check_at = loop.time() + self.recheck_s
                while True:
                    if pending is None:
                        pending = asyncio.ensure_future(anext(chunks))
                    done, _ = await asyncio.wait({pending}, timeout=max(check_at - loop.time(), 0.0))
                    if pending in done:
                        try:
                            chunk = pending.result()
                        except StopAsyncIteration:
                            return
                        pending = None
                        yield chunk
                    if loop.time() >= check_at:
                        check_at = loop.time() + self.recheck_s
                        try:
                            allowed = await self.still_allowed(request, role)
                        except AuthUnavailable:
                            yield b": cannot re-check the operator's credentials (Redis is unreachable)\n\n"
                            return
                        if not allowed:
                            log.info("ended the stream %s: its credentials no longer hold", request.url.path)
                            yield b": the session ended or the operator was removed; log in again\n\n"
                            return
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await pending

    async def _credentials(self, request: Request) -> Authenticated | None:
        """The request's operator, read afresh (no cache); None when its credentials are missing or wrong."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                operator = await self._by_token(token)
                return Authenticated(operator, None) if operator is not None else None
            return None
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            session = await self._session(cookie)
            return Authenticated(session.operator, session) if session is not None else None
        return None

    async def _by_token(self, token: str) -> Operator | None:
        bootstrap = self.settings.operator_token
        if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
            return BOOTSTRAP_ADMIN  # no Redis needed: the bootstrap admin works through an outage
        store = self._need_store()
        try:
            return await store.by_token(token)
        except (RedisError, OSError) as exc:
            raise _redis_down(exc) from None

    async def _session(self, cookie: str) -> ConsoleSession | None:
        store = self._need_store()
        try:
            return await store.session(cookie)
        except (RedisError, OSError) as exc:
            raise _redis_down(exc) from None

    # -- what may they do ---------------------------------------------------------------------------------
    def require(self, role: Role = "viewer") -> Callable[[Request], Awaitable[Operator]]:
        """A FastAPI dependency returning the :class:`Operator`, or raising 401/403/503.

        (The console turns a 401 on a page into a redirect to its login page: :mod:`ivr.console.web`.)
        """

        async def dependency(request: Request) -> Operator:
            who = await self.authenticate(request)
            if who is None:
                raise HTTPException(
                    401, self._unauthenticated_detail(), headers={"WWW-Authenticate": "Bearer"}
                )
            if not who.operator.allows(role):
                raise HTTPException(
                    403,
                    f"operator {who.operator.name!r} has the {who.operator.role} role; {_WHAT_NEEDS[role]}",
                )
            if who.session is not None and request.method not in SAFE_METHODS:
                await self.check_csrf(request, who.session)
            return who.operator

        dependency.__name__ = f"require_{role}"
        return dependency

    def _unauthenticated_detail(self) -> str:
        detail = (
            "missing or wrong operator token: send `Authorization: Bearer <token>` with a token from "
            "`ivr operators add`, or log in at /ops/login"
        )
        if self.settings.operator_token:
            return detail + " (the bootstrap admin's token is IVR_OPERATOR_TOKEN)"
        return detail + " (IVR_OPERATOR_TOKEN is not set on this server, so there is no bootstrap admin)"

    async def check_csrf(self, request: Request, session: ConsoleSession) -> None:
        """403 unless the request comes from our origin and carries the session's CSRF token.

        The token is read from the ``X-CSRF-Token`` header, else from the form field ``csrf`` of a
        url-encoded form (what HTML forms and htmx send). Reading the form here is safe for the route:
        Starlette caches the parsed form on the request, so the handler's own ``await request.form()`` (or
        FastAPI ``Form`` parameters) gets the same data; a handler must not read such a body with
        ``request.body()`` after this check (the stream is consumed). Multipart bodies are not parsed here
        (their uploaded files would need closing): send the header with them.
        """
        self.check_origin(request)
        supplied = request.headers.get(CSRF_HEADER)
        if supplied is None and request.headers.get("content-type", "").lower().startswith(_FORM_TYPE):
            value = (await request.form()).get(CSRF_FIELD)
            supplied = value if isinstance(value, str) else None
        if not supplied or not hmac.compare_digest(supplied.encode(), session.csrf.encode()):
            raise HTTPException(
                403,
                f"missing or wrong CSRF token (form field {CSRF_FIELD!r} or header {CSRF_HEADER}); "
                "reload the page and try again",
            )

    def check_origin(self, request: Request) -> None:
        """403 when the request says it comes from another origin than this server's.

        The ``Origin`` header, else the origin of the ``Referer``, must be ``IVR_PUBLIC_URL``'s or the one
        the request was sent to; ``null`` (a sandboxed frame, a redirect chain, a ``file:`` page) is refused.
        A request with neither header passes (what old browsers and non-browser clients send).
        """
        origin = request.headers.get("origin")
        if origin is None:
            referer = request.headers.get("referer")
            origin = _origin_of(referer) if referer else None
        if origin is not None and origin.lower() not in self._own_origins(request):
            log.warning("refused a %s %s from origin %r", request.method, request.url.path, origin)
            raise HTTPException(
                403,
                f"cross-site request refused: it came from {origin}, not from this server "
                f"({self.settings.public_url}); open the console there and try again",
            )

    def _own_origins(self, request: Request) -> set[str]:
        origins = {self.settings.public_url.lower()}
        host = request.headers.get("host")
        if host:
            origins.add(f"{request.url.scheme}://{host}".lower())
        return origins

    # -- console login ------------------------------------------------------------------------------------
    async def login(self, token: str) -> ConsoleSession | None:
        """A new session for the operator with this token (or the bootstrap admin); None if it is wrong."""
        token = token.strip()
        if not token:
            return None
        operator = await self._by_token(token)
        if operator is None:
            return None
        store = self._need_store()
        try:
            session = await store.open_session(operator)
        except (RedisError, OSError) as exc:
            raise _redis_down(exc) from None
        log.info("operator %s (%s) logged in to the console", operator.name, operator.role)
        return session

    async def logout(self, request: Request) -> None:
        """End the request's console session, if any (the caller also clears the cookie)."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return
        store = self._need_store()
        try:
            await store.close_session(cookie)
        except (RedisError, OSError) as exc:
            raise _redis_down(exc) from None
        setattr(request.state, _STATE_ATTR, None)

    def set_cookie(self, response: Response, session: ConsoleSession) -> None:
        """The session cookie: HttpOnly, SameSite=Strict, Path=/, Secure when the public URL is https."""
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            max_age=max(0, int(session.expires_at - time.time())),
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=self._secure, httponly=True, samesite="strict"
        )


def _origin_of(url: str) -> str:
    """``https://host:8443/path?q`` → ``https://host:8443``; a value that is no URL gives itself (refused)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    return f"{parts.scheme}://{parts.netloc}"


def _redis_down(exc: BaseException) -> AuthUnavailable:
    log.warning("cannot check an operator's credentials: Redis is unreachable (%s)", type(exc).__name__)
    return AuthUnavailable(
        "cannot check operator credentials: Redis is unreachable; try again shortly "
        "(the IVR_OPERATOR_TOKEN bootstrap admin's bearer token works without Redis)"
    )
