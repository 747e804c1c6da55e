"""Choices: which of a flow's named options ("cleaning", "check-up", "tiramisu") the caller said.

Reads recogniser text for a choice's name or one of its phrases as whole words, allowing plurals and
-ing forms ("cleanings") and run-together words ("checkup" for "check up"). Domain words Whisper does not
know come out spelled by ear, so when nothing matches exactly a near spelling ("tramisu", "margrita")
or, failing that, a run that sounds the same by Metaphone key ("trim missus" for "tiramisu") selects the
one choice it fits.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import jellyfish

from ivr.dialogue.words import tokens

__all__ = ["SOUNDS_LIKE", "parse_choice"]


def _stem(word: str) -> str:
    for suffix in ("ings", "ing", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _phrase_in(phrase: Sequence[str], words: Sequence[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(tuple(words[i : i + n]) == tuple(phrase) for i in range(len(words) - n + 1))


def parse_choice(text: str, choices: Mapping[str, Sequence[str]]) -> str | None:
    """The choice whose name or one of whose phrases occurs as whole words; ``None`` if none or several.

    Plurals and -ing forms count ("cleanings" selects "cleaning"); "check-up" matches "check up".
    """
    words = [_stem(w) for w in tokens(text)]
    joined = "".join(words)
    matched: list[str] = []
    for value, phrases in choices.items():
        for phrase in (value, *phrases):
            stems = [_stem(w) for w in tokens(phrase)]
            if _phrase_in(stems, words) or (len(stems) > 1 and "".join(stems) in joined.split()):
                matched.append(value)
                break
    if not matched:
        return _sounds_like(tokens(text), choices)
    return matched[0] if len(matched) == 1 else None


#: How close a run of words must be, letter by letter, to a choice's phrase to select it when no phrase
#: matches exactly ("tramisu" for "tiramisu", "margrita" for "margherita"): difflib's ratio.
SOUNDS_LIKE = 0.75
_FUZZY_MIN_LETTERS = 7


def _sounds_like(words: list[str], choices: Mapping[str, Sequence[str]]) -> str | None:
    """The one choice a run of words is spelled nearly like (domain words Whisper does not know, such as
    dish names, come out spelled by ear); ``None`` if none or several come close."""
    scores: dict[str, float] = {}
    for value, phrases in choices.items():
        for phrase in (value, *phrases):
            target = "".join(tokens(phrase))
            if len(target) < _FUZZY_MIN_LETTERS:
                continue
            size = len(tokens(phrase))
            for n in {max(1, size - 1), size, size + 1}:
                for k in range(len(words) - n + 1):
                    said = "".join(words[k : k + n])
                    if abs(len(said) - len(target)) > len(target) // 2:
                        continue
                    ratio = difflib.SequenceMatcher(None, said, target, autojunk=False).ratio()
                    scores[value] = max(scores.get(value, 0.0), ratio)
    close = sorted(((r, v) for v, r in scores.items() if r >= SOUNDS_LIKE), reverse=True)
    if not close:
        return _sounds_alike(words, choices)
    if len(close) > 1 and close[1][0] > close[0][0] - 0.05:
        return None
    return close[0][1]


#: Letters a run of words may differ in length from a choice's phrase and still be heard as it by sound.
_PHONETIC_SLACK = 2
#: Below this letter-by-letter similarity two runs are not the same words, whatever their sound keys say.
_PHONETIC_MIN_RATIO = 0.55


def _key(letters: str) -> str:
    return str(jellyfish.metaphone(letters))


def _has_sounds(key: str, target: str) -> bool:
    """Whether ``key`` holds every sound of ``target`` in order (and perhaps one more)."""
    rest = iter(key)
    return all(sound in rest for sound in target)


def _sounds_alike(words: list[str], choices: Mapping[str, Sequence[str]]) -> str | None:
    """The one choice a run of words sounds like, by Metaphone key, when its spelling is too far off for
    :func:`_sounds_like` ("trim missus" is TRMSS, "tiramisu" TRMS). Safeguards against ordinary
    sentences: only phrases of 7 letters or more with keys of 4 or more; the run is about as long as the
    phrase (within two letters) and still at least half alike letter by letter; its key holds every sound
    of the phrase's key in order, with at most one more; exactly one choice fits."""
    hits: set[str] = set()
    for value, phrases in choices.items():
        for phrase in (value, *phrases):
            target = "".join(w for w in tokens(phrase) if w.isalpha())
            target_key = _key(target) if len(target) >= _FUZZY_MIN_LETTERS else ""
            if len(target_key) < 4:
                continue
            size = len(tokens(phrase))
            for n in {max(1, size - 1), size, size + 1}:
                for k in range(len(words) - n + 1):
                    run = words[k : k + n]
                    said = "".join(run)
                    if not said.isalpha() or abs(len(said) - len(target)) > _PHONETIC_SLACK:
                        continue
                    key = _key(said)
                    if len(key) > len(target_key) + 1 or key[:1] != target_key[:1]:
                        continue
                    if not _has_sounds(key, target_key):
                        continue  # a sound of the phrase is missing: "time is" (TMS) is not "tiramisu"
                    if (
                        difflib.SequenceMatcher(None, said, target, autojunk=False).ratio()
                        < _PHONETIC_MIN_RATIO
                    ):
                        continue
                    hits.add(value)
    return next(iter(hits)) if len(hits) == 1 else None
