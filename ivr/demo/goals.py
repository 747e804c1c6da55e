"""Whether a demo call got the caller what they called for, read from where it lives.

A :class:`Goal` names what must be true after the call; :func:`check_goal` reads it back: the booking hash
in Redis (stored, cancelled, moved), the approval record (denied), the call record's outcome and the app's
request to Twilio (transferred), and the agent's lines in the call's transcript stream in Redis (the hours
or the address said, a dish described). Nothing is taken from what the caller script believes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

GoalKind = Literal["booked", "cancelled", "moved", "denied", "said", "transferred", "dish"]


@dataclass(frozen=True)
class Goal:
    """What must hold after the call. ``expect``: booking fields that must match (``service``,
    ``party_size``); ``said``: a pattern one of the agent's lines must match (kinds ``said``, ``dish``)."""

    kind: GoalKind
    description: str
    expect: Mapping[str, str] = field(default_factory=dict)
    said: str | None = None
    #: For bookings: the stored name must contain one of these (the caller's first or last name).
    name_any: tuple[str, ...] = ()


@dataclass
class Observed:
    """What the demo saw of the call, pointing at the state to read back."""

    call_sid: str
    tools: Sequence[Mapping[str, Any]] = ()  # tool.called events, with "output"
    approvals: Sequence[Mapping[str, Any]] = ()  # the demo's operator decisions
    transfers: int = 0  # transfer requests the app sent to (the demo's stand-in for) Twilio
    seeded_booking: str | None = None
    open_now: bool | None = None  # the flow's opening hours at call time (transfers need it open)
    agent_lines: Sequence[str] = ()  # fallback when the transcript stream is not readable


@dataclass(frozen=True)
class Verdict:
    reached: bool
    why: str
    bookings: list[dict[str, Any]] = field(default_factory=list)


def _json(text: Any) -> Any:
    import json

    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


async def _agent_lines(redis: Any, keys: Any, observed: Observed) -> list[str]:
    entries = await redis.xrange(keys.transcript(observed.call_sid))
    lines = [f.get("text", "") for _id, f in entries if f.get("role") == "agent"]
    return lines or list(observed.agent_lines)


async def _bookings(redis: Any, keys: Any, observed: Observed) -> list[dict[str, Any]]:
    """Bookings this call's tools reported as booked, each with its Redis hash."""
    found = []
    for tool in observed.tools:
        data = _json(tool.get("output"))
        if isinstance(data, dict) and data.get("status") == "booked" and data.get("booking_id"):
            stored = await redis.hgetall(keys.booking(str(data["booking_id"])))
            found.append({"booking_id": data["booking_id"], "spoken": data.get("spoken"), "redis": stored})
    return found


async def check_goal(goal: Goal, observed: Observed, redis: Any, keys: Any) -> Verdict:
    """Read the state back and say whether ``goal`` holds, and why (or why not)."""
    booked = await _bookings(redis, keys, observed)
    stored = [b for b in booked if b["redis"].get("status") == "booked"]
    denied = [a for a in observed.approvals if a.get("decision") == "deny"]
    approved = [a for a in observed.approvals if a.get("decision") == "approve"]

    def matches(record: Mapping[str, str]) -> bool:
        stored_name = str(record.get("name", "")).lower()
        if goal.name_any and not any(part.lower() in stored_name for part in goal.name_any):
            return False
        return all(str(record.get(k, "")).lower() == str(v).lower() for k, v in goal.expect.items())

    if goal.kind == "booked":
        ok = [b for b in stored if matches(b["redis"])]
        booking_requests = [
            a for a in observed.approvals if (a.get("arguments") or {}).get("action") == "book"
        ]
        if not ok:
            wanted = {**goal.expect, **({"name": " or ".join(goal.name_any)} if goal.name_any else {})}
            why = "no booking was stored" if not stored else f"the stored booking does not match {wanted}"
            return Verdict(False, why, booked)
        if booking_requests and not approved:
            return Verdict(False, "the operator did not approve the booking", booked)
        ids = ", ".join(b["booking_id"] for b in ok)
        approval = " and was approved by the operator" if approved else ""
        return Verdict(True, f"booking {ids} is stored in Redis{approval}", booked)

    if goal.kind in ("cancelled", "moved"):
        if observed.seeded_booking is None:
            return Verdict(False, "no booking was made before the call to change", booked)
        record = await redis.hgetall(keys.booking(observed.seeded_booking))
        if record.get("status") != "cancelled":
            return Verdict(
                False, f"booking {observed.seeded_booking} is still {record.get('status')!r}", booked
            )
        if goal.kind == "cancelled":
            return Verdict(True, f"booking {observed.seeded_booking} is cancelled in Redis", booked)
        if not stored:
            return Verdict(
                False, f"{observed.seeded_booking} was cancelled but no new booking was stored", booked
            )
        new = ", ".join(b["booking_id"] for b in stored)
        return Verdict(
            True, f"booking {observed.seeded_booking} is cancelled and {new} stored instead", booked
        )

    if goal.kind == "denied":
        if stored:
            return Verdict(False, "a booking was stored although the operator denied it", booked)
        if not denied:
            return Verdict(False, "no operator decision denied anything", booked)
        record = await redis.hgetall(keys.approval(str(denied[0]["id"])))
        if record.get("status") != "denied":
            return Verdict(False, f"approval {denied[0]['id']} is {record.get('status')!r} in Redis", booked)
        return Verdict(True, f"approval {denied[0]['id']} is denied in Redis and nothing was booked", booked)

    lines = await _agent_lines(redis, keys, observed)
    pattern = re.compile(goal.said or r".", re.IGNORECASE)
    said = next((line for line in lines if pattern.search(line)), None)

    if goal.kind == "transferred":
        record = await redis.hgetall(keys.call(observed.call_sid))
        if record.get("outcome") == "transferred" or observed.transfers:
            return Verdict(True, "the call was transferred (the app asked Twilio to redirect it)", booked)
        if observed.open_now is False and said:
            return Verdict(True, f"closed now, so no transfer; the agent said so: {said!r}", booked)
        return Verdict(False, "the call was not transferred", booked)

    if goal.kind == "dish":
        found = [
            t
            for t in observed.tools
            if t.get("name") == "menu_item"
            and isinstance(_json(t.get("output")), dict)
            and _json(t.get("output")).get("found")
        ]
        if not found:
            return Verdict(False, "the menu was not looked up (or the dish was not found)", booked)
        key = (found[0].get("arguments") or {}).get("key")
        if goal.expect.get("dish") and str(key).lower() != goal.expect["dish"].lower():
            return Verdict(False, f"the agent looked up {key!r}, not {goal.expect['dish']!r}", booked)
        if not said:
            return Verdict(False, f"the agent looked up {key!r} but did not describe it", booked)
        return Verdict(True, f"the agent described {key}: {said!r}", booked)

    if said:
        return Verdict(True, f"the agent said it: {said!r}", booked)
    return Verdict(False, f"no agent line matched /{goal.said}/", booked)
