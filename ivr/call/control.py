"""Hanging up and transferring a live call: asked by a tool, by an operator, or by the call's time limit.

One :class:`CallActions` per call, owned by :class:`~ivr.call.session.CallSession`. A tool's request
(``end_call``, ``transfer_to_human``) waits for the response that says goodbye: once that response is done,
a barrier mark goes to Twilio, and the action runs when Twilio echoes it — the caller heard the goodbye — or
after :data:`_ACTION_TIMEOUT_S` at the latest. From the request until the action runs the goodbye is not
interruptible (:attr:`CallActions.goodbye_pending`): a caller who talks over it — "bye!" — does not clear it,
because a clear makes Twilio echo every pending mark at once, the barrier included, and the line would close
with the goodbye unheard. An operator's command (:mod:`ivr.console.commands`) acts at
once: the operator chose the moment. Both go through Twilio's REST API (:class:`~ivr.telephony.rest.
CallController`); a hang-up that Twilio refuses still ends the call by closing the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..logs import mask_number
from ..telephony.rest import TwilioRestError
from ..telephony.twiml import dial
from .notices import say_line

if TYPE_CHECKING:
    from .session import CallSession

#: How long a hang-up or transfer waits for the goodbye to finish playing before acting anyway.
_ACTION_TIMEOUT_S = 15.0


class CallControlRefused(Exception):
    """An operator command cannot be carried out on this call; ``str()`` says why."""


class CallActions:
    """Hang-up and transfer of one call (see the module docstring)."""

    def __init__(self, call: CallSession) -> None:
        self.call = call
        self._pending_action: tuple[str, str] | None = None
        self._transfer_announcement: str | None = None
        self._action_armed = False

    # ------------------------------------------------------------------ asked by tools: after the goodbye

    def request_hangup(self, reason: str) -> None:
        self._pending_action = ("hangup", reason or "")
        self._action_armed = False

    def request_transfer(self, number: str, announcement: str | None) -> None:
        self._pending_action = ("transfer", number)
        self._transfer_announcement = announcement
        self._action_armed = False

    @property
    def goodbye_pending(self) -> bool:
        """A hang-up or transfer waits for its goodbye/announcement to play: caller speech must not cut it."""
        return self._pending_action is not None

    @property
    def awaiting_goodbye(self) -> bool:
        """An action was requested and waits for the end of the response that says goodbye."""
        return self._pending_action is not None and not self._action_armed

    async def arm(self) -> None:
        """The goodbye/announcement response is done: act once its audio has played (a barrier mark)."""
        call = self.call
        self._action_armed = True
        await call.audio.barrier("action")
        call.call_later(_ACTION_TIMEOUT_S, lambda: call.spawn(self.run(), "action"))

    async def run(self) -> None:
        """Carry out the requested action (once; the barrier mark and the time-out may both get here)."""
        call = self.call
        action, self._pending_action = self._pending_action, None
        if action is None or call.ended.is_set():
            return
        kind, arg = action
        if kind == "hangup":
            call.log.info("hanging up (%s)", arg or "agent ended the call")
            call.record.outcome = "agent-hangup"
            await self._hang_up()
        else:
            call.log.info("transferring the call to %s", mask_number(arg))
            if await self._transfer(arg, self._transfer_announcement) is not None:
                await call.link.request_response(
                    say_line(
                        "Sorry, I couldn't connect you to a person. Is there anything else I can do?",
                        "The transfer to a person failed.",
                    )
                )
                return
            call.record.outcome = "transferred"
        await call.end(call.record.outcome)

    async def _hang_up(self) -> None:
        """Twilio REST hang-up; if Twilio refuses, the caller still ends the call by closing the stream."""
        try:
            await self.call.controller.hang_up(self.call.call_sid)
        except TwilioRestError as exc:
            self.call.log.warning("Twilio hang-up failed (%s); closing the stream instead", exc)

    async def _transfer(self, number: str, announcement: str | None) -> TwilioRestError | None:
        """Redirect the call to ``number`` (Twilio REST): None once Twilio took it, else its error (logged,
        counted in ``transfer_failures``, an ``error`` event); the call goes on."""
        call = self.call
        try:
            await call.controller.redirect(call.call_sid, dial(number, announcement))
        except TwilioRestError as exc:
            call.log.error("transfer failed: %s", exc)
            call.feed.emit("error", message="transfer failed")
            call.record.count("transfer_failures")
            return exc
        return None

    def on_time_limit(self) -> None:
        call = self.call
        call.log.info("call reached its time limit")
        self.request_hangup("time limit")
        call.spawn(
            call.link.request_response(
                say_line("We have reached the time limit for this call. Thank you for calling. Goodbye.")
            ),
            "limit",
        )

    # ------------------------------------------------------------------ operator commands: at once

    async def operator_hangup(self, by: str) -> None:
        """An operator hung up the call from the console: Twilio REST hang-up (else close the stream)."""
        call = self.call
        if call.ended.is_set():
            raise CallControlRefused(f"call {call.call_sid} has already ended")
        call.feed.emit("operator.action", action="hangup", by=by)
        call.log.info("operator %s hung up the call", by)
        call.record.outcome = "operator-hangup"
        await self._hang_up()
        await call.end("operator-hangup")

    async def operator_transfer(self, by: str) -> None:
        """An operator transferred the call to the flow's human number (``transfer`` in the flow YAML)."""
        call = self.call
        if call.ended.is_set():
            raise CallControlRefused(f"call {call.call_sid} has already ended")
        transfer = call.flow.transfer
        if transfer is None:
            reason = f"flow {call.flow.id} has no transfer number (add transfer.number to its YAML)"
            call.feed.emit("operator.action", action="transfer", by=by, refused=reason)
            raise CallControlRefused(reason)
        call.feed.emit("operator.action", action="transfer", by=by, to=mask_number(transfer.number))
        call.log.info("operator %s transfers the call to %s", by, mask_number(transfer.number))
        # Set first: Twilio may end the stream (stop) before the REST request returns.
        call.record.outcome = "transferred"
        error = await self._transfer(transfer.number, transfer.announcement)
        if error is not None:
            if not call.ended.is_set():
                call.record.outcome = "in-progress"
            raise CallControlRefused(f"Twilio refused the transfer: {error}")
        await call.end("transferred")
