"""The conversation of one call as the caller heard it, replayable into a new model session. Sans-I/O.

When the model socket is replaced (a drop, a roll-over, a fallback to the local engine) the new session
knows nothing; :class:`Conversation` is what is replayed into it. Rules:

* **Item order, not arrival order.** The API does not promise that a caller's transcription arrives before
  the answer to it. A user item gets its place when its audio is committed (``input_audio_buffer.committed``
  names the item before it), an assistant item when its response adds it; the text fills the place later.
  ``conversation.item.added`` / ``.created`` moves a known item after the one it names.
* **What the caller heard.** An answer cut by a barge-in is replayed up to the point the caller heard
  (``heard_ms`` of the ``sent_ms`` that reached Twilio, applied to the text known at the cut, ending on a
  word). An answer cut by a drop is replayed as far as its transcript had come — its audio already queued at
  Twilio still plays — and :meth:`drop` says what was being said so the model can be asked to go on.
* **Bounded.** At most ``max_items`` entries and ``max_chars`` characters (each text capped too); the
  oldest go first, a function call together with its output.

Entries written by the call itself (keypad notes, operator decisions, function calls and outputs) come in
through :meth:`append` with the tuples the rest of the code uses: ``("user", text)``, ``("assistant",
text)``, ``("system", text)``, ``("call", call_id, name, arguments)``, ``("output", call_id, output)``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from ..realtime import events as ev

Kind = Literal["user", "assistant", "system", "call", "output"]

#: Entries kept for replay (a long call keeps its most recent part).
MAX_ITEMS = 120
#: Characters of text kept for replay over all entries (about 6,000 tokens).
MAX_CHARS = 24_000
#: Characters kept of any one entry.
MAX_ENTRY_CHARS = 4_000


@dataclass(slots=True)
class Entry:
    """One conversation item. ``parts``: an answer's transcript deltas until its final transcript."""

    id: str
    kind: Kind
    text: str = ""
    call_id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    done: bool = False
    #: A barge-in: the caller heard ``heard_ms`` of the ``sent_ms`` sent, of the text known then.
    cut: tuple[int, int, str] | None = None
    #: The answer was being spoken when the model socket dropped.
    dropped: bool = False
    #: The model response that produced an answer ("" for the other kinds).
    response_id: str = ""

    def current_text(self) -> str:
        return self.text if self.done or not self.parts else "".join(self.parts)

    def heard_text(self) -> str:
        """The text the caller heard: all of it, or up to the barge-in."""
        if self.cut is None:
            return self.current_text()
        heard_ms, sent_ms, text = self.cut
        if heard_ms <= 0:
            return ""  # cut before any of it played (a response cancelled before its first mark)
        return heard_prefix(text or self.current_text(), heard_ms, sent_ms)


