"""What the console shows, read from Redis alone: live calls, the fleet, history, one call, pending approvals.

Why Redis alone: any instance serves the console for the calls of every instance, and a call's page must
still work after the instance that ran it is gone (docs/redis.md is the contract these reads rely on). Every
read is pipelined — a page of N rows costs a fixed number of round trips, never N — and reads only the fields
it shows. Rows carry masked numbers only (:mod:`ivr.console.rows`).

The client must be created with ``decode_responses=True`` (as the app's is).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from ivr.approvals.store import ApprovalStore
from ivr.console.commands import FlowLookup
from ivr.console.decode import (
    CALLER_FIELDS,
    approval_row,
    event_row,
    instance_row,
    json_dict,
    shown_caller,
    to_float,
    tool_call,
    total_tokens,
    transcript_line,
    turns,
)
from ivr.console.history import MAX_PAGE, MAX_PER_PAGE, HistoryFilter, HistoryPage, scan_history
from ivr.console.rows import ApprovalRow, CallDetail, CallRow, InstanceRow, rows_to_csv, rows_to_json
from ivr.logs import mask_number
from ivr.store.codec import decode_hash
from ivr.store.indexes import FLEET_KEEP_S
from ivr.store.keys import KeySchema

__all__ = [
    "ConsoleQueries",
    "FlowLookup",
    "HistoryFilter",
    "HistoryPage",
    "rows_to_csv",
    "rows_to_json",
]

#: Record fields a call row is built from (one HMGET per row). ``caller`` is only a fallback for records
#: written before ``caller_masked`` existed, and is masked at once.
ROW_FIELDS = (
    "call_sid",
    "flow_id",
    "caller_masked",
    "caller",
    "called",
    "instance_id",
    "started_at",
    "ended_at",
    "duration_s",
    "outcome",
    "stage",
    "model",
    "engine",
    "cost_usd",
    "usage",
)
#: Candidates a history search examines at most, and transcripts a text search reads at most: each costs
#: about 40 µs, so a search that finds little stays near 200 ms (10,000 ended calls: benchmarks/).
SCAN_LIMIT = 5_000
TEXT_SCAN_LIMIT = 3_000
#: Transcript lines read from the end to find the caller's latest line for the approvals queue.
_TAIL_LINES = 30

Transcript = list[tuple[str, dict[str, str]]]


class ConsoleQueries:
    """The console's read side; one per app, sharing the app's Redis client."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySchema,
        approvals: ApprovalStore,
        *,
        flows: FlowLookup | None = None,
        clock: Callable[[], float] = time.time,
        scan_limit: int = SCAN_LIMIT,
        text_scan_limit: int = TEXT_SCAN_LIMIT,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.approvals = approvals
        self.flows = flows
        self._clock = clock
        self.scan_limit = scan_limit
        self.text_scan_limit = text_scan_limit

    # ------------------------------------------------------------------------------------------ rows
    def transfer_available(self, flow_id: str) -> bool | None:
        """Whether the flow has a human number to transfer to; None when this console has no flows."""
        if self.flows is None:
            return None
        flow = self.flows.get(flow_id)
        return flow is not None and getattr(flow, "transfer", None) is not None

    def _row(self, sid: str, values: Sequence[str | None], **extra: Any) -> CallRow | None:
        raw = dict(zip(ROW_FIELDS, values, strict=True))
        if all(v is None for v in values):
            return None
        usage = json_dict(raw["usage"])
        ended_at = to_float(raw["ended_at"])
        flow_id = raw["flow_id"] or ""
        return CallRow(
            call_sid=raw["call_sid"] or sid,
            flow_id=flow_id,
            caller=shown_caller(raw["caller_masked"], raw["caller"]),
            called=mask_number(raw["called"]),
            instance_id=raw["instance_id"] or "",
            started_at=to_float(raw["started_at"]),
            ended_at=ended_at,
            duration_s=to_float(raw["duration_s"]),
            outcome=raw["outcome"] or ("in-progress" if ended_at is None else ""),
            stage=raw["stage"] or "",
            model=raw["model"] or "",
            engine=raw["engine"] or "",
            cost_usd=to_float(raw["cost_usd"]),
            total_tokens=total_tokens(usage),
            live=ended_at is None,
            transfer_available=self.transfer_available(flow_id) if ended_at is None else None,
            **extra,
        )

    async def rows(self, sids: Sequence[str]) -> list[CallRow]:
        """Rows of the given calls (live or ended), in the given order, one pipelined round trip; calls
        whose record is gone are left out."""
        return await self._rows(sids)

    async def _rows(
        self, sids: Sequence[str], extras: Mapping[str, Mapping[str, Any]] | None = None
    ) -> list[CallRow]:
        if not sids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hmget(self.keys.call(sid), list(ROW_FIELDS))
            values = await pipe.execute()
        rows = (self._row(sid, v, **(extras or {}).get(sid, {})) for sid, v in zip(sids, values, strict=True))
        return [row for row in rows if row is not None]

    async def _transcripts(self, sids: Sequence[str]) -> list[Transcript]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.xrange(self.keys.transcript(sid))
            return list(await pipe.execute())

    async def _alive(self, instance_ids: set[str]) -> dict[str, bool]:
        ids = sorted(i for i in instance_ids if i)
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.exists(self.keys.instance(iid))
            found = await pipe.execute()
        return {iid: bool(n) for iid, n in zip(ids, found, strict=True)}

    async def caller(self, sid: str) -> str:
        """The call's caller as the console shows it (masked); ``-`` when the record has none."""
        return shown_caller(*await self.redis.hmget(self.keys.call(sid), list(CALLER_FIELDS)))

    # ------------------------------------------------------------------------------------------ live
    async def live_calls(self) -> list[CallRow]:
        """Calls in progress on every instance, newest first, each with its latest transcript line."""
        sids: list[str] = await self.redis.zrevrange(self.keys.active_calls(), 0, -1)
        if not sids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hmget(self.keys.call(sid), list(ROW_FIELDS))
                pipe.xrevrange(self.keys.transcript(sid), count=1)
            replies = await pipe.execute()
        rows = []
        for i, sid in enumerate(sids):
            last = replies[2 * i + 1]
            line = f"{last[0][1].get('role', '')}: {last[0][1].get('text', '')}" if last else None
            row = self._row(sid, replies[2 * i], last_line=line)
            if row is not None and row.live:  # an ended call whose index entry lingers is not shown
                rows.append(row)
        alive = await self._alive({r.instance_id for r in rows})
        return [_with(r, instance_alive=alive.get(r.instance_id, False)) for r in rows]

    # ------------------------------------------------------------------------------------------ fleet
    async def fleet(self) -> list[InstanceRow]:
        """Instances from their heartbeats — live ones first, then those gone in the last day — by id."""
        cutoff = self._clock() - FLEET_KEEP_S
        entries = await self.redis.zrangebyscore(self.keys.instances(), cutoff, "+inf", withscores=True)
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for iid, _ in entries:
                pipe.hgetall(self.keys.instance(iid))
                pipe.scard(self.keys.instance_calls(iid))
            replies = await pipe.execute()
        rows = [
            instance_row(iid, score, replies[2 * i], replies[2 * i + 1])
            for i, (iid, score) in enumerate(entries)
        ]
        return sorted(rows, key=lambda r: (not r.alive, r.instance_id))

    # ------------------------------------------------------------------------------------------ history
    async def history(
        self, f: HistoryFilter, *, page: int = 1, per_page: int = 50, with_transcript: bool = False
    ) -> HistoryPage:
        """Ended calls matching ``f``, newest end first (see :mod:`ivr.console.history` for how).

        ``with_transcript`` fills each row's ``transcript`` (for exports). Raises ValueError for a bad
        filter, page or page size, with the reason.
        """
        if not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
            raise ValueError(f"page must be 1 or more and at most {MAX_PAGE}, got {page!r}")
        if not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {per_page!r}")
        f = f.checked()
        lo: float | str = "-inf" if f.since is None else f.since
        hi: float | str = "+inf" if f.until is None else f.until
        indexed = f.index_filters(self.keys)
        offset = (page - 1) * per_page
        simple = len(indexed) <= 1 and f.caller_digits is None and f.text is None
        candidates = [key for _, key in indexed.values()]
        if f.caller_digits is not None:  # the calls whose number ends in the same two digits
            candidates.append(self.keys.recent_calls_by_caller(f.caller_digits[-2:]))
        candidates = candidates or [self.keys.recent_calls()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in candidates:
                pipe.zcount(key, lo, hi)
            if simple:
                pipe.zrevrangebyscore(candidates[0], hi, lo, start=offset, num=per_page)
            replies = await pipe.execute()
        counts = replies[: len(candidates)]
        if simple:
            total = counts[0]
            sids = replies[-1]
            rows = await self._rows(sids)
            if with_transcript:
                rows = _with_transcripts(rows, dict(zip(sids, await self._transcripts(sids), strict=True)))
            return HistoryPage(rows, total, page, per_page, has_next=offset + len(sids) < total)

        best = min(range(len(candidates)), key=lambda i: counts[i])
        checks = {field: value for field, (value, key) in indexed.items() if key != candidates[best]}
        found = await scan_history(
            self.redis,
            self.keys,
            candidates[best],
            lo,
            hi,
            checks=checks,
            caller_digits=f.caller_digits,
            text=f.text,
            offset=offset,
            want=per_page + 1,
            scan_limit=self.scan_limit,
            text_scan_limit=self.text_scan_limit,
            read_transcripts=self._transcripts,
        )
        picked = found.picked[:per_page]
        sids = [sid for sid, _ in picked]
        rows = await self._rows(sids, {sid: {"matched_line": line} for sid, line in picked if line})
        if with_transcript:
            rows = _with_transcripts(rows, dict(zip(sids, await self._transcripts(sids), strict=True)))
        complete = found.exhausted and len(found.picked) <= per_page
        return HistoryPage(
            rows,
            total=found.matches if complete else None,
            page=page,
            per_page=per_page,
            has_next=len(found.picked) > per_page,
            scanned=found.scanned,
            scanned_all=not found.capped,
        )

    # ------------------------------------------------------------------------------------------ one call
    async def call(self, sid: str) -> CallDetail | None:
        """Everything about one call (live or ended), from Redis alone; None when Redis has no such call."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.call(sid))
            pipe.xrange(self.keys.transcript(sid))
            pipe.xrange(self.keys.call_events(sid))
            raw, transcript, events = await pipe.execute()
        if not raw:
            return None
        record = decode_hash(raw)
        row = self._row(sid, [raw.get(name) for name in ROW_FIELDS])
        assert row is not None
        approvals, alive = await asyncio.gather(self.approvals.for_call(sid), self._alive({row.instance_id}))
        event_rows = [event_row(entry_id, fields) for entry_id, fields in events]
        return CallDetail(
            call=_with(row, instance_alive=alive.get(row.instance_id, False)),
            dialect=str(record.get("dialect") or ""),
            audio_mode=str(record.get("audio_mode") or ""),
            twilio_status=status if isinstance(status := record.get("twilio_status"), str) else None,
            usage={k: v for k, v in json_dict(record.get("usage")).items() if isinstance(v, int | float)},
            counters={k: v for k, v in json_dict(record.get("counters")).items() if isinstance(v, int)},
            greeting_ms=to_float(record.get("greeting_ms")),
            turns=turns(record.get("turns")),
            transcript=[transcript_line(entry_id, fields) for entry_id, fields in transcript],
            events=event_rows,
            tool_calls=[tool_call(e) for e in event_rows if e.type == "tool.called"],
            approvals=[approval_row(a, caller=row.caller, last_line=None) for a in approvals],
        )

    # ------------------------------------------------------------------------------------------ approvals
    async def pending_approvals(self) -> list[ApprovalRow]:
        """Undecided approvals, soonest deadline first, each with its call's flow, masked caller and the
        caller's latest line."""
        pending = await self.approvals.pending()
        sids = sorted({a.call_sid for a in pending})
        context: dict[str, tuple[str, str | None]] = {}
        if sids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hmget(self.keys.call(sid), list(CALLER_FIELDS))
                    pipe.xrevrange(self.keys.transcript(sid), count=_TAIL_LINES)
                replies = await pipe.execute()
            for i, sid in enumerate(sids):
                masked, caller = replies[2 * i]
                last = next(
                    (f.get("text", "") for _, f in replies[2 * i + 1] if f.get("role") in ("caller", "user")),
                    None,
                )
                context[sid] = (shown_caller(masked, caller), last)
        return [approval_row(a, *context.get(a.call_sid, ("-", None))) for a in pending]


# ------------------------------------------------------------------------------------------ helpers


def _with(row: CallRow, **changes: Any) -> CallRow:
    return replace(row, **changes)


def _with_transcripts(rows: list[CallRow], texts: Mapping[str, Transcript]) -> list[CallRow]:
    return [
        _with(
            row,
            transcript="\n".join(
                f"{f.get('role', '')}: {f.get('text', '')}" for _, f in texts.get(row.call_sid, [])
            ),
        )
        for row in rows
    ]
