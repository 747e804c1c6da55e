"""Choosing among the recogniser's readings of a turn when the best one does not answer the question asked.

Whisper's beam search ends with several readings of a turn (``Recognition.alternatives``). On short
answers through a phone line the best reading is often a near-homophone that answers nothing ("to z would
work for me" for "Tuesday would work for me", "qv" for "Tuesday") while a runner-up, almost as likely, does.
The dialogue knows what it asked, so it can tell which reading answers: when a question for a slot is open
and the best reading gives no value for it, :func:`rescue` picks the most likely alternative that does,
provided it is close in score to the best (:data:`CLOSE_RATIO` of its confidence) and itself heard (at least
the flow's confidence floor).

A value found this way was not the recogniser's first choice, so it is never acted on silently: the
dialogue treats the turn as unsure and reads the value back ("Tuesday the 8th, right?"), where the caller
can say yes or correct it. When no reading answers, :func:`respell` may still find one that does once a word
run is read as what it sounds like (a weekday: :mod:`ivr.dialogue.soundalike`). The choice is only made for an
open slot question: at a confirmation a missing yes or no is asked again (acting on a runner-up "yes" would
book what nobody agreed to), and with no question open the words are matched to intents as heard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["CLOSE_RATIO", "choose", "rescue", "respell"]

#: An alternative is considered only when its confidence is at least this fraction of the best reading's.
#: Whisper's runner-ups for the same audio score 0.85–1.0 of the best when they differ by a word or two;
#: readings far below the best are other sentences, not other hearings of the same one.
CLOSE_RATIO = 0.8


def rescue(
    text: str,
    confidence: float,
    alternatives: Sequence[tuple[str, float]],
    answers: Callable[[str], bool],
    *,
    floor: float,
) -> tuple[str, float] | None:
    """The alternative (text, confidence) to use instead of ``text``, or ``None`` to keep ``text``.

    ``answers(words)`` says whether a reading answers the open question (a value can be read for the asked
    slot). ``text`` is kept when it answers or is empty (nothing was heard: its alternatives are noise);
    otherwise the first alternative in order of confidence that is close (:data:`CLOSE_RATIO`), at least
    ``floor`` and answers is returned.
    """
    if not text.strip() or answers(text):
        return None
    for alternative, score in sorted(alternatives, key=lambda pair: -pair[1]):
        if score < floor or score < CLOSE_RATIO * confidence:
            continue
        if answers(alternative):
            return alternative, score
    return None


def respell(
    text: str,
    confidence: float,
    alternatives: Sequence[tuple[str, float]],
    sounding: Callable[[str], str | None],
    answers: Callable[[str], bool],
    *,
    floor: float,
) -> tuple[str, float] | None:
    """The first of ``text`` and its close alternatives that answers once ``sounding`` rewrites it.

    ``sounding(words)`` gives the words with a run replaced by what it sounds like ("to z would work for
    me" → "tuesday would work for me") or ``None``. Readings are tried best first; each must be close
    (:data:`CLOSE_RATIO`) and at least ``floor``, as in :func:`rescue`. Returns (rewritten text, its
    reading's confidence) or ``None``.
    """
    if not text.strip():
        return None
    readings = [(text, confidence), *sorted(alternatives, key=lambda pair: -pair[1])]
    for reading, score in readings:
        if score < floor or score < CLOSE_RATIO * confidence:
            continue
        rewritten = sounding(reading)
        if rewritten is not None and answers(rewritten):
            return rewritten, score
    return None


def choose(
    text: str,
    confidence: float,
    alternatives: Sequence[tuple[str, float]],
    answers: Callable[[str], bool],
    *,
    floor: float,
    sounding: Callable[[str], str | None] | None = None,
) -> tuple[str, float] | None:
    """The reading to use instead of ``text``: a close runner-up that answers (:func:`rescue`), else, when
    ``sounding`` is given, a reading that answers once rewritten by it (:func:`respell`); ``None`` keeps
    ``text``. The dialogue's choice for an open slot question; the speech set scores the same."""
    found = rescue(text, confidence, alternatives, answers, floor=floor)
    if found is None and sounding is not None:
        found = respell(text, confidence, alternatives, sounding, answers, floor=floor)
    return found
