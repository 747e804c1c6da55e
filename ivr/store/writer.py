"""Fire-and-forget Redis writes that survive a Redis outage: an ordered queue drained by one background task.

Why: a phone call must never fail or stall because Redis is slow or down. Callers hand over a write operation
(a function that adds commands to a pipeline, plus a kind for logs) and return at once. One task sends the
queue in order, in pipelined batches; when Redis is unreachable it keeps the batch and retries with backoff
(0.1 s doubling to 2 s) until Redis answers again, then flushes everything in the original order. Memory is
bounded: beyond ``max_pending`` operations the oldest queued ones are dropped, counted and logged at ERROR
with their kinds. Nothing is lost silently: every operation ends up written, dropped, failed (a command Redis
rejected, e.g. WRONGTYPE) or abandoned at shutdown, and each outcome has a counter and a log line.

Exactly once, in order: a batch may be sent more than once — the connection broke after Redis applied it
(the reply was lost), or Redis refused part of it during a failover (READONLY from a demoted primary,
MASTERDOWN, LOADING, BUSY, TRYAGAIN… arrive as per-command results inside the pipeline). Such refusals
are not failures: the operations from the first refused one on go back to the front of the queue and are
retried, in order, with the same backoff as an outage; idle pooled connections are dropped so the next
attempt reconnects (the address may point at the new primary by now). Operations must therefore be
idempotent when re-sent: hash and set writes are; stream appends carry explicit ids, and XADD's refusal of
an id that is already there counts as a duplicate, i.e. already written (see :mod:`ivr.store.store`).

On Redis Cluster the batch is a ``ClusterPipeline``: its commands are grouped by node and sent to the nodes
side by side, so a batch is in order per node (one call's keys, or the global keys, are on one node), not
across nodes. A node that fails does not fail the batch: ``execute(raise_on_error=False)`` returns a
``ConnectionError`` / ``TimeoutError`` (or ``MOVED``/``ASK``/``CLUSTERDOWN``/``TRYAGAIN`` after a reshard or
a failover) *object* as the result of each of its commands while the other nodes' commands are applied.
Those are retried like the refusals above (from the first operation with one, in order; what was applied
after it is re-sent, harmlessly). ``ClusterPipeline`` has no ``command_stack`` to take back the commands of an
operation whose ``apply`` raised half-way, so there every operation is staged on a recorder first and
replayed onto the pipeline only whole.

The bookkeeping (:class:`WriteQueue`) is synchronous and clock-free; :class:`ResilientWriter` is the async
shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "RETRYABLE_REFUSALS",
    "ResilientWriter",
    "WriteOp",
    "WriteQueue",
    "is_duplicate_stream_id",
    "is_node_failure",
    "is_retryable_refusal",
]

log = logging.getLogger(__name__)

#: Errors meaning "Redis is not available right now": keep the batch and retry. BusyLoadingError and
#: AuthenticationError are ConnectionError subclasses; ReadOnlyError is a replica during a failover.
#: On Redis Cluster also a cluster without quorum or a slot no node serves (the whole batch could not go).
RETRYABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    TimeoutError,
    OSError,
    ClusterError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)

#: Error codes of per-command refusals that mean "not writable right now" rather than "this command is
#: wrong": the operation is retried, not counted as failed. READONLY: a replica (a demoted primary during a
#: failover); MASTERDOWN: a replica whose link to its primary is down; LOADING: loading its dataset; BUSY: a
#: script is running; TRYAGAIN / CLUSTERDOWN: a cluster resharding or without quorum; NOREPLICAS: fewer
#: replicas than min-replicas-to-write; OOM: maxmemory reached (writes resume once memory is freed — until
#: then the queue bound applies, as in an outage).
RETRYABLE_REFUSALS = frozenset(
    {"READONLY", "MASTERDOWN", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "OOM"}
)
_REFUSAL_CLASSES: tuple[type[BaseException], ...] = (
    ReadOnlyError,
    BusyLoadingError,
    ClusterDownError,  # MasterDownError too
    TryAgainError,
    OutOfMemoryError,
)

_BACKOFF_START = 0.1
_BACKOFF_MAX = 2.0


def is_duplicate_stream_id(error: BaseException) -> bool:
    """True for XADD's refusal of an explicit id that is not above the stream's top: the entry is already
    there (a batch re-sent after a connection broke half-way), so the write counts as done."""
    return isinstance(error, ResponseError) and "equal or smaller than the target stream top" in str(error)


def is_retryable_refusal(error: BaseException) -> bool:
    """True for a command result meaning Redis cannot take writes right now (:data:`RETRYABLE_REFUSALS`)."""
    if isinstance(error, _REFUSAL_CLASSES):
        return True
    if not isinstance(error, ResponseError):
        return False
    code = getattr(error, "status_code", None) or str(error).split(" ", 1)[0]
    return code in RETRYABLE_REFUSALS


def is_node_failure(error: BaseException) -> bool:
    """True for a command *result* saying its node could not be reached or no longer serves the key (Redis
    Cluster: ``ClusterPipeline`` returns these per command when one node fails, instead of raising): the
    write was not applied (or its reply was lost) and must be sent again."""
    return isinstance(error, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError | AskError)


def _describe(error: BaseException) -> str:
    code = getattr(error, "status_code", None)
    text = str(error)
    if code and not text.startswith(code):
        text = f"{code} {text}"  # the client strips the code from errors it maps to a class
    return f"{type(error).__name__}: {text}"


class _Recorder:
    """Stands in for a pipeline while an operation's ``apply`` runs: records each command method called (every
    pipeline command returns the pipeline, so chaining works) to :meth:`replay` onto the real pipeline once
    ``apply`` has finished. Why: a ``ClusterPipeline`` cannot take back the commands of an ``apply`` that
    raised half-way (it has no ``command_stack``)."""

    def __init__(self) -> None:
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., _Recorder]:
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> _Recorder:
            self._calls.append((name, args, kwargs))
            return self

        return record

    def replay(self, pipe: Any) -> None:
        for name, args, kwargs in self._calls:
            getattr(pipe, name)(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One queued write: ``apply(pipe)`` adds its commands; ``kind`` names it in logs and counters."""

    kind: str
    apply: Callable[[Pipeline], Any]


