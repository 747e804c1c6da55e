"""Yes or no: what a caller means by "yeah", "sure, go ahead", "no thanks", "not really" ….

Reads recogniser text (lower-case words) as a yes, a no, or neither. Phrases are matched longest first so
that the no inside a yes-sounding answer wins ("that's not right", "i don't think so"), and phrases that
hold a yes/no word but say neither ("good bye", "no problem") are skipped. What Whisper writes for a yes
or no is often a murmur or a run-on: "mm hmm", "uh huh", "yeah, no, that's wrong", "no, that's fine",
"sure… no thanks"; each is read here (the last three as a no).
"""

from __future__ import annotations

from ivr.dialogue.words import tokens

__all__ = ["parse_yes_no"]


_YES = (
    "yes",
    "yeah",
    "yea",
    "yep",
    "yup",
    "sure",
    "correct",
    "right",
    "that's right",
    "thats right",
    "please do",
    "go ahead",
    "ok",
    "okay",
    "absolutely",
    "definitely",
    "of course",
    "sounds good",
    "perfect",
    "affirmative",
    "i think so",
    "that's it",
    "that's correct",
    "book it",
    "do it",
    "that's fine",
    "that is fine",
    "fine",
    "that works",
    "works for me",
    "that's good",
    "good",
    "great",
    "lovely",
    "alright",
    "all right",
    "certainly",
    "exactly",
    "yes please",
    "go for it",
    "let's do it",
    "let's do that",
    "do that",
    "uh huh",
    "mm hmm",
    "mhm",
    "that would be great",
    "that'd be great",
    "it is",
    "i do",
    "yes it is",
)
_NO = (
    "no",
    "nope",
    "nah",
    "not really",
    "that's wrong",
    "thats wrong",
    "wrong",
    "no thanks",
    "no thank you",
    "not right",
    "that's not right",
    "not correct",
    "incorrect",
    "don't",
    "do not",
    "negative",
    "not quite",
    "i don't think so",
    "don't think so",
    "not that",
    "isn't right",
    "isn't correct",
    "no it's fine",
    "no that's fine",
    "no that's ok",
    "no that's okay",
    "no i'm good",
    "i'm good",
    "never mind",
    "not now",
    "no way",
    "please don't",
    "not fine",
    "that's not it",
    "not that one",
    "not good",
    "not great",
    "doesn't work",
    "that doesn't work",
    "won't work",
)
#: Noes that outweigh a yes said in the same breath.
_CLEAR_NO = frozenset(
    tuple(tokens(p))
    for p in ("that's wrong", "thats wrong", "wrong", "not right", "that's not right", "not correct",
              "incorrect", "no thanks", "no thank you", "i don't think so", "isn't right", "isn't correct",
              "no it's fine", "no that's fine", "no that's ok", "no that's okay", "please don't", "not fine",
              "that's not it")
)  # fmt: skip
#: Phrases that hold a yes or no word but say neither ("good bye", "good morning").
_NEITHER = ("good bye", "good morning", "good afternoon", "good evening", "good night", "no problem")
_YES_NO_PHRASES: list[tuple[tuple[str, ...], bool | None]] = sorted(
    [(tuple(tokens(p)), True) for p in _YES]
    + [(tuple(tokens(p)), False) for p in _NO]
    + [(tuple(tokens(p)), None) for p in _NEITHER],
    key=lambda item: -len(item[0]),
)


def parse_yes_no(text: str) -> bool | None:
    """True for yes/yeah/sure/correct/that's right/go ahead…, False for no/nope/not really/that's wrong….

    Phrases are matched longest first, so "not right" is a no and "i don't think so" is not a yes. An
    answer holding both a yes and a no is ``None`` (asked again: "yes… no, wait"), unless the no is clear
    ("yeah, no, that's wrong", "sure… no thanks", "no, that's fine"). A lone "please" is a yes.
    """
    words = tokens(text)
    if words == ["please"]:
        return True
    found: set[tuple[str, ...]] = set()
    meanings: set[bool] = set()
    i = 0
    while i < len(words):
        for phrase, meaning in _YES_NO_PHRASES:
            if tuple(words[i : i + len(phrase)]) == phrase:
                if meaning is not None:
                    found.add(phrase)
                    meanings.add(meaning)
                i += len(phrase)
                break
        else:
            i += 1
    if len(meanings) == 1:
        return meanings.pop()
    if meanings and found & _CLEAR_NO:
        return False
    return None
