"""Sans-I/O adaptive end of turn: how much silence ends the caller's turn depends on what they said so far.

A fixed silence rule has to be long enough for "I'd like to book … a cleaning" not to be cut at the pause, so
every short answer ("yes", "Tuesday", "7.30") waits the same long silence before the agent answers. Here the
silence needed depends on the words heard so far:

- when the caller has been silent :attr:`EndpointingPolicy.pause_ms`, the turn so far is recognised early
  (the engine does this; :class:`ivr.speech.vad.TurnDetector` reports the pause as ``SpeechPaused``);
- :func:`judge` reads that text: a **complete** answer (yes/no, a time, a day, a number, "please", "thanks"…)
  ends the turn at once; an **open** one (ends in "um"/"uh", or in a word that cannot end a sentence: "and",
  "the", "at", "my", "is", "to"…, or no words at all) waits :attr:`EndpointingPolicy.open_ms`; anything else
  is **unsure** and waits :attr:`EndpointingPolicy.unsure_ms` — longer than the old fixed 600 ms, which
  costs nothing: the early recognition is reused, so the words are known no later than under the old rule
  (600 ms, then a recognition), and a misheard fragment ("I'd like to vote" for "I'd like to book …") is not
  cut off at a 700 ms pause;
- while the early recognition is running the turn does not end (up to ``open_ms``): on a busy machine the
  words may take longer than the old 600 ms rule, but ending the turn then would only cut callers off at
  "my name is …" — the turn's text would not be known any sooner, since it would have to be recognised again.

When the turn does end without new speech after the pause, the turn's audio is byte-for-byte what was
recognised early, so the engine reuses that result: the recognition time is hidden inside the silence the
caller leaves anyway.

Silences here are as the WebRTC classifier sees them: it keeps flagging ~100-150 ms of voice after the last
word (its hangover), so the true silence is that much longer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["Completeness", "EndOfTurn", "EndpointingPolicy", "judge"]


class Completeness(Enum):
    """What the words so far say about the end of the caller's turn."""

    COMPLETE = "complete"
    UNSURE = "unsure"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class EndpointingPolicy:
    """Silence (ms, as the VAD sees it) needed to end a turn, by what the turn so far says."""

    #: Silence after which the turn so far is recognised early (also the trailing audio kept in the turn).
    pause_ms: int = 200
    #: A complete answer: the turn ends as soon as this much silence has passed and the words are known.
    complete_ms: int = 200
    #: Words that may or may not be the end (or no words to go by).
    unsure_ms: int = 800
    #: A filler or an unfinished phrase: give the caller time to go on (also the longest wait for the words).
    open_ms: int = 1300

    def __post_init__(self) -> None:
        if not 20 <= self.pause_ms <= self.unsure_ms:
            raise ValueError(
                f"endpointing pause_ms must be between 20 and unsure_ms ({self.unsure_ms}) ms, "
                f"got {self.pause_ms}"
            )
        if not self.pause_ms <= self.complete_ms <= self.unsure_ms <= self.open_ms:
            raise ValueError(
                "endpointing silences must grow: pause_ms <= complete_ms <= unsure_ms <= open_ms, got "
                f"{self.pause_ms}, {self.complete_ms}, {self.unsure_ms}, {self.open_ms}"
            )

    def silence_ms(self, completeness: Completeness | None) -> int:
        """The silence that ends a turn judged ``completeness`` (None: nothing to go by)."""
        if completeness is Completeness.COMPLETE:
            return self.complete_ms
        if completeness is Completeness.OPEN:
            return self.open_ms
        return self.unsure_ms


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Hesitation sounds (as recognisers write them).
FILLERS = _wordlist("um umm uh uhh uhm er erm ehm hmm hm mm mmm ah eh")

#: Words a sentence does not end with: articles, prepositions, conjunctions, possessives, auxiliaries,
#: verbs that want an object or a complement ("I'd like", "I need", "my name is").
OPEN_ENDINGS = _wordlist(
    """
    a an the this these those my your our their his her its some any each every another
    and or but so because if than then also plus
    at on in to for of with from by about around after before until till into onto over under between
    near like as per via
    i i'm im i'd id i'll ill i've ive we we're we'd we'll you're he she they it's its there's
    is are was were be been being do does did have has had can could would will shall should may might
    must want wanted need needed like liked love wish hope think let lets get got make book booking reserve
    schedule change move cancel see know call speak talk bring say tell give take try trying going gonna
    wanna gotta looking
    what when where which who whom whose how why
    just maybe probably actually also very really quite about around roughly
    number name called
    """
)

