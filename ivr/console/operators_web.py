"""The console's Operators page: admins add and remove operators from the browser (as ``ivr operators`` does).

Routes (mounted under ``/ops``; every one needs the admin role through ``state.auth.require("admin")``, and
the POSTs of a browser session the session's CSRF token):

- ``GET /operators`` — the operators (name, role, added, last login — never a token or its hash) and a form
  to add one; a note about the ``IVR_OPERATOR_TOKEN`` bootstrap admin when the servers have one;
- ``POST /operators`` (``name``, ``role``) — adds the operator and answers with their login token, shown
  this once: Redis keeps only its SHA-256, so there is nothing to show later (the same rule as the CLI);
- ``POST /operators/{name}/remove`` — without ``confirm=yes`` a confirmation form (no JavaScript needed);
  with it, the operator is removed and their token and open sessions stop working at once, on every instance.

Why plain form posts and full pages rather than htmx fragments: a token page must survive no JavaScript, and
the result of an admin action is the whole list anyway. Refusals are pages too, with a sentence and a 4xx.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ivr.console.context import ConsoleContext, Page, security_headers
from ivr.console.operators import (
    BOOTSTRAP_ADMIN,
    ROLES,
    Operator,
    OperatorError,
    OperatorExists,
    OperatorStore,
    check_name,
    check_role,
)

__all__ = ["ROLE_HELP", "add_operator_routes"]

log = logging.getLogger("ivr.console.operators_web")

#: What each role may do, as the add form explains it.
ROLE_HELP = {
    "viewer": "sees live calls, history and fleet; decides nothing",
    "approver": "also approves or denies tool calls, hangs up and transfers calls",
    "admin": "also manages operators on this page",
}
MAX_NAME = 64


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def add_operator_routes(router: APIRouter, ctx: ConsoleContext) -> None:
    """Register GET/POST /operators and POST /operators/{name}/remove on ``router`` (mounted at /ops)."""
    admin = Depends(ctx.auth.require("admin"))

    def store() -> OperatorStore:
        found = ctx.state.services.operators
        if found is None:
            raise HTTPException(503, "the server is still starting (operators live in Redis); try again")
        return found

    async def render(page: Page, *, status: int = 200, **context: Any) -> Response:
        context.setdefault("form", {})
        return ctx.html(
            "operators.html",
            page,
            status=status,
            nav="operators",
            operators=await store().list(),
            roles=ROLES,
            role_help=ROLE_HELP,
            bootstrap=bool(ctx.state.settings.operator_token),
            bootstrap_name=BOOTSTRAP_ADMIN.name,
            **context,
        )

    def not_removed(page: Page, status: int, message: str) -> Response:
        return ctx.html(
            "message.html",
            page,
            status=status,
            title="Not removed",
            message=message,
            error=True,
            back="/ops/operators",
        )

    @router.get("/operators")
    async def operators_page(request: Request) -> Response:
        page = await ctx.page(request)  # not logged in: the login page (browsers) or 401
        try:
            await ctx.auth.require("admin")(request)
        except HTTPException as exc:
            if exc.status_code != 403:
                raise
            return ctx.html(
                "message.html",
                page,
                status=403,
                title="Admins only",
                message=(
                    f"You are logged in as {page.operator.name} with the {page.operator.role} role; only an "
                    "admin can manage operators. Ask an admin to add or remove people for you."
                ),
                error=True,
            )
        return await render(page)

    @router.post("/operators")
    async def add(request: Request, operator: Operator = admin) -> Response:
        page = await ctx.page(request)
        form = await request.form()
        name_raw, role_raw = form.get("name"), form.get("role")
        name = name_raw.strip() if isinstance(name_raw, str) else ""
        role = role_raw if isinstance(role_raw, str) else ""
        shown = {"name": name[:MAX_NAME], "role": role if role in ROLES else ""}
        status, error = 422, None
        if not name:
            error = "Type a name for the new operator, for example amy or front-desk.1."
        elif len(name) > MAX_NAME:
            error = f"That name has {len(name)} characters; an operator name has at most {MAX_NAME}."
        elif not role:
            error = "Choose a role: viewer, approver or admin."
        else:
            try:
                token = await store().add(check_name(name), check_role(role))
            except OperatorExists:
                status = 409
                error = (
                    f"There is already an operator named {name}. To give them a new token, remove them "
                    "below and add them again."
                )
            except OperatorError as exc:
                error = _sentence(str(exc))
            else:
                log.info("admin %s added operator %s (%s) in the console", operator.name, name, role)
                created = {"name": name, "role": role, "token": token}
                return await render(page, status=201, created=created)
        return await render(page, status=status, error=error, form=shown)

    @router.post("/operators/{name}/remove")
    async def remove(name: str, request: Request, operator: Operator = admin) -> Response:
        page = await ctx.page(request)
        if name.lower() == BOOTSTRAP_ADMIN.name:
            message = (
                f"{name} is the bootstrap admin: it logs in with IVR_OPERATOR_TOKEN, which is set on the "
                "servers, not here. Unset or change that variable and restart to end its access."
            )
            return not_removed(page, 400, message)
        try:
            info = await store().get(check_name(name))
        except OperatorError:
            info = None
        if info is None:
            message = f"There is no operator named {name}: someone may have removed them already."
            return not_removed(page, 404, message)
        form = await request.form()
        if form.get("confirm") != "yes":
            return ctx.html(
                "operator_remove.html", page, nav="operators", target=info, is_me=info.name == operator.name
            )
        await store().remove(info.name)
        log.info("admin %s removed operator %s in the console", operator.name, info.name)
        if info.name == operator.name and not operator.bootstrap:
            response = security_headers(RedirectResponse("/ops/login", 303))  # they removed themselves
            ctx.auth.clear_cookie(response)
            return response
        notice = f"{info.name} was removed: their login token and every open session no longer work."
        return await render(page, notice=notice)