def heard_prefix(text: str, heard_ms: int, total_ms: int) -> str:
    """The start of ``text`` in proportion ``heard_ms / total_ms``, ending on a whole word: at a space, else
    after a punctuation mark; in scripts written without spaces (Chinese, Japanese, Thai…) at any
    character (never between a letter and its vowel or tone mark)."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    if heard_ms <= 0:
        return ""
    n = len(text) * heard_ms // total_ms
    while 0 < n < len(text) and unicodedata.category(text[n]).startswith("M"):
        n += 1  # a combining mark stays with the character it belongs to
    if n < len(text) and not text[n].isspace() and not (_unspaced(text[n - 1]) or _unspaced(text[n])):
        space = text.rfind(" ", 0, n + 1)
        mark = max((i for i in range(n - 1, -1, -1) if text[i] in _BREAKS), default=-1)
        n = max(space, mark + 1 if mark >= 0 else 0, 0)
    return text[:n].rstrip()


#: Marks after which a text may be cut when no space is near (Latin and CJK forms).
_BREAKS = frozenset(".,;:!?…。、，．！？；：")
#: Scripts written without spaces between words: (first, last) code points.
_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)


def _unspaced(ch: str) -> bool:
    code = ord(ch)
    return code >= 0x0E00 and any(first <= code <= last for first, last in _UNSPACED)


class Conversation:
    """The replayable conversation of one call (see the module docstring)."""

    def __init__(self, *, max_items: int = MAX_ITEMS, max_chars: int = MAX_CHARS) -> None:
        if max_items < 2 or max_chars < 1:
            raise ValueError(
                f"Conversation max_items={max_items} must be >= 2 and max_chars={max_chars} >= 1"
            )
        self.max_items = max_items
        self.max_chars = max_chars
        self._order: list[str] = []
        self._entries: dict[str, Entry] = {}
        self._local = 0

    def __len__(self) -> int:
        return len(self._order)

    def entries(self) -> list[Entry]:
        """Every entry, in item order."""
        return [self._entries[i] for i in self._order]

    # ------------------------------------------------------------------ building

    def append(self, entry: tuple[str, ...]) -> None:
        """An item the call itself adds (see the module docstring for the tuples)."""
        self._local += 1
        item_id = f"local_{self._local}"
        match entry:
            case ("user", text):
                new = Entry(item_id, "user", _capped(text), done=True)
            case ("assistant", text):
                new = Entry(item_id, "assistant", _capped(text), done=True)
            case ("system", text):
                new = Entry(item_id, "system", _capped(text), done=True)
            case ("call", call_id, name, arguments):
                new = Entry(item_id, "call", arguments, call_id=call_id, name=name, done=True)
            case ("output", call_id, output):
                new = Entry(item_id, "output", _capped(output), call_id=call_id, done=True)
            case _:
                raise ValueError(
                    f"conversation entry {entry[:1]!r}: use (user|assistant|system, text), "
                    "(call, call_id, name, arguments) or (output, call_id, output)"
                )
        self._place(new, None)
        self._trim()

    def on_event(self, event: ev.ServerEvent) -> None:
        """Follow one model event (only the few that shape the conversation do anything)."""
        if type(event) is ev.AudioDelta:  # the hot path (~50 a second): nothing to do
            return
        if isinstance(event, ev.AgentTranscriptDelta):
            entry = self._entries.get(event.item_id) or self._slot(event.item_id, "assistant", None)
            entry.response_id = entry.response_id or event.response_id
            if not entry.done and sum(map(len, entry.parts)) < MAX_ENTRY_CHARS:
                entry.parts.append(event.delta)
        elif isinstance(event, ev.AgentTranscriptDone):
            entry = self._entries.get(event.item_id) or self._slot(event.item_id, "assistant", None)
            entry.response_id = entry.response_id or event.response_id
            entry.text, entry.done, entry.parts = _capped(event.transcript), True, []
            self._trim()
        elif isinstance(event, ev.UserTranscript):
            entry = self._entries.get(event.item_id) or self._slot(event.item_id, "user", None)
            entry.text, entry.done = _capped(event.transcript), True
            self._trim()
        elif isinstance(event, ev.InputCommitted):
            if event.item_id not in self._entries:
                self._slot(event.item_id, "user", event.previous_item_id)
        elif isinstance(event, ev.OutputItemAdded):
            if event.item_type == "message" and event.item_id not in self._entries:
                self._slot(event.item_id, "assistant", None).response_id = event.response_id
        elif isinstance(event, ev.ItemAdded):
            self._move_after(event.item_id, event.previous_item_id)

    def cut(self, item_id: str, heard_ms: int, sent_ms: int) -> None:
        """A barge-in: the caller heard ``heard_ms`` of the ``sent_ms`` of ``item_id`` that was sent."""
        entry = self._entries.get(item_id)
        if entry is None or entry.kind != "assistant":
            return
        if entry.cut is not None:  # cut again (an answer replayed, then interrupted): keep the shorter
            heard_ms = min(heard_ms, entry.cut[0])
        entry.cut = (max(0, heard_ms), max(0, sent_ms), entry.current_text())
        entry.dropped = False

    def answers_of(self, response_id: str) -> list[str]:
        """The ids of the answers that ``response_id`` produced, in item order."""
        return [e.id for e in self.entries() if e.kind == "assistant" and e.response_id == response_id]

    def drop(self, response_id: str | None) -> str | None:
        """The model socket dropped: answers not finished are kept as far as they had come. Returns the
        text of the last one of ``response_id`` (the response in flight: what the model was saying), or
        None when it was saying nothing (an unfinished answer of an older response is not news)."""
        said = None
        for entry in self.entries():
            if entry.kind == "assistant" and not entry.done and entry.cut is None:
                entry.text, entry.done, entry.parts = entry.current_text(), True, []
                entry.dropped = True
                if response_id is not None and entry.response_id == response_id:
                    said = entry.text
        return said

    def unanswered(self) -> bool:
        """True when no answer follows the last item said: a caller's turn, a tool output or a note (or
        nothing yet, before the greeting). Items without text are skipped; a call still running is not."""
        for entry in reversed(self.entries()):
            if entry.kind == "call":
                return False
            if entry.kind == "output":
                return True
            text = entry.heard_text() if entry.kind == "assistant" else entry.text
            if text.strip():
                return entry.kind != "assistant"
        return True

    # ------------------------------------------------------------------ replay

    def replay(self) -> list[tuple[str, ...]]:
        """The entries to recreate in a new session, in item order, as the caller heard them; a function
        call only together with its output (a call without one would leave the new session waiting)."""
        outputs = {e.call_id for e in self._entries.values() if e.kind == "output"}
        calls: set[str] = set()
        out: list[tuple[str, ...]] = []
        for entry in self.entries():
            if entry.kind == "call":
                if entry.call_id in outputs:
                    calls.add(entry.call_id)
                    out.append(("call", entry.call_id, entry.name, entry.text))
            elif entry.kind == "output":
                if entry.call_id in calls:
                    out.append(("output", entry.call_id, entry.text))
            else:
                text = entry.heard_text() if entry.kind == "assistant" else entry.text
                if text.strip():
                    out.append((entry.kind, text))
        return out

    # ------------------------------------------------------------------ internals

    def _slot(self, item_id: str, kind: Kind, previous: str | None) -> Entry:
        entry = Entry(item_id, kind)
        self._place(entry, previous)
        self._trim()
        return entry

    def _place(self, entry: Entry, previous: str | None) -> None:
        self._entries[entry.id] = entry
        if previous is not None and previous in self._entries and previous != entry.id:
            self._order.insert(self._order.index(previous) + 1, entry.id)
        else:
            self._order.append(entry.id)

    def _move_after(self, item_id: str, previous: str | None) -> None:
        if item_id not in self._entries or previous is None or previous not in self._entries:
            return
        if previous == item_id:
            return
        self._order.remove(item_id)
        self._order.insert(self._order.index(previous) + 1, item_id)

    def _chars(self) -> int:
        return sum(len(e.text) + sum(map(len, e.parts)) for e in self._entries.values())

    def _trim(self) -> None:
        chars = self._chars()
        while self._order and (len(self._order) > self.max_items or chars > self.max_chars):
            oldest = self._entries.pop(self._order.pop(0))
            chars -= len(oldest.text) + sum(map(len, oldest.parts))
            if oldest.kind == "call":  # its output goes with it
                outputs = [
                    i
                    for i in self._order
                    if self._entries[i].kind == "output" and self._entries[i].call_id == oldest.call_id
                ]
                for item_id in outputs:
                    gone = self._entries.pop(item_id)
                    self._order.remove(item_id)
                    chars -= len(gone.text)


def _capped(text: str) -> str:
    return text if len(text) <= MAX_ENTRY_CHARS else text[:MAX_ENTRY_CHARS]