#: Words that end a short answer for sure.
COMPLETE_ENDINGS = _wordlist(
    """
    yes yeah yep yup sure okay ok correct right fine good great perfect exactly absolutely definitely
    no nope nah please thanks thank all everything bye goodbye them works work done ahead me us
    person someone somebody human operator representative receptionist
    monday tuesday wednesday thursday friday saturday sunday today tomorrow tonight weekend
    morning afternoon evening noon midnight o'clock oclock am pm a.m p.m
    one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    half quarter first second third fourth fifth last earliest latest
    january february march april may june july august september october november december
    cleaning checkup check-up emergency
    """
)

THANK_YOU = ["thank", "you"]

_WORD = re.compile(r"[a-z0-9][a-z0-9'.:\-]*")
_ORDINAL = re.compile(r"^\d+(st|nd|rd|th)$")
_NUMBERISH = re.compile(r"^\d[\d.:\-]*$")


def words_of(text: str) -> list[str]:
    """Lower-case words, digits and clock times kept ("7.30", "312-555-0101", "14th")."""
    return [w.rstrip(".:-'") or w for w in _WORD.findall(text.lower())]


def _after_number_word(word: str) -> bool:
    """Whether a number may follow ``word`` ("for 4", "at 2", "party of 4", "3 or 4")."""
    return word in OPEN_ENDINGS or word in ("number", "about", "around") or bool(_NUMBERISH.match(word))


#: An early recognition this unsure (``Recognition.confidence``) does not end a turn as complete: Whisper
#: heard a lone "Um" as "done" at 0.19 (runner-up "jump" at 0.19) and cut the caller off. Correct short
#: answers measured 0.16-0.86 (p10 0.44, whisper.py's docstring), so about one in twenty waits the unsure
#: silence (800 ms) instead of 200 ms; a misheard filler no longer ends the turn.
COMPLETE_MIN_CONFIDENCE = 0.3


def judge(text: str, confidence: float | None = None) -> Completeness:
    """Whether ``text`` (the caller's words so far) reads as a finished answer, an unfinished one, or either.

    Only the last word matters, and the text's own trailing punctuation when the recogniser writes it
    ("…", "-", "," say the speaker trails off). No words at all (a filler the recogniser dropped, a cough)
    is open: the caller may be about to speak. A complete reading the recogniser was unsure of
    (``confidence`` below :data:`COMPLETE_MIN_CONFIDENCE`) is only unsure.
    """
    completeness = _judge_words(text)
    unsure = confidence is not None and confidence < COMPLETE_MIN_CONFIDENCE
    return Completeness.UNSURE if completeness is Completeness.COMPLETE and unsure else completeness


def _judge_words(text: str) -> Completeness:
    stripped = text.strip()
    words = words_of(stripped)
    if not words:
        return Completeness.OPEN
    if stripped.endswith(("...", "…", "-", ",")):
        return Completeness.OPEN
    last = words[-1]
    if last in ("2", "4") and (len(words) < 2 or not _after_number_word(words[-2])):
        return Completeness.OPEN  # Whisper writes a cut-off "for"/"to" as a digit: "a table 4"
    if last in FILLERS:
        return Completeness.OPEN
    if last in OPEN_ENDINGS:
        return Completeness.OPEN
    if last in COMPLETE_ENDINGS or _NUMBERISH.match(last) or _ORDINAL.match(last) or words[-2:] == THANK_YOU:
        return Completeness.COMPLETE
    return Completeness.UNSURE


class EndOfTurn:
    """One caller turn's end-of-turn rule: the silence it needs, revised as early recognitions come back.

    ``pause(revision)`` is called when the turn pauses (the detector numbers its pauses), ``resumed()`` when
    the caller speaks again, ``judged(revision, text)`` when an early recognition of that pause is back
    (``text=None``: it failed; the unsure rule applies); a result for a pause that is no longer the current
    one is ignored. Between the pause and its result the turn waits up to ``open_ms``.
    """

    def __init__(self, policy: EndpointingPolicy | None = None) -> None:
        self.policy = policy or EndpointingPolicy()
        self._revision: int | None = None
        self._waiting = False
        self.completeness: Completeness | None = None
        self.text: str | None = None

    def reset(self) -> None:
        self._revision = None
        self._waiting = False
        self.completeness = None
        self.text = None

    def pause(self, revision: int) -> None:
        self.reset()
        self._revision = revision
        self._waiting = True

    def resumed(self) -> None:
        self.reset()

    def judged(self, revision: int, text: str | None, confidence: float | None = None) -> bool:
        """Record what the turn so far says (and how sure the recogniser was); False when ``revision`` is
        stale (the caller spoke since)."""
        if revision != self._revision:
            return False
        self._waiting = False
        self.text = text
        self.completeness = judge(text, confidence) if text is not None else None
        return True

    @property
    def waiting(self) -> bool:
        """A pause's early recognition is running."""
        return self._waiting

    @property
    def silence_ms(self) -> int:
        """The silence that ends the turn now."""
        if self._waiting:
            return self.policy.open_ms
        return self.policy.silence_ms(self.completeness)
