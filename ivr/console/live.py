"""Live pages: Redis stream entries → ready HTML fragments → server-sent events.

Each entry is *prepared* once per instance (the few Redis reads an update needs: the call's row, an approval)
by the hub's reader, and *rendered* once per variant (operators who may decide see buttons, viewers do not),
then the same bytes go to every browser following the stream. Fragments are htmx out-of-band swaps rendered
by the same autoescaping templates as the pages, so the browser never turns event text into HTML itself.

Endpoints: ``/ops/events`` (the board: the global ``events`` stream), ``/ops/calls/{sid}/events`` (one
call's stream, closing after ``call.ended``) and ``/ops/fleet/events`` (one shared ticker). The SSE event id
is the Redis stream id; a reconnecting browser sends it back as ``Last-Event-ID`` and resumes exactly after
it (see :mod:`ivr.console.sse`); without one, ``?after=<id>`` (embedded by the page that rendered the
snapshot) says where the page's snapshot ended.

A stream ends by itself when its operator's credentials stop holding (checked every ``Auth.recheck_s``
seconds: logged out, session expired, operator removed) with a ``reload`` event, so the page goes to the
login page; and when Redis fails under it, with a comment (the browser reconnects and gets a clean 503
while Redis is down: the join and the first replay page are read before the response starts).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from ivr.console.auth import AuthUnavailable
from ivr.console.context import ConsoleContext, security_headers
from ivr.console.decode import approval_row, event_row, to_float, turns
from ivr.console.operators import Operator
from ivr.console.render import iso_utc
from ivr.console.rows import ApprovalRow, CallRow, EventRow
from ivr.console.sse import RESYNC, StreamEntry, format_comment, format_event, parse_stream_id
from ivr.console.timeline import describe, latency_strip, line_of
from ivr.store.keys import KeySchemaError

__all__ = ["add_live_routes"]

log = logging.getLogger("ivr.console.live")

#: Comment sent on an idle stream so proxies keep it open.
HEARTBEAT_S = 15.0
#: How long an ended call's row and a decided approval stay on the board before they leave.
LINGER_S = 10.0
_RELOAD = "too far behind to replay; reload the page"
_LOGGED_OUT = "your login ended (logged out, expired or removed); log in again"
#: Seconds between two fleet refreshes (one Redis read per instance, shared by every browser).
FLEET_EVERY_S = 5.0
_HEADER_TYPES = frozenset(
    {"call.ended", "stage.changed", "model.fallback", "usage.updated", "operator.action", "transfer"}
)


@dataclass
class Update:
    """What one stream entry changes on a page (filled by ``prepare``, read by ``render``)."""

    kind: str = ""
    ctx: dict[str, Any] = field(default_factory=dict)


def _oob(target: str, html: str) -> str:
    return f'<div hx-swap-oob="beforeend:#{target}">{html}</div>'


def _variant(operator: Operator) -> str:
    return "decide" if operator.can_decide else "view"


class LiveViews:
    """Prepare and render the live fragments of the board and of a call page."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx

    async def _row(self, sid: str) -> CallRow | None:
        rows = await self.ctx.queries.rows([sid])
        return rows[0] if rows else None

    async def _approval(self, aid: str, caller: str = "") -> ApprovalRow | None:
        try:
            approval = await self.ctx.approvals.get(aid)
        except KeySchemaError:
            return None
        return approval_row(approval, caller=caller, last_line=None) if approval is not None else None

    # -- the board -------------------------------------------------------------------------------------------
    async def prepare_board(self, entry: StreamEntry) -> Update:
        event = event_row(entry.id, entry.fields)
        sid = entry.fields.get("call_sid", "")
        data = event.data
        if event.type in ("call.started", "call.ended") and sid:
            row = await self._row(sid)
            return Update("row", {"c": row}) if row is not None else Update()
        if event.type == "transcript":
            return Update("last", {"sid": sid, "line": f"{data.get('role', '')}: {data.get('text', '')}"})
        if event.type == "stage.changed":
            return Update("stage", {"sid": sid, "stage": data.get("stage") or ""})
        if event.type == "model.fallback":
            return Update("engine", {"sid": sid, "engine": data.get("engine") or ""})
        aid = data.get("id")  # the approval store's own events (the call's copies carry approval_id)
        if event.type == "approval.requested" and isinstance(aid, str):
            pending = {a.id: a for a in await self.ctx.queries.pending_approvals()}
            row = pending.get(aid) or await self._approval(aid)
            return Update("approval", {"a": row}) if row is not None else Update()
        if event.type == "approval.decided" and isinstance(aid, str):
            row = await self._approval(aid, await self.ctx.queries.caller(sid) if sid else "")
            return Update("approval", {"a": row}) if row is not None else Update()
        return Update()

    def render_board(self, update: Update, operator: Operator) -> str:
        ctx = self.ctx
        linger = {"expire_at": iso_utc(time.time() + LINGER_S)}
        if update.kind == "row":
            row: CallRow = update.ctx["c"]
            extra = {} if row.live else linger
            return _oob("live-calls", ctx.render("_call_row.html", c=row, **extra))
        if update.kind in ("last", "stage", "engine"):
            return ctx.render("_cells.html", cell=update.kind, **update.ctx)
        if update.kind == "approval":
            approval: ApprovalRow = update.ctx["a"]
            extra = {} if approval.status == "pending" else linger
            html = ctx.render(
                "_approval.html", a=approval, me_can_decide=operator.can_decide, csrf="", **extra
            )
            return _oob("approvals", html)
        return ""

    # -- a call page -----------------------------------------------------------------------------------------
    async def prepare_call(self, sid: str, entry: StreamEntry) -> Update:
        event: EventRow = event_row(entry.id, entry.fields)
        update = Update("call", {"event": event})
        if event.type == "transcript":
            update.ctx["line"] = line_of(event)
            return update
        approvals: dict[str, ApprovalRow] = {}
        aid = event.data.get("approval_id") or event.data.get("id")
        if event.type.startswith("approval.") and isinstance(aid, str):
            row = await self._approval(aid)
            if row is not None:
                approvals[aid] = row
        update.ctx["item"] = describe(event, approvals)
        if event.type in _HEADER_TYPES:
            update.ctx["c"] = await self._row(sid)
        if event.type == "turn.latency":
            raw_turns, greeting = await self.ctx.redis.hmget(
                self.ctx.keys.call(sid), ["turns", "greeting_ms"]
            )
            update.ctx["lat"] = latency_strip(turns(raw_turns), greeting)
        return update

    def render_call(self, update: Update, operator: Operator) -> str:
        ctx, parts = self.ctx, []
        if update.ctx.get("line") is not None:
            parts.append(_oob("transcript", ctx.render("_line.html", l=update.ctx["line"])))
        if update.ctx.get("item") is not None:
            parts.append(_oob("timeline", ctx.render("_event.html", e=update.ctx["item"])))
        if update.ctx.get("c") is not None:
            parts.append(
                ctx.render(
                    "_call_header.html", c=update.ctx["c"], oob=True, me_can_decide=operator.can_decide
                )
            )
        if update.ctx.get("lat") is not None:
            parts.append(ctx.render("_latency.html", lat=update.ctx["lat"], oob=True))
        return "\n".join(parts)


