"""Every Redis key and channel name ivr uses, in one place: the public key schema (see docs/redis.md).

Why one class: dashboards, operator tools and other instances read these keys directly, so their names are a
contract. Code never builds a key by hand; it asks :class:`KeySchema`, and a test checks that every method's
pattern is documented in docs/redis.md. Keys use ``:`` separators and carry ids verbatim (no encoding).
"""

from __future__ import annotations

import re

__all__ = ["KEY_TYPES", "KeySchema", "KeySchemaError"]

#: Redis type of each key (or "channel" for pub/sub channel names), by :class:`KeySchema` method name.
KEY_TYPES: dict[str, str] = {
    "call": "hash",
    "transcript": "stream",
    "call_events": "stream",
    "context": "hash",
    "stream_claim": "string",
    "resumed_stream_claim": "string",
    "call_link": "hash",
    "call_approvals": "set",
    "events": "stream",
    "active_calls": "zset",
    "recent_calls": "zset",
    "recent_calls_by_flow": "zset",
    "recent_calls_by_outcome": "zset",
    "recent_calls_by_instance": "zset",
    "recent_calls_by_caller": "zset",
    "instances": "zset",
    "instance": "hash",
    "instance_calls": "set",
    "instance_channel": "channel",
    "instance_takeover": "string",
    "approval": "hash",
    "approvals_pending": "zset",
    "approvals_audit": "stream",
    "approval_channel": "channel",
    "approvals_sweeper": "string",
    "calendar_slot": "string",
    "calendar_bookings": "zset",
    "booking": "hash",
    "booking_idempotency": "string",
    "dataset_record": "hash",
    "dataset_meta": "hash",
    "operators": "zset",
    "operator": "hash",
    "operator_sessions": "set",
    "operator_token": "string",
    "operator_session": "hash",
}

# A prefix is matched with SCAN MATCH <prefix>*, so glob characters would widen the match; whitespace and
# control characters make keys impossible to type in redis-cli.
_BAD_PREFIX = re.compile(r"[\s*?\[\]\\]|[\x00-\x1f\x7f]")
# An id that is not the last part of a key must not contain ":" (``call:{a:b}`` would read as another key).
_BAD_ID = re.compile(r"[\s:]|[\x00-\x1f\x7f]")
# The last part of a key (a slot time, a record key) may contain ":" and spaces, but not control characters.
_BAD_TAIL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_ID = 512


class KeySchemaError(ValueError):
    """A prefix or id cannot be used in a key; the message names which one and why."""


def _check(what: str, value: object, bad: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str):
        raise KeySchemaError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise KeySchemaError(f"{what} must not be empty")
    if len(value) > _MAX_ID:
        raise KeySchemaError(f"{what} is {len(value)} characters long; at most {_MAX_ID} are allowed")
    found = bad.search(value)
    if found:
        raise KeySchemaError(f"{what}={value!r} contains {found.group()!r}; {allowed}")
    return value


def _id(what: str, value: object) -> str:
    return _check(what, value, _BAD_ID, "ids must not contain ':', whitespace or control characters")


def _tail(what: str, value: object) -> str:
    return _check(what, value, _BAD_TAIL, "it must not contain control characters")


