"""The approval gate the call runtime puts in front of every tool with an approval policy.

Enforced in code, not by prompt: the model only ever gets a message. A gated action runs only when an
operator's "approved" decision is stored in Redis, and then exactly once, with the arguments that were
stored in the request (what the operator saw), never with arguments the model sends later.

The model cannot retry its way through:

* the same tool + arguments (same digest) while a request is pending → the same request, still pending;
* the same digest after a denial or a timeout → denied again, for the rest of the call;
* changed arguments → a new request that an operator must decide on its own;
* an approved request runs once: taking it to run (``claim``) is atomic, so two racing tool calls cannot both
  run it. Asking again for the same action after that creates a new request;
* ``executed`` is audited when the action has actually run, with its outcome (:meth:`ApprovalGate.executed`);
* when the call ends, its undecided requests are abandoned (:meth:`ApprovalGate.abandon_call`) and can no
  longer be decided.

How the runtime uses it::

    decision = await gate.check(call_sid=..., flow_id=..., tool=..., call_id=..., policy=..., arguments=...)
    if decision.kind == "pending":
        ...tell the model decision.message, play the hold phrase...
        decision = await gate.settle(decision.approval)   # waits for the operator (or the deadline)
    if decision.kind == "run":
        run the tool with decision.arguments              # the stored arguments
        await gate.executed(decision.approval, ok=..., error_type=...)   # when it was gated
    elif decision.kind == "done":
        it was approved and run by another tool call of this call, which reported the result
    else:
        send decision.message back to the model
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from ivr.approvals.listener import ApprovalListener
from ivr.approvals.policy import ApprovalPolicy
from ivr.approvals.store import Approval, ApprovalStore

__all__ = ["ApprovalGate", "GateDecision"]

log = logging.getLogger("ivr.approvals.gate")

#: Attempts of the request/claim loop; only a race with another call of the same action repeats it.
_ATTEMPTS = 3


@dataclass(frozen=True)
class GateDecision:
    """What the runtime does with one tool call: run it, tell the model it is pending, or refuse it.

    ``done`` (only from :meth:`ApprovalGate.settle`): approved, and already run by another tool call of the
    same call, whose result the model was given; never reported to the model as a refusal."""

    kind: Literal["run", "pending", "denied", "done"]
    approval: Approval | None
    #: For the model: what happened and what to tell the caller. Empty for an ungated "run".
    message: str

    def arguments(self, fallback: dict[str, Any]) -> dict[str, Any]:
        """The arguments to run with: the approved request's stored ones, else ``fallback`` (ungated)."""
        return dict(self.approval.arguments) if self.approval is not None else fallback

    def as_output(self) -> dict[str, Any]:
        """A structured tool result for the model when the action did not run (yet)."""
        status = {"pending": "pending_approval", "denied": "denied", "run": "approved", "done": "approved"}[
            self.kind
        ]
        output: dict[str, Any] = {"status": status, "message": self.message}
        if self.approval is not None:
            output["approval_id"] = self.approval.id
        return output