def _resume_from(request: Request) -> str | None:
    """Where to resume: ``Last-Event-ID`` (a reconnect) wins over ``?after=`` (the page's snapshot)."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value:
            try:
                parse_stream_id(value)
            except ValueError as exc:
                raise HTTPException(400, f"cannot resume the event stream: {exc}") from None
            return value.strip()
    return None


def add_live_routes(router: APIRouter, ctx: ConsoleContext) -> None:
    """Register the console's SSE endpoints on ``router`` (mounted at /ops)."""
    views = LiveViews(ctx)
    viewer = Depends(ctx.auth.require("viewer"))

    def stream(
        request: Request,
        batches: AsyncIterator[list[StreamEntry] | None],
        render: Callable[[StreamEntry], str],
        *,
        event: str = "update",
        with_ids: bool = True,
        stop_after: Callable[[StreamEntry], bool] = lambda _e: False,
        end_when_done: bool = False,
    ) -> StreamingResponse:
        def encode(batch: list[StreamEntry]) -> tuple[bytes, bool]:
            """One write for a batch, and whether the stream is over after it.

            Entries that change nothing on the page (most of a busy stream) send no message of their own:
            only the batch's last id goes out, so a reconnect resumes after it.
            """
            chunk: list[bytes] = []
            unsent_id: str | None = None
            for entry in batch:
                if entry is RESYNC:
                    chunk.append(format_event(_RELOAD, event="reload"))
                    return b"".join(chunk), True
                html = render(entry)
                if html:
                    chunk.append(format_event(html, event=event, id=entry.id if with_ids else None))
                    unsent_id = None
                elif with_ids:
                    unsent_id = entry.id
                if stop_after(entry):
                    if unsent_id is not None:
                        chunk.append(f"id: {unsent_id}\n\n".encode())
                    chunk.append(format_event("ended", event="end"))
                    return b"".join(chunk), True
            if unsent_id is not None:
                chunk.append(f"id: {unsent_id}\n\n".encode())
            return b"".join(chunk), False

        async def body() -> AsyncIterator[bytes]:
            auth = ctx.auth
            quiet_since = time.monotonic()
            check_at = quiet_since + auth.recheck_s
            yield b"retry: 2000\n\n"
            try:
                # aclosing: the hub forgets this subscriber as soon as the stream ends, not when collected.
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        if ctx.state.calls.draining:
                            return  # a draining instance sheds its streams: browsers resume on a healthy one
                        if time.monotonic() >= check_at:
                            check_at = time.monotonic() + auth.recheck_s
                            if not await auth.still_allowed(request):
                                log.info("ended the live stream %s: its login ended", request.url.path)
                                yield format_event(_LOGGED_OUT, event="reload")
                                return
                        if batch is None:
                            if time.monotonic() - quiet_since >= HEARTBEAT_S:
                                quiet_since = time.monotonic()
                                yield format_comment()
                            continue
                        quiet_since = time.monotonic()
                        chunk, over = encode(batch)
                        if chunk:
                            yield chunk
                        if over:
                            return
            except (RedisError, OSError, AuthUnavailable) as exc:
                # The headers are sent: no status to change. End cleanly; the browser reconnects (and
                # gets a 503 while Redis stays down). One log line: Auth has already said why it failed.
                path = request.url.path
                if isinstance(exc, AuthUnavailable):
                    log.info("ended the live stream %s: its login cannot be re-checked without Redis", path)
                else:
                    why = f"{type(exc).__name__}: {exc}"
                    log.warning("ended the live stream %s: Redis failed (%s)", path, why)
                yield format_comment("a Redis read failed; reconnecting")
                return
            if end_when_done:
                yield format_event("ended", event="end")

        return security_headers(  # type: ignore[return-value]
            StreamingResponse(body(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})
        )

    def cached(entry: StreamEntry, key: str, make: Callable[[], str]) -> str:
        if key not in entry.rendered:
            entry.rendered[key] = make()
        return entry.rendered[key]

    def _refuse_while_draining() -> None:
        if ctx.state.calls.draining or ctx.hub.closed:
            raise HTTPException(
                503, "this instance is shutting down; reconnect to another", headers={"Retry-After": "2"}
            )

    @router.get("/events")
    async def board_events(request: Request, operator: Operator = viewer) -> StreamingResponse:
        _refuse_while_draining()
        after = _resume_from(request)
        batches = await _started(ctx.hub.follow_batches(ctx.keys.events(), after, views.prepare_board))

        def render(entry: StreamEntry) -> str:
            update = entry.prepared if isinstance(entry.prepared, Update) else Update()
            return cached(entry, _variant(operator), lambda: views.render_board(update, operator))

        return stream(request, batches, render)

    @router.get("/calls/{sid}/events")
    async def call_events(sid: str, request: Request, operator: Operator = viewer) -> StreamingResponse:
        _refuse_while_draining()
        try:
            key = ctx.keys.call_events(sid)
        except KeySchemaError:
            raise HTTPException(404, f"no call {sid!r}") from None
        exists, ended_at = await ctx.redis.hmget(ctx.keys.call(sid), ["call_sid", "ended_at"])
        if exists is None and ended_at is None:
            raise HTTPException(404, f"no call {sid} in Redis (unknown, or its record expired)")
        after = _resume_from(request) or "0-0"

        async def prepare(entry: StreamEntry) -> Update:
            return await views.prepare_call(sid, entry)

        if to_float(ended_at) is not None:
            # Nothing more will come: replay what is left, then tell the page to stop listening.
            replay = await _started(_replay(ctx, key, after, prepare))
            return stream(request, replay, render_for(operator), end_when_done=True)
        batches = await _started(ctx.hub.follow_batches(key, after, prepare))

        def ended(entry: StreamEntry) -> bool:
            return entry.fields.get("type") == "call.ended"

        return stream(request, batches, render_for(operator), stop_after=ended)

    def render_for(operator: Operator) -> Callable[[StreamEntry], str]:
        def render(entry: StreamEntry) -> str:
            update = entry.prepared if isinstance(entry.prepared, Update) else Update()
            return cached(entry, _variant(operator), lambda: views.render_call(update, operator))

        return render

    @router.get("/fleet/events")
    async def fleet_events(request: Request, operator: Operator = viewer) -> StreamingResponse:
        _refuse_while_draining()

        async def produce(_entry: StreamEntry) -> str:
            return ctx.render("_fleet.html", instances=await ctx.queries.fleet())

        ticks = ctx.hub.tick("fleet", FLEET_EVERY_S, produce)
        return stream(request, _batched(ticks), lambda e: e.prepared or "", event="fleet", with_ids=False)


