"""Which speech recogniser the offline engine uses, one per process, shared by every call through a queue.

``IVR_ASR`` picks the engine (:func:`ivr.settings.asr_from_env`): ``whisper`` (default; Whisper base,
:mod:`ivr.speech.whisper`) or ``pocketsphinx`` (the light engine, :mod:`ivr.speech.asr`, with a language
model built from the flow's phrases). When Whisper cannot load — its packages are missing, a model file is
missing or fails its SHA-256 check — the recogniser falls back to pocketsphinx and says so: a WARNING
"speech recognition DEGRADED …" naming the reason, the same line through ``on_status``, and
:attr:`SharedRecognizer.degraded` holds the reason.

Sharing: the Whisper model is loaded once per process (:func:`shared_recognizer` returns the same object for
the same engine and phrases; every flow shares one Whisper model). Calls decode their turns through one
process-wide :class:`RecognitionQueue`: a small pool of worker threads (:data:`WORKERS`, the Whisper model
running that many decodes in parallel) fed by a bounded queue of :data:`QUEUE_CAPACITY` turns. When the
queue is full a new turn waits for room — it is never dropped — so ten concurrent callers on two cores get
slower answers, not lost ones (benchmarks/bench_asr.py measures turns/s with 1, 2, 4 and 10 callers).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ivr.audio.g711 import ulaw_to_pcm16
from ivr.settings import ASR_ENGINES, asr_from_env
from ivr.speech.asr import Recognition, Recognizer
from ivr.speech.whisper import WhisperRecognizer, WhisperUnavailable

__all__ = [
    "QUEUE_CAPACITY",
    "WORKERS",
    "RecognitionQueue",
    "SharedRecognizer",
    "recognition_queue",
    "shared_recognizer",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
StatusCallback = Callable[[str], None]

#: Turns decoded at the same time (worker threads; Whisper's CTranslate2 ``inter_threads``).
WORKERS = 2
#: Threads each Whisper decode uses: one turn alone gets both cores of a 2-core machine (lowest latency);
#: two at once share them (measured best for 2–10 callers, benchmarks/bench_asr.py).
CPU_THREADS_PER_WORKER = 2
#: Turns that may wait for a worker before a new turn has to wait for room in the queue.
QUEUE_CAPACITY = 8


class Engine(Protocol):
    kind: str

    def load(self) -> None: ...

    def recognize(self, pcm16_8k: bytes | bytearray | memoryview) -> Recognition: ...


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    queued_at: float = field(default_factory=time.perf_counter)


class RecognitionQueue:
    """A bounded queue of decode jobs and ``workers`` threads running them, usable from any thread or loop.

    :meth:`run` (async) and :meth:`call` (blocking) wait for room when ``capacity`` jobs are already queued;
    a job whose caller gave up (task cancelled) before it started is skipped.
    """

    def __init__(self, *, workers: int = WORKERS, capacity: int = QUEUE_CAPACITY, name: str = "asr") -> None:
        if workers < 1 or capacity < 1:
            raise ValueError(
                f"RecognitionQueue needs workers ≥ 1 and capacity ≥ 1, got {workers}, {capacity}"
            )
        self.workers = workers
        self.capacity = capacity
        self.name = name
        self._cond = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._room: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._threads: list[threading.Thread] = []
        #: Most jobs ever waiting at once; turns that had to wait for room; jobs finished; longest queue wait.
        self.peak_depth = 0
        self.waited_for_room = 0
        self.completed = 0
        self.max_wait_ms = 0.0

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._jobs)

    def _start_locked(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-worker-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _enqueue_locked(self, job: _Job) -> None:
        self._start_locked()
        self._jobs.append(job)
        self.peak_depth = max(self.peak_depth, len(self._jobs))
        self._cond.notify_all()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker and return its result (blocking; waits for room when the queue is full)."""
        job = _Job(fn)
        with self._cond:
            if len(self._jobs) >= self.capacity:
                self.waited_for_room += 1
                log.debug("%s queue full (%d turns): a turn waits for room", self.name, len(self._jobs))
            while len(self._jobs) >= self.capacity:
                self._cond.wait()
            self._enqueue_locked(job)
        return job.future.result()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker and await its result (waits for room when the queue is full)."""
        job = _Job(fn)
        counted = False
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if len(self._jobs) < self.capacity:
                    self._enqueue_locked(job)
                    break
                if not counted:
                    counted = True
                    self.waited_for_room += 1
                    log.debug("%s queue full (%d turns): a turn waits for room", self.name, len(self._jobs))
                room: asyncio.Future[None] = loop.create_future()
                waiter = (loop, room)
                self._room.append(waiter)
            try:
                await room
            finally:
                with self._cond:
                    if waiter in self._room:
                        self._room.remove(waiter)
        return await asyncio.wrap_future(job.future)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.popleft()
                waiters, self._room = self._room, []
                self._cond.notify_all()  # blocking callers waiting for room
            for loop, room in waiters:  # every async waiter retries; the first to run takes the room
                with contextlib.suppress(RuntimeError):  # that loop is closed: its caller is gone
                    loop.call_soon_threadsafe(_wake, room)
            if not job.future.set_running_or_notify_cancel():
                continue
            wait_ms = (time.perf_counter() - job.queued_at) * 1000.0
            try:
                result = job.fn()
            except BaseException as exc:  # handed to the caller, who re-raises it
                self._count(wait_ms)
                job.future.set_exception(exc)
            else:
                self._count(wait_ms)
                job.future.set_result(result)

    def _count(self, wait_ms: float) -> None:
        """Book a finished job (before its caller can see the result, so the figures are never behind)."""
        with self._cond:
            self.completed += 1
            self.max_wait_ms = max(self.max_wait_ms, wait_ms)


def _wake(room: asyncio.Future[None]) -> None:
    if not room.done():
        room.set_result(None)


_LOCK = threading.Lock()
_QUEUE: RecognitionQueue | None = None
_WHISPER: WhisperRecognizer | None = None
_SHARED: dict[tuple[str, tuple[str, ...] | None], SharedRecognizer] = {}


def recognition_queue() -> RecognitionQueue:
    """The process-wide queue every call's turns go through."""
    global _QUEUE
    with _LOCK:
        if _QUEUE is None:
            _QUEUE = RecognitionQueue()
        return _QUEUE


