"""Every Redis key and channel name ivr uses, in one place: the public key schema (see docs/redis.md).

Why one class: dashboards, operator tools and other instances read these keys directly, so their names are a
contract. Code never builds a key by hand; it asks :class:`KeySchema`, and a test checks that every method's
pattern is documented in docs/redis.md. Keys use ``:`` separators and carry ids verbatim (no encoding).

Redis Cluster (``KeySchema(prefix, hash_tags=True)``, what :meth:`KeySchema.for_url` picks for a
``redis+cluster://`` URL): a script or a MULTI may only touch keys of one hash slot, so the keys that are
written together carry the same hash tag (the part in braces decides the slot):

* every key of one call ``{<sid>}`` — record, transcript, events, context, stream claims, link, approval set
  and the call's approval hashes (``approval(aid, sid)``);
* the global keys one tag made of the prefix (``{ivr}`` for ``ivr:``), placed after the prefix — the event
  stream, the call and history indexes, instances and their channels, approval indexes, operators — so the
  heartbeat, operator and approval-index steps stay atomic;
* a calendar's slots, bookings (``booking(bid, cal)``) and idempotency keys ``{<cal>}``;
* a dataset's records and metadata ``{<ds>}``.

Without tags (a single server, Sentinel) the names are today's, byte for byte: the ``sid``/``cal`` arguments
that only tagged names need are ignored then. With tags, ``{`` and ``}`` are refused in the prefix and ids
(a brace would move the tag).
"""

from __future__ import annotations

import re

from ivr.redis_url import is_cluster_url

__all__ = ["GLOBAL_TAG_NOTE", "KEY_TYPES", "KeySchema", "KeySchemaError"]

