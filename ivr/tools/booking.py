"""The ``booking`` tool: find free times, book, reschedule and cancel appointments on a Redis calendar.

One function tool with an ``action`` argument, so the model sees one clear tool per calendar. Free times
come from the flow's opening hours and each service's duration (:mod:`ivr.tools.calendar`), minus slots
already claimed in Redis.

No double booking: a booking claims every slot its appointment covers in one Lua script — all or
nothing, checked and written without any other command in between — so of any number of calls racing for
a slot exactly one wins. A calendar with ``capacity`` N has N lanes (chairs, tables); a booking takes one
lane for its whole length. Rescheduling claims the new slots and releases the old ones in the same
script; cancelling releases them.

Idempotent per call, and truthful: the first successful result of each (call, action, arguments) is
stored under ``booking_idempotency`` inside the same script that books, together with the booking's
revision (``rev``, bumped by every book, move and cancel). A model that repeats a call (or sends it twice
at once) gets that result back only while the booking is still at that revision; once anything changed it
(book → cancel → book again; a move to 11:00, then 14:00, then 11:00 again) the repeat is carried out
afresh, so a result always describes what is stored.

Only the caller who booked may move or cancel (:func:`may_change`): the call that made the booking, a call
from the same number (``caller``, from the signed webhook; withheld numbers match no one), a call that
verified the same lookup record by its own number (``records``), or a call whose request an operator
approved. Anyone else gets ``not_booking_owner`` and learns nothing about the booking.

Key layout (see :class:`ivr.store.keys.KeySchema` and docs/redis.md): ``calendar_slot(cal, "<UTC start>")``
(``#<lane>`` appended for lanes after the first) holds the booking id; ``booking(id, cal)`` is a hash;
``calendar_bookings(cal)`` is a sorted set by start time. Every key a script touches is passed in ``KEYS``,
and on Redis Cluster all of a calendar's keys (its slots, bookings, and the idempotency keys of actions on
it) share the calendar's hash tag, so each script and the ``MGET`` of free slots stay within one slot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from ivr.flows.hours import OpeningHours
from ivr.flows.tool_configs import BookingConfig
from ivr.tools import calendar as cal
from ivr.tools.identity import caller_identity
from ivr.tools.registry import ToolContext, ToolError, ToolSpec

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ivr.store.keys import KeySchema

log = logging.getLogger(__name__)

#: Booking ids are read out on the phone: no 0/O, 1/I/L look-alikes.
_ID_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_ID_LENGTH = 6
#: How long the first result of an action is replayed to the same call.
IDEMPOTENCY_TTL_S = 24 * 3600
#: How long booking hashes and slot keys outlive the appointment.
RETENTION_AFTER_END_S = 30 * 86400
_RETRIES = 5

# Every script first checks that the idempotency record is still the one the caller read (ARGV "prior";
# '' = none): if another request of the same call wrote it meanwhile, the answer is 'again' and Python
# reads it afresh. Every change bumps the booking's ``rev``; a stored result names the rev it describes.

# KEYS: idempotency, booking, bookings zset, then capacity x n slot keys (lane by lane).
# ARGV: n, capacity, booking id, score, idempotency record json, idempotency ttl, keep-for seconds,
#       retention cutoff, prior idempotency record, then booking hash fields...
_BOOK = """
local n = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[9] then return {'again', ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'id_exists', ''} end
for lane = 0, capacity - 1 do
  local base = 3 + lane * n
  local free = true
  for i = 1, n do
    if redis.call('EXISTS', KEYS[base + i]) == 1 then free = false break end
  end
  if free then
    local slots = {}
    for i = 1, n do
      redis.call('SET', KEYS[base + i], ARGV[3], 'EX', ARGV[7])
      slots[i] = KEYS[base + i]
    end
    redis.call('HSET', KEYS[2], unpack(ARGV, 10))
    redis.call('HSET', KEYS[2], 'lane', lane, 'slots', cjson.encode(slots), 'rev', 1)
    redis.call('EXPIRE', KEYS[2], ARGV[7])
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[8])
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
    redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[6])
    return {'ok', tostring(lane)}
  end
