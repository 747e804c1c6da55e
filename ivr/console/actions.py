"""The console's state-changing actions: decide an approval, hang up or transfer a live call.

Every action needs the approver role or higher (a viewer gets 403) and, for a browser session, the session's
CSRF token (checked by :meth:`ivr.console.auth.Auth.require`). The name recorded with a decision or a command
is always the authenticated operator's — never a name sent with the request.

htmx requests get an HTML fragment to swap in place (the decided card, or a one-line result), errors included
with their HTTP status; a plain form post (no JavaScript) gets a small page with the outcome and a way back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from redis.exceptions import RedisError

from ivr.approvals.store import (
    ApprovalAbandoned,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    describe_decision,
)
from ivr.console.commands import CommandError, send_command
from ivr.console.context import (
    ConsoleContext,
    Page,
    is_htmx,
    redis_failure,
    safe_console_path,
    security_headers,
)
from ivr.console.decode import approval_row
from ivr.console.live import LINGER_S
from ivr.console.operators import Operator
from ivr.console.render import iso_utc
from ivr.store.keys import KeySchemaError

__all__ = ["add_action_routes"]

log = logging.getLogger("ivr.console.actions")

MAX_NOTE = 1000


def add_action_routes(router: APIRouter, ctx: ConsoleContext) -> None:
    """Register POST /approvals/{aid}, /calls/{sid}/hangup and /calls/{sid}/transfer on ``router``."""
    approver = Depends(ctx.auth.require("approver"))

    def outcome(request: Request, operator: Operator, status: int, message: str, *, error: bool) -> Response:
        if is_htmx(request):
            return ctx.fragment(message, status, error=error)
        page = Page(operator, "")
        back = safe_console_path(request.headers.get("referer"))  # its path only, and the console's
        title = "Not done" if error else "Done"
        return ctx.html(
            "message.html", page, status=status, title=title, message=message, error=error, back=back
        )

    @router.post("/approvals/{aid}")
    async def decide(aid: str, request: Request, operator: Operator = approver) -> Response:
        form = await request.form()
        decision = form.get("decision")
        note_raw = form.get("note")
        note = note_raw.strip()[:MAX_NOTE] if isinstance(note_raw, str) and note_raw.strip() else None
        if decision not in ("approve", "deny"):
            return outcome(request, operator, 422, "Choose Approve or Deny.", error=True)
        status, error = 200, None
        try:
            approval = await ctx.approvals.decide(
                aid, approve=decision == "approve", operator=operator.name, note=note
            )
            log.info("operator %s %s approval %s", operator.name, approval.status, aid)
        except (ApprovalNotFound, KeySchemaError):
            return outcome(request, operator, 404, f"There is no approval request {aid}.", error=True)
        except ApprovalAbandoned as exc:
            approval, status = exc.approval, 409
            error = (
                "Not done: the call ended before a decision, so nothing can be carried out; "
                "the request was closed as abandoned."
            )
        except ApprovalAlreadyDecided as exc:
            approval, status = exc.approval, 409
            error = f"Not changed: it was already {describe_decision(exc.approval)}."
        except ApprovalExpired as exc:
            approval, status = exc.approval, 409
            error = "Too late: the deadline passed before your decision, so the call was told it was denied."
        except (RedisError, OSError) as exc:
            failure = redis_failure(exc)
            return outcome(request, operator, failure.status_code, failure.detail, error=True)
        if not is_htmx(request):
            message = error or f"You {approval.status} the {approval.tool} request."
            return outcome(request, operator, status, message, error=error is not None)
        caller = await _caller(ctx, approval.call_sid)
        row = approval_row(approval, caller=caller, last_line=None)
        html = ctx.render(
            "_approval.html",
            a=row,
            me_can_decide=operator.can_decide,
            csrf="",
            error=error,
            expire_at=iso_utc(time.time() + LINGER_S),
        )
        return security_headers(HTMLResponse(html, status_code=status))

    async def command(request: Request, sid: str, action: Any, operator: Operator) -> Response:
        try:
            result = await send_command(
                ctx.redis, ctx.keys, sid, action, by=operator.name, flows=ctx.state.flows
            )
        except CommandError as exc:
            return outcome(request, operator, exc.status, str(exc), error=True)
        except (RedisError, OSError) as exc:
            failure = redis_failure(exc)
            return outcome(request, operator, failure.status_code, failure.detail, error=True)
        log.info("operator %s asked %s to %s call %s", operator.name, result.instance_id, action, sid)
        return outcome(
            request, operator, 200 if result.delivered else 503, result.message, error=not result.delivered
        )

    @router.post("/calls/{sid}/hangup")
    async def hangup(sid: str, request: Request, operator: Operator = approver) -> Response:
        return await command(request, sid, "hangup", operator)

    @router.post("/calls/{sid}/transfer")
    async def transfer(sid: str, request: Request, operator: Operator = approver) -> Response:
        return await command(request, sid, "transfer", operator)


async def _caller(ctx: ConsoleContext, sid: str) -> str:
    try:
        return await ctx.queries.caller(sid)
    except (RedisError, OSError, KeySchemaError):
        return ""
