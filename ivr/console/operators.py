"""Console operators in Redis: names, roles, hashed login tokens and console sessions.

Why hashed: a login token is a password. Redis is read by dashboards and other tools (docs/redis.md), so it
holds only the token's SHA-256 — the token is shown once, by ``ivr operators add``, and cannot be recovered.
Tokens are 256-bit random strings, so a plain (fast) hash is enough; there is nothing to brute-force. Session
cookies are treated the same way: the key of a session is the SHA-256 of its cookie value.

Why the role is read on every request: removing an operator must end their access at once, on every
instance, with no cache to wait out. ``session`` and ``by_token`` both read the operator's hash, so a removed
operator's tokens and sessions stop working with the next request even if a stale key survived a race.

The ``IVR_OPERATOR_TOKEN`` bootstrap admin (:data:`BOOTSTRAP_ADMIN`) has no record in Redis; its sessions
carry an HMAC of the token, so changing the token on the servers ends them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal, cast

import redis.asyncio as aioredis

from ivr.store.keys import KeySchema

__all__ = [
    "BOOTSTRAP_ADMIN",
    "ROLES",
    "SESSION_TTL_S",
    "TOKEN_PREFIX",
    "ConsoleSession",
    "Operator",
    "OperatorError",
    "OperatorExists",
    "OperatorInfo",
    "OperatorStore",
    "Role",
    "check_name",
    "check_role",
    "role_allows",
    "token_digest",
]

Role = Literal["viewer", "approver", "admin"]
#: Lowest to highest: each role may do everything the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "approver", "admin")
#: Every operator token starts with this, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "ivrop_"
#: Default length of a console session (one working day and a bit).
SESSION_TTL_S = 12 * 3600
#: ``last_login_at`` is rewritten at most this often by API use, so a busy script costs no write per request.
LAST_LOGIN_EVERY_S = 60.0

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_RESERVED = {
    "admin": "it is the IVR_OPERATOR_TOKEN bootstrap admin's name",
    "timeout": "it is recorded as the decider of approvals that ran out of time",
    "call-ended": "it is recorded as the decider of approvals whose call ended first",
}
# Sets last_login_at only while the operator exists: a login racing ``remove`` must not resurrect a record.
_TOUCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_login_at', ARGV[1])
  return 1
end
return 0
"""
# Creates the operator, its token index entry and its place in the list, or nothing if the name is taken.
_ADD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'role', ARGV[2], 'created_at', ARGV[3], 'last_login_at', '',
           'token_sha256', ARGV[4])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""


class OperatorError(ValueError):
    """A name, role or command that cannot be used; ``str()`` says what to do instead."""


class OperatorExists(OperatorError):
    """``add`` of a name that is already an operator."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"operator {name!r} already exists; remove it first (`ivr operators remove {name}`) to issue a "
            "new token"
        )
        self.name = name


@dataclass(frozen=True)
class Operator:
    """Who is acting: the name recorded with decisions, and what they may do."""

    name: str
    role: Role
    bootstrap: bool = False  # True for the IVR_OPERATOR_TOKEN admin

    @property
    def can_decide(self) -> bool:
        """Approve/deny approvals, hang up and transfer live calls: approvers and admins."""
        return role_allows(self.role, "approver")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def allows(self, needed: Role) -> bool:
        """True when this operator's role is ``needed`` or higher."""
        return role_allows(self.role, needed)


#: The operator behind ``IVR_OPERATOR_TOKEN``.
BOOTSTRAP_ADMIN = Operator(name="admin", role="admin", bootstrap=True)


@dataclass(frozen=True)
class OperatorInfo:
    """One row of ``ivr operators list`` (never the token)."""

    name: str
    role: Role
    created_at: float
    last_login_at: float | None


@dataclass(frozen=True)
class ConsoleSession:
    """A logged-in browser: the cookie value, who it is, and the token its forms must carry."""

    id: str  # random, goes into the cookie
    operator: Operator
    csrf: str  # per-session CSRF token: hidden form field "csrf" or header X-CSRF-Token
    expires_at: float