class KeySchema:
    """Builds every key under one prefix (``IVR_REDIS_PREFIX``, default ``ivr:``)."""

    def __init__(self, prefix: str = "ivr:") -> None:
        _check(
            "IVR_REDIS_PREFIX",
            prefix,
            _BAD_PREFIX,
            "a prefix must not contain whitespace, control characters or glob characters (* ? [ ] \\)",
        )
        if not prefix.endswith(":"):
            raise KeySchemaError(f"IVR_REDIS_PREFIX={prefix!r} must end with ':' (for example 'ivr:')")
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"KeySchema(prefix={self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeySchema) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)

    def match_all(self) -> str:
        """SCAN MATCH pattern covering every key under this prefix."""
        return self.prefix + "*"

    def owns(self, key: str) -> bool:
        """True if ``key`` lives under this prefix."""
        return key.startswith(self.prefix)

    # -- calls ---------------------------------------------------------------------------------------------
    def call(self, sid: str) -> str:
        """Hash: the call record (numbers, flow, stage, start/end, outcome, usage, cost)."""
        return f"{self.prefix}call:{_id('call sid', sid)}"

    def transcript(self, sid: str) -> str:
        """Stream: one entry per transcript line (role, text, ts)."""
        return f"{self.prefix}call:{_id('call sid', sid)}:transcript"

    def call_events(self, sid: str) -> str:
        """Stream: this call's events (type, call_sid, ts, data)."""
        return f"{self.prefix}call:{_id('call sid', sid)}:events"

    def context(self, sid: str) -> str:
        """Hash: the webhook's call context, read by whichever instance receives the media socket."""
        return f"{self.prefix}call:{_id('call sid', sid)}:context"

    def stream_claim(self, sid: str) -> str:
        """String with a TTL: the instance that took the call's one media stream (a sid streams once)."""
        return f"{self.prefix}call:{_id('call sid', sid)}:stream"

    def resumed_stream_claim(self, sid: str, n: object) -> str:
        """String with a TTL: the instance that took the call's ``n``-th resumed stream (taken once)."""
        return f"{self.prefix}call:{_id('call sid', sid)}:stream:{n}"

    def call_link(self, sid: str) -> str:
        """Hash: the call's link to Twilio: ``closed_by`` (the instance that ended the call on purpose),
        ``resumes`` (resumed streams issued), ``adopted`` (the last one taken over), ``stream_lost_at``
        (when the last stream dropped)."""
        return f"{self.prefix}call:{_id('call sid', sid)}:link"

    def call_approvals(self, sid: str) -> str:
        """Set: ids of the approval requests made during this call."""
        return f"{self.prefix}call:{_id('call sid', sid)}:approvals"

    def events(self) -> str:
        """Stream: every call's events, for dashboards."""
        return f"{self.prefix}events"

    def active_calls(self) -> str:
        """Sorted set: sids of calls in progress, score = start time (Unix seconds)."""
        return f"{self.prefix}calls:active"

    def recent_calls(self) -> str:
        """Sorted set: sids of ended calls, score = end time (Unix seconds)."""
        return f"{self.prefix}calls:recent"

    def recent_calls_by_flow(self, flow: str) -> str:
        """Sorted set: sids of ended calls of one flow, score = end time (a history index)."""
        return f"{self.prefix}calls:recent:flow:{_id('flow id', flow)}"

    def recent_calls_by_outcome(self, outcome: str) -> str:
        """Sorted set: sids of ended calls with one outcome, score = end time (a history index)."""
        return f"{self.prefix}calls:recent:outcome:{_id('outcome', outcome)}"

    def recent_calls_by_instance(self, iid: str) -> str:
        """Sorted set: sids of ended calls an instance ran, score = end time (a history index)."""
        return f"{self.prefix}calls:recent:instance:{_id('instance id', iid)}"

    def recent_calls_by_caller(self, tail: str) -> str:
        """Sorted set: sids of ended calls whose caller's number ends in the two digits ``tail``, score = end
        time (a history index: the caller filter walks one hundredth of the calls)."""
        return f"{self.prefix}calls:recent:caller:{_id('caller digits', tail)}"

    # -- instances -----------------------------------------------------------------------------------------
    def instances(self) -> str:
        """Sorted set: ids of instances that sent a heartbeat lately, score = last heartbeat (the fleet)."""
        return f"{self.prefix}instances"

    def instance(self, iid: str) -> str:
        """Hash with a short TTL: an app instance's heartbeat (started_at, last_seen)."""
        return f"{self.prefix}instance:{_id('instance id', iid)}"

    def instance_calls(self, iid: str) -> str:
        """Set: sids of the calls an instance owns (for reconciliation after a restart)."""
        return f"{self.prefix}instance:{_id('instance id', iid)}:calls"

    def instance_takeover(self, iid: str) -> str:
        """String with a short TTL: the survivor closing a lost instance's calls (a lease, one at a time)."""
        return f"{self.prefix}instance:{_id('instance id', iid)}:takeover"

    def instance_channel(self, iid: str) -> str:
        """Pub/sub channel: messages addressed to one instance."""
        return f"{self.prefix}instance:{_id('instance id', iid)}:channel"

    # -- approvals -----------------------------------------------------------------------------------------
    def approval(self, aid: str) -> str:
        """Hash: one approval request and its decision."""
        return f"{self.prefix}approval:{_id('approval id', aid)}"

    def approvals_pending(self) -> str:
        """Sorted set: ids of undecided approvals, score = deadline (Unix seconds)."""
        return f"{self.prefix}approvals:pending"

    def approvals_audit(self) -> str:
        """Stream: who requested and decided what, when, with which arguments."""
        return f"{self.prefix}approvals:audit"

    def approval_channel(self) -> str:
        """Pub/sub channel: a small JSON message per decision."""
        return f"{self.prefix}approvals:channel"

    def approvals_sweeper(self) -> str:
        """String with a TTL: the lease of the instance that sweeps overdue approvals (its instance id)."""
        return f"{self.prefix}approvals:sweeper"

    # -- booking -------------------------------------------------------------------------------------------
    def calendar_slot(self, cal: str, start_iso: str) -> str:
        """String: the booking id holding one slot of a calendar (claimed atomically)."""
        return f"{self.prefix}calendar:{_id('calendar', cal)}:slot:{_tail('slot start', start_iso)}"

    def calendar_bookings(self, cal: str) -> str:
        """Sorted set: booking ids of a calendar, score = start time (Unix seconds)."""
        return f"{self.prefix}calendar:{_id('calendar', cal)}:bookings"

    def booking(self, bid: str) -> str:
        """Hash: one booking."""
        return f"{self.prefix}booking:{_id('booking id', bid)}"

    def booking_idempotency(self, call_sid: str, digest: str) -> str:
        """String: the first result of a booking action, keyed by call and a digest of action + arguments."""
        return f"{self.prefix}idempotency:booking:{_id('call sid', call_sid)}:{_id('digest', digest)}"

    # -- lookup datasets -----------------------------------------------------------------------------------
    def dataset_record(self, ds: str, key: str) -> str:
        """Hash: one record of a lookup dataset, by its (normalised) key."""
        return f"{self.prefix}dataset:{_id('dataset', ds)}:record:{_tail('record key', key)}"

    def dataset_meta(self, ds: str) -> str:
        """Hash: a dataset's source file, row count and load time."""
        return f"{self.prefix}dataset:{_id('dataset', ds)}:meta"

    # -- console operators ---------------------------------------------------------------------------------
    def operators(self) -> str:
        """Sorted set: names of the console operators, score = when each was added (Unix seconds)."""
        return f"{self.prefix}operators"

    def operator(self, name: str) -> str:
        """Hash: one operator (name, role, created_at, last_login_at, token_sha256) — never the token."""
        return f"{self.prefix}operator:{_id('operator name', name)}"

    def operator_sessions(self, name: str) -> str:
        """Set: digests of an operator's console sessions, so removing the operator ends them all."""
        return f"{self.prefix}operator:{_id('operator name', name)}:sessions"

    def operator_token(self, digest: str) -> str:
        """String: the operator name a login token belongs to, keyed by the token's SHA-256 (hex)."""
        return f"{self.prefix}operators:token:{_id('token digest', digest)}"

    def operator_session(self, digest: str) -> str:
        """Hash with a TTL: one console session, keyed by the SHA-256 (hex) of its cookie value."""
        return f"{self.prefix}operators:session:{_id('session digest', digest)}"
