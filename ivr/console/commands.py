"""Commands for a live call — hang up, transfer — sent through Redis to the instance that runs the call.

Why through Redis: the console may be served by any instance, but only the owning instance holds the call's
media socket and model session (docs/redis.md: ``ivr:instance:{iid}:channel``). :func:`send_command` finds
the owner from the call record, checks it is alive, and PUBLISHes one small JSON message on the owner's
channel; the owner's :class:`CommandListener` validates it and hands it to the app, which acts on the call
(and records an ``operator.action`` event in its timeline); on Redis Cluster the message is sharded
(``SPUBLISH``; the owner ``SSUBSCRIBE``s, so the receiver count is exact). Pub/sub delivers to whoever
listens *now*: a message sent while the owner is resubscribing is lost, which
:attr:`CommandResult.delivered` reports (the operator just clicks again) — a command is never queued to act
minutes later on a call it no longer fits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, cast, get_args

import redis.asyncio as aioredis

from ivr.store.client import is_cluster
from ivr.store.keys import KeySchema, KeySchemaError
from ivr.store.subscription import ChannelListener

__all__ = [
    "ACTIONS",
    "Action",
    "CallNotLive",
    "CommandError",
    "CommandHandler",
    "CommandListener",
    "CommandResult",
    "FlowLookup",
    "InstanceGone",
    "TransferUnavailable",
    "decode_command",
    "encode_command",
    "send_command",
]

log = logging.getLogger(__name__)

Action = Literal["hangup", "transfer"]
ACTIONS: tuple[Action, ...] = get_args(Action)
#: ``handler(call_sid, action, by)``: act on a call this instance runs.
CommandHandler = Callable[[str, Action, str], Awaitable[None]]

MESSAGE_TYPE = "call.command"
MESSAGE_VERSION = 1
#: Longest operator name carried in a command.
MAX_BY = 200


class FlowLookup(Protocol):
    """Anything that finds a flow by id (``FlowSet``, or a plain dict of flows)."""

    def get(self, flow_id: str, /) -> Any: ...


class CommandError(Exception):
    """A command was refused; ``str()`` says why and what to do. ``status`` is the HTTP status to answer."""

    status = 400


class CallNotLive(CommandError):
    """There is no such call in Redis, or it has already ended."""

    status = 404


class InstanceGone(CommandError):
    """The instance that runs the call sends no heartbeat any more."""

    status = 503


class TransferUnavailable(CommandError):
    """The call's flow has no human number to transfer to."""

    status = 409


