"""The operator HTTP API for approvals: list pending requests, show one, approve or deny it.

Any instance can take a decision for a call living on another instance: the decision goes to Redis, and the
owning instance hears of it through pub/sub. Reading needs an operator (viewer or higher); deciding needs
the approver role, and the decision is recorded under the *authenticated* operator's name (see
:mod:`ivr.console.auth`) — a name in the request body is ignored, so nobody can decide in someone else's name.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ivr.approvals.store import (
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalStore,
    describe_decision,
)
from ivr.console.auth import Auth
from ivr.console.operators import Operator
from ivr.store.keys import KeySchemaError

__all__ = ["DecisionBody", "approvals_router"]

log = logging.getLogger("ivr.approvals.api")


class DecisionBody(BaseModel):
    """``{"decision": "approve"|"deny", "note": "..."}``.

    ``operator`` is still accepted for older clients, and ignored: the decision is recorded under the
    authenticated operator's name.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    decision: Literal["approve", "deny"]
    operator: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, max_length=1000)


def approvals_router(store: ApprovalStore, auth: Auth) -> APIRouter:
    """Routes under /api/approvals: reading needs a viewer, deciding an approver (401/403 otherwise)."""
    router = APIRouter(prefix="/api/approvals", tags=["approvals"])
    viewer, approver = auth.require("viewer"), auth.require("approver")

    @router.get("", dependencies=[Depends(viewer)])
    async def list_pending() -> dict[str, Any]:
        records = await store.pending()
        return {"approvals": [record.to_json() for record in records], "count": len(records)}

    @router.get("/{aid}", dependencies=[Depends(viewer)])
    async def show(aid: str) -> dict[str, Any]:
        try:
            record = await store.get(aid)
        except KeySchemaError:
            record = None
        if record is None:
            raise HTTPException(404, f"no approval request {aid!r}")
        return record.to_json()

    @router.post("/{aid}")
    # A default, not Annotated[...]: the dependency is a local, which a postponed annotation cannot name.
    async def decide(
        aid: str,
        body: DecisionBody,
        operator: Operator = Depends(approver),  # noqa: B008
    ) -> dict[str, Any]:
        if body.operator is not None and body.operator != operator.name:
            log.info("approval %s: body names operator %r; recording %r", aid, body.operator, operator.name)
        try:
            record = await store.decide(
                aid, approve=body.decision == "approve", operator=operator.name, note=body.note
            )
        except (ApprovalNotFound, KeySchemaError):
            raise HTTPException(404, f"no approval request {aid!r}") from None
        except ApprovalAlreadyDecided as exc:
            raise HTTPException(
                409,
                {
                    "error": "already_decided",
                    "message": f"approval {aid} was already {describe_decision(exc.approval)}; "
                    "a decision cannot be changed",
                    "approval": exc.approval.to_json(),
                },
            ) from None
        except ApprovalExpired as exc:
            raise HTTPException(
                409,
                {
                    "error": "expired",
                    "message": f"approval {aid} expired before this decision (deadline passed); "
                    "the call was told it was denied",
                    "approval": exc.approval.to_json(),
                },
            ) from None
        return record.to_json()

    return router
