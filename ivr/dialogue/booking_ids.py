"""Booking ids: letters and digits spelled out ("a b three k m seven", "alpha bravo 3 kilo mike 7").

Reads recogniser text for a spelled id: letter names ("bee", "jay", "zed"), NATO words, digits, "double k",
"b as in bravo", "m for mike". What Whisper writes for a spelled id: "julie" for juliet, "mic" for mike,
"5th" for a five said before a pause, "fox trot" in two words, "km" or "bcd" run together, "for"/"to"/"ate"
for 4/2/8 between characters ("b k 7 for m"), "a" for 8 in a NATO spelling ("it's a hotel quebec …"), or the
whole id as one token ("paujfq", "rcu-5m"), read when it is not an English word.
"""

from __future__ import annotations

import re

from ivr.dialogue.words import UNITS, tokens

__all__ = ["parse_booking_id"]


_NATO = {
    "alpha": "A", "alfa": "A", "bravo": "B", "charlie": "C", "delta": "D", "echo": "E", "foxtrot": "F",
    "golf": "G", "hotel": "H", "india": "I", "juliet": "J", "juliett": "J", "kilo": "K", "lima": "L",
    "mike": "M", "november": "N", "oscar": "O", "papa": "P", "quebec": "Q", "romeo": "R", "sierra": "S",
    "tango": "T", "uniform": "U", "victor": "V", "whiskey": "W", "whisky": "W", "xray": "X", "x-ray": "X",
    "yankee": "Y", "zulu": "Z",
}  # fmt: skip
#: How recognisers write some spoken letter names (only ones that are not common words).
_LETTER_NAMES = {
    "bee": "B", "cee": "C", "dee": "D", "gee": "G", "jay": "J", "kay": "K", "el": "L", "ell": "L",
    "em": "M", "en": "N", "pee": "P", "cue": "Q", "queue": "Q", "ess": "S", "tee": "T", "vee": "V",
    "ex": "X", "zed": "Z", "zee": "Z", "aitch": "H",
}  # fmt: skip
#: How recognisers write NATO words (Whisper: "julie" for juliet, "mic" for mike).
_NATO_HEARD = {
    "julie": "J", "juliette": "J", "julia": "J", "mic": "M", "charley": "C", "alfa": "A", "kilo": "K",
    "keylo": "K", "sierra": "S", "siera": "S", "kebec": "Q", "quebecc": "Q", "foxtrott": "F",
    "yanky": "Y", "zoolu": "Z", "whiskey": "W", "xray": "X",
}  # fmt: skip
#: NATO words Whisper splits in two ("fox trot", "x ray").
_NATO_PAIRS = {("fox", "trot"): "F", ("x", "ray"): "X", ("ex", "ray"): "X"}
#: Words heard for a digit, read as that digit only between characters of a spelled id ("b k 7 for m":
#: "for" is 4). "a" is 8 only in an id spelled with NATO words, where a letter A would be "alpha" (there
#: also before the first character: "it's a hotel quebec…" is 8HQ…).
_ID_HOMOPHONES = {"for": "4", "four": "4", "fore": "4", "to": "2", "too": "2", "ate": "8"}
_ID_CUES = ("id", "code", "reference", "number", "is", "booking", "confirmation")


def _id_chars(word: str) -> str | None:
    if word in _NATO:
        return _NATO[word]
    if word in _NATO_HEARD:
        return _NATO_HEARD[word]
    if word in _LETTER_NAMES:
        return _LETTER_NAMES[word]
    if word in UNITS and UNITS[word] < 10:
        return str(UNITS[word])
    if word == "oh":
        return "O"
    if re.fullmatch(r"\d(?:st|nd|rd|th)", word):
        return word[0]  # "victor 5th november": a digit said before a pause, written as an ordinal
    if re.fullmatch(r"[a-z0-9]+", word) and (len(word) == 1 or any(ch.isdigit() for ch in word)):
        return word.upper()
    if re.fullmatch(r"[b-df-hj-np-tv-z]{2,3}", word) and word not in ("mm", "hmm", "mhm", "hm", "nth"):
        return word.upper()  # "km", "bcd": letters Whisper ran together (no vowel, so not a word)
    return None


def parse_booking_id(text: str, *, strict: bool = False) -> str | None:
    """Letters and digits spelled out: "a b three k m seven" or "alpha bravo 3 kilo mike 7" → "AB3KM7".

    "b as in bravo" counts once; "double k" is "KK". The longest run of letter/digit words wins; fewer
    than three characters is ``None``. Strict mode reads only what follows a cue ("booking id is …").
    """
    words = tokens(text)
    if strict:
        cue = max((k for k, w in enumerate(words) if w in _ID_CUES), default=-1)
        if cue < 0:
            return None
        words = words[cue + 1 :]
    nato = sum(1 for w in words if w in _NATO or w in _NATO_HEARD) >= 2
    runs: list[str] = []
    current = ""
    repeat = 1
    i = 0
    while i < len(words):
        word = words[i]
        pair = _NATO_PAIRS.get((word, words[i + 1])) if i + 1 < len(words) else None
        if pair is not None:
            current += pair * repeat
            repeat = 1
            i += 2
            continue
        following = words[i + 1] if i + 1 < len(words) else None
        eight = word == "a" and nato  # "it's a hotel quebec…": a spelling in NATO words says "alpha" for A
        if (
            (current or eight)
            and following is not None
            and (word in _ID_HOMOPHONES or eight)
            and _id_chars(following) is not None
            and not (word == "for" and following in _NATO)
        ):
            current += ("8" if word == "a" else _ID_HOMOPHONES[word]) * repeat
            repeat = 1
            i += 1
            continue
        if word in ("double", "triple") and i + 1 < len(words) and _id_chars(words[i + 1]):
            repeat = 2 if word == "double" else 3
            i += 1
            continue
        if word in ("as", "for") and i + 2 < len(words) and words[i + 1] == "in" and words[i + 2] in _NATO:
            i += 3  # "b as in bravo"
            continue
        if word == "for" and i + 1 < len(words) and words[i + 1] in _NATO and current:
            i += 2  # "m for mike"
            continue
        chars = _id_chars(word)
        if chars is None:
            if current:
                runs.append(current)
            current = ""
        else:
            current += chars * repeat
        repeat = 1
        i += 1
    if current:
        runs.append(current)
    best = max(runs, key=len, default="")
    if len(best) >= 3:
        return best
    return None if strict else _written_id(text)


def _written_id(text: str) -> str | None:
    """An id Whisper wrote as one token ("paujfq", "rcu-5m") in a short answer: 4–8 letters and digits
    that are not an English word (pocketsphinx's 134k-word dictionary decides), hyphens dropped."""
    if len(text.split()) > 4:
        return None
    from ivr.speech.lm import dictionary_words  # the dictionary loads once, on the first such answer

    known = dictionary_words()
    found = [
        word.replace("-", "")
        for word in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())
        if 4 <= len(word.replace("-", "")) <= 8
        and (any(ch.isdigit() for ch in word) or word.replace("-", "") not in known)
        and not (word.isdigit())
    ]
    return max(found, key=len).upper() if found else None