end
return {'taken', ''}
"""

# KEYS: idempotency, booking, bookings zset, m old slot keys, then capacity x n new slot keys.
# ARGV: m, n, capacity, booking id, score, idempotency record json, idempotency ttl, keep-for seconds,
#       rev read, prior idempotency record, then booking hash fields...
_RESCHEDULE = """
local m = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local bid = ARGV[4]
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[10] then return {'again', ''} end
if redis.call('HGET', KEYS[2], 'status') ~= 'booked' then return {'gone', ''} end
if (redis.call('HGET', KEYS[2], 'rev') or '0') ~= ARGV[9] then return {'changed', ''} end
for lane = 0, capacity - 1 do
  local base = 3 + m + lane * n
  local free = true
  for i = 1, n do
    local holder = redis.call('GET', KEYS[base + i])
    if holder and holder ~= bid then free = false break end
  end
  if free then
    local keep = {}
    local slots = {}
    for i = 1, n do
      redis.call('SET', KEYS[base + i], bid, 'EX', ARGV[8])
      keep[KEYS[base + i]] = true
      slots[i] = KEYS[base + i]
    end
    for i = 1, m do
      local key = KEYS[3 + i]
      if not keep[key] and redis.call('GET', key) == bid then redis.call('DEL', key) end
    end
    redis.call('HSET', KEYS[2], unpack(ARGV, 11))
    redis.call('HSET', KEYS[2], 'lane', lane, 'slots', cjson.encode(slots), 'rev', tonumber(ARGV[9]) + 1)
    redis.call('EXPIRE', KEYS[2], ARGV[8])
    redis.call('ZADD', KEYS[3], ARGV[5], bid)
    redis.call('SET', KEYS[1], ARGV[6], 'EX', ARGV[7])
    return {'ok', tostring(lane)}
  end
end
return {'taken', ''}
"""

# KEYS: idempotency, booking, bookings zset, m slot keys.
# ARGV: booking id, rev read, idempotency record json, idempotency ttl, cancelled-at,
#       prior idempotency record.
_CANCEL = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[6] then return {'again', ''} end
if redis.call('HGET', KEYS[2], 'status') ~= 'booked' then return {'gone', ''} end
if (redis.call('HGET', KEYS[2], 'rev') or '0') ~= ARGV[2] then return {'changed', ''} end
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('HSET', KEYS[2], 'status', 'cancelled', 'cancelled_at', ARGV[5], 'rev', tonumber(ARGV[2]) + 1)
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
return {'ok', ''}
"""

_FIND_SLOTS_ADVICE = "Call find_slots and offer the caller one of the times it returns."


def _parameters(config: BookingConfig) -> dict[str, Any]:
    services = list(config.durations)
    properties: dict[str, Any] = {
        "action": {
            "type": "string",
            "enum": ["find_slots", "book", "reschedule", "cancel"],
            "description": (
                "find_slots: free start times (needs service; date and after_time optional). "
                "book: needs service, start (a time find_slots returned) and name. "
                "reschedule: needs booking_id and the new start. cancel: needs booking_id."
            ),
        },
        "service": {"type": "string", "enum": services, "description": "What the appointment is for."},
        "date": {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}$",
            "description": "find_slots: only this day (YYYY-MM-DD, local); omit for the next free times.",
        },
        "after_time": {
            "type": "string",
            "pattern": r"^\d{2}:\d{2}$",
            "description": "find_slots: only times at or after this time of day (HH:MM, 24-hour, local).",
        },
        "start": {
            "type": "string",
            "maxLength": 40,
            "description": "book/reschedule: a start exactly as find_slots returned it (YYYY-MM-DDTHH:MM).",
        },
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "book: the caller's name.",
        },
        "phone": {
            "type": "string",
            "maxLength": 40,
            "description": "book: a callback number, if the caller gives one other than their own.",
        },
        "booking_id": {
            "type": "string",
            "maxLength": 20,
            "description": "reschedule/cancel: the booking id the caller was given.",
        },
    }
    if config.max_party_size is not None:
        properties["party_size"] = {
            "type": "integer",
            "minimum": 1,
            "maximum": config.max_party_size,
            "description": "book: how many people.",
        }
    return {
        "type": "object",
        "properties": properties,
        "required": ["action"],
        "additionalProperties": False,
    }


