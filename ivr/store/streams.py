"""The transcript and event streams: their caps and the shape of their entries, written and read back.

Why a module of its own: the call store writes these entries, the reconciliation of a restarted instance
writes ``call.ended`` entries of the same shape, and readers decode them — one definition serves all three
(docs/redis.md: an event entry has ``type``, ``call_sid``, ``ts`` and ``data``; a transcript entry ``role``,
``text``, ``ts`` and, for agent lines, ``item_id`` and how much was heard). Also the script that appends an
event to its call's stream and the global stream exactly once — in one script on a single Redis, in two
steps on Redis Cluster, where the two streams live in different hash slots (:func:`append_event_ops`).
Pure: no Redis connection here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ivr.store.codec import dumps, loads_or_raw
from ivr.store.keys import KeySchema

__all__ = [
    "APPEND_CALL_EVENT_SCRIPT",
    "APPEND_EVENT_SCRIPT",
    "APPEND_GLOBAL_EVENT_SCRIPT",
    "APPEND_LINE_SCRIPT",
    "CALL_EVENTS_MAXLEN",
    "EVENTS_MAXLEN",
    "TRANSCRIPT_MAXLEN",
    "append_event_args",
    "append_event_ops",
    "append_global_event",
    "decode_event",
    "event_fields",
    "to_float",
    "transcript_line",
    "ts_text",
]

#: Approximate caps (XADD MAXLEN ~) of the streams.
EVENTS_MAXLEN = 100_000
CALL_EVENTS_MAXLEN = 10_000
TRANSCRIPT_MAXLEN = 10_000


#: Adds one entry under an explicit id, exactly once. XADD refuses an id that is not above the stream's
#: top; that means "already written" only if the entry with that very id is there (a batch re-sent after
#: a lost reply). Otherwise another writer's later entry got there first (a survivor's ``call.ended``, a
#: batch split by a failover), and the entry is added now, at the top under a server id (its ``ts`` field
#: keeps the time it happened). Returns the added id, or the refusal (an error reply) for a duplicate.
_XADD_ONCE_LUA = """
local function xadd_once(key, id, cap, fields)
  local added = redis.pcall('XADD', key, 'MAXLEN', '~', cap, id, unpack(fields))
  if type(added) == 'table' and added.err then
    if not string.find(added.err, 'equal or smaller', 1, true) then return added end
    if #redis.call('XRANGE', key, id, id) > 0 then return added end
    added = redis.call('XADD', key, 'MAXLEN', '~', cap, '*', unpack(fields))
  end
  return added