def _kinds(ops: Counter[str]) -> str:
    return ", ".join(f"{kind}={n}" for kind, n in ops.most_common()) or "none"


class WriteQueue:
    """Sans-I/O core: the ordered queue, the in-flight batch, the bound and the counters.

    An operation is *pending* from :meth:`submit` until :meth:`done` (or until it is dropped). A batch taken
    with :meth:`take` is in flight; :meth:`give_back` returns it to the front after a failed attempt.
    """

    def __init__(self, max_pending: int = 200_000, batch_size: int = 500) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.max_pending = max_pending
        self.batch_size = min(batch_size, max_pending)
        self._queue: deque[WriteOp] = deque()
        self._inflight: list[WriteOp] = []
        self.queued = 0
        self.written = 0
        self.retries = 0
        self.dropped = 0
        self.failed = 0
        self.duplicates = 0
        self.abandoned = 0
        self.last_error: str | None = None
        #: Drops not yet reported in a log line, by kind.
        self.unreported_drops: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._inflight)

    @property
    def idle(self) -> bool:
        return self.pending == 0

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def submit(self, op: WriteOp) -> None:
        self._queue.append(op)
        self.queued += 1
        self._enforce_bound()

    def take(self) -> list[WriteOp]:
        """Move up to ``batch_size`` of the oldest operations in flight (empty list if nothing is queued)."""
        if self._inflight:
            raise RuntimeError("a batch is already in flight")
        n = min(self.batch_size, len(self._queue))
        self._inflight = [self._queue.popleft() for _ in range(n)]
        return list(self._inflight)

    def give_back(self, error: str) -> None:
        """The in-flight batch could not be sent: it goes back to the front, in order, to be retried."""
        self.retries += 1
        self.last_error = error
        self._queue.extendleft(reversed(self._inflight))
        self._inflight = []
        self._enforce_bound()

    def done(
        self, *, written: int, failed: int = 0, duplicates: int = 0, retry: int = 0, error: str | None = None
    ) -> None:
        """The in-flight batch was sent; each of its operations is written, a duplicate, or failed — except
        the last ``retry`` ones, which Redis refused for now (``error`` says how): they go back to the front
        of the queue, in order, to be sent again."""
        outcomes = written + failed + duplicates + retry
        if outcomes != len(self._inflight) or min(written, failed, duplicates, retry) < 0:
            raise ValueError(f"outcomes for {outcomes} operations, but {len(self._inflight)} in flight")
        self.written += written + duplicates
        self.duplicates += duplicates
        self.failed += failed
        if retry:
            back = self._inflight[len(self._inflight) - retry :]
            self._inflight = []
            self.retries += 1
            self.last_error = error
            self._queue.extendleft(reversed(back))
            self._enforce_bound()
        self._inflight = []

    def abandon(self) -> Counter[str]:
        """Give up on everything still queued (shutdown); returns the kinds abandoned."""
        left = Counter(op.kind for op in (*self._inflight, *self._queue))
        self.abandoned += sum(left.values())
        self._queue.clear()
        self._inflight = []
        return left

    def take_unreported_drops(self) -> Counter[str]:
        drops, self.unreported_drops = self.unreported_drops, Counter()
        return drops

    def counters(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "written": self.written,
            "pending": self.pending,
            "retries": self.retries,
            "dropped": self.dropped,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "abandoned": self.abandoned,
            "last_error": self.last_error,
        }

    def _enforce_bound(self) -> None:
        # The in-flight batch is being sent and cannot be recalled, so the oldest *queued* operations go.
        while self.pending > self.max_pending and self._queue:
            op = self._queue.popleft()
            self.dropped += 1
            self.unreported_drops[op.kind] += 1