async def _started(
    batches: AsyncIterator[list[StreamEntry] | None],
) -> AsyncIterator[list[StreamEntry] | None]:
    """``batches`` with its first batch read now, before the response starts.

    That first batch is the join and the first replay page (both read Redis), so a Redis outage at connect
    time raises here and the route answers a clean 503, rather than failing after a 200 was sent.
    """
    first = await anext(batches)

    async def rest() -> AsyncIterator[list[StreamEntry] | None]:
        async with contextlib.aclosing(batches):
            yield first
            async for batch in batches:
                yield batch

    return rest()


async def _batched(entries: AsyncIterator[StreamEntry | None]) -> AsyncIterator[list[StreamEntry] | None]:
    async for entry in entries:
        yield None if entry is None else [entry]


async def _replay(
    ctx: ConsoleContext, key: str, after: str, prepare: Callable[[StreamEntry], Any]
) -> AsyncIterator[list[StreamEntry] | None]:
    """The entries of an ended call's stream after ``after``, without a live reader (none will come).

    The first page comes even when it is empty (see :func:`_started`).
    """
    start = "(" + after
    first = True
    while True:
        page = await ctx.redis.xrange(key, min=start, max="+", count=500)
        batch = []
        for entry_id, fields in page:
            entry = StreamEntry(entry_id, fields)
            entry.prepared = await prepare(entry)
            batch.append(entry)
        if batch or first:
            yield batch
        first = False
        if len(page) < 500:
            return
        start = "(" + page[-1][0]
