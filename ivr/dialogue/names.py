"""Names: "my name is maria lopez" → "Maria Lopez", "it's john smith", "under the name o'brien".

Reads recogniser text for a person's name after a cue ("my name is", "this is", "under the name", "call
me" …), dropping fillers (um, yes, please …) and refusing anything that holds ordinary English words ("i
want to book" is not a name) or is really a yes or no. What Whisper writes for a name: "the names peter
jones" (the apostrophe of "name's" dropped), "sean, s-e-a-n" (letters spelled after the name replace it),
"k-i-m" (letters alone are the name), names in any script ("maría-josé").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ivr.dialogue.words import ORDINALS, TENS, UNITS, WEEKDAYS
from ivr.dialogue.yes_no import parse_yes_no

__all__ = ["parse_name"]


_NAME_CUES = (
    ("my", "name", "is"),
    ("my", "name's"),
    ("the", "name", "is"),
    ("name", "is"),
    ("name's",),
    ("my", "names"),  # Whisper drops the apostrophe: "the names peter jones"
    ("the", "names"),
    ("under", "the", "name", "of"),
    ("under", "the", "name"),
    ("this", "is"),
    ("it's",),
    ("it", "is"),
    ("its",),
    ("i'm",),
    ("i", "am"),
    ("call", "me"),
    ("under",),
    ("that's",),
    ("that", "is"),
    ("for",),
)
_STRICT_NAME_CUES = _NAME_CUES[:9]
_FILLERS = frozenset(
    {"um", "uh", "er", "erm", "hmm", "yes", "yeah", "yep", "sure", "ok", "okay", "so", "well", "hi", "hello",
     "hey", "oh", "right", "sorry", "it's", "its", "please", "thanks", "thank", "you", "speaking", "here"}
)  # fmt: skip
#: Words that are not part of a name: if any is left after the fillers, the answer was not a name.
_NOT_NAME = frozenset(
    {"i", "me", "my", "a", "an", "the", "to", "for", "of", "and", "or", "but", "is", "are", "was", "be",
     "want", "would", "like", "need", "can", "could", "book", "booking", "appointment", "speak", "talk",
     "person", "someone", "what", "why", "how", "when", "where", "who", "don't", "do", "not", "no", "know",
     "have", "has", "that", "this", "it", "in", "on", "at", "with", "cancel", "tomorrow", "today", "time",
     "day", "morning", "afternoon", "evening", "again", "repeat", "say", "just", "already", "told",
     "name", "number", "phone", "there", "i'm", "i'll", "i've", "i'd", "we", "we're", "you", "calling",
     "returning", "call", "about", "from", "new", "patient", "here", "last", "week", "ringing",
     *WEEKDAYS, *UNITS, *TENS, *ORDINALS}
)  # fmt: skip


#: A word of a name: letters (any script), inner apostrophes and hyphens ("o'brien", "maría-josé").
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def _strip_cue(words: list[str], cues: Sequence[tuple[str, ...]]) -> tuple[list[str], bool]:
    """The words after the first cue ("my name is"), then after any cues right behind it ("it's under")."""
    for k in range(len(words)):
        for cue in cues:
            if tuple(words[k : k + len(cue)]) == cue:
                rest = words[k + len(cue) :]
                while True:
                    rest = [w for w in rest[:1] if w not in _FILLERS] + rest[1:]
                    follow = next((c for c in _NAME_CUES if tuple(rest[: len(c)]) == c), None)
                    if follow is None:
                        return rest, True
                    rest = rest[len(follow) :]
    return words, False


def _spelled(words: list[str]) -> list[str]:
    """Letters spelled out after a name ("sean, s-e-a-n") replace the word before them; spelled letters
    alone ("k-i-m") are the word."""
    out: list[str] = []
    for word in words:
        parts = word.split("-")
        if len(parts) >= 2 and all(len(p) == 1 for p in parts):
            joined = "".join(parts)
            if out and out[-1][:1] == joined[:1]:
                out[-1] = joined
            else:
                out.append(joined)
            continue
        out.append(word)
    return out


def parse_name(text: str, *, strict: bool = False) -> str | None:
    """A person's name in title case: "my name is maria lopez" → "Maria Lopez"; "it's john smith".

    Fillers (um, yes, it's, please …) are dropped; what is left must be one to four words that are not
    ordinary English words ("i want to book" is not a name). Strict mode needs an explicit cue ("my name
    is", "the name is", "under the name"). Never invents: anything doubtful is ``None``.
    """
    words = _spelled(_NAME_WORD.findall(text.lower().replace("’", "'")))
    cues = _STRICT_NAME_CUES if strict else _NAME_CUES
    rest, cued = _strip_cue(words, cues)
    if strict and not cued:
        return None
    while rest and rest[0] in _FILLERS:
        rest = rest[1:]
    while rest and rest[-1] in _FILLERS:
        rest = rest[:-1]
    if strict:  # keep the name itself: stop at the first word that cannot be part of it
        cut = next((k for k, w in enumerate(rest) if w in _NOT_NAME or w in _FILLERS), len(rest))
        rest = rest[:cut]
    if not 1 <= len(rest) <= 4 or any(w in _NOT_NAME or w in _FILLERS for w in rest):
        return None
    if parse_yes_no(" ".join(rest)) is not None:
        return None  # "yes please, go ahead", "that's correct": an answer to a question, not a name
    if any(len(w) < 2 for w in rest):
        return None
    return " ".join(w.title() for w in rest)
