"""What one call reports about itself: latency per turn, interruptions, tools, usage — to every consumer.

Why one place: the same few moments feed three consumers that must agree — Prometheus (:mod:`ivr.metrics`,
optional: unit tests build sessions without it), the call record (``turns``, ``greeting_ms``, ``usage``,
``cost_usd``) and the call's event feed (``turn.latency``, ``usage.updated``), which the Redis sink turns into
call-hash updates and stream entries (docs/redis.md). :class:`~ivr.call.session.CallSession` calls these
methods at the edges only; the one check on the audio path is ``meter.timer.waiting``, and the first audio
frame of a reply only reads the clock: the figure is recorded and reported just after that frame
(``loop.call_soon``), so no Redis or Prometheus work runs in the frame's path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..metrics import Metrics
from ..tools.registry import ToolOutcome
from .pricing import estimate_cost_usd
from .registry import CallFeed, CallRecord
from .turns import Measured, TurnTimer

#: Per-turn entries kept in the call record (written to its Redis hash when the call ends); the oldest go
#: first on very long calls.
MAX_TURNS = 500
#: The latest turns written to the call hash after each reply, while the call runs (docs/redis.md).
LIVE_TURNS = 20


class CallMeter:
    """Measurements of one call. ``engine`` follows the session (a fallback changes it)."""

    def __init__(
        self,
        *,
        metrics: Metrics | None,
        record: CallRecord,
        feed: CallFeed,
        flow_id: str,
        model: str,
        engine: str,
        started_at: float,
        tool_names: frozenset[str],
    ) -> None:
        self.metrics = metrics
        self.record = record
        self.feed = feed
        self.flow_id = flow_id
        self.model = model
        self.engine = engine
        self.timer = TurnTimer(started_at)
        self._tool_names = tool_names
        self._cost = 0.0
        self._unreported: list[Measured] = []
        self._report_soon: asyncio.Handle | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def call_started(self) -> None:
        if self.metrics is not None:
            self.metrics.call_started(self.flow_id, self.engine)

    def call_ended(self, outcome: str) -> None:
        self.flush()  # a reply timed in the call's last moments goes out before call.ended
        if self.metrics is not None:
            self.metrics.call_ended(self.flow_id, outcome)

    # -- turns -----------------------------------------------------------------------------------------------

    def speech_started(self) -> None:
        self.timer.speech_started()

    def speech_stopped(self) -> None:
        self.timer.speech_stopped(time.perf_counter())

    def audio_sent(self) -> None:
        """Agent audio went to Twilio while the timer waits for it: the greeting or the reply time is taken
        now, and recorded and reported just after the frame (:meth:`flush`, with ``loop.call_soon``)."""
        measured = self.timer.audio_sent(time.perf_counter())
        if measured is None:
            return
        self._unreported.append(measured)
        if self._report_soon is None:
            try:
                self._report_soon = asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop (a synchronous caller): report at once
                self.flush()

    def flush(self) -> None:
        """Record and report the measurements taken since the last flush."""
        if self._report_soon is not None:
            self._report_soon.cancel()
            self._report_soon = None
        unreported, self._unreported = self._unreported, []
        for measured in unreported:
            self._report(measured)

    def _report(self, measured: Measured) -> None:
        if measured.kind == "greeting":
            self.record.greeting_ms = measured.ms
            if self.metrics is not None:
                self.metrics.greeting_audio(self.flow_id, self.engine, measured.seconds)
        else:
            turns = self.record.turns
            turns.append({"n": measured.n, "latency_ms": measured.ms, "at": round(time.time(), 3)})
            if len(turns) > MAX_TURNS:
                del turns[: len(turns) - MAX_TURNS]
            if self.metrics is not None:
                self.metrics.turn(self.flow_id, self.engine, measured.seconds)
        self.feed.emit("turn.latency", kind=measured.kind, turn=measured.n, latency_ms=measured.ms)

    def interrupted(self, seconds: float) -> None:
        """Speech started → Twilio ``clear`` sent took ``seconds``."""
        if self.metrics is not None:
            self.metrics.interrupted(self.flow_id, self.engine, seconds)

    # -- tools and approvals ---------------------------------------------------------------------------------

    def tool(self, outcome: ToolOutcome) -> None:
        if self.metrics is None:
            return
        name = outcome.name if outcome.name in self._tool_names else "unknown"
        result = "ok" if outcome.ok else (outcome.error_type or "error")
        self.metrics.tool_done(name, result, outcome.duration_ms / 1000.0)

    def approval(self, tool: str, status: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.approval_decided(tool if tool in self._tool_names else "unknown", status, seconds)

    # -- the model -------------------------------------------------------------------------------------------

    def reconnected(self) -> None:
        if self.metrics is not None:
            self.metrics.model_reconnected(self.flow_id, self.model)

    def fell_back(self, engine: str) -> None:
        if self.metrics is not None:
            self.metrics.engine_fell_back(self.flow_id, self.model)
        self.engine = engine

    def response_done(self, usage: dict[str, Any] | None) -> None:
        """After ``record.add_usage``: token and cost counters, and the running totals for the call hash."""
        if not usage:
            return
        tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
        tokens_in = tokens_in if isinstance(tokens_in, int) else 0
        tokens_out = tokens_out if isinstance(tokens_out, int) else 0
        if tokens_in <= 0 and tokens_out <= 0:
            return  # nothing changed (the offline engine reports zero usage)
        cost = estimate_cost_usd(self.model, self.record.usage)
        self.record.cost_usd = cost
        delta = (cost - self._cost) if cost is not None else 0.0
        self._cost = cost if cost is not None else self._cost
        if self.metrics is not None:
            self.metrics.usage(self.model, tokens_in, tokens_out, max(delta, 0.0))
        self.feed.emit("usage.updated", usage=dict(self.record.usage), cost_usd=cost)
