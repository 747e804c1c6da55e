"""The operator HTTP API for approvals: list pending requests, show one, approve or deny it.

Any instance can take a decision for a call living on another instance: the decision goes to Redis, and the
owning instance hears of it through pub/sub. Reading needs an operator (viewer or higher); deciding needs
the approver role, and the decision is recorded under the *authenticated* operator's name (see
:mod:`ivr.console.auth`) — a name in the request body is ignored, so nobody can decide in someone else's name.

Refusals are JSON ``{"detail": {"error": ..., "message": ...}}``: 409 ``already_decided``, ``expired`` or
``abandoned`` (the request's call ended), and 503 ``redis_unreachable`` (with ``Retry-After``) when Redis
cannot be reached.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ivr.approvals.store import (
    ApprovalAbandoned,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalStore,
    abandoned_message,
    describe_decision,
)
from ivr.console.auth import Auth
from ivr.console.operators import Operator
from ivr.store.keys import KeySchemaError
from ivr.store.writer import is_retryable_refusal

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


#: Seconds a client should wait before retrying while Redis is unreachable.
RETRY_AFTER_S = 5


def redis_trouble(exc: BaseException, doing: str) -> HTTPException:
    """503 JSON when Redis cannot be reached (an outage: retry later); 500 JSON for a refused command."""
    # Unreachable, or refusing writes for a moment (a failover: READONLY, MASTERDOWN, TRYAGAIN…): retry later.
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError) or is_retryable_refusal(exc):
        log.warning("approvals API: Redis is unreachable while %s (%s)", doing, type(exc).__name__)
        return HTTPException(
            503,
            {
                "error": "redis_unreachable",
                "message": f"Redis is unreachable, so approvals cannot be {doing} right now; try again "
                f"in a few seconds (nothing was changed).",
            },
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    log.error("approvals API: Redis refused a command while %s: %s: %s", doing, type(exc).__name__, exc)
    return HTTPException(
        500,
        {
            "error": "redis_error",
            "message": f"Redis refused the request ({type(exc).__name__}); this is a fault of the server, "
            "not an outage: the server's log has the details.",
        },
    )


def approvals_router(store: ApprovalStore, auth: Auth) -> APIRouter:
    """Routes under /api/approvals: reading needs a viewer, deciding an approver (401/403 otherwise)."""
    router = APIRouter(prefix="/api/approvals", tags=["approvals"])
    viewer, approver = auth.require("viewer"), auth.require("approver")

    @router.get("", dependencies=[Depends(viewer)])
    async def list_pending() -> dict[str, Any]:
        try:
            records = await store.pending()
        except (RedisError, OSError) as exc:
            raise redis_trouble(exc, "listed") from None
        return {"approvals": [record.to_json() for record in records], "count": len(records)}

    @router.get("/{aid}", dependencies=[Depends(viewer)])
    async def show(aid: str) -> dict[str, Any]:
        try:
            record = await store.get(aid)
        except KeySchemaError:
            record = None
        except (RedisError, OSError) as exc:
            raise redis_trouble(exc, "read") from None
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
        except ApprovalAbandoned as exc:
            raise HTTPException(
                409,
                {
                    "error": "abandoned",
                    "message": abandoned_message(exc.approval),
                    "approval": exc.approval.to_json(),
                },
            ) from None
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
        except (RedisError, OSError) as exc:
            raise redis_trouble(exc, "decided") from None
        return record.to_json()

    return router
