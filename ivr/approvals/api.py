"""The operator HTTP API for approvals: list pending requests, show one, approve or deny it.

Mounted by the app with its bearer-token check (``require_operator``), so any instance can take a decision
for a call living on another instance: the decision goes to Redis, and the owning instance hears of it
through pub/sub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ivr.approvals.store import (
    TIMEOUT_OPERATOR,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalStore,
    describe_decision,
)
from ivr.store.keys import KeySchemaError

__all__ = ["DecisionBody", "approvals_router"]


class DecisionBody(BaseModel):
    """``{"decision": "approve"|"deny", "operator": "alice", "note": "..."}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decision: Literal["approve", "deny"]
    operator: str = Field(default="api", min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")
    note: str | None = Field(default=None, max_length=1000)


def approvals_router(store: ApprovalStore, require_operator: Callable[[Request], None]) -> APIRouter:
    """Routes under /api/approvals; every route first runs ``require_operator`` (raises HTTPException)."""
    router = APIRouter(prefix="/api/approvals", tags=["approvals"], dependencies=[Depends(require_operator)])

    @router.get("")
    async def list_pending() -> dict[str, Any]:
        records = await store.pending()
        return {"approvals": [record.to_json() for record in records], "count": len(records)}

    @router.get("/{aid}")
    async def show(aid: str) -> dict[str, Any]:
        try:
            record = await store.get(aid)
        except KeySchemaError:
            record = None
        if record is None:
            raise HTTPException(404, f"no approval request {aid!r}")
        return record.to_json()

    @router.post("/{aid}")
    async def decide(aid: str, body: DecisionBody) -> dict[str, Any]:
        if body.operator == TIMEOUT_OPERATOR:
            raise HTTPException(422, f"operator {TIMEOUT_OPERATOR!r} is reserved; use your own name")
        try:
            record = await store.decide(
                aid, approve=body.decision == "approve", operator=body.operator, note=body.note
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
