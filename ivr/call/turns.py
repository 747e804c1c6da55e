"""Per-turn latency of a call: a tiny state machine, sans-I/O (the caller passes the clock readings).

What is measured, exactly (the same figures go to Prometheus, the call record and Redis):

* **greeting**: Twilio ``start`` received → the first agent audio frame sent to Twilio, if the caller has not
  started speaking before it (then the first audio is a reply, not a greeting, and no greeting is measured).
* **turn** (a reply): ``input_audio_buffer.speech_stopped`` reached the call → the first agent audio frame
  sent to Twilio after it. Speech starting again before any audio cancels the measurement; the next
  ``speech_stopped`` starts a new one. So a reply is timed from the *last* end of speech before it.

The per-frame cost is one attribute read (:attr:`TurnTimer.waiting`); the rest runs once per turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["greeting", "turn"]


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured latency: ``n`` is 0 for the greeting, else the reply's number (1, 2, …)."""

    kind: Kind
    n: int
    seconds: float

    @property
    def ms(self) -> float:
        return round(self.seconds * 1000.0, 1)


class TurnTimer:
    """Start at the greeting; restart at every end of the caller's speech; stop at the next agent audio."""

    __slots__ = ("_kind", "_since", "turns", "waiting")

    def __init__(self, started_at: float) -> None:
        self._kind: Kind | None = "greeting"
        self._since = started_at
        self.turns = 0
        #: True while the next agent audio frame ends a measurement (checked on every frame: keep it a bool).
        self.waiting = True

    def speech_started(self) -> None:
        """The caller speaks: whatever was being timed is not answered yet; wait for the end of speech."""
        self._kind = None
        self.waiting = False

    def speech_stopped(self, now: float) -> None:
        """The caller stopped speaking: time the reply from now."""
        self._kind = "turn"
        self._since = now
        self.waiting = True

    def audio_sent(self, now: float) -> Measured | None:
        """Agent audio went to Twilio: returns the measurement it ends, if any (only the first frame does)."""
        kind = self._kind
        if kind is None:
            return None
        self._kind = None
        self.waiting = False
        if kind == "turn":
            self.turns += 1
            return Measured("turn", self.turns, max(now - self._since, 0.0))
        return Measured("greeting", 0, max(now - self._since, 0.0))
