"""Prometheus metrics of one app instance, served at ``GET /metrics`` (see docs/metrics.md).

Why a class and not module-level metrics: several apps run in one test process (and a benchmark may start
more), so each :class:`Metrics` owns its own ``CollectorRegistry``; the global default registry is never
used.

Two rules keep this cheap and safe:

* **Edges only.** Calls report a handful of moments (end of the caller's speech, the first agent audio after
  it, a ``clear``, a tool result, ``response.done``); nothing here runs per audio frame. Gauges that mirror
  state elsewhere (live calls, the Redis writer's queue) are read when Prometheus scrapes, by a collector.
* **Bounded labels.** Only ``flow``, ``outcome``, ``tool``, ``status``, ``model``, ``engine`` and ``kind``,
  whose values come from configuration or code — never call ids or phone numbers. Each label also has a cap
  on distinct values (:class:`BoundedLabel`): past it, or for a value that does not look like a name, the
  value becomes ``other``, so a bug or a misbehaving model cannot blow up the series count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "APPROVAL_BUCKETS",
    "CONTENT_TYPE_LATEST",
    "GREETING_BUCKETS",
    "INTERRUPTION_BUCKETS",
    "TOOL_BUCKETS",
    "TURN_BUCKETS",
    "BoundedLabel",
    "Metrics",
]

#: Caller's end of speech → first agent audio: good replies land at 0.3–1.5 s, a slow tool can take 10 s.
TURN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0)
#: Twilio ``start`` → first greeting audio: model connect + session set-up + first audio.
GREETING_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0)
#: Speech started → Twilio ``clear`` sent: normally well under a millisecond (docs/performance.md).
INTERRUPTION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: One tool call, from dispatch to result (lookups are milliseconds, HTTP tools up to their timeout).
TOOL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: An approval request → the operator's decision (or its expiry, by default after 120 s).
APPROVAL_BUCKETS = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)

#: A label value must look like a name: letters first, then letters, digits, ``. _ - :``.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._:-]{0,63}")
#: ... and not like a Twilio sid (CA…, AC…, MZ… + 32 hex digits).
_SID = re.compile(r"[A-Z]{2}[0-9a-f]{32}")


class BoundedLabel:
    """Maps label values to themselves until ``limit`` distinct ones were seen, then to ``other``.

    Values that are empty become ``none``; values that do not look like a name (a phone number, free text)
    or look like a Twilio sid become ``other``. Sans-I/O; a set lookup per use.
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return "none"
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or not _NAME.fullmatch(value) or _SID.fullmatch(value):
            return "other"
        self._seen.add(value)
        return value


class WriterCounters(Protocol):
    """What the collector reads from :class:`ivr.store.writer.ResilientWriter`."""

    def counters(self) -> dict[str, Any]: ...


class _StateCollector(Collector):
    """Gauges read at scrape time: live calls and the Redis writer's queue (nothing runs per frame)."""

    def __init__(self, live_calls: Callable[[], int], writer: Callable[[], WriterCounters | None]) -> None:
        self._live_calls = live_calls
        self._writer = writer

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check for name clashes up front

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ivr_live_calls", "Calls in progress on this instance.", value=self._live_calls()
        )
        writer = self._writer()
        if writer is None:
            return
        c = writer.counters()
        yield GaugeMetricFamily(
            "ivr_redis_writer_pending",
            "Redis writes queued or in flight (the backlog; grows while Redis is unreachable).",
            value=c.get("pending", 0),
        )
        yield GaugeMetricFamily(
            "ivr_redis_writer_redis_down",
            "1 while the Redis writer's last attempt failed (Redis unreachable), else 0.",
            value=1 if c.get("redis_down") else 0,
        )
        for name, key, doc in (
            ("ivr_redis_writer_written", "written", "Redis write operations written."),
            ("ivr_redis_writer_dropped", "dropped", "Redis writes dropped because the queue overflowed."),
            ("ivr_redis_writer_failed", "failed", "Redis writes Redis rejected (e.g. WRONGTYPE)."),
            ("ivr_redis_writer_retries", "retries", "Batches re-sent after Redis was unreachable."),
        ):
            yield CounterMetricFamily(name, doc, value=c.get(key, 0))


