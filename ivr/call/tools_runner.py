"""Running the model's function calls on a call: stage check, approval gate, record, answer the model.

One :class:`ToolRunner` per call, owned by :class:`~ivr.call.session.CallSession`. Each function call is
checked against the flow's current stage and the call's tool budget, then dispatched through the tool
registry (which validates the arguments). A tool whose approval policy applies goes to the approval gate:
the model is told it is pending, the caller hears the hold phrase, and when an operator decides (or the
request expires) the tool runs once, or the model is told no (:mod:`ivr.approvals`). Every outcome is
recorded in the call record, the event feed, the metrics and the log.

One waiter per approval request: a model that repeats a pending request gets "pending" again, and hears
the decision once. An approved action that has started runs to its end even if the caller hangs up, and its
outcome is audited (``executed``); when the call ends, its undecided requests are abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from ..approvals.store import Approval
from ..logs import redact
from ..realtime import events as ev
from ..tools.registry import APPROVED, Approved, ToolOutcome
from .notices import approval_notice, say_line

if TYPE_CHECKING:
    from ..approvals.gate import ApprovalGate
    from .session import CallSession

#: How long a call's end waits for its approval requests to be abandoned in Redis (it goes on meanwhile).
ABANDON_WAIT_S = 1.0
#: Work that must outlive the call's own tasks (approved actions under way, abandoning at the end).
_BACKGROUND: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    _BACKGROUND.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        logging.getLogger("ivr.call").error("approval task failed: %s", redact(repr(exc)), exc_info=exc)


class ToolRunner:
    """Function calls of one call (see the module docstring)."""

    def __init__(self, call: CallSession) -> None:
        self.call = call
        self._hold_requested = False
        self._tool_calls = 0
        #: Approval ids this call waits for (one waiter each), and whether it asked for any approval.
        self._awaiting: set[str] = set()
        self._asked_approval = False

    async def run(self, calls: tuple[ev.FunctionCall, ...]) -> None:
        """The function calls that ended a response: run each, send the outputs, ask for the next response."""
        link = self.call.link
        session = link.session  # the model socket that made these calls (it may be replaced meanwhile)
        for fc in calls:
            link.history.append(("call", fc.call_id, fc.name, fc.arguments))
            self._tool_calls += 1
            if self._tool_calls > self.call.flow.limits.max_tool_calls:
                output = orjson.dumps(
                    {
                        "error": {
                            "type": "limit_reached",
                            "message": "No tool calls are left on this call; help the caller without tools.",
                        }
                    }
                )
                outcome = ToolOutcome(
                    name=fc.name,
                    call_id=fc.call_id,
                    ok=False,
                    output=output.decode(),
                    error_type="limit_reached",
                    duration_ms=0.0,
                    arguments=None,
                )
                self._record(outcome)
            else:
                outcome = await self.execute(fc.name, fc.arguments, fc.call_id)
            await link.send_tool_output(fc.call_id, fc.name, fc.arguments, outcome.output, session)
        # A hang-up/transfer requested by these tools arms after the response that says goodbye.
        if self._hold_requested:
            self._hold_requested = False
            await link.request_response(self._hold_instructions())
        else:
            await link.request_response()

    async def execute(self, name: str, arguments_json: str, call_id: str) -> ToolOutcome:
        """Run one tool call through the stage check and the approval gate; record it; follow transitions."""
        call = self.call
        claimed: list[Approval] = []  # an approved request this tool call took to run

        async def guard(arguments: dict[str, Any]) -> tuple[Any, str] | Approved | None:
            if not call.state.allowed(name):
                return {"error": {"type": "not_allowed", "message": call.state.not_allowed_message(name)}}, (
                    "not_allowed"
                )
            config = call.flow.tool(name)
            policy = getattr(config, "approval", None) if config is not None else None
            if policy is None or not policy.requires_approval(arguments):
                return None
            if call.gate is None:
                return {
                    "error": {
                        "type": "unavailable",
                        "message": "This action needs a person's approval, and approvals are unavailable "
                        "right now. Tell the caller it cannot be done at the moment.",
                    }
                }, "unavailable"
            self._asked_approval = True
            decision = await call.gate.check(
                call_sid=call.call_sid,
                flow_id=call.flow.id,
                tool=name,
                call_id=call_id,
                policy=policy,
                arguments=arguments,
                shown=call.redactor.value(arguments) if call.redactor.active else None,
            )
            if decision.kind == "run":
                if decision.approval is not None:  # an operator approved exactly this: run it as approved
                    claimed.append(decision.approval)
                    return APPROVED
                return None
            # A repeat of a request this call already waits for gets "pending" again, and no second waiter.
            if (
                decision.kind == "pending"
                and decision.approval is not None
                and decision.approval.id not in self._awaiting
            ):
                self._awaiting.add(decision.approval.id)
                self._hold_requested = True
                call.feed.emit("approval.requested", approval_id=decision.approval.id, tool=name)
                call.spawn(self._await_approval(decision.approval), "approval")
            return decision.as_output(), decision.kind

        try:
            outcome = await call.tools.dispatch(name, arguments_json, call_id, call.tool_context, guard)
        except BaseException as exc:
            if claimed and call.gate is not None:
                # Cut off (the caller hung up mid-run: cancelled) or failed: audit it either way, outside
                # this task, which may be being cancelled.
                kind = "cancelled" if isinstance(exc, asyncio.CancelledError) else "internal_error"
                _keep(asyncio.ensure_future(call.gate.executed(claimed[0], ok=False, error_type=kind)))
            raise
        if claimed and call.gate is not None:
            await call.gate.executed(claimed[0], ok=outcome.ok, error_type=outcome.error_type)
        self._record(outcome)
        change = call.state.on_tool_result(name, outcome.ok)
        if change is not None:
            await call.apply_stage_change(change)
        return outcome

    def _hold_instructions(self) -> str:
        phrase = self.call.flow.hold_phrase or "One moment please."
        return say_line(
            f"{phrase} A staff member needs to approve this, so please stay on the line.",
            "Do not promise the outcome.",
        )

    async def _await_approval(self, approval: Approval) -> None:
        """A gated tool call is pending: when the operator decides, run it (once) or tell the model no."""
        call = self.call
        assert call.gate is not None
        try:
            decision = await call.gate.settle(approval)
        finally:
            self._awaiting.discard(approval.id)
        final = decision.approval or approval
        waited = (final.decided_at or time.time()) - final.created_at
        call.meter.approval(approval.tool, final.status if decision.approval else decision.kind, waited)
        # Claimed means taken to run: it runs (and is audited) even if the call ended meanwhile. Shielded,
        # because the call's tasks are cancelled when the caller hangs up.
        run = (
            _keep(asyncio.ensure_future(self._run_approved(call.gate, final)))
            if decision.kind == "run"
            else None
        )
        if call.ended.is_set():
            return
        call.feed.emit(
            "approval.decided",
            approval_id=approval.id,
            tool=approval.tool,
            status=decision.approval.status if decision.approval else decision.kind,
        )
        if decision.kind == "done":  # another tool call of this call ran it and gave the model the result
            call.log.info("approval %s: already carried out by a repeated tool call", approval.id)
            return
        if run is not None:
            outcome = await asyncio.shield(run)
            self._record(outcome)
            change = call.state.on_tool_result(approval.tool, outcome.ok)
            if change is not None:
                await call.apply_stage_change(change)
            text = approval_notice(approval.tool, True, output=outcome.output)
        else:
            text = approval_notice(approval.tool, False, message=decision.message)
        link = call.link
        link.history.append(("system", text))
        await link.send(link.client.system_text(text))
        await link.request_response()

    async def _run_approved(self, gate: ApprovalGate, approval: Approval) -> ToolOutcome:
        """Run an approved, claimed action with its stored arguments; audit ``executed`` with its outcome."""
        call = self.call
        arguments = orjson.dumps(dict(approval.arguments)).decode()
        try:
            outcome = await call.tools.dispatch(
                approval.tool, arguments, f"{approval.call_id}_approved", call.tool_context, approved=True
            )
        except Exception:
            await gate.executed(approval, ok=False, error_type="internal_error")
            raise
        await gate.executed(approval, ok=outcome.ok, error_type=outcome.error_type)
        return outcome

    async def await_pending_approvals(self) -> None:
        """A call resumed here: wait for the decisions its previous instance was waiting for, and carry each
        out as that instance would have (run the action once, or tell the model no)."""
        call = self.call
        if call.gate is None:
            return
        try:
            requests = await call.gate.store.for_call(call.call_sid)
        except (RedisError, OSError) as exc:
            call.log.warning("resumed call: its approval requests could not be read (Redis: %s)", exc)
            return
        for approval in requests:
            # Pending, or approved but not yet taken to run (its instance died in between); an action
            # already claimed was carried out (or is being) by the instance that claimed it.
            waiting = approval.status == "pending" or (
                approval.status == "approved" and approval.claimed_at is None
            )
            if waiting and approval.id not in self._awaiting:
                self._awaiting.add(approval.id)
                self._asked_approval = True  # abandoned with the call if it ends undecided
                call.spawn(self._await_approval(approval), "approval")

    async def abandon_pending(self) -> None:
        """The call ended: its undecided approval requests become ``abandoned`` (audited), so nobody can
        approve an action that nothing would carry out. Waits at most :data:`ABANDON_WAIT_S`."""
        gate = self.call.gate
        if gate is None or not self._asked_approval:
            return
        task = _keep(asyncio.ensure_future(self._abandon(gate)))
        await asyncio.wait({task}, timeout=ABANDON_WAIT_S)

    async def _abandon(self, gate: ApprovalGate) -> None:
        call = self.call
        try:
            abandoned = await gate.abandon_call(call.call_sid)
        except (RedisError, OSError) as exc:
            call.log.warning(
                "could not close this call's approval requests (Redis: %s); a decision on them is refused "
                "once the call's end is stored, and the approvals sweeper closes them",
                type(exc).__name__,
            )
            return
        if abandoned:
            call.log.info(
                "call ended: %d approval request(s) abandoned: %s", len(abandoned), ", ".join(abandoned)
            )

    def _record(self, outcome: ToolOutcome) -> None:
        call = self.call
        entry = {
            "name": outcome.name,
            "call_id": outcome.call_id,
            "ok": outcome.ok,
            "error_type": outcome.error_type,
            "duration_ms": round(outcome.duration_ms, 1),
            "arguments": outcome.arguments,
            "output": outcome.output,
        }
        call.record.tool_calls.append(entry)
        call.record.count("tool_calls")
        call.meter.tool(outcome)
        call.feed.emit(
            "tool.called",
            name=outcome.name,
            arguments=outcome.arguments,
            ok=outcome.ok,
            error_type=outcome.error_type,
            duration_ms=round(outcome.duration_ms, 1),
            output=outcome.output,
        )
        if outcome.error_type == "pending":  # held for an operator: not a failure
            call.log.info("tool %s held for an operator's approval", outcome.name)
            return
        level = logging.INFO if outcome.ok else logging.WARNING
        call.log.log(
            level,
            "tool %s %s in %.0f ms%s",
            outcome.name,
            "ok" if outcome.ok else "failed",
            outcome.duration_ms,
            f" ({outcome.error_type})" if outcome.error_type else "",
        )