def role_allows(role: str, needed: Role) -> bool:
    """True when ``role`` ranks at or above ``needed`` (unknown roles allow nothing)."""
    if role not in ROLES:
        return False
    return ROLES.index(cast(Role, role)) >= ROLES.index(needed)


def check_name(name: str) -> str:
    """The name if it can be an operator's, else :class:`OperatorError` saying why."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise OperatorError(
            f"operator name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-' (no spaces), "
            "for example 'alice' or 'front-desk.1'"
        )
    if name.lower() in _RESERVED:
        raise OperatorError(f"operator name {name!r} is reserved: {_RESERVED[name.lower()]}; pick another")
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise OperatorError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return cast(Role, role)


def token_digest(token: str) -> str:
    """SHA-256 (hex) of a token or session id: what Redis holds instead of the secret."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


class OperatorStore:
    """Operators and console sessions in Redis (key schema: docs/redis.md, "Console operators").

    ``bootstrap_token`` is ``IVR_OPERATOR_TOKEN``: :meth:`by_token` accepts it as :data:`BOOTSTRAP_ADMIN`
    without touching Redis, and :meth:`session` keeps that admin's sessions only while it is unchanged.
    """

    def __init__(self, redis: aioredis.Redis, keys: KeySchema, *, bootstrap_token: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self._bootstrap = bootstrap_token
        self._add = redis.register_script(_ADD_LUA)
        self._touch = redis.register_script(_TOUCH_LUA)

    @property
    def bootstrap_enabled(self) -> bool:
        """True when IVR_OPERATOR_TOKEN was given: the bootstrap admin may log in."""
        return bool(self._bootstrap)

    # -- operators ----------------------------------------------------------------------------------------
    async def add(self, name: str, role: Role) -> str:
        """Create an operator; returns its login token, which is not stored and cannot be shown again."""
        check_name(name)
        if name in (".", ".."):  # a browser would read /ops/operators/../remove as /ops/remove
            raise OperatorError(f"operator name {name!r} is not allowed: URLs read it as a folder")
        check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = token_digest(token)
        keys = [self.keys.operator(name), self.keys.operator_token(digest), self.keys.operators()]
        created = await self._add(keys=keys, args=[name, role, f"{time.time():.3f}", digest])
        if not created:
            raise OperatorExists(name)
        return token

    async def list(self) -> list[OperatorInfo]:
        """Every operator, by name."""
        names = await self.redis.zrange(self.keys.operators(), 0, -1)
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.operator(name))
            records = await pipe.execute()
        infos = [self._info(record) for record in records if record]
        return sorted((info for info in infos if info is not None), key=lambda info: info.name.lower())

    async def get(self, name: str) -> OperatorInfo | None:
        check_name(name)
        return self._info(await self.redis.hgetall(self.keys.operator(name)))

    @staticmethod
    def _info(record: dict[str, str]) -> OperatorInfo | None:
        if not record.get("name") or record.get("role") not in ROLES:
            return None
        return OperatorInfo(
            name=record["name"],
            role=cast(Role, record["role"]),
            created_at=_float(record.get("created_at")) or 0.0,
            last_login_at=_float(record.get("last_login_at")),
        )

    async def remove(self, name: str) -> bool:
        """Delete the operator, its token and every session of theirs; False if there was none."""
        check_name(name)
        key, sessions_key = self.keys.operator(name), self.keys.operator_sessions(name)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(key, "token_sha256")
            pipe.smembers(sessions_key)
            pipe.zscore(self.keys.operators(), name)
            token_sha, sessions, listed = await pipe.execute()
        if token_sha is None and listed is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key, sessions_key)
            if token_sha:
                pipe.delete(self.keys.operator_token(token_sha))
            for digest in sessions:
                pipe.delete(self.keys.operator_session(digest))
            pipe.zrem(self.keys.operators(), name)
            await pipe.execute()
        return True

    async def by_token(self, token: str) -> Operator | None:
        """The operator whose login token this is (or the bootstrap admin), else None."""
        if self._bootstrap and hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            return BOOTSTRAP_ADMIN
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = token_digest(token)
        name = await self.redis.get(self.keys.operator_token(digest))
        if not name:
            return None
        record = await self.redis.hgetall(self.keys.operator(name))
        stored = record.get("token_sha256", "")
        if (
            not stored
            or not hmac.compare_digest(stored.encode(), digest.encode())
            or record.get("role") not in ROLES
        ):
            return None  # a token key that outlived its operator (removed mid-race): refuse
        last = _float(record.get("last_login_at")) or 0.0
        now = time.time()
        if now - last >= LAST_LOGIN_EVERY_S:
            await self._touch(keys=[self.keys.operator(name)], args=[f"{now:.3f}"])
        return Operator(name=name, role=cast(Role, record["role"]))

    # -- console sessions ---------------------------------------------------------------------------------
    async def open_session(self, operator: Operator, ttl_s: int = SESSION_TTL_S) -> ConsoleSession:
        """Start a console session for an authenticated operator (the login page has checked the token)."""
        if operator.bootstrap and not self._bootstrap:
            raise OperatorError("the bootstrap admin can only log in while IVR_OPERATOR_TOKEN is set")
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        digest = token_digest(session_id)
        now = time.time()
        expires_at = round(now + ttl_s, 3)  # as stored, so a session read back compares equal
        fields = {
            "operator": operator.name,
            "bootstrap": self._bootstrap_mark(digest) if operator.bootstrap else "",
            "csrf": csrf,
            "created_at": f"{now:.3f}",
            "expires_at": f"{expires_at:.3f}",
        }
        session_key = self.keys.operator_session(digest)
        sessions_key = self.keys.operator_sessions(operator.name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(session_key, mapping=fields)
            pipe.expire(session_key, ttl_s)
            pipe.sadd(sessions_key, digest)
            pipe.expire(sessions_key, max(ttl_s, SESSION_TTL_S))
            await pipe.execute()
        if not operator.bootstrap:
            await self._touch(keys=[self.keys.operator(operator.name)], args=[f"{now:.3f}"])
        return ConsoleSession(id=session_id, operator=operator, csrf=csrf, expires_at=expires_at)

    def _bootstrap_mark(self, digest: str) -> str:
        """Ties a bootstrap session to the current IVR_OPERATOR_TOKEN (a changed token ends it)."""
        return hmac.new(self._bootstrap.encode(), digest.encode(), hashlib.sha256).hexdigest()

    async def session(self, session_id: str) -> ConsoleSession | None:
        """The live session with this cookie value; None if unknown, expired, revoked or its operator gone."""
        if not session_id or len(session_id) > 200:
            return None
        digest = token_digest(session_id)
        record = await self.redis.hgetall(self.keys.operator_session(digest))
        expires_at = _float(record.get("expires_at"))
        name = record.get("operator", "")
        if not name or expires_at is None or expires_at <= time.time() or not record.get("csrf"):
            return None
        operator: Operator
        if record.get("bootstrap"):
            mark = self._bootstrap_mark(digest) if self._bootstrap else ""
            if not mark or not hmac.compare_digest(record["bootstrap"].encode(), mark.encode()):
                return None
            operator = BOOTSTRAP_ADMIN
        else:
            role = await self.redis.hget(self.keys.operator(name), "role")
            if role not in ROLES:
                return None  # removed (or a record damaged by hand): no access
            operator = Operator(name=name, role=cast(Role, role))
        return ConsoleSession(id=session_id, operator=operator, csrf=record["csrf"], expires_at=expires_at)

    async def close_session(self, session_id: str) -> None:
        """End a session (logout). Unknown ids are ignored."""
        if not session_id or len(session_id) > 200:
            return
        digest = token_digest(session_id)
        key = self.keys.operator_session(digest)
        name = await self.redis.hget(key, "operator")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if name:
                pipe.srem(self.keys.operator_sessions(name), digest)
            await pipe.execute()
