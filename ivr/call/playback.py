"""What the caller has actually heard. Sans-I/O.

Twilio buffers the audio we send and plays it in order. After each chunk of model audio we send a named
``mark``; Twilio echoes the mark when the audio before it has played. This tracker keeps, per assistant
item, the milliseconds *sent* and the milliseconds *confirmed played*, so that on barge-in we can tell the
model exactly where the caller cut it off (``conversation.item.truncate`` with ``audio_end_ms`` = played,
never more than sent).

A ``clear`` makes Twilio echo every pending mark at once; those echoes do not mean the audio played. So
:meth:`PlaybackTracker.interrupt` forgets the pending marks first, and their late echoes are reported as
stale. Barrier marks (:meth:`barrier`) are different: they mean "everything queued before this point is
done with", played or cleared, which is what a hang-up after a goodbye waits for.

When the model session is replaced (reconnect, roll-over, fallback), the audio of the old session's items
already queued at Twilio still plays: :meth:`PlaybackTracker.retire_items` keeps tracking it (what the caller
heard, whether a barge-in must ``clear``), but marks those items so that no truncation is sent for them —
the new session does not know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class MarkKind(Enum):
    PLAYED = "played"
    BARRIER = "barrier"
    STALE = "stale"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MarkResult:
    kind: MarkKind
    item_id: str | None = None
    played_ms: int = 0
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Truncation:
    """Tell the model the caller heard ``audio_end_ms`` of ``item_id`` (content index 0)."""

    item_id: str
    audio_end_ms: int
    #: What had been sent of the item before the interruption (the clear discarded the rest).
    sent_ms: int = field(default=0, compare=False)
    #: The item belongs to a model session that was replaced: cut it in the transcript, do not truncate it.
    retired: bool = field(default=False, compare=False)


@dataclass(slots=True)
class _Item:
    sent_ms: float = 0.0
    played_ms: float = 0.0
    retired: bool = False


@dataclass(slots=True)
class PlaybackTracker:
    """Per-call bookkeeping of sent vs. played assistant audio."""

    _items: dict[str, _Item] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)
    _pending: dict[str, tuple[str, float]] = field(default_factory=dict)
    _barriers: dict[str, str] = field(default_factory=dict)
    _counter: int = 0
    stale_marks: int = 0

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def on_audio_sent(self, item_id: str, duration_ms: float, *, local: bool = False) -> str:
        """Record a chunk sent to Twilio; returns the mark name to send right after it.

        ``local``: audio the call made itself (a hold phrase in the local voice), not a model item: tracked
        like the others (a barge-in clears it) but never truncated at the model, as if retired.
        """
        item = self._items.get(item_id)
        if item is not None and item.retired and not local:  # a new session reusing an old id: a new item
            self._drop(item_id)
            item = None
        if item is None:
            item = self._items[item_id] = _Item(retired=local)
            self._order.append(item_id)
            if len(self._order) > 64:  # keep memory bounded on very long calls
                self._drop(self._order[0])
        item.sent_ms += duration_ms
        name = self._name("a")
        self._pending[name] = (item_id, item.sent_ms)
        return name

    def barrier(self, tag: str) -> str:
        """A mark that fires once everything queued before it has played or been cleared."""
        name = self._name("b")
        self._barriers[name] = tag
        return name

    def on_mark(self, name: str) -> MarkResult:
        tag = self._barriers.pop(name, None)
        if tag is not None:
            return MarkResult(MarkKind.BARRIER, tag=tag)
        entry = self._pending.get(name)
        if entry is None:
            if name.startswith("a"):
                self.stale_marks += 1
                return MarkResult(MarkKind.STALE)
            return MarkResult(MarkKind.UNKNOWN)
        # Twilio plays in order, so every mark sent before this one has played too. ``_pending`` keeps
        # insertion order: pop from the front up to and including this mark (amortised O(1) per mark).
        while True:
            earlier, (earlier_item, earlier_ms) = next(iter(self._pending.items()))
            del self._pending[earlier]
            if (item := self._items.get(earlier_item)) is not None:
                item.played_ms = max(item.played_ms, earlier_ms)
            if earlier == name:
                break
        item_id = entry[0]
        item = self._items.get(item_id)
        if item is None:
            return MarkResult(MarkKind.STALE)
        return MarkResult(MarkKind.PLAYED, item_id=item_id, played_ms=int(item.played_ms))

    def sent_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return int(item.sent_ms) if item else 0

    def played_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return int(item.played_ms) if item else 0

    @property
    def playing(self) -> bool:
        """True while some sent assistant audio has not been confirmed played."""
        return bool(self._pending)

    def retire_items(self) -> None:
        """The model session was replaced: its items mean nothing to the new one, but their queued audio
        still plays. Items fully played are forgotten; the others are tracked until played or cleared, and a
        barge-in reports them ``retired`` (no truncation to send)."""
        for item_id in [i for i, item in self._items.items() if item.played_ms >= item.sent_ms]:
            self._drop(item_id)
        for item in self._items.values():
            item.retired = True

    def _drop(self, item_id: str) -> None:
        """Forget an item and its pending marks (their echoes will be stale)."""
        self._items.pop(item_id, None)
        self._order.remove(item_id)
        for name in [n for n, (owner, _) in self._pending.items() if owner == item_id]:
            del self._pending[name]

    def interrupt(self) -> list[Truncation]:
        """Caller barged in: forget pending marks and say how far each unfinished item was heard.

        Returns one truncation per item whose audio was not fully played (normally just the current one),
        with ``audio_end_ms`` clamped to what was sent.
        """
        truncations: list[Truncation] = []
        unfinished = []
        for item_id, _ in self._pending.values():
            if item_id not in unfinished:
                unfinished.append(item_id)
        for item_id in unfinished:
            item = self._items.get(item_id)
            if item is None:
                continue
            heard = min(item.played_ms, item.sent_ms)
            truncations.append(Truncation(item_id, int(heard), int(item.sent_ms), item.retired))
            # Whatever was sent beyond this point was cleared: it will never play.
            item.sent_ms = heard
        self._pending.clear()
        return truncations
