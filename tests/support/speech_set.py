"""The offline speech test set (tests/speech_set/lines.yaml): loading, slot reading and scoring.

Used by tests/test_speech_set.py and benchmarks/bench_speech.py. A run speaks every line with every voice
of :mod:`tests.support.voices` through the phone path, recognises it, and scores:

* words: 1 − WER with :func:`ivr.speech.wer.best_reading_errors` (Whisper writes "7.30" for "seven thirty";
  each number counts by its reading closest to the reference);
* slots: the dialogue's own parsers (:mod:`ivr.dialogue.slots`) read the recognised text; the slot the line
  answers (``asked``) is read leniently, any other slot strictly (it needs a cue), as the dialogue does; a
  slot counts as right when the parsed value equals the expected one;
* slots with the dialogue's choice (:func:`dialogue_choice`): when the best text gives no value for the slot
  the line answers, the reading the dialogue would use instead — a close runner-up from Whisper's beam
  or, for a day, a weekday heard as other words (:func:`ivr.dialogue.nbest.choose`, as the dialogue
  calls it, with :func:`ivr.dialogue.soundalike.weekday_sounding`); the value
  found so is read back to the caller in a call, and counts here only when it is the expected one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from datetime import time as clock
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ivr.dialogue import nbest
from ivr.dialogue import slots as parse
from ivr.dialogue.confidence import FLOOR_FRACTION
from ivr.dialogue.soundalike import weekday_sounding
from ivr.flows.loader import flow_files, load_flow
from ivr.flows.offline import Offline
from ivr.speech.wer import WordErrors, best_reading_errors
from tests.support.voices import Voice, VoiceCache

__all__ = [
    "SLOT_KINDS",
    "Line",
    "LineResult",
    "SetRun",
    "dialogue_choice",
    "load_lines",
    "read_slots",
    "run_set",
    "slots_right",
    "today",
]

ROOT = Path(__file__).resolve().parents[2]
SET_FILE = ROOT / "tests" / "speech_set" / "lines.yaml"
FLOWS = ROOT / "flows"
SLOT_KINDS = ("day", "time", "count", "name", "yes_no")


@dataclass(frozen=True, slots=True)
class Line:
    flow: str
    asked: str
    text: str
    slots: Mapping[str, Any]


@cache
def _document() -> dict[str, Any]:
    return yaml.safe_load(SET_FILE.read_text(encoding="utf-8"))


def today() -> date:
    """The day the set's dates are relative to (a fixed Monday, so weekdays always resolve the same way)."""
    value = _document()["today"]
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _slot_value(kind: str, value: Any) -> Any:
    if kind == "day":
        return value.isoformat() if isinstance(value, date) else str(value)
    if kind == "count":
        return int(value)
    if kind == "yes_no":
        return bool(value)
    return str(value)


def load_lines() -> list[Line]:
    """Every line of the set, checked: known flow, known slot kinds, ``asked`` one of them or "open"."""
    lines = []
    flows = set(flow_ids())
    for k, raw in enumerate(_document()["lines"]):
        slots = {kind: _slot_value(kind, v) for kind, v in (raw.get("slots") or {}).items()}
        line = Line(raw["flow"], raw["asked"], raw["text"], slots)
        unknown = set(slots) - set(SLOT_KINDS)
        if line.flow not in flows or unknown or line.asked not in (*SLOT_KINDS, "open"):
            raise ValueError(
                f"{SET_FILE} line {k + 1} ({line.text!r}): flow must be one of {sorted(flows)}, asked one of "
                f"{[*SLOT_KINDS, 'open']}, slots among {list(SLOT_KINDS)}; fix the entry"
            )
        lines.append(line)
    return lines


@cache
def _flows() -> dict[str, Any]:
    return {(f := load_flow(path).flow).id: f for path in flow_files(FLOWS)}


def flow_ids() -> list[str]:
    return sorted(_flows())


@cache
def plausible(flow_id: str) -> Callable[[clock], bool] | None:
    """Whether a time of day falls in the flow's weekly opening hours (how the dialogue places am/pm)."""
    hours = _flows()[flow_id].opening_hours
    if hours is None:
        return None
    ranges = []
    for weekday in range(7):
        for interval in hours.weekly(weekday):
            start, end = (int(a) * 60 + int(b) for a, b in (t.split(":") for t in interval.split("-")))
            ranges.append((start, end))
    if not ranges:
        return None
    return lambda moment: any(a <= moment.hour * 60 + moment.minute < b for a, b in ranges)


def read_slots(line: Line, text: str, kinds: Iterable[str] | None = None) -> dict[str, Any]:
    """The slots of ``kinds`` (default: the line's expected ones) read from ``text`` by the dialogue."""
    found: dict[str, Any] = {}
    for kind in line.slots if kinds is None else kinds:
        strict = line.asked != kind
        value: Any
        if kind == "day":
            day = parse.parse_date(text, today(), strict=strict)
            value = day.isoformat() if day else None
        elif kind == "time":
            moment = parse.parse_time(text, strict=strict, plausible=plausible(line.flow))
            value = moment.strftime("%H:%M") if moment else None
        elif kind == "count":
            value = parse.parse_number(text, strict=strict)
        elif kind == "name":
            value = parse.parse_name(text, strict=strict)
        elif kind == "yes_no":
            value = parse.parse_yes_no(text)
        else:
            raise ValueError(f"unknown slot kind {kind!r}; use one of {SLOT_KINDS}")
        found[kind] = value
    return found


