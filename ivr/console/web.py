"""The operations console's web pages, mounted at ``/ops`` by :func:`ivr.app.create_app`.

Routes (all pages need a logged-in operator; an unauthenticated browser is sent to the login page and any
other client gets 401):

- ``GET /ops/login`` (form, field ``token``), ``POST /ops/login``, ``POST /ops/logout`` (CSRF-checked);
- ``GET /ops/`` — live board: pending approvals (most urgent first) and every live call of every instance;
- ``GET /ops/calls/{sid}`` — one call, live or ended, from Redis alone;
- ``GET /ops/history`` — ended calls with filters and paging; ``?format=csv|json`` exports the same rows;
- ``GET /ops/fleet`` — instances from their heartbeats;
- ``GET/POST /ops/operators`` — admins add and remove operators (:mod:`ivr.console.operators_web`);
- actions (:mod:`ivr.console.actions`) and server-sent events (:mod:`ivr.console.live`);
- ``GET /ops/static/…`` — the console's CSS/JS and vendored htmx, cached for a year (URLs carry a hash).

Every page is server-rendered with autoescaping templates and sent with a strict Content-Security-Policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from redis.exceptions import RedisError

from ivr.console.actions import add_action_routes
from ivr.console.context import ConsoleContext, Page, security_headers
from ivr.console.live import add_live_routes
from ivr.console.operators_web import add_operator_routes
from ivr.console.timeline import describe, latency_strip, line_of
from ivr.store.keys import KeySchemaError

if TYPE_CHECKING:
    from ivr.app import AppState

__all__ = ["ConsoleRouter", "console_router"]

log = logging.getLogger("ivr.console.web")

#: Outcomes offered by the history filter (others can still be typed into the URL).
OUTCOMES = (
    "completed",
    "caller-hung-up",
    "agent-hangup",
    "operator-hangup",
    "transferred",
    "error",
    "model-unavailable",
    "instance-restart",
    "server-shutdown",
)
PER_PAGE = 50
EXPORT_PER_PAGE = 200
_BAD_TOKEN = "That token is not valid. Check it was copied whole, or ask an administrator for a new one."


class _ConsoleRoute(APIRoute):
    """A console route: an unreachable Redis is a 503 with a sentence, not a stack trace."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (RedisError, OSError) as exc:
                log.warning("console %s %s: Redis is unreachable (%s)", request.method, request.url.path, exc)
                message = (
                    "Redis, where the console reads everything, is unreachable right now; try again shortly."
                )
                return security_headers(
                    PlainTextResponse(message, status_code=503, headers={"Retry-After": "5"})
                )

        return guarded


class ConsoleRouter(APIRouter):
    """The console's routes plus what must be stopped with the app (its SSE hub)."""

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(prefix="/ops", include_in_schema=False, route_class=_ConsoleRoute)
        self.ctx = ctx

    async def aclose(self) -> None:
        """Stop the live-update readers and close their Redis client (called from the app's lifespan)."""
        await self.ctx.close()


def _safe_next(value: Any) -> str:
    """Only a console path may be a post-login destination (no open redirect to another site)."""
    if isinstance(value, str) and value.startswith("/ops") and not value.startswith("//"):
        return value
    return "/ops/"


def _zone(name: str) -> timezone | ZoneInfo:
    """The operator's time zone from the browser: an IANA name (``Europe/Paris``) or offset (``+02:00``)."""
    name = (name or "").strip()
    if not name:
        return UTC
    if name[0] in "+-" and len(name) in (5, 6):
        digits = name[1:].replace(":", "")
        if digits.isdigit() and len(digits) == 4:
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            return timezone(delta if name[0] == "+" else -delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use a name like Europe/Paris or an offset like +02:00"
        ) from None


def _epoch(local: str, zone: timezone | ZoneInfo, what: str) -> float | None:
    if not local.strip():
        return None
    try:
        naive = datetime.fromisoformat(local.strip())
    except ValueError:
        raise ValueError(f"{what} must be a date and time like 2026-03-02T09:30, got {local!r}") from None
    if naive.tzinfo is not None:
        return naive.timestamp()
    return naive.replace(tzinfo=zone).timestamp()


def history_filter(params: dict[str, str]) -> Any:
    """The history filter from the page's form (local times in the operator's zone) → HistoryFilter."""
    from ivr.console.history import HistoryFilter

    zone = _zone(params.get("tz", ""))
    until = _epoch(params.get("to", ""), zone, "To")
    if until is not None and len(params.get("to", "").strip()) <= 16:
        until += 59.999  # "to 10:30" includes calls that ended during that minute
    return HistoryFilter(
        since=_epoch(params.get("from", ""), zone, "From"),
        until=until,
        flow=params.get("flow") or None,
        outcome=params.get("outcome") or None,
        instance=params.get("instance") or None,
        caller_digits=(params.get("caller") or "").strip() or None,
        text=params.get("text") or None,
    ).checked()


