"""Approval requests and decisions in Redis, under the public key schema (docs/redis.md).

Why Lua: "a decision can never be made twice" and "a repeated tool call must not create a second request"
are read-then-write rules. Doing the read and the write inside one server-side script makes them atomic
across every app instance and operator machine that shares the Redis, with no locks to leak. Each script
also writes the audit entry, the dashboard event and (for decisions) the pub/sub notification in the same
step, so nothing can record a decision without announcing it, or announce one that was not recorded. The
scripts themselves are in :mod:`ivr.approvals.scripts`.

Times are Unix seconds. Unless a test passes ``now``, the scripts read the Redis server's clock (``TIME``),
so an operator's laptop with a skewed clock cannot approve after the deadline.

The request script reads the hashes of the call's earlier requests (ids from the call's index set), keys
it cannot declare up front; that is fine on a single Redis or a primary/replica pair, not on Redis Cluster.

On Redis Cluster (a key schema with hash tags) every request lives in its call's hash slot
(``approval(aid, sid)``) and each change is two scripts (:mod:`ivr.approvals.scripts`, "Redis Cluster"): the
state machine in the call's slot, with every key declared (the earlier requests' ids are read first and the
script re-checks the set, answering ``again`` when it changed), then the indexes, audit, event and
notification in the global slot, guarded so they are written once. The request's id leads to its call
through ``approval_call(aid)``. The guarantees that matter hold as on one Redis — one decision, one run, no
second request for the same call and arguments — but a decision is no longer announced in the same atomic
step: a crash between the steps leaves it recorded and not yet audited or published until the next attempt
or the sweeper repeats the global step. The decision notification is a sharded message (``SPUBLISH``) there.
On a single Redis (no tags) the original one-script path runs, unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from ivr.approvals.scripts import (
    ABANDON_CALL_LUA,
    ABANDON_LUA,
    CLAIM_LUA,
    CLOSE_GLOBAL_LUA,
    DECIDE_CALL_LUA,
    DECIDE_LUA,
    EXECUTED_CALL_LUA,
    EXECUTED_GLOBAL_LUA,
    EXECUTED_LUA,
    REQUEST_CALL_LUA,
    REQUEST_GLOBAL_LUA,
    REQUEST_LUA,
    SWEEP_CALL_LUA,
    SWEEP_LUA,
)
from ivr.store.client import is_cluster
from ivr.store.keys import KeySchema

__all__ = [
    "Approval",
    "ApprovalAbandoned",
    "ApprovalAlreadyDecided",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalNotFound",
    "ApprovalStore",
    "Status",
    "Sweep",
    "arguments_digest",
]

Status = Literal["pending", "approved", "denied", "expired", "abandoned"]
_STATUSES: frozenset[str] = frozenset({"pending", "approved", "denied", "expired", "abandoned"})

#: Approximate cap of the global event stream (same as the call store's).
EVENTS_MAXLEN = 100_000
#: Note stored on requests that ran out of time.
EXPIRED_NOTE = "no decision before the deadline"
#: decided_by of requests that ran out of time.
TIMEOUT_OPERATOR = "timeout"
#: decided_by of undecided requests closed because their call ended.
CALL_ENDED_OPERATOR = "call-ended"
#: Notes stored on abandoned requests: undecided, or approved but not yet run, when the call ended.
ABANDONED_NOTE = "the call ended before a decision"
ABANDONED_APPROVED_NOTE = "the call ended before the approved action ran"
#: Names reserved for the system; an operator cannot decide under them.
RESERVED_OPERATORS = frozenset({TIMEOUT_OPERATOR, CALL_ENDED_OPERATOR})
#: Redis Cluster: how often a call step is retried when the call's set of requests changed under it.
_SET_CHANGED_ATTEMPTS = 10


class ApprovalError(Exception):
    """Base class of the store's refusals; ``str()`` is a sentence an operator can act on."""


class ApprovalNotFound(ApprovalError):
    """No approval with this id (never existed, or removed after the retention period)."""

    def __init__(self, aid: str) -> None:
        super().__init__(f"no approval request {aid!r} (check the id with `ivr approvals list`)")
        self.aid = aid


