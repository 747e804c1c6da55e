"""The agent's transcript as the caller heard it: lines released when heard, or when cut. Sans-I/O.

Why: the model's transcript of an answer (``response.output_audio_transcript.done``) usually arrives long
before the caller has heard the audio — the model generates faster than real time and Twilio buffers. If
the caller interrupts, the line that was already written would claim they heard all of it, and Redis
streams cannot be edited afterwards. So an agent line is held until its audio has played (the mark of its
last chunk came back) and written then; a barge-in releases it marked ``interrupted`` with how much was
heard. The other order happens too: in-process engines finish an item only when its response is cancelled,
so the transcript arrives *after* the truncation — the cut is remembered and the line carries it when it
comes. Lines of items whose audio never reached the tracker (text only) are released at once, and
:meth:`HeardLines.release` lets everything go at the end of the call, each line cut where playback had got to.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: Cuts remembered for transcripts that have not arrived yet (one per interruption; a few are plenty).
_MAX_CUTS = 16

#: How far the audio of an item got: ``(played_ms, sent_ms)`` (the tracker's figures).
Progress = Callable[[str], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Cut:
    """The caller interrupted ``item_id`` after hearing ``heard_ms`` of the ``sent_ms`` sent to Twilio."""

    item_id: str
    heard_ms: int
    sent_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "heard_ms": self.heard_ms, "sent_ms": self.sent_ms}


@dataclass(frozen=True, slots=True)
class Line:
    """An agent line ready for the transcript; ``cut`` is set when the caller did not hear all of it."""

    item_id: str
    text: str
    cut: Cut | None = None

    def fields(self) -> dict[str, Any]:
        """Extra fields of the transcript entry (docs/redis.md): the item, and the cut when there is one."""
        if self.cut is None:
            return {"item_id": self.item_id}
        return {
            "item_id": self.item_id,
            "interrupted": True,
            "heard_ms": min(self.cut.heard_ms, self.cut.sent_ms),
            "total_ms": self.cut.sent_ms,
        }


class HeardLines:
    """Holds agent lines until heard; see the module docstring."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._cuts: OrderedDict[str, Cut] = OrderedDict()

    @property
    def holding(self) -> bool:
        """True while some line waits for its audio to play (checked on every mark: keep it cheap)."""
        return bool(self._held)

    def said(self, item_id: str, text: str, *, played_ms: int, sent_ms: int, cancelled: bool) -> Line | None:
        """The model's transcript of ``item_id``: the line if it can be written now, else None (held).

        ``cancelled``: the item's response was cancelled by a barge-in. With no cut recorded, the line is
        marked cut unless its audio had all played before the cancel: the caller heard ``played_ms`` of it
        (0 when none of its audio had been sent yet).
        """
        cut = self._cuts.pop(item_id, None)
        if cut is None and cancelled and (played_ms < sent_ms or sent_ms == 0):
            cut = Cut(item_id, min(played_ms, sent_ms), sent_ms)
        if cut is not None or played_ms >= sent_ms:
            return Line(item_id, text, cut)
        self._held[item_id] = text
        return None

    def played(self, item_id: str | None, played_ms: int, sent_ms: int) -> Line | None:
        """A mark came back: the held line of ``item_id`` if all its audio has now played."""
        if item_id is None or played_ms < sent_ms or item_id not in self._held:
            return None
        return Line(item_id, self._held.pop(item_id))

    def cut(self, cuts: Iterable[Cut], progress: Progress | None = None) -> list[Line]:
        """A barge-in: held lines of cut items come out marked, other held ones as :meth:`release` lets
        them go; the rest of the cuts are remembered for transcripts still to come."""
        lines: list[Line] = []
        for c in cuts:
            text = self._held.pop(c.item_id, None)
            if text is not None:
                lines.append(Line(c.item_id, text, c))
                continue
            self._cuts[c.item_id] = c
            while len(self._cuts) > _MAX_CUTS:
                self._cuts.popitem(last=False)
        lines.extend(self.release(progress))
        return lines

    def release(self, progress: Progress | None = None) -> list[Line]:
        """Every held line, in order (the end of the call). With ``progress``, a line whose audio had not
        all played is cut where playback had got to: a caller who hung up mid-answer did not hear the rest."""
        lines = []
        for item_id, text in self._held.items():
            played, sent = progress(item_id) if progress is not None else (0, 0)
            cut = Cut(item_id, played, sent) if played < sent else None
            lines.append(Line(item_id, text, cut))
        self._held.clear()
        return lines