def console_router(state: AppState) -> ConsoleRouter:
    """The console's routes, ready to be included in the app; services are looked up at request time."""
    ctx = ConsoleContext(state)
    router = ConsoleRouter(ctx)

    # -- static files and the bare prefix -----------------------------------------------------------------
    @router.get("")
    async def bare() -> Response:
        return security_headers(RedirectResponse("/ops/", 308))

    @router.get("/static/{name:path}")
    async def static(name: str, request: Request) -> Response:
        found = ctx.static.get(name)
        if found is None:
            raise HTTPException(404, f"no console file {name!r}")
        etag = f'"{found.version}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        cache = (
            "public, max-age=31536000, immutable"
            if request.query_params.get("v") == found.version
            else ("public, max-age=300")
        )
        response = Response(found.body, media_type=found.media_type, headers={"ETag": etag})
        return security_headers(response, cache=cache)

    # -- login and logout -----------------------------------------------------------------------------------
    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return ctx.html("login.html", None, next=_safe_next(request.query_params.get("next")), me=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        ctx.services_ready()
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc not in (
            request.headers.get("host"),
            urlsplit(state.settings.public_url).netloc,
        ):
            raise HTTPException(403, f"cross-site login refused (origin {origin})")
        form = await request.form()
        token, target = form.get("token"), _safe_next(form.get("next"))
        session = await ctx.auth.login(token) if isinstance(token, str) else None
        if session is None:
            return ctx.html("login.html", None, status=401, error=_BAD_TOKEN, next=target, me=None)
        response = security_headers(RedirectResponse(target, 303))
        ctx.auth.set_cookie(response, session)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        who = await ctx.who(request)
        if who is not None and who.session is not None:
            await ctx.auth.check_csrf(request, who.session)
            await ctx.auth.logout(request)
        response = security_headers(RedirectResponse("/ops/login", 303))
        ctx.auth.clear_cookie(response)
        return response

    # -- pages ----------------------------------------------------------------------------------------------
    @router.get("/")
    async def board(request: Request) -> Response:
        page = await ctx.page(request)
        if not isinstance(page, Page):
            return page
        newest = await ctx.redis.xrevrange(ctx.keys.events(), "+", "-", count=1)  # before the snapshot
        last_id = newest[0][0] if newest else "0-0"
        calls = await ctx.queries.live_calls()
        approvals = await ctx.queries.pending_approvals()
        calls.sort(key=lambda c: c.started_at or 0)
        return ctx.html(
            "board.html",
            page,
            nav="live",
            live_stream=True,
            calls=calls,
            approvals=approvals,
            last_id=last_id,
        )

    @router.get("/calls/{sid}")
    async def call_page(sid: str, request: Request) -> Response:
        page = await ctx.page(request)
        if not isinstance(page, Page):
            return page
        try:
            detail = await ctx.queries.call(sid)
            greeting = await ctx.redis.hget(ctx.keys.call(sid), "greeting_ms") if detail else None
        except KeySchemaError:
            detail = None
        if detail is None:
            message = f"There is no call {sid} in Redis: the id is wrong, or its record expired (retention)."
            return ctx.html(
                "message.html", page, status=404, title="Call not found", message=message, error=True
            )
        approvals = {a.id: a for a in detail.approvals}
        lines = [line_of(e) for e in detail.events if e.type == "transcript"]
        items = [item for e in detail.events if (item := describe(e, approvals)) is not None]
        last_id = detail.events[-1].id if detail.events else "0-0"
        return ctx.html(
            "call.html",
            page,
            nav="live",
            live_stream=detail.call.live,
            c=detail.call,
            lines=lines,
            events=items,
            last_id=last_id,
            lat=latency_strip(detail.turns, greeting),
        )

    @router.get("/history")
    async def history(request: Request) -> Response:
        page = await ctx.page(request)
        if not isinstance(page, Page):
            return page
        params = dict(request.query_params)
        export = params.get("format")
        if export not in (None, "", "csv", "json"):
            raise HTTPException(400, f"format must be csv or json, got {export!r}")
        try:
            number = max(int(params.get("page") or 1), 1)
        except ValueError:
            number = 1
        error = None
        try:
            result = await ctx.queries.history(
                history_filter(params),
                page=number,
                per_page=EXPORT_PER_PAGE if export else PER_PAGE,
                with_transcript=bool(export),
            )
        except ValueError as exc:
            if export:
                raise HTTPException(400, str(exc)) from None
            error, result = str(exc), None
        if export:
            return _export(result, export)

        def link(**changes: Any) -> str:
            query = {k: v for k, v in {**params, **changes}.items() if v not in (None, "") and k != "format"}
            if "format" in changes:
                query["format"] = changes["format"]
            return "/ops/history?" + urlencode(query)

        if result is None:
            from ivr.console.history import HistoryPage

            result = HistoryPage([], 0, 1, PER_PAGE, has_next=False)
        return ctx.html(
            "history.html",
            page,
            nav="history",
            page=result,
            form=params,
            error=error,
            tz=params.get("tz", ""),
            flows=sorted(flow.id for flow in state.flows),
            outcomes=OUTCOMES,
            link=link,
        )

    @router.get("/fleet")
    async def fleet(request: Request) -> Response:
        page = await ctx.page(request)
        if not isinstance(page, Page):
            return page
        return ctx.html(
            "fleet.html", page, nav="fleet", live_stream=True, instances=await ctx.queries.fleet()
        )

    add_live_routes(router, ctx)
    add_action_routes(router, ctx)
    add_operator_routes(router, ctx)
    return router


def _export(result: Any, fmt: str) -> Response:
    from ivr.console.rows import rows_to_csv, rows_to_json

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    disposition = f'attachment; filename="ivr-calls-{stamp}-p{result.page}.{fmt}"'
    if fmt == "csv":
        response: Response = Response(
            rows_to_csv(result.rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": disposition},
        )
    else:
        body = {
            "calls": rows_to_json(result.rows),
            "page": result.page,
            "per_page": result.per_page,
            "total": result.total,
            "has_next": result.has_next,
        }
        response = JSONResponse(body, headers={"Content-Disposition": disposition})
    return security_headers(response)