class ResilientWriter:
    """Ordered, batched, retrying writes to one Redis; :meth:`submit` never raises and never blocks."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_pending: int = 200_000,
        batch_size: int = 500,
        drop_log_interval_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._core = WriteQueue(max_pending=max_pending, batch_size=batch_size)
        self._drop_log_interval_s = drop_log_interval_s
        self._last_drop_log = float("-inf")
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False
        self._down_since: float | None = None
        # Replaced after every attempt to send a batch; lets observers await progress without polling.
        self._progress = asyncio.Event()

    # -- counters ------------------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._core.queued

    @property
    def written(self) -> int:
        return self._core.written

    @property
    def retries(self) -> int:
        return self._core.retries

    @property
    def dropped(self) -> int:
        return self._core.dropped

    @property
    def failed(self) -> int:
        return self._core.failed

    @property
    def duplicates(self) -> int:
        return self._core.duplicates

    @property
    def abandoned(self) -> int:
        return self._core.abandoned

    @property
    def pending(self) -> int:
        return self._core.pending

    @property
    def last_error(self) -> str | None:
        return self._core.last_error

    @property
    def max_pending(self) -> int:
        return self._core.max_pending

    @property
    def redis_down(self) -> bool:
        """True between a failed attempt and the next successful one."""
        return self._down_since is not None

    def counters(self) -> dict[str, Any]:
        """All counters, for health endpoints and logs."""
        return {**self._core.counters(), "redis_down": self.redis_down}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- API -----------------------------------------------------------------------------------------------
    def submit(self, kind: str, apply: Callable[[Pipeline], Any]) -> None:
        """Queue a write; returns at once. Never raises: a call must not fail because Redis is down."""
        try:
            if self._closed:
                self._core.abandoned += 1
                log.error("Redis write %r submitted after the writer stopped; it is not written", kind)
                return
            self._core.submit(WriteOp(kind, apply))
            self._idle.clear()
            self._wake.set()
            if self._core.unreported_drops:
                self._report_drops(force=False)
        except Exception:  # pragma: no cover - defensive: bookkeeping bugs must not reach the call
            log.exception("could not queue a Redis write (%s)", kind)

    def start(self) -> None:
        """Start the drain task on the running loop (idempotent)."""
        if self.running:
            return
        self._closed = False
        self._stop.clear()
        self._task = asyncio.create_task(self._drain(), name="redis-writer")

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued write has been sent; False if ``timeout`` passed first (or not started)."""
        if self._core.idle:
            return True
        if not self.running:
            return False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_until(self, predicate: Callable[[ResilientWriter], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds, re-checking after every attempt to send a batch (for health
        checks and tests, e.g. ``wait_until(lambda w: w.retries > 0, 5)``); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return predicate(self)
        return True

    async def stop(self, timeout: float = 5.0) -> bool:
        """Flush for up to ``timeout`` seconds, then stop; logs (at ERROR) and counts whatever was left.

        Returns True if everything was written.
        """
        flushed = await self.flush(timeout)
        self._closed = True
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._report_drops(force=True)
        left = self._core.abandon()
        if left:
            log.error(
                "Redis writer stopped with %d write(s) not written (%s); last error: %s",
                sum(left.values()),
                _kinds(left),
                self._core.last_error,
            )
        self._idle.set()
        return flushed and not left

    # -- drain task ----------------------------------------------------------------------------------------
    async def _drain(self) -> None:
        backoff = _BACKOFF_START
        while not self._stop.is_set():
            if self._core.idle:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._core.take()
            try:
                results, spans = await self._send(batch)
            except RETRYABLE as exc:
                self._on_failure(exc, batch)
                self._signal_progress()
                await self._pause(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            except Exception as exc:  # an unexpected client error: keep the data, retry, make it visible
                log.exception("unexpected error writing %d operation(s) to Redis; will retry", len(batch))
                self._on_failure(exc, batch)
                self._signal_progress()
                await self._pause(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            refused: str | None = None
            try:
                refused = self._on_success(batch, results, spans)
            except Exception:  # pragma: no cover - a bookkeeping bug must not kill the drain task
                log.exception("could not account for %d Redis write(s) that were sent", len(batch))
                if self._core.in_flight:
                    self._core.done(written=self._core.in_flight)
            if self._core.idle:
                self._idle.set()
            self._signal_progress()
            if refused is None:
                backoff = _BACKOFF_START
                continue
            await self._reconnect()
            await self._pause(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _send(self, batch: list[WriteOp]) -> tuple[list[Any], list[int | None]]:
        """Send one batch; ``spans[i]`` is how many commands op i added (None if its ``apply`` raised)."""
        spans: list[int | None] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            staged = not hasattr(pipe, "command_stack")  # a ClusterPipeline: stage each op, replay it whole
            for op in batch:
                before = len(pipe)
                try:
                    if staged:
                        recorder = _Recorder()
                        op.apply(recorder)  # type: ignore[arg-type]  # duck-typed: records the pipeline calls
                        recorder.replay(pipe)
                    else:
                        op.apply(pipe)
                except Exception:
                    # A bug in the operation itself: retrying cannot help. Discard its partial commands.
                    log.exception("Redis write %r could not be prepared; it is not written", op.kind)
                    if not staged:
                        del pipe.command_stack[before:]
                    spans.append(None)
                    continue
                spans.append(len(pipe) - before)
            results = await pipe.execute(raise_on_error=False) if len(pipe) else []
        return results, spans

    def _on_failure(self, exc: BaseException, batch: list[WriteOp]) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self._core.give_back(error)
        self._mark_down(error, "Redis unreachable")
        if self._core.unreported_drops:
            self._report_drops(force=False)

    def _mark_down(self, error: str, what: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("%s (%s); %d write(s) pending, retrying in the background", what, error, self.pending)

    async def _reconnect(self) -> None:
        """Close the idle pooled connections so the next attempt connects afresh: after a failover the address
        may lead to the new primary, while a kept connection still talks to the demoted one."""
        pool = getattr(self._redis, "connection_pool", None)
        if pool is None:
            return
        try:
            await pool.disconnect(inuse_connections=False)
        except Exception as exc:  # closing a broken socket may fail; the next attempt reconnects anyway
            log.debug("closing idle Redis connections failed: %s", exc)

    def _on_success(self, batch: list[WriteOp], results: list[Any], spans: list[int | None]) -> str | None:
        """Account for a batch Redis answered. Returns None when every operation is settled, else what Redis
        answered to the first operation it refused for now (that one and all after it are queued again)."""
        written = failed = duplicates = 0
        index = 0
        refused: str | None = None
        for position, (op, span) in enumerate(zip(batch, spans, strict=True)):
            if span is None:
                failed += 1
                continue
            errors = [r for r in results[index : index + span] if isinstance(r, Exception)]
            index += span
            refusals = [e for e in errors if is_retryable_refusal(e) or is_node_failure(e)]
            if refusals:
                # Retry from here, in order. What follows may have been applied (Redis went on with the rest
                # of the pipeline): re-sending it is harmless, operations being idempotent.
                refused = _describe(refusals[0])
                self._core.done(
                    written=written,
                    failed=failed,
                    duplicates=duplicates,
                    retry=len(batch) - position,
                    error=refused,
                )
                self._mark_down(refused, f"Redis refused write {op.kind!r} for now")
                if self._core.unreported_drops:
                    self._report_drops(force=False)
                return refused
            real = [e for e in errors if not is_duplicate_stream_id(e)]
            if real:
                failed += 1
                log.error("Redis rejected write %r: %s", op.kind, "; ".join(str(e) for e in real))
            elif errors:
                duplicates += 1
            else:
                written += 1
        self._core.done(written=written, failed=failed, duplicates=duplicates)
        if self._core.unreported_drops:
            self._report_drops(force=True)
        if self._down_since is not None:
            log.warning(
                "Redis reachable again after %.1f s; %d write(s) still pending",
                time.monotonic() - self._down_since,
                self.pending,
            )
            self._down_since = None
        return None

    async def _pause(self, seconds: float) -> None:
        """Back off before the next attempt, waking early if the writer is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _report_drops(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_drop_log < self._drop_log_interval_s:
            return
        drops = self._core.take_unreported_drops()
        if not drops:
            return
        self._last_drop_log = now
        log.error(
            "Redis write queue full (max_pending=%d): dropped the %d oldest write(s) (%s); "
            "%d dropped in total; last error: %s",
            self._core.max_pending,
            sum(drops.values()),
            _kinds(drops),
            self._core.dropped,
            self._core.last_error,
        )