class Metrics:
    """The metrics of one app instance, in its own registry. Methods are cheap and never raise on labels."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.flow, self.engine, self.model = BoundedLabel(), BoundedLabel(10), BoundedLabel(50)
        self.outcome, self.tool, self.status = BoundedLabel(50), BoundedLabel(200), BoundedLabel(50)
        #: Tool outcomes (``ok`` or an error type) have their own values: they must not use up call outcomes'.
        self.tool_outcome = BoundedLabel(50)
        counter, histogram = self._counter, self._histogram
        self.calls_started = counter(
            "ivr_calls_started", "Calls started (Twilio start received).", "flow", "engine"
        )
        self.calls_ended = counter("ivr_calls_ended", "Calls ended, by outcome.", "flow", "outcome")
        self.turn_latency = histogram(
            "ivr_turn_latency_seconds",
            "Caller's end of speech (speech_stopped) → first agent audio of the reply sent to Twilio.",
            TURN_BUCKETS,
            "flow",
            "engine",
        )
        self.greeting = histogram(
            "ivr_greeting_first_audio_seconds",
            "Twilio start received → first agent audio (the greeting) sent to Twilio.",
            GREETING_BUCKETS,
            "flow",
            "engine",
        )
        self.interruption = histogram(
            "ivr_interruption_stop_seconds",
            "Caller's speech started while the agent spoke → Twilio clear sent (playback stopped).",
            INTERRUPTION_BUCKETS,
            "flow",
            "engine",
        )
        self.tool_duration = histogram(
            "ivr_tool_duration_seconds",
            "One tool call, dispatch → result, by tool and outcome (ok or the error type).",
            TOOL_BUCKETS,
            "tool",
            "outcome",
        )
        self.approval_wait = histogram(
            "ivr_approval_wait_seconds",
            "Approval requested → decided (approved, denied) or expired.",
            APPROVAL_BUCKETS,
            "tool",
            "status",
        )
        self.reconnects = counter(
            "ivr_model_reconnects", "Model sockets re-opened mid-call (with replay).", "flow", "model"
        )
        self.fallbacks = counter(
            "ivr_engine_fallbacks",
            "Calls switched to the offline engine because their model was unreachable.",
            "flow",
            "model",
        )
        self.tokens = counter(
            "ivr_model_tokens", "Model tokens used, by kind (input/output).", "model", "kind"
        )
        self.cost = counter(
            "ivr_model_cost_usd", "Estimated model cost in USD (ivr/call/pricing.py list prices).", "model"
        )

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, buckets: tuple[float, ...], *labels: str
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def bind(self, *, live_calls: Callable[[], int], writer: Callable[[], WriterCounters | None]) -> None:
        """Add the scrape-time gauges (live calls, Redis writer); call once, when the app is built."""
        self.registry.register(_StateCollector(live_calls, writer))

    # -- what calls report -----------------------------------------------------------------------------------

    def call_started(self, flow: str, engine: str) -> None:
        self.calls_started.labels(self.flow(flow), self.engine(engine)).inc()

    def call_ended(self, flow: str, outcome: str) -> None:
        self.calls_ended.labels(self.flow(flow), self.outcome(outcome)).inc()

    def turn(self, flow: str, engine: str, seconds: float) -> None:
        self.turn_latency.labels(self.flow(flow), self.engine(engine)).observe(seconds)

    def greeting_audio(self, flow: str, engine: str, seconds: float) -> None:
        self.greeting.labels(self.flow(flow), self.engine(engine)).observe(seconds)

    def interrupted(self, flow: str, engine: str, seconds: float) -> None:
        self.interruption.labels(self.flow(flow), self.engine(engine)).observe(seconds)

    def tool_done(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_duration.labels(self.tool(tool), self.tool_outcome(outcome)).observe(seconds)

    def approval_decided(self, tool: str, status: str, seconds: float) -> None:
        self.approval_wait.labels(self.tool(tool), self.status(status)).observe(max(seconds, 0.0))

    def model_reconnected(self, flow: str, model: str) -> None:
        self.reconnects.labels(self.flow(flow), self.model(model)).inc()

    def engine_fell_back(self, flow: str, model: str) -> None:
        self.fallbacks.labels(self.flow(flow), self.model(model)).inc()

    def usage(self, model: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        label = self.model(model)
        if input_tokens > 0:
            self.tokens.labels(label, "input").inc(input_tokens)
        if output_tokens > 0:
            self.tokens.labels(label, "output").inc(output_tokens)
        if cost_usd > 0:
            self.cost.labels(label).inc(cost_usd)

    # -- exposition ------------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text format of everything in this registry."""
        return generate_latest(self.registry)