end
"""

#: Appends one event to its call's stream under an explicit id and, only if that entry is new, to the global
#: stream, in one atomic step. Why: the global stream is shared by every instance, so its ids must be chosen
#: by the server (an id from one instance's clock is refused once another instance wrote a later one); the
#: call stream's explicit id is what makes a re-sent append recognisable. A batch re-sent after a lost reply
#: gets XADD's "equal or smaller than the target stream top" refusal for the call stream and adds nothing
#: to the global one, so every event lands in both streams exactly once. Any other error (READONLY during a
#: failover, WRONGTYPE) is returned unchanged for the writer to classify.
#: KEYS[1] = call stream, KEYS[2] = global stream; ARGV[1] = explicit id, ARGV[2] = call stream cap,
#: ARGV[3] = global stream cap, ARGV[4] = TTL of the call stream (seconds), then field/value pairs.
#: Returns the call-stream id.
APPEND_EVENT_SCRIPT = (
    _XADD_ONCE_LUA
    + """
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local added = xadd_once(KEYS[1], ARGV[1], ARGV[2], fields)
if type(added) == 'table' and added.err then return added end
redis.call('EXPIRE', KEYS[1], ARGV[4])
fields[#fields + 1] = 'event_id'
fields[#fields + 1] = added
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
return added
"""
)

#: Redis Cluster, step 1 of an event: append it to its call's stream under an explicit id, exactly once (as
#: ``xadd_once``). When a later entry of another writer is there already, the entry is added under a server
#: id and carries the explicit one in an ``event_id`` field, which is what the global copy names (step 2 runs
#: in another slot and cannot learn the server id). A duplicate comes back as the refusal (an error reply).
#: KEYS[1] = call stream; ARGV[1] = explicit id, ARGV[2] = cap, ARGV[3] = TTL (seconds), then pairs.
APPEND_CALL_EVENT_SCRIPT = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[1], unpack(fields))
if type(added) == 'table' and added.err then
  if not string.find(added.err, 'equal or smaller', 1, true) then return added end
  if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 then return added end
  fields[#fields + 1] = 'event_id'
  fields[#fields + 1] = ARGV[1]
  added = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return added
"""

#: Redis Cluster, step 2 of an event: copy it to the global stream (server id, ``event_id`` = the explicit
#: id of step 1) unless this writer already copied an event of this call with an id as high: its ids for a
#: call only grow and it sends them in order, so a re-sent batch is skipped. One high-water mark per
#: (call, writer) in a hash with the retention as TTL (``KeySchema.events_hwm``: the writer's instance id →
#: the last id copied). KEYS[1] = global stream, KEYS[2] = the call's high-water hash; ARGV[1] = writer,
#: ARGV[2] = explicit id, ARGV[3] = global cap, ARGV[4] = TTL of the hash, then pairs. Returns 1 if copied.
APPEND_GLOBAL_EVENT_SCRIPT = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last then
  local ms, seq = parse(ARGV[2])
  local last_ms, last_seq = parse(last)
  if ms < last_ms or (ms == last_ms and seq <= last_seq) then return 0 end
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'event_id'
fields[#fields + 1] = ARGV[2]
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

#: Appends one line to a call's transcript under an explicit id, exactly once (see ``_XADD_ONCE_LUA``).
#: KEYS[1] = transcript stream; ARGV[1] = explicit id, ARGV[2] = cap, ARGV[3] = TTL (seconds), then pairs.
APPEND_LINE_SCRIPT = (
    _XADD_ONCE_LUA
    + """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local added = xadd_once(KEYS[1], ARGV[1], ARGV[2], fields)
if type(added) == 'table' and added.err then return added end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return added
"""
)


def append_event_args(
    call_key: str, global_key: str, entry_id: str, entry: Mapping[str, str], ttl_s: int
) -> list[str | int]:
    """``numkeys, KEYS…, ARGV…`` of :data:`APPEND_EVENT_SCRIPT` for one entry (:func:`event_fields`)."""
    args: list[str | int] = [2, call_key, global_key, entry_id, CALL_EVENTS_MAXLEN, EVENTS_MAXLEN, int(ttl_s)]
    for name, value in entry.items():
        args += [name, value]
    return args


class _Evaluates(Protocol):
    """Anything with ``eval`` (a pipeline, a transaction): what :func:`append_event_ops` adds commands to."""

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...


def append_event_ops(
    target: _Evaluates,
    keys: KeySchema,
    sid: str,
    entry_id: str,
    entry: Mapping[str, str],
    ttl_s: int,
    *,
    writer: str,
    global_step: bool = True,
) -> None:
    """Add the commands appending one event (``entry``, see :func:`event_fields`) to the call's stream under
    ``entry_id`` and, once, to the global stream.

    Without hash tags (one Redis): :data:`APPEND_EVENT_SCRIPT`, one atomic script. With tags (Redis Cluster,
    the streams in different slots): :data:`APPEND_CALL_EVENT_SCRIPT` then, unless ``global_step`` is False
    (the caller adds it elsewhere, e.g. after a MULTI on the call's slot), :data:`APPEND_GLOBAL_EVENT_SCRIPT`
    (see :func:`append_global_event`) under ``writer``'s high-water mark. A crash between the two steps loses
    the global copy of that event (its call-stream entry is kept), a documented limit of the Cluster mode.
    """
    if not keys.hash_tags:
        target.eval(
            APPEND_EVENT_SCRIPT,
            *append_event_args(keys.call_events(sid), keys.events(), entry_id, entry, ttl_s),
        )
        return
    args: list[str | int] = [1, keys.call_events(sid), entry_id, CALL_EVENTS_MAXLEN, int(ttl_s)]
    for name, value in entry.items():
        args += [name, value]
    target.eval(APPEND_CALL_EVENT_SCRIPT, *args)
    if global_step:
        append_global_event(target, keys, sid, entry_id, entry, ttl_s, writer=writer)


def append_global_event(
    target: _Evaluates,
    keys: KeySchema,
    sid: str,
    entry_id: str,
    entry: Mapping[str, str],
    ttl_s: int,
    *,
    writer: str,
) -> None:
    """Redis Cluster: the global step of :func:`append_event_ops` (copied once: ``writer``'s high-water
    mark)."""
    args: list[str | int] = [
        2,
        keys.events(),
        keys.events_hwm(sid),
        writer,
        entry_id,
        EVENTS_MAXLEN,
        int(ttl_s),
    ]
    for name, value in entry.items():
        args += [name, value]
    target.eval(APPEND_GLOBAL_EVENT_SCRIPT, *args)


def ts_text(value: float) -> str:
    """A Unix time as stored in entries and hashes: seconds with millisecond precision."""
    return f"{value:.3f}"


def to_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def event_fields(sid: str, type_: str, data: Mapping[str, Any], now: float) -> dict[str, str]:
    """The fields of one event entry (``data`` as JSON)."""
    return {"type": type_, "call_sid": sid, "ts": ts_text(now), "data": dumps(data)}


def decode_event(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """An event entry read back: ``{id, type, call_sid, ts, data}``."""
    data = loads_or_raw(fields.get("data", "{}"))
    return {
        "id": entry_id,
        "type": fields.get("type", ""),
        "call_sid": fields.get("call_sid", ""),
        "ts": to_float(fields.get("ts")),
        "data": data,
    }


def transcript_line(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A transcript entry read back: ``{id, role, text, ts}`` plus its other fields, ``interrupted`` as a
    bool and ``heard_ms``/``total_ms`` as numbers."""
    line: dict[str, Any] = {
        **fields,
        "id": entry_id,
        "role": fields.get("role", ""),
        "text": fields.get("text", ""),
        "ts": to_float(fields.get("ts")),
    }
    if "interrupted" in fields:
        line["interrupted"] = fields["interrupted"] == "true"
    for name in ("heard_ms", "total_ms"):
        if name in fields:
            value = to_float(fields[name])
            line[name] = int(value) if value is not None and value.is_integer() else value
    return line
