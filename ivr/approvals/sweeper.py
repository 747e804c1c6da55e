"""Close approval requests nobody can decide any more, continuously, on one instance at a time.

A waiting call expires its own request at the deadline; the sweeper covers every other case while the
server runs: the request of an instance that died (overdue: ``expired``) and the request of a call whose
end is recorded but whose own instance could not close it (``abandoned``). See
:meth:`~ivr.approvals.store.ApprovalStore.sweep`, one atomic script per round.

Every instance runs a sweeper, and a Redis lease (``SET NX PX`` on :meth:`KeySchema.approvals_sweeper`,
holding the instance id) lets one of them sweep at a time: the holder renews it each round and lets go when
it stops; if it dies, the lease lapses after ``lease_s`` and another instance takes over at its next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from ivr.approvals.store import Approval, ApprovalStore

__all__ = ["LEASE_S", "SWEEP_INTERVAL_S", "ApprovalSweeper", "SweepRound"]

log = logging.getLogger("ivr.approvals.sweeper")

#: Seconds between rounds (so an overdue request is closed at most this long after its deadline).
SWEEP_INTERVAL_S = 2.0
#: Lifetime of the lease; renewed every round. Another instance takes over this long after the holder died.
LEASE_S = 10.0

# KEYS: 1 lease; ARGV: 1 instance id, 2 lease ms. Take the lease if free, renew it if ours.
_LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

# KEYS: 1 lease; ARGV: 1 instance id. Let go of the lease, only if ours.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class SweepRound:
    """One round: whether this instance held the lease, and what it closed."""

    held: bool
    expired: list[Approval] = field(default_factory=list)
    abandoned: list[Approval] = field(default_factory=list)


class ApprovalSweeper:
    """``start()`` once per app instance, ``stop()`` at shutdown (lets go of the lease)."""

    def __init__(
        self,
        store: ApprovalStore,
        *,
        instance_id: str,
        interval_s: float = SWEEP_INTERVAL_S,
        lease_s: float = LEASE_S,
    ) -> None:
        if not instance_id:
            raise ValueError("instance_id must name this app instance")
        if not 0 < interval_s < lease_s:
            raise ValueError(
                f"interval_s={interval_s!r} and lease_s={lease_s!r}: need 0 < interval_s < lease_s, so the "
                "holder renews its lease before it lapses"
            )
        self.store = store
        self.instance_id = instance_id
        self.interval_s = float(interval_s)
        self.lease_s = float(lease_s)
        self._lease_key = store.keys.approvals_sweeper()
        self._lease = store.redis.register_script(_LEASE_LUA)
        self._release = store.redis.register_script(_RELEASE_LUA)
        self._task: asyncio.Task[None] | None = None
        self._holding = False
        self._failing = False
        #: Totals since start, for logs and tests.
        self.expired = 0
        self.abandoned = 0

    @property
    def holding(self) -> bool:
        """Whether this instance held the lease at its last round."""
        return self._holding

    async def tick(self) -> SweepRound:
        """One round: take or renew the lease, and sweep if held. Raises on Redis trouble."""
        held = bool(
            await self._lease(
                keys=[self._lease_key], args=[self.instance_id, str(round(self.lease_s * 1000))]
            )
        )
        if held != self._holding:
            self._holding = held
            if held:
                log.info("this instance (%s) now sweeps overdue approval requests", self.instance_id)
        if not held:
            return SweepRound(held=False)
        swept = await self.store.sweep()
        self.expired += len(swept.expired)
        self.abandoned += len(swept.abandoned)
        for record in swept.expired:
            log.info("approval %s (%s, call %s) expired: no decision before its deadline", *_ids(record))
        for record in swept.abandoned:
            log.info("approval %s (%s, call %s) abandoned: its call had ended", *_ids(record))
        return SweepRound(held=True, expired=swept.expired, abandoned=swept.abandoned)

    async def release(self) -> bool:
        """Let go of the lease if this instance holds it; True if it did."""
        self._holding = False
        return bool(await self._release(keys=[self._lease_key], args=[self.instance_id]))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="approvals-sweeper")

    async def stop(self) -> None:
        """Stop sweeping and let go of the lease (so another instance takes over at once)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.release()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                if self._failing:
                    self._failing = False
                    log.info("approvals sweeper: Redis is reachable again")
            except (RedisError, OSError) as exc:
                self._holding = False
                if not self._failing:  # once per outage, not every round
                    self._failing = True
                    log.warning(
                        "approvals sweeper: Redis is unreachable (%s: %s); retrying every %.0f s",
                        type(exc).__name__,
                        exc,
                        self.interval_s,
                    )
            await asyncio.sleep(self.interval_s)  # the pace of rounds, not a wait for an event


def _ids(record: Approval) -> tuple[str, str, str]:
    return record.id, record.tool, record.call_sid