def shared_whisper() -> WhisperRecognizer:
    """The process's one Whisper model (not loaded until first use)."""
    global _WHISPER
    with _LOCK:
        if _WHISPER is None:
            _WHISPER = WhisperRecognizer(workers=WORKERS, cpu_threads=CPU_THREADS_PER_WORKER)
        return _WHISPER


class SharedRecognizer:
    """The recogniser a flow's calls use: Whisper, or pocketsphinx by choice or as the degraded fallback.

    ``kind`` is the engine in use ("whisper" or "pocketsphinx"); before :meth:`load` it is the one asked for.
    """

    def __init__(
        self,
        kind: str = "whisper",
        *,
        sentences: Iterable[str] | None = None,
        on_status: StatusCallback | None = None,
        whisper: Callable[[], WhisperRecognizer] = shared_whisper,
        queue: Callable[[], RecognitionQueue] = recognition_queue,
    ) -> None:
        if kind not in ASR_ENGINES:
            raise ValueError(f"speech recogniser {kind!r} is unknown; use one of {', '.join(ASR_ENGINES)}")
        self.requested = kind
        self.kind = kind
        self._sentences = None if sentences is None else tuple(sentences)
        self._on_status = on_status
        self._whisper = whisper
        self._queue = queue
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        #: Why Whisper could not load, when this recogniser fell back to pocketsphinx (None otherwise).
        self.degraded: str | None = None
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def _status(self, message: str) -> None:
        if self._on_status is not None:
            self._on_status(message)

    def load(self) -> None:
        """Load the engine now (idempotent); falls back to pocketsphinx when Whisper cannot load."""
        with self._lock:
            if self._engine is None:
                self._engine = self._load_locked()

    def _pocketsphinx(self) -> Engine:
        engine = Recognizer(sentences=self._sentences, on_status=self._on_status)
        engine.kind = "pocketsphinx"  # type: ignore[attr-defined]
        engine.load()
        return engine  # type: ignore[return-value]

    def _load_locked(self) -> Engine:
        start = time.perf_counter()
        engine: Engine
        if self.requested == "whisper":
            whisper = self._whisper()
            try:
                if not whisper.loaded:
                    whisper.on_status = self._on_status  # progress of the first load goes to its caller
                whisper.load()
                engine = whisper
            except WhisperUnavailable as exc:
                self.degraded = str(exc)
                message = (
                    f"speech recognition DEGRADED: Whisper cannot load ({exc}); using pocketsphinx, which "
                    "understands far fewer callers"
                )
                log.warning("%s", message)
                self._status(message)
                engine = self._pocketsphinx()
        else:
            engine = self._pocketsphinx()
        self.kind = engine.kind
        self.load_seconds = time.perf_counter() - start
        return engine

    def _engine_loaded(self) -> Engine:
        if self._engine is None:
            self.load()
        assert self._engine is not None
        return self._engine

    def recognize(self, pcm16_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz PCM16 (blocking; through the shared queue)."""
        engine = self._engine_loaded()
        data = bytes(pcm16_8k)
        return self._queue().call(lambda: engine.recognize(data))

    def recognize_mulaw(self, mulaw_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz G.711 μ-law (blocking; through the shared queue)."""
        return self.recognize(ulaw_to_pcm16(mulaw_8k).astype("<i2", copy=False).tobytes())

    async def recognize_async(self, pcm16_8k: bytes | bytearray | memoryview) -> Recognition:
        """Decode one turn of 8 kHz PCM16 without blocking the loop (through the shared bounded queue)."""
        if self._engine is None:
            await asyncio.to_thread(self.load)
        engine = self._engine_loaded()
        data = bytes(pcm16_8k)
        return await self._queue().run(lambda: engine.recognize(data))


def shared_recognizer(
    kind: str | None = None,
    *,
    sentences: Iterable[str] | None = None,
    on_status: StatusCallback | None = None,
) -> SharedRecognizer:
    """The process's recogniser for ``kind`` (default: ``IVR_ASR``, else whisper) and the flow's phrases.

    ``sentences`` only matter to pocketsphinx (its language model); every Whisper recogniser shares one model.
    Not loaded yet: call :meth:`SharedRecognizer.load` (blocking) before the first call needs it.
    """
    chosen = asr_from_env() if kind is None else kind
    phrases = None if sentences is None else tuple(sentences)
    key = (chosen, phrases)
    with _LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            shared = SharedRecognizer(chosen, sentences=phrases, on_status=on_status)
            _SHARED[key] = shared
        return shared