@dataclass(frozen=True)
class CommandResult:
    """What happened to a command sent with :func:`send_command`."""

    call_sid: str
    """The call it was for."""
    action: Action
    """``hangup`` or ``transfer``."""
    instance_id: str
    """The instance that runs the call and was sent the command."""
    by: str
    """The operator who sent it."""
    delivered: bool
    """True when the owning instance was listening (PUBLISH reached at least one subscriber)."""

    @property
    def message(self) -> str:
        """A sentence for the operator."""
        what = "hang up" if self.action == "hangup" else "transfer"
        if self.delivered:
            return f"Asked {self.instance_id} to {what} the call."
        return (
            f"{self.instance_id} did not receive the request to {what} the call (it is not listening right "
            "now, perhaps reconnecting to Redis); try again in a few seconds."
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


def encode_command(call_sid: str, action: Action, by: str, *, now: float | None = None) -> str:
    """The JSON message published on the owner's channel (documented in docs/redis.md)."""
    payload = {
        "v": MESSAGE_VERSION,
        "type": MESSAGE_TYPE,
        "call_sid": call_sid,
        "action": action,
        "by": by,
        "sent_at": round(time.time() if now is None else now, 3),
    }
    return json.dumps(payload, separators=(",", ":"))


def decode_command(data: object, keys: KeySchema) -> tuple[str, Action, str]:
    """``(call_sid, action, by)`` from a channel message; ValueError saying what is wrong with it."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if not isinstance(data, str):
        raise ValueError(f"not text but {type(data).__name__}")
    try:
        payload = json.loads(data)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != MESSAGE_TYPE:
        raise ValueError(f"not a {MESSAGE_TYPE!r} object")
    call_sid, action, by = payload.get("call_sid"), payload.get("action"), payload.get("by")
    try:
        keys.call(call_sid)  # the same id rules as every key of the call
    except KeySchemaError as exc:
        raise ValueError(str(exc)) from None
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_BY:
        raise ValueError(f"'by' must be an operator name of 1 to {MAX_BY} characters")
    return cast(str, call_sid), cast(Action, action), by.strip()


async def send_command(
    redis: aioredis.Redis,
    keys: KeySchema,
    call_sid: str,
    action: Action,
    by: str,
    *,
    flows: FlowLookup | None = None,
) -> CommandResult:
    """Ask the instance that runs ``call_sid`` to hang it up or transfer it; returns once published.

    Raises :class:`CallNotLive` (unknown or ended call), :class:`InstanceGone` (the owner's heartbeat
    expired), :class:`TransferUnavailable` (with ``flows``: the call's flow has no ``transfer``) or
    :class:`CommandError` (a bad action, sid or name). Redis errors propagate.
    """
    if action not in ACTIONS:
        raise CommandError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_BY:
        raise CommandError(f"the operator name must be 1 to {MAX_BY} characters")
    try:
        call_key = keys.call(call_sid)
    except KeySchemaError as exc:
        raise CommandError(f"not a call id: {exc}") from None
    instance_id, ended_at, outcome, flow_id = await redis.hmget(
        call_key, ["instance_id", "ended_at", "outcome", "flow_id"]
    )
    if instance_id is None and ended_at is None and outcome is None and flow_id is None:
        raise CallNotLive(f"no call {call_sid} in Redis (unknown, or its record expired)")
    if _time(ended_at) is not None:  # a live record holds ended_at = null
        raise CallNotLive(f"call {call_sid} has already ended (outcome {outcome or 'unknown'})")
    if not instance_id:
        raise CommandError(f"call {call_sid} has no owning instance in its record; it cannot be reached")
    alive, last_seen = await _heartbeat(redis, keys, instance_id)
    if not alive:
        seen = f", last seen {time.time() - last_seen:.0f} s ago" if last_seen is not None else ""
        raise InstanceGone(
            f"instance {instance_id}, which runs call {call_sid}, is gone (no heartbeat{seen}); the call "
            "is marked ended when that instance restarts, or ends with its socket"
        )
    if action == "transfer" and flows is not None:
        flow = flows.get(flow_id or "")
        if flow is None or getattr(flow, "transfer", None) is None:
            raise TransferUnavailable(
                f"flow {flow_id or '?'} has no transfer number; add transfer.number to its YAML to allow "
                "transfers"
            )
    channel, message = keys.instance_channel(instance_id), encode_command(call_sid, action, by)
    # On Redis Cluster a classic PUBLISH counts only the receivers on the node it reached; a shard channel
    # lives on its slot's node, where the instance subscribes (SSUBSCRIBE), so the count is exact.
    receivers = await (
        redis.spublish(channel, message) if is_cluster(redis) else redis.publish(channel, message)
    )
    result = CommandResult(call_sid, action, instance_id, by.strip(), delivered=int(receivers) >= 1)
    log.info(
        "operator %s asked %s to %s call %s (%s)",
        result.by,
        instance_id,
        action,
        call_sid,
        "delivered" if result.delivered else "nobody listening",
    )
    return result


def _time(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _heartbeat(redis: aioredis.Redis, keys: KeySchema, iid: str) -> tuple[bool, float | None]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.instance(iid))
        pipe.zscore(keys.instances(), iid)
        exists, score = await pipe.execute()
    return bool(exists), score


class CommandListener(ChannelListener):
    """One per instance: subscribes to the instance's channel and hands valid commands to ``handler``.

    ``start()`` once, ``stop()`` at shutdown (commands still running are cancelled). Resubscribes with
    backoff after Redis errors (:class:`~ivr.store.subscription.ChannelListener`). Malformed messages are
    logged (an excerpt) and counted; a failing handler is logged and counted; neither stops the listener.
    Each command runs in its own task, so a slow Twilio request never holds up the next command.
    """

    def __init__(
        self, redis: aioredis.Redis, keys: KeySchema, instance_id: str, handler: CommandHandler
    ) -> None:
        super().__init__(redis, keys.instance_channel(instance_id), what="command", log=log)
        self._keys = keys
        self.instance_id = instance_id
        self._handler = handler
        #: Valid commands received.
        self.received = 0
        #: Commands the handler finished without raising.
        self.handled = 0
        #: Commands whose handler raised.
        self.failed = 0
        #: Messages that were not valid commands.
        self.malformed = 0

    async def _on_message(self, data: object) -> None:
        try:
            call_sid, action, by = decode_command(data, self._keys)
        except ValueError as exc:
            self.malformed += 1
            log.warning("ignored a malformed message on %s: %s", self._channel, exc)
        else:
            self.received += 1
            task = asyncio.create_task(
                self._handle(call_sid, action, by), name=f"command:{action}:{call_sid}"
            )
            self._helpers.add(task)
            task.add_done_callback(self._helpers.discard)
        await self._notify()

    async def _handle(self, call_sid: str, action: Action, by: str) -> None:
        try:
            await self._handler(call_sid, action, by)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            log.warning("command %s for call %s from %s failed: %s", action, call_sid, by, exc)
        else:
            self.handled += 1
        await self._notify()