class ApprovalAlreadyDecided(ApprovalError):
    """The request was already decided (or expired); carries the stored record."""

    def __init__(self, approval: Approval) -> None:
        self.approval = approval
        self.status = approval.status
        super().__init__(f"approval {approval.id} was already {describe_decision(approval)}")


class ApprovalAbandoned(ApprovalAlreadyDecided):
    """The request's call ended before it was decided (or before the approved action ran): nothing can be
    carried out any more, so it cannot be decided. Carries the stored (``abandoned``) record."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(approval)
        self.args = (abandoned_message(approval),)


def abandoned_message(approval: Approval) -> str:
    """Why an abandoned request cannot be decided, for operators (API, console, CLI)."""
    before = "the approved action ran" if approval.note == ABANDONED_APPROVED_NOTE else "a decision"
    return (
        f"approval {approval.id} can no longer be decided: the call ended before {before} (call "
        f"{approval.call_sid}), so nothing will be carried out; the request was closed as abandoned"
    )


class ApprovalExpired(ApprovalError):
    """The decision came after the deadline; the request is now expired (denied). Carries the record."""

    def __init__(self, approval: Approval) -> None:
        self.approval = approval
        super().__init__(
            f"approval {approval.id} expired: its deadline passed before a decision, so it counts as denied"
        )


def describe_decision(approval: Approval) -> str:
    """``"approved by alice at 2025-01-02 10:00:00 UTC"``: for messages to operators."""
    if approval.status == "pending":
        return "pending"
    when = ""
    if approval.decided_at is not None:
        stamp = datetime.fromtimestamp(approval.decided_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        when = f" at {stamp}"
    who = f" by {approval.decided_by}" if approval.decided_by else ""
    if approval.status == "expired":
        return f"expired (no decision before the deadline){when}"
    if approval.status == "abandoned":
        return f"abandoned ({approval.note or ABANDONED_NOTE}){when}"
    return f"{approval.status}{who}{when}"


def arguments_digest(tool: str, arguments: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``{tool, arguments}``."""
    canonical = json.dumps(
        {"tool": tool, "arguments": arguments}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Sweep:
    """What one :meth:`ApprovalStore.sweep` closed."""

    expired: list[Approval]
    abandoned: list[Approval]


@dataclass(frozen=True)
class Approval:
    """One approval request and, once made, its decision."""

    id: str
    call_sid: str
    instance_id: str
    flow_id: str
    tool: str
    call_id: str
    arguments: dict[str, Any]
    digest: str
    reason: str
    status: Status
    created_at: float
    deadline: float
    decided_by: str | None
    decided_at: float | None
    note: str | None
    #: When an instance took the approved action to run it (set once, atomically: it runs at most once).
    claimed_at: float | None = None
    #: When the approved action finished running, and how: ``outcome`` is ``ok`` or ``failed`` (then
    #: ``error_type`` says why, e.g. ``unreachable``). Unset while it runs, or if its instance died meanwhile.
    executed_at: float | None = None
    outcome: str | None = None
    error_type: str | None = None

    @property
    def decided(self) -> bool:
        return self.status != "pending"

    def time_left(self, now: float) -> float:
        """Seconds until the deadline (negative when overdue)."""
        return self.deadline - now

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the HTTP API's record shape)."""
        return asdict(self)

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> Approval:
        """Decode a stored hash; raises ValueError naming the field when the record is damaged."""

        def opt_float(name: str) -> float | None:
            raw = fields.get(name)
            return float(raw) if raw not in (None, "") else None

        try:
            status = fields["status"]
            if status not in _STATUSES:
                raise ValueError(f"unknown status {status!r}")
            arguments = json.loads(fields.get("arguments") or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments is not a JSON object")
            return cls(
                id=fields["id"],
                call_sid=fields["call_sid"],
                instance_id=fields.get("instance_id", ""),
                flow_id=fields.get("flow_id", ""),
                tool=fields["tool"],
                call_id=fields.get("call_id", ""),
                arguments=arguments,
                digest=fields["digest"],
                reason=fields.get("reason", ""),
                status=cast(Status, status),
                created_at=float(fields["created_at"]),
                deadline=float(fields["deadline"]),
                decided_by=fields.get("decided_by") or None,
                decided_at=opt_float("decided_at"),
                note=fields.get("note") or None,
                claimed_at=opt_float("claimed_at"),
                executed_at=opt_float("executed_at"),
                outcome=fields.get("outcome") or None,
                error_type=fields.get("error_type") or None,
            )
        except KeyError as exc:
            raise ValueError(f"approval record is missing the field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"approval record {fields.get('id', '?')!r} is damaged: {exc}") from None


def _json_or_empty(shown: Mapping[str, Any] | None, arguments: Mapping[str, Any]) -> str:
    """The masked arguments as stored JSON, or '' when there is nothing masked (the same as the arguments)."""
    if shown is None or dict(shown) == dict(arguments):
        return ""
    return json.dumps(dict(shown), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _now_arg(now: float | None) -> str:
    if now is None:
        return ""
    if not math.isfinite(now):
        raise ValueError(f"now={now!r} is not a finite time")
    return repr(float(now))


class ApprovalStore:
    """Create, decide, expire and read approval requests. One per app (or CLI) process; safe to share."""

    def __init__(self, redis: aioredis.Redis, keys: KeySchema, *, retention_s: float = 30 * 86400.0) -> None:
        if not retention_s > 0:
            raise ValueError(f"retention_s={retention_s!r} must be positive")
        if is_cluster(redis) and not keys.hash_tags:
            raise ValueError(
                "on Redis Cluster the key schema needs hash tags: KeySchema(prefix, hash_tags=True)"
            )
        self.redis = redis
        self.keys = keys
        self.retention_s = float(retention_s)
        #: Redis Cluster mode (hash-tagged keys): two-step changes, see the module docstring.
        self.split = keys.hash_tags
        #: Decisions are announced with SPUBLISH (sharded pub/sub) on a Cluster client.
        self.sharded = is_cluster(redis)
        if self.split:
            self._request_call = redis.register_script(REQUEST_CALL_LUA)
            self._request_global = redis.register_script(REQUEST_GLOBAL_LUA)
            self._decide_call = redis.register_script(DECIDE_CALL_LUA)
            self._close_global_script = redis.register_script(CLOSE_GLOBAL_LUA)
            self._sweep_call = redis.register_script(SWEEP_CALL_LUA)
            self._abandon_call = redis.register_script(ABANDON_CALL_LUA)
            self._executed_call = redis.register_script(EXECUTED_CALL_LUA)
            self._executed_global = redis.register_script(EXECUTED_GLOBAL_LUA)
            self._claim = redis.register_script(CLAIM_LUA)
            return
        probe = keys.approval("ID")
        if not probe.endswith("ID"):  # pragma: no cover - guards a change of the key schema
            raise RuntimeError(f"approval keys no longer end with the id: {probe!r}")
        self._approval_head = probe[: -len("ID")]
        call_probe = keys.call("ID")
        if not call_probe.endswith("ID"):  # pragma: no cover - guards a change of the key schema
            raise RuntimeError(f"call keys no longer end with the sid: {call_probe!r}")
        self._call_head = call_probe[: -len("ID")]
        self._request = redis.register_script(REQUEST_LUA)
        self._decide = redis.register_script(DECIDE_LUA)
        self._abandon = redis.register_script(ABANDON_LUA)
        self._sweep = redis.register_script(SWEEP_LUA)
        self._claim = redis.register_script(CLAIM_LUA)
        self._executed = redis.register_script(EXECUTED_LUA)

    # -- writes --------------------------------------------------------------------------------------------
    async def request(
        self,
        *,
        call_sid: str,
        instance_id: str,
        flow_id: str,
        tool: str,
        call_id: str,
        arguments: Mapping[str, Any],
        reason: str,
        timeout_s: float,
        now: float | None = None,
    ) -> Approval:
        """Store a pending request, or return this call's pending one for the same tool and arguments."""
        approval, _ = await self._request_or_existing(
            mode="pending",
            call_sid=call_sid,
            instance_id=instance_id,
            flow_id=flow_id,
            tool=tool,
            call_id=call_id,
            arguments=arguments,
            reason=reason,
            timeout_s=timeout_s,
            now=now,
        )
        return approval

    async def request_for_gate(
        self,
        *,
        call_sid: str,
        instance_id: str,
        flow_id: str,
        tool: str,
        call_id: str,
        arguments: Mapping[str, Any],
        reason: str,
        timeout_s: float,
        now: float | None = None,
        shown: Mapping[str, Any] | None = None,
    ) -> tuple[Approval, bool]:
        """Like :meth:`request`, but an earlier denied/expired or approved-not-yet-run request for the same
        digest on this call is returned instead of a new one. Returns ``(approval, created)``.

        ``shown``: the arguments masked by the flow's ``redact:`` rules. The audit stream only ever gets
        these, and once the request is closed (denied, expired, abandoned, or run) the record keeps only
        these; the real arguments stay while someone may still approve and run them."""
        return await self._request_or_existing(
            shown=shown,
            mode="gate",
            call_sid=call_sid,
            instance_id=instance_id,
            flow_id=flow_id,
            tool=tool,
            call_id=call_id,
            arguments=arguments,
            reason=reason,
            timeout_s=timeout_s,
            now=now,
        )

    async def _request_or_existing(
        self,
        *,
        mode: str,
        call_sid: str,
        instance_id: str,
        flow_id: str,
        tool: str,
        call_id: str,
        arguments: Mapping[str, Any],
        reason: str,
        timeout_s: float,
        now: float | None,
        shown: Mapping[str, Any] | None = None,
    ) -> tuple[Approval, bool]:
        if not isinstance(arguments, Mapping):
            raise TypeError(f"arguments must be a JSON object (a dict), got {type(arguments).__name__}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
        for name, value in (("tool", tool), ("instance_id", instance_id)):
            if not value:
                raise ValueError(f"{name} must not be empty")
        arguments = dict(arguments)
        aid = "ap_" + secrets.token_hex(8)
        if self.split:
            return await self._request_split(
                mode=mode,
                aid=aid,
                call_sid=call_sid,
                instance_id=instance_id,
                flow_id=flow_id,
                tool=tool,
                call_id=call_id,
                arguments=arguments,
                reason=reason,
                timeout_s=timeout_s,
                now=now,
                shown=shown,
            )
        reply = await self._request(
            keys=[
                self.keys.call_approvals(call_sid),
                self.keys.approval(aid),
                self.keys.approvals_pending(),
                self.keys.approvals_audit(),
                self.keys.events(),
            ],
            args=[
                self._approval_head,
                arguments_digest(tool, arguments),
                mode,
                _now_arg(now),
                aid,
                call_sid,
                instance_id,
                flow_id,
                tool,
                call_id,
                json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                reason,
                repr(float(timeout_s)),
                repr(self.retention_s),
                str(EVENTS_MAXLEN),
                _json_or_empty(shown, arguments),
            ],
        )
        return Approval.from_hash(_pairs(reply[1:])), reply[0] == "created"

    async def decide(
        self,
        aid: str,
        *,
        approve: bool,
        operator: str,
        note: str | None = None,
        now: float | None = None,
    ) -> Approval:
        """Approve or deny a pending request, once. Raises :class:`ApprovalNotFound`,
        :class:`ApprovalAlreadyDecided`, :class:`ApprovalAbandoned` (its call ended: now abandoned) or
        :class:`ApprovalExpired` (the deadline passed: now expired)."""
        operator = (operator or "").strip()
        if not operator:
            raise ValueError("operator must name who decides (e.g. a user name)")
        if operator in RESERVED_OPERATORS:
            raise ValueError(f"operator {operator!r} is reserved for requests closed by the system")
        return await self._finish(aid, "approved" if approve else "denied", operator, note or "", now)

    async def expire(self, aid: str, *, now: float | None = None) -> Approval:
        """Close a pending request as expired (denied by timeout). Raises like :meth:`decide`."""
        return await self._finish(aid, "expired", TIMEOUT_OPERATOR, EXPIRED_NOTE, now)

    async def _finish(self, aid: str, status: str, operator: str, note: str, now: float | None) -> Approval:
        if self.split:
            reply = await self._finish_split(aid, status, operator, note, now)
        else:
            reply = await self._decide(
                keys=[
                    self.keys.approval(aid),
                    self.keys.approvals_pending(),
                    self.keys.approvals_audit(),
                    self.keys.events(),
                ],
                args=[
                    status,
                    operator,
                    note,
                    _now_arg(now),
                    repr(self.retention_s),
                    self.keys.approval_channel(),
                    str(EVENTS_MAXLEN),
                    EXPIRED_NOTE,
                    TIMEOUT_OPERATOR,
                    self._call_head,
                    ABANDONED_NOTE,
                    CALL_ENDED_OPERATOR,
                ],
            )
        outcome = reply[0]
        if outcome == "notfound":
            raise ApprovalNotFound(aid)
        approval = Approval.from_hash(_pairs(reply[1:]))
        if outcome == "abandoned" or (outcome == "decided" and approval.status == "abandoned"):
            raise ApprovalAbandoned(approval)
        if outcome == "decided":
            raise ApprovalAlreadyDecided(approval)
        if outcome == "expired":
            raise ApprovalExpired(approval)
        return approval

    async def claim(self, aid: str, *, instance_id: str = "", now: float | None = None) -> bool:
        """Take an approved request to run its action: True only for the first caller, and only while it is
        approved (not abandoned). Record how the run went with :meth:`record_execution`."""
        key = await self._key_of(aid)
        if key is None:
            return False
        done = await self._claim(keys=[key], args=[_now_arg(now), instance_id or "?"])
        return bool(done)

    async def record_execution(
        self,
        aid: str,
        *,
        ok: bool,
        error_type: str | None = None,
        instance_id: str = "",
        now: float | None = None,
    ) -> bool:
        """The claimed action has run: store its outcome and audit ``executed`` (once; False otherwise)."""
        if self.split:
            return await self._executed_split(
                aid, ok=ok, error_type=error_type, instance_id=instance_id, now=now
            )
        done = await self._executed(
            keys=[self.keys.approval(aid), self.keys.approvals_audit(), self.keys.events()],
            args=[
                _now_arg(now),
                repr(self.retention_s),
                instance_id or "?",
                "ok" if ok else "failed",
                "" if ok else (error_type or "error"),
                str(EVENTS_MAXLEN),
            ],
        )
        return bool(done)

    async def abandon_call(
        self, call_sid: str, *, instance_id: str = "", now: float | None = None
    ) -> list[str]:
        """The call ended: close its undecided requests (and approved ones not yet taken to run) as
        ``abandoned``, audited. Returns their ids. Safe to repeat."""
        if self.split:
            return await self._abandon_split(call_sid, instance_id=instance_id, now=now)
        done = await self._abandon(
            keys=[
                self.keys.call_approvals(call_sid),
                self.keys.approvals_pending(),
                self.keys.approvals_audit(),
                self.keys.events(),
            ],
            args=[
                self._approval_head,
                _now_arg(now),
                repr(self.retention_s),
                self.keys.approval_channel(),
                str(EVENTS_MAXLEN),
                instance_id or "?",
                ABANDONED_NOTE,
                ABANDONED_APPROVED_NOTE,
                CALL_ENDED_OPERATOR,
            ],
        )
        return [str(aid) for aid in done]

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> Sweep:
        """Close what can no longer be decided: overdue requests expire (e.g. their instance died), requests
        whose call ended are abandoned. Looks at the ``limit`` soonest deadlines; one atomic step."""
        if limit < 1:
            raise ValueError(f"limit={limit!r} must be at least 1")
        if self.split:
            return await self._sweep_split(now=now, limit=limit)
        expired_ids, abandoned_ids = await self._sweep(
            keys=[self.keys.approvals_pending(), self.keys.approvals_audit(), self.keys.events()],
            args=[
                self._approval_head,
                self._call_head,
                _now_arg(now),
                repr(self.retention_s),
                self.keys.approval_channel(),
                str(EVENTS_MAXLEN),
                EXPIRED_NOTE,
                TIMEOUT_OPERATOR,
                ABANDONED_NOTE,
                CALL_ENDED_OPERATOR,
                str(int(limit)),
            ],
        )
        records = await self.get_many([*expired_ids, *abandoned_ids])
        split = len(expired_ids)
        return Sweep(
            expired=[r for r in records[:split] if r is not None],
            abandoned=[r for r in records[split:] if r is not None],
        )

    async def expire_overdue(self, *, now: float | None = None) -> list[Approval]:
        """Expire every pending request whose deadline has passed (see :meth:`sweep`); returns them."""
        return (await self.sweep(now=now)).expired

    # -- reads ---------------------------------------------------------------------------------------------
    async def get(self, aid: str) -> Approval | None:
        """The record, or None when there is no such approval."""
        key = await self._key_of(aid)
        if key is None:
            return None
        fields = await self.redis.hgetall(key)
        return Approval.from_hash(fields) if fields else None

    async def pending(self, *, limit: int = 1000) -> list[Approval]:
        """Undecided requests, soonest deadline first. Index entries whose record is gone are dropped."""
        ids: list[str] = await self.redis.zrange(self.keys.approvals_pending(), 0, max(0, limit - 1))
        records = await self.get_many(ids)
        stale = [aid for aid, record in zip(ids, records, strict=True) if record is None]
        if stale:
            await self.redis.zrem(self.keys.approvals_pending(), *stale)
        return [r for r in records if r is not None and r.status == "pending"]

    async def for_call(self, call_sid: str) -> list[Approval]:
        """Every request made during one call, oldest first."""
        ids = sorted(await self.redis.smembers(self.keys.call_approvals(call_sid)))
        if self.split:  # the call's sid leads straight to its requests' keys
            async with self.redis.pipeline(transaction=False) as pipe:
                for aid in ids:
                    pipe.hgetall(self.keys.approval(aid, call_sid))
                rows = await pipe.execute()
            records = [Approval.from_hash(row) for row in rows if row]
        else:
            records = [r for r in await self.get_many(ids) if r is not None]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def get_many(self, ids: Sequence[str]) -> list[Approval | None]:
        """Records for ``ids`` in one round trip (None where there is no such approval)."""
        if not ids:
            return []
        keys = await self._keys_of(ids)
        found = [key for key in keys if key is not None]
        rows: list[dict[str, str]] = []
        if found:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in found:
                    pipe.hgetall(key)
                rows = await pipe.execute()
        by_key = dict(zip(found, rows, strict=True))
        return [Approval.from_hash(by_key[key]) if key and by_key.get(key) else None for key in keys]

    # -- Redis Cluster: the two-step changes -----------------------------------------------------------------
    async def _key_of(self, aid: str) -> str | None:
        """The key of approval ``aid`` (on a Cluster: found through its index entry; None when unknown)."""
        return (await self._keys_of([aid]))[0]

    async def _keys_of(self, ids: Sequence[str]) -> list[str | None]:
        """The keys of approvals ``ids``, in order (None for an id a Cluster index does not know)."""
        if not self.split:
            return [self.keys.approval(aid) for aid in ids]
        sids = await self._sids_of(ids)
        return [self.keys.approval(aid, sid) if sid else None for aid, sid in zip(ids, sids, strict=True)]

    async def _sids_of(self, ids: Sequence[str]) -> list[str | None]:
        """Cluster: the call sid of each approval, from its index entry (None when unknown)."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for aid in ids:
                pipe.hget(self.keys.approval_call(aid), "call_sid")
            sids: list[str | None] = await pipe.execute()
        return [sid or None for sid in sids]

    async def _request_split(
        self,
        *,
        mode: str,
        aid: str,
        call_sid: str,
        instance_id: str,
        flow_id: str,
        tool: str,
        call_id: str,
        arguments: dict[str, Any],
        reason: str,
        timeout_s: float,
        now: float | None,
        shown: Mapping[str, Any] | None,
    ) -> tuple[Approval, bool]:
        """Cluster: the call step (every earlier request of the call declared), then the global step."""
        set_key = self.keys.call_approvals(call_sid)
        new_key = self.keys.approval(aid, call_sid)
        for _ in range(_SET_CHANGED_ATTEMPTS):
            earlier = sorted(await self.redis.smembers(set_key))
            reply = await self._request_call(
                keys=[set_key, new_key, *(self.keys.approval(e, call_sid) for e in earlier)],
                args=[
                    arguments_digest(tool, arguments),
                    mode,
                    _now_arg(now),
                    aid,
                    call_sid,
                    instance_id,
                    flow_id,
                    tool,
                    call_id,
                    json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                    reason,
                    repr(float(timeout_s)),
                    repr(self.retention_s),
                    _json_or_empty(shown, arguments),
                    str(len(earlier)),
                    *earlier,
                ],
            )
            if reply[0] != "again":
                break
        else:
            raise RuntimeError(f"call {call_sid}'s approval requests kept changing; try again")
        fields = _pairs(reply[1:])
        created = reply[0] == "created"
        if created or fields.get("status") == "pending":  # repeats a global step a crash may have skipped
            await self._request_global_step(fields, timeout_s)
        return Approval.from_hash(fields), created

    async def _request_global_step(self, fields: Mapping[str, str], timeout_s: float) -> None:
        aid, sid = fields["id"], fields["call_sid"]
        deadline = float(fields["deadline"])
        data = {
            "id": aid,
            "tool": fields.get("tool", ""),
            "reason": fields.get("reason", ""),
            "deadline": deadline,
            "instance_id": fields.get("instance_id", ""),
            "flow_id": fields.get("flow_id", ""),
        }
        await self._request_global(
            keys=[
                self.keys.approval_call(aid),
                self.keys.approvals_pending(),
                self.keys.approvals_audit(),
                self.keys.events(),
            ],
            args=[
                aid,
                sid,
                fields["created_at"],
                fields["deadline"],
                repr(max(deadline - float(fields["created_at"]), float(timeout_s)) + self.retention_s),
                repr(self.retention_s),
                str(EVENTS_MAXLEN),
                fields.get("arguments_shown") or fields.get("arguments", "{}"),
                fields.get("reason", ""),
                fields.get("instance_id", ""),
                fields.get("flow_id", ""),
                fields.get("tool", ""),
                json.dumps(data, separators=(",", ":")),
            ],
        )

    async def _close_global(self, fields: Mapping[str, str]) -> bool:
        """Cluster: the global step of a closed request (once): pending index, audit, event, notification."""
        aid, status = fields["id"], fields["status"]
        audit_by = fields.get("closed_audit_by") or fields.get("decided_by") or ""
        closed_at = fields.get("closed_at") or fields.get("decided_at") or fields.get("created_at", "0")
        instance_id = fields.get("instance_id", "")
        data = {
            "id": aid,
            "tool": fields.get("tool", ""),
            "status": status,
            "decided_by": audit_by,
            "instance_id": instance_id,
        }
        message = {
            "id": aid,
            "call_sid": fields.get("call_sid", ""),
            "instance_id": instance_id,
            "status": status,
        }
        done = await self._close_global_script(
            keys=[
                self.keys.approval_call(aid),
                self.keys.approvals_pending(),
                self.keys.approvals_audit(),
                self.keys.events(),
            ],
            args=[
                aid,
                status,
                closed_at,
                repr(self.retention_s),
                self.keys.approval_channel(),
                "1" if self.sharded else "0",
                str(EVENTS_MAXLEN),
                fields.get("call_sid", ""),
                fields.get("flow_id", ""),
                fields.get("tool", ""),
                fields.get("arguments_shown") or fields.get("arguments", "{}"),
                audit_by,
                fields.get("note", ""),
                json.dumps(data, separators=(",", ":")),
                json.dumps(message, separators=(",", ":")),
            ],
        )
        return bool(done)

    async def _finish_split(
        self, aid: str, status: str, operator: str, note: str, now: float | None
    ) -> list[str]:
        """Cluster: decide in the call's slot, then (for any closed record: a repeat finishes what a crash
        left) the global step. Returns the call step's reply."""
        sid = await self.redis.hget(self.keys.approval_call(aid), "call_sid")
        if not sid:
            return ["notfound"]
        reply: list[str] = await self._decide_call(
            keys=[self.keys.approval(aid, sid), self.keys.call(sid)],
            args=[
                status,
                operator,
                note,
                _now_arg(now),
                repr(self.retention_s),
                EXPIRED_NOTE,
                TIMEOUT_OPERATOR,
                ABANDONED_NOTE,
                CALL_ENDED_OPERATOR,
            ],
        )
        if reply[0] != "notfound":
            fields = _pairs(reply[1:])
            if fields.get("status", "pending") != "pending":
                await self._close_global(fields)
        return reply

    async def _executed_split(
        self, aid: str, *, ok: bool, error_type: str | None, instance_id: str, now: float | None
    ) -> bool:
        """Cluster: record the outcome in the call's slot (once), then audit it in the global slot (once)."""
        key = await self._key_of(aid)
        if key is None:
            return False
        reply = await self._executed_call(
            keys=[key],
            args=[
                _now_arg(now),
                "ok" if ok else "failed",
                "" if ok else (error_type or "error"),
                instance_id or "?",
            ],
        )
        if len(reply) < 2:
            return False  # never claimed
        fields = _pairs(reply[1:])
        data = {
            "id": aid,
            "tool": fields.get("tool", ""),
            "outcome": fields.get("outcome", ""),
            "error_type": fields.get("error_type", ""),
            "instance_id": fields.get("instance_id", ""),
        }
        await self._executed_global(
            keys=[self.keys.approval_call(aid), self.keys.approvals_audit(), self.keys.events()],
            args=[
                fields["executed_at"],
                repr(self.retention_s),
                str(EVENTS_MAXLEN),
                aid,
                fields.get("call_sid", ""),
                fields.get("flow_id", ""),
                fields.get("tool", ""),
                fields.get("arguments_shown") or fields.get("arguments", "{}"),
                fields.get("outcome", ""),
                fields.get("error_type", ""),
                fields.get("executed_by", "instance:?"),
                json.dumps(data, separators=(",", ":")),
            ],
        )
        return int(reply[0]) == 1

    async def _abandon_split(self, call_sid: str, *, instance_id: str, now: float | None) -> list[str]:
        """Cluster: abandon in the call's slot (its requests declared), then each close's global step."""
        set_key = self.keys.call_approvals(call_sid)
        for _ in range(_SET_CHANGED_ATTEMPTS):
            ids = sorted(await self.redis.smembers(set_key))
            reply = await self._abandon_call(
                keys=[set_key, *(self.keys.approval(aid, call_sid) for aid in ids)],
                args=[
                    _now_arg(now),
                    repr(self.retention_s),
                    instance_id or "?",
                    ABANDONED_NOTE,
                    ABANDONED_APPROVED_NOTE,
                    CALL_ENDED_OPERATOR,
                    str(len(ids)),
                    *ids,
                ],
            )
            if reply[0] != "again":
                break
        else:
            raise RuntimeError(f"call {call_sid}'s approval requests kept changing; try again")
        done = [str(aid) for aid in reply[1:]]
        if done:
            async with self.redis.pipeline(transaction=False) as pipe:
                for aid in done:
                    pipe.hgetall(self.keys.approval(aid, call_sid))
                rows = await pipe.execute()
            for row in rows:
                if row:
                    await self._close_global(row)
        return done

    async def _sweep_split(self, *, now: float | None, limit: int) -> Sweep:
        """Cluster: each pending request in its call's slot, then each close's global step. Not one atomic
        round, but each request's close is: it is decided there, once."""
        ids: list[str] = await self.redis.zrange(self.keys.approvals_pending(), 0, limit - 1)
        sids = await self._sids_of(ids)
        expired: list[Approval] = []
        abandoned: list[Approval] = []
        for aid, sid in zip(ids, sids, strict=True):
            if sid is None:  # its index entry is gone: the request is long gone too
                await self.redis.zrem(self.keys.approvals_pending(), aid)
                continue
            reply = await self._sweep_call(
                keys=[self.keys.approval(aid, sid), self.keys.call(sid)],
                args=[
                    _now_arg(now),
                    repr(self.retention_s),
                    EXPIRED_NOTE,
                    TIMEOUT_OPERATOR,
                    ABANDONED_NOTE,
                    CALL_ENDED_OPERATOR,
                ],
            )
            outcome = reply[0]
            if outcome == "gone":
                await self.redis.zrem(self.keys.approvals_pending(), aid)
                continue
            if outcome == "pending":
                continue
            fields = _pairs(reply[1:])
            await self._close_global(fields)  # for 'closed' too: a crash may have skipped it
            if outcome == "expired":
                expired.append(Approval.from_hash(fields))
            elif outcome == "abandoned":
                abandoned.append(Approval.from_hash(fields))
        return Sweep(expired=expired, abandoned=abandoned)