class ApprovalGate:
    """One per app instance, shared by its calls."""

    def __init__(self, store: ApprovalStore, listener: ApprovalListener, *, instance_id: str) -> None:
        if not instance_id:
            raise ValueError("instance_id must name this app instance")
        self.store = store
        self.listener = listener
        self.instance_id = instance_id

    async def check(
        self,
        *,
        call_sid: str,
        flow_id: str,
        tool: str,
        call_id: str,
        policy: ApprovalPolicy,
        arguments: dict[str, Any],
        shown: dict[str, Any] | None = None,
    ) -> GateDecision:
        """Decide what to do with one tool call. Never raises for Redis trouble: it refuses instead.

        ``shown``: the arguments as the flow's ``redact:`` masks them (what the audit keeps)."""
        if not policy.requires_approval(arguments):
            return GateDecision("run", None, "")
        reason = policy.reason or f"{tool} needs a person's approval"
        try:
            for _ in range(_ATTEMPTS):
                approval, _created = await self.store.request_for_gate(
                    call_sid=call_sid,
                    instance_id=self.instance_id,
                    flow_id=flow_id,
                    tool=tool,
                    call_id=call_id,
                    arguments=arguments,
                    reason=reason,
                    timeout_s=policy.timeout_s,
                    shown=shown,
                )
                if approval.status == "pending":
                    return GateDecision("pending", approval, pending_message(approval))
                if approval.status in ("denied", "expired"):
                    return GateDecision("denied", approval, refusal_message(approval, repeated=True))
                # Approved and not run yet: whoever claims it first runs it. A loser asks again, which now
                # creates a fresh request.
                if await self.claim(approval.id):
                    return GateDecision("run", approval, "")
        except (RedisError, OSError) as exc:
            return GateDecision("denied", None, unavailable_message(tool, exc))
        return GateDecision(  # pragma: no cover - needs three lost races in a row
            "denied", None, f"The approval for {tool} could not be settled; it was not carried out."
        )

    async def wait(self, approval: Approval) -> Approval:
        """The request once decided, or expired at its deadline."""
        return await self.listener.wait(approval.id, approval.deadline, fallback=approval)

    async def claim(self, aid: str) -> bool:
        """Atomically take an approved request to run it; False if taken already (or not approved)."""
        return await self.store.claim(aid, instance_id=self.instance_id)

    async def executed(self, approval: Approval, *, ok: bool, error_type: str | None = None) -> bool:
        """The claimed action ran: store and audit its outcome. Never raises for Redis trouble (logged)."""
        try:
            return await self.store.record_execution(
                approval.id, ok=ok, error_type=error_type, instance_id=self.instance_id
            )
        except (RedisError, OSError) as exc:
            log.error(
                "approval %s: %s ran (%s) but its outcome could not be stored (Redis: %s); the record keeps "
                "claimed_at without executed_at",
                approval.id,
                approval.tool,
                "ok" if ok else f"failed: {error_type}",
                type(exc).__name__,
            )
            return False

    async def abandon_call(self, call_sid: str) -> list[str]:
        """The call ended: its undecided requests become ``abandoned`` (audited). Raises on Redis trouble."""
        return await self.store.abandon_call(call_sid, instance_id=self.instance_id)

    async def settle(self, approval: Approval) -> GateDecision:
        """Wait for the decision on a pending request and turn it into "run" (once), "done" or "denied"."""
        final = await self.wait(approval)
        if final.status == "approved":
            try:
                if await self.claim(final.id):
                    return GateDecision("run", final, "")
                latest = await self.store.get(final.id)
            except (RedisError, OSError) as exc:
                return GateDecision("denied", final, unavailable_message(final.tool, exc))
            if latest is not None and latest.status == "approved":
                return GateDecision(
                    "done",
                    latest,
                    f"This action (approval {final.id}) was approved and has been carried out once, by "
                    "another request for it in this call, whose result you were given; it was not run a "
                    "second time.",
                )
            final = latest or final
            if final.status == "approved":  # pragma: no cover - the record vanished (retention) meanwhile
                return GateDecision("denied", final, f"Approval {final.id} could not be settled.")
        return GateDecision("denied", final, refusal_message(final, repeated=False))


def pending_message(approval: Approval) -> str:
    """Tells the model the action is waiting for a human, and what to say meanwhile."""
    seconds = max(1, round(approval.deadline - approval.created_at))
    return (
        f"Not done yet: this action needs a person's approval ({approval.reason}). Request {approval.id} is "
        f"waiting for an operator, for up to {seconds} seconds. Tell the caller you are checking with a "
        "colleague and ask them to hold on; do not promise the outcome and do not call the tool again for "
        "this. You will be told the decision."
    )


def refusal_message(approval: Approval, *, repeated: bool) -> str:
    """Tells the model why the action was not carried out, and that retrying will not help."""
    if approval.status == "abandoned":
        head = "Not done: this request was closed because its call ended, so it was not carried out."
    elif approval.status == "expired":
        seconds = max(1, round(approval.deadline - approval.created_at))
        head = (
            f"Not done: no operator approved this action within {seconds} seconds, so it was not carried "
            "out (a request that times out counts as denied)."
        )
    else:
        note = f" Operator's note: {approval.note}." if approval.note else ""
        head = f"Not done: an operator denied this action ({approval.reason}).{note}"
    again = (
        " It was already refused earlier in this call, and the same request will be refused again."
        if repeated
        else " Asking again with the same details will be refused."
    )
    return (
        head + again + " Tell the caller politely that it cannot be done right now and offer an alternative, "
        "such as a transfer to a person."
    )


def unavailable_message(tool: str, exc: BaseException) -> str:
    """Fail closed: without the approval store nothing gated runs."""
    return (
        f"Not done: the approval service is unreachable right now ({type(exc).__name__}), so {tool} was not "
        "carried out. Tell the caller it cannot be done at the moment and offer an alternative, such as a "
        "transfer to a person."
    )