def dialogue_choice(
    line: Line, text: str, confidence: float, alternatives: Sequence[tuple[str, float]]
) -> str:
    """The reading the dialogue would take for a line that answers ``asked``: ``text`` when it gives a
    value for it, else a close runner-up that does, else (a day) ``text`` with a weekday heard as other
    words; ``text`` when none does. The floor is the shipped default (``min_confidence`` × the floor
    fraction), as in :meth:`ivr.dialogue.manager.Dialogue._rescue`."""
    asked = line.asked
    if asked not in SLOT_KINDS or asked == "yes_no":
        return text

    def answers(words: str) -> bool:
        return read_slots(line, words, [asked])[asked] is not None

    floor = Offline().min_confidence * FLOOR_FRACTION
    sounding = weekday_sounding if asked == "day" else None
    found = nbest.choose(text, confidence, alternatives, answers, floor=floor, sounding=sounding)
    return text if found is None else found[0]


def slots_right(line: Line, found: Mapping[str, Any]) -> dict[str, bool]:
    """Per expected slot: whether ``found`` holds the expected value (names compared case-insensitively)."""
    right = {}
    for kind, expected in line.slots.items():
        got = found.get(kind)
        if kind == "name":
            right[kind] = isinstance(got, str) and got.casefold() == str(expected).casefold()
        else:
            right[kind] = got == expected
    return right


@dataclass(frozen=True, slots=True)
class LineResult:
    voice: str
    line: Line
    heard: str
    confidence: float
    errors: WordErrors
    slots: dict[str, Any]
    right: dict[str, bool]
    decode_ms: float
    #: ``right`` for the reading the dialogue would take (:func:`dialogue_choice`).
    right_chosen: dict[str, bool]


@dataclass
class SetRun:
    """All results of one recogniser over the set, with the figures the tests and the benchmark report."""

    results: list[LineResult] = field(default_factory=list)
    seconds: float = 0.0

    def words(self, voice: str | None = None) -> WordErrors:
        total = WordErrors(0, 0, 0, 0)
        for r in self.results:
            if voice is None or r.voice == voice:
                total = total + r.errors
        return total

    def slot_counts(
        self, voice: str | None = None, kind: str | None = None, *, chosen: bool = False
    ) -> tuple[int, int]:
        """(right, total) over expected slots; ``chosen``: with the dialogue's choice of reading."""
        right = total = 0
        for r in self.results:
            if voice is not None and r.voice != voice:
                continue
            for k, ok in (r.right_chosen if chosen else r.right).items():
                if kind is None or k == kind:
                    total += 1
                    right += ok
        return right, total

    def slot_accuracy(
        self, voice: str | None = None, kind: str | None = None, *, chosen: bool = False
    ) -> float:
        right, total = self.slot_counts(voice, kind, chosen=chosen)
        return right / total if total else 1.0

    def voices(self) -> list[str]:
        return list(dict.fromkeys(r.voice for r in self.results))

    def misses(self) -> list[LineResult]:
        return [r for r in self.results if r.errors.errors or not all(r.right.values())]

    def describe(self) -> str:
        rows = []
        for voice in self.voices():
            w = self.words(voice)
            right, total = self.slot_counts(voice)
            chosen, _ = self.slot_counts(voice, chosen=True)
            rows.append(
                f"{voice}: words {w.accuracy:.3f} ({w.reference_words} words), slots {right}/{total} "
                f"({chosen} with the dialogue's choice)"
            )
        w = self.words()
        right, total = self.slot_counts()
        chosen, _ = self.slot_counts(chosen=True)
        rows.append(
            f"all: words {w.accuracy:.3f} ({w.reference_words} words), slots {right}/{total} "
            f"({chosen} with the dialogue's choice)"
        )
        return "\n".join(rows)


def run_set(
    recognize: Callable[[bytes], Any],
    voices: Sequence[Voice],
    cache: VoiceCache,
    lines: Sequence[Line] | None = None,
) -> SetRun:
    """Speak every line with every voice, recognise it with ``recognize(pcm16_8k)``, and score it."""
    run = SetRun()
    started = time.perf_counter()
    for voice in voices:
        for line in load_lines() if lines is None else lines:
            result = recognize(cache.pcm16(voice, line.text))
            text = result if isinstance(result, str) else result.text
            confidence = float(getattr(result, "confidence", 0.0))
            found = read_slots(line, text)
            chosen = dialogue_choice(line, text, confidence, tuple(getattr(result, "alternatives", ())))
            run.results.append(
                LineResult(
                    voice.name,
                    line,
                    text,
                    confidence,
                    best_reading_errors(line.text, text),
                    found,
                    slots_right(line, found),
                    float(getattr(result, "decode_ms", 0.0)),
                    slots_right(line, read_slots(line, chosen)),
                )
            )
    run.seconds = time.perf_counter() - started
    return run
