"""Carrying a call over to another instance when its media stream drops with the instance that ran it.

The voice webhook answers ``<Connect action=".../twilio/stream-ended"><Stream …>``: when a stream ends,
Twilio asks the action URL what to do next. An instance that ends a call on purpose (a hang-up, a transfer,
the caller's ``stop``, a drain) first marks it closed here (:func:`release`), so the answer is ``<Hangup/>``.
A stream that ended with no such mark dropped with its instance (killed, its machine gone): the action
handler issues the call's next stream (:func:`issue_resume`), which the instance receiving it adopts
(:func:`adopt`) and resumes from what Redis holds.

Each step is one Lua script over the call record (``call:{sid}``) and its link hash (``call:{sid}:link``),
so racing instances agree: a call closed on purpose is never resumed, a resumed stream is adopted once, and
the instance that ran it before never writes the end of a call another instance holds now.

On Redis Cluster (hash-tagged keys) the adopting instance's call set is in the global slot, which a script
over the call's keys cannot write: :func:`adopt` then adds the sid to that set *before* the script and takes
it out again if the script refuses. A crash in between leaves a sid in the set whose record names another
holder, which reconciliation only tidies away — never a call held here that is missing from the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ivr.store.keys import KeySchema

__all__ = [
    "MAX_RESUMES",
    "Adoption",
    "Resumable",
    "adopt",
    "holder_alive",
    "issue_resume",
    "release",
]

#: Streams a call may be resumed on (a call whose instances keep dying ends instead).
MAX_RESUMES = 3
#: Seconds the link hash outlives its last write (a call's whole life fits well inside).
LINK_TTL_S = 6 * 3600

# KEYS: record, link. ARGV: me, ttl. 1 = the call is ours to end (marked closed), 0 = another instance
# holds it now (it was resumed there): do not write its end.
_RELEASE = """
local holder = redis.call('HGET', KEYS[1], 'instance_id')
if holder and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'closed_by', ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
"""

# KEYS: record, link. ARGV: max resumes, ttl, now. Returns the new stream's number, or -1 the call has
# ended, -2 it was closed on purpose, -3 it was resumed too often already.
_ISSUE = """
if redis.call('HGET', KEYS[1], 'outcome') ~= 'in-progress' then return -1 end
if redis.call('HEXISTS', KEYS[2], 'closed_by') == 1 then return -2 end
if tonumber(redis.call('HGET', KEYS[2], 'resumes') or '0') >= tonumber(ARGV[1]) then return -3 end
local n = redis.call('HINCRBY', KEYS[2], 'resumes', 1)
redis.call('HSET', KEYS[2], 'stream_lost_at', ARGV[3])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return n
"""

_ADOPT_CHECKS = """
if redis.call('HGET', KEYS[1], 'outcome') ~= 'in-progress' then return {0, 'ended'} end
if redis.call('HEXISTS', KEYS[2], 'closed_by') == 1 then return {0, 'closed'} end
if tonumber(redis.call('HGET', KEYS[2], 'resumes') or '0') ~= tonumber(ARGV[2]) then
  return {0, 'superseded'}
end
if redis.call('HGET', KEYS[2], 'adopted') == ARGV[2] then return {0, 'adopted already'} end
local previous = redis.call('HGET', KEYS[1], 'instance_id') or ''
redis.call('HSET', KEYS[1], 'instance_id', ARGV[1])
redis.call('HSET', KEYS[2], 'adopted', ARGV[2])
"""

# KEYS: record, link, my instance's call set. ARGV: me, stream number, sid. Returns {1, previous holder}
# or {0, why}.
_ADOPT = (
    _ADOPT_CHECKS
    + """
redis.call('SADD', KEYS[3], ARGV[3])
return {1, previous}
"""
)

# Redis Cluster: the same over the call's slot only (the call set is written by the caller, see adopt()).
# KEYS: record, link. ARGV: me, stream number.
_ADOPT_CALL = (
    _ADOPT_CHECKS
    + """
return {1, previous}
"""
)


@dataclass(frozen=True, slots=True)
class Resumable:
    """What the action handler needs to issue a call's next stream (from its record)."""

    number: int
    flow_id: str
    caller: str
    called: str


@dataclass(frozen=True, slots=True)
class Adoption:
    """The outcome of :func:`adopt`: ``adopted`` and the instance that held the call, or why not."""

    adopted: bool
    previous: str = ""
    why: str = ""


async def release(redis: aioredis.Redis, keys: KeySchema, sid: str, me: str) -> bool:
    """The call is ending here on purpose: mark it closed (no resume). False if another instance holds it
    now (it was resumed there): then its end is not ours to write."""
    result = await redis.eval(_RELEASE, 2, keys.call(sid), keys.call_link(sid), me, LINK_TTL_S)
    return bool(result)


async def issue_resume(
    redis: aioredis.Redis, keys: KeySchema, sid: str, *, now: float, max_resumes: int = MAX_RESUMES
) -> Resumable | str:
    """Number the call's next stream, or say why it must not be resumed (a short reason)."""
    number = int(
        await redis.eval(_ISSUE, 2, keys.call(sid), keys.call_link(sid), max_resumes, LINK_TTL_S, repr(now))
    )
    if number <= 0:
        return {-1: "the call has ended", -2: "the call was ended on purpose", -3: "resumed too often"}.get(
            number, "unknown"
        )
    flow_id, caller, called = await redis.hmget(keys.call(sid), ["flow_id", "caller", "called"])
    return Resumable(number, _text(flow_id), _text(caller), _text(called))


async def adopt(redis: aioredis.Redis, keys: KeySchema, sid: str, me: str, number: int) -> Adoption:
    """Take the call over for its stream ``number`` (atomically: only the latest issued stream of a call
    still in progress and not closed on purpose)."""
    if keys.hash_tags:
        mine = keys.instance_calls(me)
        added = await redis.sadd(mine, sid)  # before the script: a crash may leave it listed, never missing
        ok, detail = await redis.eval(_ADOPT_CALL, 2, keys.call(sid), keys.call_link(sid), me, number)
        if int(ok) != 1:
            if added and _text(await redis.hget(keys.call(sid), "instance_id")) != me:
                await redis.srem(mine, sid)
            return Adoption(False, why=_text(detail))
    else:
        ok, detail = await redis.eval(
            _ADOPT, 3, keys.call(sid), keys.call_link(sid), keys.instance_calls(me), me, number, sid
        )
        if int(ok) != 1:
            return Adoption(False, why=_text(detail))
    previous = _text(detail)
    if previous and previous != me:
        await redis.srem(keys.instance_calls(previous), sid)
    return Adoption(True, previous=previous)


async def holder_alive(
    redis: aioredis.Redis, keys: KeySchema, sid: str, *, now: float, lost_after_s: float
) -> bool:
    """True while the instance holding the call still beats (its heartbeat is younger than
    ``lost_after_s``): it may yet mark the call closed, so the action handler waits a moment for that."""
    holder = await redis.hget(keys.call(sid), "instance_id")
    if not holder:
        return False
    beat = await redis.zscore(keys.instances(), _text(holder))
    return beat is not None and now - float(beat) < lost_after_s


async def closed(redis: aioredis.Redis, keys: KeySchema, sid: str) -> bool:
    """The call was marked closed on purpose (see :func:`release`)."""
    return bool(await redis.hexists(keys.call_link(sid), "closed_by"))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