def _description(config: BookingConfig) -> str:
    services = ", ".join(f"{name} ({minutes} min)" for name, minutes in config.durations.items())
    return f"{config.description.rstrip()} Services: {services}. Only offer times that find_slots returned."


def new_booking_id() -> str:
    """A short id a caller can write down: six characters without look-alikes."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def digest(tool: str, calendar: str, args: dict[str, Any]) -> str:
    """Stable digest of one action and its arguments (canonical JSON), for idempotency keys."""
    canonical = json.dumps(
        {"tool": tool, "calendar": calendar, "args": args}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _require(args: dict[str, Any], action: str, *names: str) -> None:
    missing = [n for n in names if args.get(n) in (None, "")]
    if missing:
        raise ToolError(
            "invalid_arguments",
            f"{action} needs {', '.join(missing)}. Ask the caller if you do not know, then call it again.",
        )


class BookingTool:
    """One calendar's booking tool (see the module docstring)."""

    def __init__(self, config: BookingConfig) -> None:
        self.config = config
        self.spec = ToolSpec(config.name, _description(config), _parameters(config), config.timeout_s)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        redis, keys = ctx.require_redis(self.config.name)
        hours = ctx.flow.opening_hours
        if hours is None:
            raise ToolError(
                "unavailable",
                "Appointments cannot be booked on this line (no opening hours are set). Offer a transfer.",
            )
        now = ctx.now()
        bounds = cal.window(
            now,
            hours.zone,
            min_notice_minutes=self.config.min_notice_minutes,
            days_ahead=self.config.days_ahead,
        )
        action = args["action"]
        if action == "find_slots":
            _require(args, action, "service")
            return await self._find_slots(redis, keys, hours, bounds, args)
        if action == "book":
            _require(args, action, "service", "start", "name")
            return await self._book(redis, keys, hours, bounds, args, ctx)
        if action == "reschedule":
            _require(args, action, "booking_id", "start")
            return await self._reschedule(redis, keys, hours, bounds, args, ctx)
        _require(args, action, "booking_id")
        return await self._cancel(redis, keys, args, ctx)

    # -- find_slots -------------------------------------------------------------------------------------

    async def _find_slots(
        self,
        redis: Redis,
        keys: KeySchema,
        hours: OpeningHours,
        bounds: cal.Window,
        args: dict[str, Any],
    ) -> dict[str, Any]:
        service = args["service"]
        minutes = self.config.durations[service]
        today = bounds.now.astimezone(hours.zone).date()
        after = _parse_time(args.get("after_time"))
        if args.get("date"):
            try:
                day = date.fromisoformat(args["date"])
            except ValueError:
                raise ToolError(
                    "invalid_arguments", f"{args['date']!r} is not a real date (YYYY-MM-DD)."
                ) from None
            if not today <= day <= bounds.last_day:
                return {
                    "service": service,
                    "slots": [],
                    "note": (
                        f"Appointments can only be booked from {today.isoformat()} to "
                        f"{bounds.last_day.isoformat()}. Offer a day in that range."
                    ),
                }
            days = [day]
        else:
            days = [today + timedelta(days=k) for k in range((bounds.last_day - today).days + 1)]

        found: list[datetime] = []
        for day in days:
            starts = [
                s
                for s in cal.starts_on(
                    hours, day, minutes=minutes, step=self.config.slot_step_minutes, after=after
                )
                if s.astimezone(UTC) >= bounds.earliest
            ]
            if not starts:
                continue
            free = await self._free_starts(redis, keys, starts, minutes)
            found.extend(free[: self.config.max_slots - len(found)])
            if len(found) >= self.config.max_slots:
                break
        result: dict[str, Any] = {
            "service": service,
            "duration_minutes": minutes,
            "timezone": str(hours.zone),
            "slots": [{"start": cal.format_local(s), "spoken": cal.spoken(s)} for s in found],
        }
        if not found:
            where = f"on {days[0].isoformat()}" if len(days) == 1 else f"in the next {len(days)} days"
            result["note"] = f"No free time for {service} {where}. Offer another day or a transfer."
        return result

    async def _free_starts(
        self, redis: Redis, keys: KeySchema, starts: list[datetime], minutes: int
    ) -> list[datetime]:
        step = self.config.slot_step_minutes
        wanted: dict[str, None] = {}
        for start in starts:
            for slot in cal.covered(start, minutes, step):
                for lane in range(self.config.capacity):
                    wanted[keys.calendar_slot(self.config.calendar, cal.lane_slot_name(slot, lane))] = None
        names = list(wanted)
        values = await redis.mget(names)
        taken = {name for name, value in zip(names, values, strict=True) if value is not None}
        free = []
        for start in starts:
            slots = cal.covered(start, minutes, step)
            for lane in range(self.config.capacity):
                lane_keys = [
                    keys.calendar_slot(self.config.calendar, cal.lane_slot_name(s, lane)) for s in slots
                ]
                if not any(k in taken for k in lane_keys):
                    free.append(start)
                    break
        return free

    # -- book -------------------------------------------------------------------------------------------

    def _checked_start(self, text: str, hours: OpeningHours, bounds: cal.Window, minutes: int) -> datetime:
        try:
            start = cal.parse_local(text, hours.zone)
        except cal.LocalTimeError as exc:
            raise ToolError("invalid_arguments", f"{exc}. {_FIND_SLOTS_ADVICE}") from None
        if start is None:
            raise ToolError(
                "invalid_arguments",
                f"{text!r} is not a start time (use YYYY-MM-DDTHH:MM as find_slots returns it). "
                f"{_FIND_SLOTS_ADVICE}",
            )
        reason = cal.unbookable_reason(
            hours, start, minutes=minutes, step=self.config.slot_step_minutes, bounds=bounds
        )
        if reason is not None:
            raise ToolError("slot_unavailable", f"{reason}. {_FIND_SLOTS_ADVICE}")
        return start

    def _slot_keys(self, keys: KeySchema, start: datetime, minutes: int) -> list[str]:
        slots = cal.covered(start, minutes, self.config.slot_step_minutes)
        return [
            keys.calendar_slot(self.config.calendar, cal.lane_slot_name(slot, lane))
            for lane in range(self.config.capacity)
            for slot in slots
        ]

    def _keep_for(self, start: datetime, minutes: int, now: datetime) -> int:
        """Seconds a booking and its slots are kept: until the appointment ends, plus the retention.

        Relative to the tool's clock (not Redis's), so a booking is never written already expired.
        """
        end = start.astimezone(UTC) + timedelta(minutes=minutes)
        return max(60, int((end - now).total_seconds()) + RETENTION_AFTER_END_S)

    async def _book(
        self,
        redis: Redis,
        keys: KeySchema,
        hours: OpeningHours,
        bounds: cal.Window,
        args: dict[str, Any],
        ctx: ToolContext,
    ) -> dict[str, Any]:
        service = args["service"]
        minutes = self.config.durations[service]
        if self.config.max_party_size is not None and args.get("party_size") is None:
            raise ToolError("invalid_arguments", "book needs party_size. Ask the caller how many people.")
        start = self._checked_start(args["start"], hours, bounds, minutes)
        end = start.astimezone(UTC) + timedelta(minutes=minutes)
        idempotency = keys.booking_idempotency(
            ctx.call_sid, digest(self.config.name, self.config.calendar, args), self.config.calendar
        )
        slot_keys = self._slot_keys(keys, start, minutes)
        n = len(slot_keys) // self.config.capacity
        for _ in range(_RETRIES):
            prior = await redis.get(idempotency)
            replayed = await _replay(redis, keys, prior, self.config.calendar)
            if replayed is not None:
                return replayed
            booking_id = new_booking_id()
            result = {
                "status": "booked",
                "booking_id": booking_id,
                "service": service,
                "start": cal.format_local(start),
                "end": cal.format_local(end.astimezone(hours.zone)),
                "spoken": cal.spoken(start),
                "name": args["name"],
                "note": "Tell the caller the time and spell out the booking id (needed to change or cancel).",
            }
            if args.get("party_size") is not None:
                result["party_size"] = args["party_size"]
            fields = {
                "id": booking_id,
                "calendar": self.config.calendar,
                "service": service,
                "minutes": minutes,
                "start": cal.format_local(start),
                "end": cal.format_local(end.astimezone(hours.zone)),
                "start_utc": cal.slot_name(start),
                "timezone": str(hours.zone),
                "name": args["name"],
                "phone": args.get("phone") or ctx.caller_number,
                "party_size": args.get("party_size", ""),
                "call_sid": ctx.call_sid,
                "caller": caller_identity(ctx.caller_number),
                "records": json.dumps(sorted(ctx.verified_records)),
                "flow_id": ctx.flow.id,
                "status": "booked",
                "created_at": f"{bounds.now.timestamp():.3f}",
            }
            cutoff = bounds.now.timestamp() - RETENTION_AFTER_END_S
            reply = await redis.eval(
                _BOOK,
                3 + len(slot_keys),
                idempotency,
                keys.booking(booking_id, self.config.calendar),
                keys.calendar_bookings(self.config.calendar),
                *slot_keys,
                n,
                self.config.capacity,
                booking_id,
                start.timestamp(),
                _idempotency_record(booking_id, 1, result),
                IDEMPOTENCY_TTL_S,
                self._keep_for(start, minutes, bounds.now),
                cutoff,
                prior or "",
                *_flatten(fields),
            )
            status = reply[0]
            if status == "ok":
                log.info("booked %s on %s (%s, lane %s)", booking_id, self.config.calendar, service, reply[1])
                return result
            if status == "taken":
                raise ToolError(
                    "slot_taken",
                    f"{cal.spoken(start)} was just taken by someone else. {_FIND_SLOTS_ADVICE}",
                )
            # "again": the same request of this call finished meanwhile; "id_exists": draw another id.
        raise ToolError("tool_failed", "Could not create a booking id. Apologise and try once more.")

    # -- reschedule / cancel ----------------------------------------------------------------------------

    async def _load(self, redis: Redis, keys: KeySchema, booking_id: str, ctx: ToolContext) -> dict[str, str]:
        """The booking, if it exists on this calendar and this call may change it (else a ToolError)."""
        booking_id = booking_id.strip().upper()
        record: dict[str, str] = {}
        if booking_id and all(ch in _ID_ALPHABET for ch in booking_id):
            record = await redis.hgetall(keys.booking(booking_id, self.config.calendar))
        if not record or record.get("calendar") != self.config.calendar:
            raise ToolError(
                "booking_not_found",
                f"There is no booking with id {booking_id!r}. Ask the caller to repeat it letter by letter.",
            )
        if not may_change(record, ctx):
            log.warning(
                "refused a change to booking %s on %s: call %s is not the caller who booked it",
                record["id"],
                self.config.calendar,
                ctx.call_sid,
            )
            raise ToolError(
                "not_booking_owner",
                f"Booking {record['id']} was made from another phone number, so it cannot be moved or "
                "cancelled on this call. Do not tell the caller anything about it. Ask them to call from "
                "the number they booked with, or offer a transfer to staff.",
            )
        return record

    async def _reschedule(
        self,
        redis: Redis,
        keys: KeySchema,
        hours: OpeningHours,
        bounds: cal.Window,
        args: dict[str, Any],
        ctx: ToolContext,
    ) -> dict[str, Any]:
        idempotency = keys.booking_idempotency(
            ctx.call_sid, digest(self.config.name, self.config.calendar, args), self.config.calendar
        )
        for _ in range(_RETRIES):
            prior = await redis.get(idempotency)
            replayed = await _replay(redis, keys, prior, self.config.calendar)
            if replayed is not None:
                return replayed
            record = await self._load(redis, keys, args["booking_id"], ctx)
            if record.get("status") != "booked":
                raise ToolError(
                    "booking_cancelled", f"Booking {record['id']} was cancelled; it cannot be moved."
                )
            minutes = int(record["minutes"])
            start = self._checked_start(args["start"], hours, bounds, minutes)
            end = start.astimezone(UTC) + timedelta(minutes=minutes)
            booking_id = record["id"]
            rev = record.get("rev", "0")
            result = {
                "status": "rescheduled",
                "booking_id": booking_id,
                "service": record["service"],
                "previous_start": record["start"],
                "start": cal.format_local(start),
                "end": cal.format_local(end.astimezone(hours.zone)),
                "spoken": cal.spoken(start),
                "name": record.get("name", ""),
            }
            old_keys = [str(k) for k in json.loads(record.get("slots", "[]"))]
            new_keys = self._slot_keys(keys, start, minutes)
            fields = {
                "start": cal.format_local(start),
                "end": cal.format_local(end.astimezone(hours.zone)),
                "start_utc": cal.slot_name(start),
                "rescheduled_at": f"{bounds.now.timestamp():.3f}",
                "rescheduled_by": ctx.call_sid,
            }
            reply = await redis.eval(
                _RESCHEDULE,
                3 + len(old_keys) + len(new_keys),
                idempotency,
                keys.booking(booking_id, self.config.calendar),
                keys.calendar_bookings(self.config.calendar),
                *old_keys,
                *new_keys,
                len(old_keys),
                len(new_keys) // self.config.capacity,
                self.config.capacity,
                booking_id,
                start.timestamp(),
                _idempotency_record(booking_id, int(rev) + 1, result),
                IDEMPOTENCY_TTL_S,
                self._keep_for(start, minutes, bounds.now),
                rev,
                prior or "",
                *_flatten(fields),
            )
            status = reply[0]
            if status == "ok":
                log.info("rescheduled %s on %s", booking_id, self.config.calendar)
                return result
            if status == "taken":
                raise ToolError("slot_taken", f"{cal.spoken(start)} is not free. {_FIND_SLOTS_ADVICE}")
            if status == "gone":
                raise ToolError(
                    "booking_cancelled", f"Booking {booking_id} was cancelled; it cannot be moved."
                )
            # "changed": the booking moved under us; "again": this call's same request finished. Read again.
        raise ToolError("tool_failed", "The booking kept changing while moving it. Apologise and try again.")

    async def _cancel(
        self,
        redis: Redis,
        keys: KeySchema,
        args: dict[str, Any],
        ctx: ToolContext,
    ) -> dict[str, Any]:
        idempotency = keys.booking_idempotency(
            ctx.call_sid, digest(self.config.name, self.config.calendar, args), self.config.calendar
        )
        for _ in range(_RETRIES):
            prior = await redis.get(idempotency)
            replayed = await _replay(redis, keys, prior, self.config.calendar)
            if replayed is not None:
                return replayed
            record = await self._load(redis, keys, args["booking_id"], ctx)
            booking_id = record["id"]
            rev = record.get("rev", "0")
            summary = {
                "booking_id": booking_id,
                "service": record["service"],
                "start": record["start"],
                "name": record.get("name", ""),
            }
            already = {"status": "cancelled", **summary, "note": "This booking was already cancelled."}
            if record.get("status") != "booked":
                return already
            result = {"status": "cancelled", **summary, "note": "Confirm the cancellation to the caller."}
            old_slots = record.get("slots", "[]")
            old_keys = [str(k) for k in json.loads(old_slots)]
            reply = await redis.eval(
                _CANCEL,
                3 + len(old_keys),
                idempotency,
                keys.booking(booking_id, self.config.calendar),
                keys.calendar_bookings(self.config.calendar),
                *old_keys,
                booking_id,
                rev,
                _idempotency_record(booking_id, int(rev) + 1, result),
                IDEMPOTENCY_TTL_S,
                f"{ctx.now().timestamp():.3f}",
                prior or "",
            )
            status = reply[0]
            if status == "ok":
                log.info("cancelled %s on %s", booking_id, self.config.calendar)
                return result
            if status == "gone":
                return already
        raise ToolError(
            "tool_failed", "The booking kept changing while cancelling it. Apologise and try again."
        )