#: How the global tag is made, for messages and docs.
GLOBAL_TAG_NOTE = "the prefix without its last ':', in braces (ivr: → {ivr})"

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
    "events_hwm": "hash",
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
    "approval_call": "hash",
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
# With hash tags, a brace in the prefix or an id would move the tag (Redis hashes the first {…} of a key).
_BRACES = re.compile(r"[{}]")
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
    """Builds every key under one prefix (``IVR_REDIS_PREFIX``, default ``ivr:``); with ``hash_tags`` the
    Redis Cluster names (module docstring)."""

    def __init__(self, prefix: str = "ivr:", *, hash_tags: bool = False) -> None:
        _check(
            "IVR_REDIS_PREFIX",
            prefix,
            _BAD_PREFIX,
            "a prefix must not contain whitespace, control characters or glob characters (* ? [ ] \\)",
        )
        if not prefix.endswith(":"):
            raise KeySchemaError(f"IVR_REDIS_PREFIX={prefix!r} must end with ':' (for example 'ivr:')")
        if hash_tags and _BRACES.search(prefix):
            raise KeySchemaError(
                f"IVR_REDIS_PREFIX={prefix!r} contains a brace; on Redis Cluster ivr places the hash tags "
                "itself, so a prefix must not contain '{' or '}'"
            )
        self.prefix = prefix
        self.hash_tags = bool(hash_tags)
        #: Where the global keys start: the prefix, then (with tags) the global tag.
        self._global = f"{prefix}{{{prefix[:-1]}}}:" if hash_tags else prefix

    @classmethod
    def for_url(cls, redis_url: str, prefix: str = "ivr:") -> KeySchema:
        """The schema for ``REDIS_URL``: hash tags on for a Redis Cluster URL, off otherwise."""
        return cls(prefix, hash_tags=is_cluster_url(redis_url))

    def __repr__(self) -> str:
        tags = ", hash_tags=True" if self.hash_tags else ""
        return f"KeySchema(prefix={self.prefix!r}{tags})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeySchema) and other.prefix == self.prefix and other.hash_tags == self.hash_tags
        )

    def __hash__(self) -> int:
        return hash((self.prefix, self.hash_tags))

    @property
    def global_tag(self) -> str | None:
        """The hash tag of the global keys (``{ivr}``), or None without tags."""
        return f"{{{self.prefix[:-1]}}}" if self.hash_tags else None

    def _tagged(self, what: str, value: object) -> str:
        """An id that decides a key's slot: ``{id}`` with tags (braces refused), else the id as it is."""
        text = _id(what, value)
        if not self.hash_tags:
            return text
        found = _BRACES.search(text)
        if found:
            raise KeySchemaError(f"{what}={text!r} contains {found.group()!r}; ids must not contain braces")
        return f"{{{text}}}"

    def _plain(self, what: str, value: object) -> str:
        """An id in a key whose slot another part decides (with tags, braces are refused: they move it)."""
        text = _id(what, value)
        if self.hash_tags and (found := _BRACES.search(text)):
            raise KeySchemaError(f"{what}={text!r} contains {found.group()!r}; ids must not contain braces")
        return text

    def _call(self, sid: str) -> str:
        return f"{self.prefix}call:{self._tagged('call sid', sid)}"

    def match_all(self) -> str:
        """SCAN MATCH pattern covering every key under this prefix."""
        return self.prefix + "*"

    def owns(self, key: str) -> bool:
        """True if ``key`` lives under this prefix."""
        return key.startswith(self.prefix)

    # -- calls ---------------------------------------------------------------------------------------------
    def call(self, sid: str) -> str:
        """Hash: the call record (numbers, flow, stage, start/end, outcome, usage, cost)."""
        return self._call(sid)

    def transcript(self, sid: str) -> str:
        """Stream: one entry per transcript line (role, text, ts)."""
        return f"{self._call(sid)}:transcript"

    def call_events(self, sid: str) -> str:
        """Stream: this call's events (type, call_sid, ts, data)."""
        return f"{self._call(sid)}:events"

    def context(self, sid: str) -> str:
        """Hash: the webhook's call context, read by whichever instance receives the media socket."""
        return f"{self._call(sid)}:context"

    def stream_claim(self, sid: str) -> str:
        """String with a TTL: the instance that took the call's one media stream (a sid streams once)."""
        return f"{self._call(sid)}:stream"

    def resumed_stream_claim(self, sid: str, n: object) -> str:
        """String with a TTL: the instance that took the call's ``n``-th resumed stream (taken once)."""
        return f"{self._call(sid)}:stream:{n}"

    def call_link(self, sid: str) -> str:
        """Hash: the call's link to Twilio: ``closed_by`` (the instance that ended the call on purpose),
        ``resumes`` (resumed streams issued), ``adopted`` (the last one taken over), ``stream_lost_at``
        (when the last stream dropped)."""
        return f"{self._call(sid)}:link"

    def call_approvals(self, sid: str) -> str:
        """Set: ids of the approval requests made during this call."""
        return f"{self._call(sid)}:approvals"

    def events(self) -> str:
        """Stream: every call's events, for dashboards."""
        return f"{self._global}events"

    def events_hwm(self, sid: str) -> str:
        """Hash (Cluster only): per writer (instance id), the highest call-stream id of the call's events it
        has copied to :meth:`events`, so a re-sent event is copied once (the two streams are in different
        slots there, so one script cannot write both)."""
        return f"{self._global}events:hwm:{self._plain('call sid', sid)}"

    def active_calls(self) -> str:
        """Sorted set: sids of calls in progress, score = start time (Unix seconds)."""
        return f"{self._global}calls:active"

    def recent_calls(self) -> str:
        """Sorted set: sids of ended calls, score = end time (Unix seconds)."""
        return f"{self._global}calls:recent"

    def recent_calls_by_flow(self, flow: str) -> str:
        """Sorted set: sids of ended calls of one flow, score = end time (a history index)."""
        return f"{self._global}calls:recent:flow:{self._plain('flow id', flow)}"

    def recent_calls_by_outcome(self, outcome: str) -> str:
        """Sorted set: sids of ended calls with one outcome, score = end time (a history index)."""
        return f"{self._global}calls:recent:outcome:{self._plain('outcome', outcome)}"

    def recent_calls_by_instance(self, iid: str) -> str:
        """Sorted set: sids of ended calls an instance ran, score = end time (a history index)."""
        return f"{self._global}calls:recent:instance:{self._plain('instance id', iid)}"

    def recent_calls_by_caller(self, tail: str) -> str:
        """Sorted set: sids of ended calls whose caller's number ends in the two digits ``tail``, score = end
        time (a history index: the caller filter walks one hundredth of the calls)."""
        return f"{self._global}calls:recent:caller:{self._plain('caller digits', tail)}"

    # -- instances -----------------------------------------------------------------------------------------
    def instances(self) -> str:
        """Sorted set: ids of instances that sent a heartbeat lately, score = last heartbeat (the fleet)."""
        return f"{self._global}instances"

    def instance(self, iid: str) -> str:
        """Hash with a short TTL: an app instance's heartbeat (started_at, last_seen)."""
        return f"{self._global}instance:{self._plain('instance id', iid)}"

    def instance_calls(self, iid: str) -> str:
        """Set: sids of the calls an instance owns (for reconciliation after a restart)."""
        return f"{self._global}instance:{self._plain('instance id', iid)}:calls"

    def instance_takeover(self, iid: str) -> str:
        """String with a short TTL: the survivor closing a lost instance's calls (a lease, one at a time)."""
        return f"{self._global}instance:{self._plain('instance id', iid)}:takeover"

    def instance_channel(self, iid: str) -> str:
        """Pub/sub channel: messages addressed to one instance."""
        return f"{self._global}instance:{self._plain('instance id', iid)}:channel"

    # -- approvals -----------------------------------------------------------------------------------------
    def approval(self, aid: str, sid: str | None = None) -> str:
        """Hash: one approval request and its decision. With tags it lives in its call's slot, so ``sid`` (the
        call's sid) is required then; without tags it is ignored."""
        if not self.hash_tags:
            return f"{self.prefix}approval:{_id('approval id', aid)}"
        if sid is None:
            raise KeySchemaError("on Redis Cluster an approval's key needs its call sid (approval(aid, sid))")
        return f"{self.prefix}approval:{self._tagged('call sid', sid)}:{self._plain('approval id', aid)}"

    def approval_call(self, aid: str) -> str:
        """Hash (Cluster only): ``call_sid`` of an approval (to find its hash from its id), and when the
        approval's global steps ran: ``requested``, ``closed``, ``executed`` (each written once)."""
        return f"{self._global}approval:{self._plain('approval id', aid)}:call"

    def approvals_pending(self) -> str:
        """Sorted set: ids of undecided approvals, score = deadline (Unix seconds)."""
        return f"{self._global}approvals:pending"

    def approvals_audit(self) -> str:
        """Stream: who requested and decided what, when, with which arguments."""
        return f"{self._global}approvals:audit"

    def approval_channel(self) -> str:
        """Pub/sub channel: a small JSON message per decision."""
        return f"{self._global}approvals:channel"

    def approvals_sweeper(self) -> str:
        """String with a TTL: the lease of the instance that sweeps overdue approvals (its instance id)."""
        return f"{self._global}approvals:sweeper"

    # -- booking -------------------------------------------------------------------------------------------
    def calendar_slot(self, cal: str, start_iso: str) -> str:
        """String: the booking id holding one slot of a calendar (claimed atomically)."""
        return f"{self.prefix}calendar:{self._tagged('calendar', cal)}:slot:{_tail('slot start', start_iso)}"

    def calendar_bookings(self, cal: str) -> str:
        """Sorted set: booking ids of a calendar, score = start time (Unix seconds)."""
        return f"{self.prefix}calendar:{self._tagged('calendar', cal)}:bookings"

    def booking(self, bid: str, cal: str | None = None) -> str:
        """Hash: one booking. With tags it lives in its calendar's slot, so ``cal`` is required then (and
        booking ids are unique per calendar); without tags it is ignored."""
        if not self.hash_tags:
            return f"{self.prefix}booking:{_id('booking id', bid)}"
        if cal is None:
            raise KeySchemaError("on Redis Cluster a booking's key needs its calendar (booking(bid, cal))")
        return f"{self.prefix}booking:{self._tagged('calendar', cal)}:{self._plain('booking id', bid)}"

    def booking_idempotency(self, call_sid: str, digest: str, cal: str | None = None) -> str:
        """String: the first result of a booking action, keyed by call and a digest of action + arguments.
        With tags it lives in the calendar's slot (``cal`` required), beside the keys the action writes."""
        if not self.hash_tags:
            return f"{self.prefix}idempotency:booking:{_id('call sid', call_sid)}:{_id('digest', digest)}"
        if cal is None:
            raise KeySchemaError(
                "on Redis Cluster a booking idempotency key needs its calendar "
                "(booking_idempotency(sid, digest, cal))"
            )
        return (
            f"{self.prefix}idempotency:booking:{self._tagged('calendar', cal)}:"
            f"{self._plain('call sid', call_sid)}:{self._plain('digest', digest)}"
        )

    # -- lookup datasets -----------------------------------------------------------------------------------
    def dataset_record(self, ds: str, key: str) -> str:
        """Hash: one record of a lookup dataset, by its (normalised) key."""
        return f"{self.prefix}dataset:{self._tagged('dataset', ds)}:record:{_tail('record key', key)}"

    def dataset_meta(self, ds: str) -> str:
        """Hash: a dataset's source file, row count and load time."""
        return f"{self.prefix}dataset:{self._tagged('dataset', ds)}:meta"

    # -- console operators ---------------------------------------------------------------------------------
    def operators(self) -> str:
        """Sorted set: names of the console operators, score = when each was added (Unix seconds)."""
        return f"{self._global}operators"

    def operator(self, name: str) -> str:
        """Hash: one operator (name, role, created_at, last_login_at, token_sha256) — never the token."""
        return f"{self._global}operator:{self._plain('operator name', name)}"

    def operator_sessions(self, name: str) -> str:
        """Set: digests of an operator's console sessions, so removing the operator ends them all."""
        return f"{self._global}operator:{self._plain('operator name', name)}:sessions"

    def operator_token(self, digest: str) -> str:
        """String: the operator name a login token belongs to, keyed by the token's SHA-256 (hex)."""
        return f"{self._global}operators:token:{self._plain('token digest', digest)}"

    def operator_session(self, digest: str) -> str:
        """Hash with a TTL: one console session, keyed by the SHA-256 (hex) of its cookie value."""
        return f"{self._global}operators:session:{self._plain('session digest', digest)}"
