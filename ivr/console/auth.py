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
way, while the console keeps working when opened as ``localhost`` rather than the public name.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

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
        result: Authenticated | None = None
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                operator = await self._by_token(token)
                result = Authenticated(operator, None) if operator is not None else None
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                session = await self._session(cookie)
                result = Authenticated(session.operator, session) if session is not None else None
        setattr(request.state, _STATE_ATTR, result)
        return result

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
    def require(
        self, role: Role = "viewer", *, login_url: str | None = None
    ) -> Callable[[Request], Awaitable[Operator]]:
        """A FastAPI dependency returning the :class:`Operator`, or raising 401/403/503.

        With ``login_url`` (console pages), an unauthenticated GET is redirected there (303) with
        ``?next=<path>`` instead of answering 401.
        """

        async def dependency(request: Request) -> Operator:
            who = await self.authenticate(request)
            if who is None:
                if login_url is not None and request.method in SAFE_METHODS:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    location = f"{login_url}?next={quote(target, safe='/')}"
                    raise HTTPException(303, "log in first", headers={"Location": location})
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
        origin = request.headers.get("origin")
        if origin is None:
            referer = request.headers.get("referer")
            origin = _origin_of(referer) if referer else None
        if origin is not None and origin.lower() not in self._own_origins(request):
            log.warning(
                "refused a cookie-authenticated %s %s from origin %r",
                request.method,
                request.url.path,
                origin,
            )
            raise HTTPException(
                403,
                f"cross-site request refused: it came from {origin}, not from this server "
                f"({self.settings.public_url}); open the console there and try again",
            )
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