def may_change(record: dict[str, str], ctx: ToolContext) -> bool:
    """Whether the call in ``ctx`` may move or cancel the booking ``record``.

    Yes for the call that made it; for a call from the same number (withheld numbers match no one); for a
    call that verified the same lookup record by its own number; and for any call once an operator
    approved the change. Bookings stored before ``caller`` existed fall back to their ``phone`` field.
    """
    if ctx.approved or record.get("call_sid") == ctx.call_sid:
        return True
    owner = record["caller"] if "caller" in record else caller_identity(record.get("phone", ""))
    if owner and owner == caller_identity(ctx.caller_number):
        return True
    try:
        records = json.loads(record.get("records") or "[]")
    except ValueError:
        return False
    return isinstance(records, list) and bool(ctx.verified_records.intersection(map(str, records)))


def _idempotency_record(booking_id: str, rev: int, result: dict[str, Any]) -> str:
    """What the idempotency key holds: a result and the booking revision it describes."""
    return orjson.dumps({"booking_id": booking_id, "rev": rev, "result": result}).decode()


async def _replay(redis: Redis, keys: KeySchema, prior: str | None, calendar: str) -> dict[str, Any] | None:
    """The result stored under an idempotency key (of an action on ``calendar``), if it still describes the
    stored booking, else None.

    A result is replayed only while the booking is at the revision the result was written at, so a
    repeated request never answers "booked" for a booking since cancelled, nor "moved to 11:00" for
    one moved on to 14:00: it is carried out again instead (against what is stored now). Records from
    before revisions existed are checked against the booking's status and start.
    """
    if prior is None:
        return None
    try:
        entry = orjson.loads(prior)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    if "rev" in entry:
        result, booking_id = entry.get("result"), str(entry.get("booking_id", ""))
    else:  # written before revisions: the result itself
        result, booking_id = entry, str(entry.get("booking_id", ""))
    if not isinstance(result, dict) or not booking_id:
        return None
    rev, status, start = await redis.hmget(keys.booking(booking_id, calendar), ["rev", "status", "start"])
    if "rev" in entry:
        current = str(entry["rev"]) == (rev or "0")
    elif result.get("status") == "cancelled":
        current = status == "cancelled"
    else:
        current = status == "booked" and start == result.get("start")
    return dict(result) if current else None


def _parse_time(text: str | None) -> time | None:
    if not text:
        return None
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ToolError(
            "invalid_arguments", f"after_time {text!r} is not a time of day (HH:MM, 24-hour)."
        ) from None


def _flatten(fields: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        out += [name, str(value)]
    return out
