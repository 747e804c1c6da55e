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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from redis.exceptions import RedisError

from ivr.console.actions import add_action_routes
from ivr.console.context import ConsoleContext, redis_failure, safe_console_path, security_headers
from ivr.console.history import MAX_PAGE, HistoryFilter, HistoryPage
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
    "instance-lost",
    "server-shutdown",
    "after-hours",
)
PER_PAGE = 50
EXPORT_PER_PAGE = 200
_BAD_TOKEN = "That token is not valid. Check it was copied whole, or ask an administrator for a new one."


def _console_route(ctx: ConsoleContext) -> type[APIRoute]:
    """The route class of the console: its errors answered in HTML, Redis failures with a sentence."""

    class ConsoleRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except HTTPException as exc:
                    return ctx.error_response(request, exc)
                except (RedisError, OSError) as exc:
                    failure = redis_failure(exc)
                    if failure.status_code == 503:
                        log.warning(
                            "console %s %s: Redis is unreachable (%s)", request.method, request.url.path, exc
                        )
                    else:
                        log.error(
                            "console %s %s: Redis error", request.method, request.url.path, exc_info=exc
                        )
                    return ctx.error_response(request, failure)

            return guarded

    return ConsoleRoute


class ConsoleRouter(APIRouter):
    """The console's routes plus what must be stopped with the app (its SSE hub)."""

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(prefix="/ops", include_in_schema=False, route_class=_console_route(ctx))
        self.ctx = ctx

    async def aclose(self) -> None:
        """Stop the live-update readers and close their Redis client (called from the app's lifespan)."""
        await self.ctx.close()


def _page_number(raw: str | None) -> int:
    """``?page=`` of the history: a whole number from 1 to MAX_PAGE, else 400 saying so."""
    if raw is None or not raw.strip():
        return 1
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 7 or not 1 <= int(text) <= MAX_PAGE:
        raise HTTPException(400, f"page must be a whole number from 1 to {MAX_PAGE:,}, got {raw[:40]!r}")
    return int(text)


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
        next_path = safe_console_path(request.query_params.get("next"))
        return ctx.html("login.html", None, next=next_path, me=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        ctx.services_ready()
        ctx.auth.check_origin(request)  # no login CSRF: a foreign page cannot log a browser in
        form = await request.form()
        token, target = form.get("token"), safe_console_path(form.get("next"))
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
        try:
            detail = await ctx.queries.call(sid)
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
            lat=latency_strip(detail.turns, detail.greeting_ms),
        )

    @router.get("/history")
    async def history(request: Request) -> Response:
        page = await ctx.page(request)
        params = dict(request.query_params)
        export = params.get("format")
        if export not in (None, "", "csv", "json"):
            raise HTTPException(400, f"format must be csv or json, got {export!r}")
        number = _page_number(params.get("page"))
        error = None
        try:
            result = await ctx.queries.history(
                HistoryFilter.from_form(params),
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
