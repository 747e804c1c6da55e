"""Live calls in this process: their records, their event feeds, and draining on shutdown.

Each call has an append-only list of events (``call.started``, ``transcript``, ``tool.called``, ``barge_in``,
``dtmf``, ``error``, ``call.ended`` …) that subscribers (the operator event stream, ``ivr call``'s live
transcript) can replay from the start and then follow. Ended calls are kept for a while, bounded in number.

Every event passes through :meth:`CallFeed.emit`, which applies the call's redaction rules (the flow's
``redact:``, :mod:`ivr.redaction`) before the event is kept, followed or handed to the sink (Redis): nothing
downstream ever sees the caller data a flow asks to mask.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..redaction import NOTHING, Redactor


@dataclass
class CallRecord:
    """Everything we know about one call; finalised when the call ends."""

    call_sid: str
    account_sid: str = ""
    stream_sid: str = ""
    flow_id: str = ""
    caller: str = ""
    called: str = ""
    model: str = ""
    dialect: str = ""
    audio_mode: str = ""
    #: Who answered: realtime, chat or local (a fallback changes it mid-call; see the model.fallback event).
    engine: str = ""
    stage: str = ""
    cost_usd: float | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    outcome: str = "in-progress"
    twilio_status: str | None = None
    duration_s: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    #: Twilio start → first greeting audio sent, in ms (None until measured; see ivr/call/turns.py).
    greeting_ms: float | None = None
    #: One entry per agent reply: ``{"n", "latency_ms", "at"}`` — caller's end of speech → first reply audio.
    turns: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: The flow's redaction rules (set by the call session): tool calls are shown through them.
    redactor: Redactor = field(default=NOTHING, repr=False, compare=False)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        for key in ("total_tokens", "input_tokens", "output_tokens"):
            value = usage.get(key)
            if isinstance(value, int):
                self.usage[key] = self.usage.get(key, 0) + value
        for side in ("input_token_details", "output_token_details"):
            details = usage.get(side)
            if isinstance(details, dict):
                prefix = side.split("_")[0]
                for key in ("audio_tokens", "text_tokens", "cached_tokens"):
                    value = details.get(key)
                    if isinstance(value, int):
                        name = f"{prefix}_{key}"
                        self.usage[name] = self.usage.get(name, 0) + value
        self.usage["responses"] = self.usage.get("responses", 0) + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("redactor")
        data["tool_calls"] = self.redactor.value(data["tool_calls"])  # arguments may hold caller data
        return data

    def summary(self) -> dict[str, Any]:
        """The flat fields of the Redis call hash (transcript and tool calls live in their own streams)."""
        data = asdict(self)
        data.pop("redactor")
        data.pop("transcript")
        data.pop("tool_calls")
        return data


EventSink = Callable[[dict[str, Any]], None]
#: Events after which this instance says nothing more of a call: it ended, or another instance carries it on
#: (its events continue in Redis, written there).
LAST_EVENTS = frozenset({"call.ended", "call.handed_over"})
#: Events one call keeps in memory (its Redis stream keeps as many: ``CALL_EVENTS_MAXLEN``); a long call's
#: memory stays bounded.
MAX_FEED_EVENTS = 10_000


class CallFeed:
    """The event list of one call, with followers; every event also goes to ``sink`` (the Redis store)."""

    def __init__(
        self, record: CallRecord, sink: EventSink | None = None, redactor: Redactor = NOTHING
    ) -> None:
        self.record = record
        self._sink = sink
        #: Applied to every event before anyone sees it (set by the call session from its flow).
        self.redactor = redactor
        #: The latest :data:`MAX_FEED_EVENTS` events (older ones are in the call's Redis stream).
        self.events: list[dict[str, Any]] = []
        #: How many events were dropped from the front of :attr:`events` (a follower's position is absolute).
        self.dropped = 0
        self._changed = asyncio.Event()
        self.ended = False

    def emit(self, type_: str, **data: Any) -> dict[str, Any]:
        event = {"type": type_, "ts": round(time.time(), 3), "call_sid": self.record.call_sid, **data}
        if self.redactor.active:
            event = self.redactor.event(event)
        self.events.append(event)
        if len(self.events) > MAX_FEED_EVENTS:
            drop = len(self.events) - MAX_FEED_EVENTS // 2  # in halves: amortised, not one shift per event
            del self.events[:drop]
            self.dropped += drop
        if self._sink is not None:
            self._sink(event)
        if type_ in LAST_EVENTS:
            self.ended = True
        self._changed.set()
        self._changed = asyncio.Event()
        return event

    @property
    def handed_over(self) -> bool:
        """This instance let another carry the call on: its later events are in Redis only."""
        return self.ended and bool(self.events) and self.events[-1]["type"] == "call.handed_over"

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Replay every event so far (the latest :data:`MAX_FEED_EVENTS`), then yield new ones until
        ``call.ended`` (or ``call.handed_over``: another instance carries the call on). A follower too slow
        to keep up skips the events dropped meanwhile."""
        index = 0  # absolute: events[index - self.dropped]
        while True:
            while index < self.dropped + len(self.events):
                index = max(index, self.dropped)
                event = self.events[index - self.dropped]
                index += 1
                yield event
                if event["type"] in LAST_EVENTS:
                    return
            if self.ended:
                return
            await self._changed.wait()


class CallRegistry:
    """Calls owned by this process (live ones) plus a bounded history of ended ones."""

    def __init__(self, keep_ended: int = 500) -> None:
        self._feeds: OrderedDict[str, CallFeed] = OrderedDict()
        self._keep_ended = keep_ended
        self.live: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def open(self, record: CallRecord, sink: EventSink | None = None) -> CallFeed:
        feed = self._feeds.get(record.call_sid)
        if feed is None or feed.ended:
            feed = CallFeed(record, sink)
            self._feeds[record.call_sid] = feed
        self._feeds.move_to_end(record.call_sid)
        self.live.add(record.call_sid)
        self._idle.clear()
        self._trim()
        return feed

    def close(self, call_sid: str) -> None:
        self.live.discard(call_sid)
        if not self.live:
            self._idle.set()

    def get(self, call_sid: str) -> CallFeed | None:
        return self._feeds.get(call_sid)

    def _trim(self) -> None:
        while len(self._feeds) > self._keep_ended + len(self.live):
            for sid in self._feeds:
                if sid not in self.live:
                    del self._feeds[sid]
                    break
            else:
                return

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is live; False if the timeout passed first."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
