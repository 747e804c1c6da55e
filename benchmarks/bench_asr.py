"""Whisper recogniser benchmark on the 8 kHz μ-law phone path: latency, load, memory, throughput, confidence.

Run: ``python benchmarks/bench_asr.py`` (all parts) or pick parts: ``--load``, ``--latency``,
``--concurrency``, ``--confidence``; ``--engine pocketsphinx`` measures the light engine instead.
Voices are independent of the project (espeak-ng en-us, flite slt/kal/awb/rms: tests/support/voices.py).

- load: a fresh process imports the stack, verifies the SHA-256 of the model files and loads the model;
  time and resident memory after load (and the peak), measured in a child process so nothing is shared.
- latency: median/p90 of decode time for 2–3 s caller turns (5 voices × short booking answers).
- concurrency: N simulated callers (1, 2, 4, 10) each send a turn, wait for its text, send the next, for a
  fixed number of turns, all through ``recognize_async`` and the process-wide bounded queue; turns/s
  sustained and the per-turn latency callers saw (queue wait included).
- confidence: correct short answers ("yes", "four people", "Tuesday", …) against wrong recognitions,
  out-of-domain garbage, reversed speech and noise, so dialogue thresholds can be set from figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from ivr.speech.asr import Recognition  # noqa: E402
from tests.support.voices import VOICES, VoiceCache  # noqa: E402

RATE = 8000
#: Turns of about 2–3 s on the phone path (with 0.3 s of silence each side).
TURNS = (
    "Tuesday would work for me",
    "a table for four on Friday",
    "I need to cancel my appointment",
    "my name is Maria Lopez",
    "sure, go ahead and book it",
    "can I move it to Wednesday",
)
#: Short answers and how a correct recognition may be written (after lowercase and punctuation removal).
SHORT_ANSWERS: dict[str, tuple[str, ...]] = {
    "yes": ("yes", "yeah", "yep"),
    "no": ("no",),
    "four people": ("four people", "4 people", "for people"),  # "for people": same sound, H2 reads it
    "Tuesday": ("tuesday",),
    "Friday at seven": ("friday at seven", "friday at 7", "friday at 7.00", "friday at 7:00"),
    "yes please": ("yes please", "yeah please"),
    "that's right": ("that's right", "thats right"),
    "no thanks": ("no thanks", "no thank you"),
    "sure, go ahead": ("sure go ahead",),
    "the eighth": ("the eighth", "the 8th"),
    "it's Maria Lopez": ("it's maria lopez",),
    "half past seven": ("half past seven", "half past 7"),
}
GARBAGE = ("blorf snickety quandle mip", "zorp glim fennick", "ahh umm errr", "mmm hmm hmm ahh")
#: Real sentences nothing in a flow expects (recognised right, so confidence is high: parsing must reject).
OUT_OF_DOMAIN = ("the purple elephant sang opera beneath the railway bridge", "photosynthesis needs light")


def _tone_noise(kind: str, seconds: float, dbfs: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "hum":
        x = sum(np.sin(2 * math.pi * f * t) / (i + 1) for i, f in enumerate((120, 240, 360)))
    elif kind == "breath":  # low-passed noise bursts
        x = np.convolve(rng.standard_normal(n), np.ones(12) / 12, mode="same") * (
            np.sin(2 * math.pi * 0.7 * t) > 0
        )
    elif kind == "clicks":
        x = np.zeros(n)
        x[rng.integers(0, n, 30)] = 1.0
    else:
        raise ValueError(kind)
    x = np.asarray(x, dtype=np.float64)
    x *= 10 ** (dbfs / 20) * 32767 / (np.sqrt(np.mean(x**2)) + 1e-12)
    pcm = np.clip(x, -32768, 32767).astype("<i2")
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm)).astype("<i2").tobytes()  # through G.711 like a call


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s'.:]", " ", text.lower()).replace(".", " ").split()).replace(" 00", ".00")


def make_recognizer(engine: str) -> object:
    from ivr.speech.recognizer import shared_recognizer

    rec = shared_recognizer(engine)
    rec.load()
    return rec


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_load(engine: str) -> dict[str, float]:
    code = (
        "import time,resource,sys;t=time.perf_counter();"
        "from ivr.speech.recognizer import shared_recognizer;"
        f"r=shared_recognizer({engine!r});r.load();dt=time.perf_counter()-t;"
        "rss=[int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')][0]/1024;"
        "peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024;"
        "import json;print(json.dumps({'load_s':dt,'rss_mb':rss,'peak_mb':peak,'kind':r.kind}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"load ({result['kind']}, fresh process, import + verify + load): {result['load_s']:.2f} s, "
        f"RSS after load {result['rss_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB"
    )
    return result


def turn_audio(cache: VoiceCache) -> list[bytes]:
    return [cache.pcm16(v, text) for text in TURNS for v in VOICES]


def bench_latency(rec: object, cache: VoiceCache) -> dict[str, float]:
    audio = turn_audio(cache)
    rec.recognize(audio[0])  # type: ignore[attr-defined]  # warm up
    times, lengths = [], []
    cpu_start = time.process_time()
    for pcm in audio:
        result: Recognition = rec.recognize(pcm)  # type: ignore[attr-defined]
        times.append(result.decode_ms)
        lengths.append(result.audio_ms / 1000)
    summary = {
        "cpu_ms_per_turn": (time.process_time() - cpu_start) * 1000 / len(audio),
        "turn_s_median": statistics.median(lengths),
        "turn_s_min": min(lengths),
        "turn_s_max": max(lengths),
        "median_ms": statistics.median(times),
        "p90_ms": pct(times, 0.9),
        "max_ms": max(times),
    }
    print(
        f"latency, {len(audio)} turns of {summary['turn_s_min']:.1f}–{summary['turn_s_max']:.1f} s "
        f"(median {summary['turn_s_median']:.1f} s): median {summary['median_ms']:.0f} ms, "
        f"p90 {summary['p90_ms']:.0f} ms, max {summary['max_ms']:.0f} ms; "
        f"CPU time {summary['cpu_ms_per_turn']:.0f} ms per turn (all threads)"
    )
    return summary


async def _callers(rec: object, audio: list[bytes], callers: int, turns_each: int) -> dict[str, float]:
    seen: list[float] = []

    async def caller(index: int) -> None:
        for turn in range(turns_each):
            pcm = audio[(index * 7 + turn) % len(audio)]
            start = time.perf_counter()
            await rec.recognize_async(pcm)  # type: ignore[attr-defined]
            seen.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - start
    return {
        "callers": callers,
        "turns": len(seen),
        "turns_per_s": len(seen) / elapsed,
        "median_ms": statistics.median(seen),
        "p90_ms": pct(seen, 0.9),
        "max_ms": max(seen),
    }


def bench_concurrency(
    rec: object, cache: VoiceCache, levels: Sequence[int], turns: int
) -> list[dict[str, float]]:
    audio = turn_audio(cache)
    rows = []
    for callers in levels:
        each = max(2, math.ceil(turns / callers))
        row = asyncio.run(_callers(rec, audio, callers, each))
        rows.append(row)
        print(
            f"{callers:>2} callers: {row['turns']} turns, {row['turns_per_s']:.2f} turns/s, latency seen by "
            f"callers median {row['median_ms']:.0f} ms,"
            f" p90 {row['p90_ms']:.0f} ms, max {row['max_ms']:.0f} ms"
        )
    return rows


def bench_confidence(rec: object, cache: VoiceCache) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {
        "correct short": [],
        "wrong short": [],
        "garbage speech": [],
        "out-of-domain": [],
        "reversed speech": [],
        "noise": [],
    }
    empty = {k: 0 for k in groups}
    per_answer: dict[str, list[float]] = {}

    def add(group: str, result: Recognition) -> None:
        if not result.text:
            empty[group] += 1
        else:
            groups[group].append(result.confidence)

    for answer, accepted in SHORT_ANSWERS.items():
        for voice in VOICES:
            result: Recognition = rec.recognize(cache.pcm16(voice, answer))  # type: ignore[attr-defined]
            ok = _norm(result.text) in {_norm(a) for a in accepted}
            if ok:
                per_answer.setdefault(answer, []).append(result.confidence)
            add("correct short" if ok else "wrong short", result)
            if not ok:
                print(f"   wrong: {voice.name:16} {answer!r} → {result.text!r} ({result.confidence:.2f})")
    for line in GARBAGE:
        for voice in VOICES:
            add("garbage speech", rec.recognize(cache.pcm16(voice, line)))  # type: ignore[attr-defined]
    for line in OUT_OF_DOMAIN:
        for voice in VOICES:
            add("out-of-domain", rec.recognize(cache.pcm16(voice, line)))  # type: ignore[attr-defined]
    for line in TURNS:
        for voice in VOICES[:3]:
            pcm = np.frombuffer(cache.pcm16(voice, line), dtype="<i2")[::-1].tobytes()
            add("reversed speech", rec.recognize(pcm))  # type: ignore[attr-defined]
    for seed, kind in enumerate(("white", "hum", "breath", "clicks")):
        for dbfs in (-40.0, -30.0, -20.0):
            result = rec.recognize(_tone_noise(kind, 1.5, dbfs, seed))  # type: ignore[attr-defined]
            add("noise", result)
            if result.text:
                print(f"   noise {kind} {dbfs} dBFS → {result.text!r} ({result.confidence:.2f})")
    print("\nconfidence (text non-empty; 'empty' = no text returned, confidence 0)")
    for group, values in groups.items():
        if values:
            print(
                f"  {group:16} n={len(values):3} empty={empty[group]:3} min {min(values):.2f} "
                f"p10 {pct(values, 0.1):.2f} median {statistics.median(values):.2f} max {max(values):.2f}"
            )
        else:
            print(f"  {group:16} n=  0 empty={empty[group]:3}")
    for answer, values in per_answer.items():
        print(
            f"  correct {answer!r:22} min {min(values):.2f} median {statistics.median(values):.2f} "
            f"max {max(values):.2f} ({len(values)}/{len(VOICES)} voices right)"
        )
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", default="whisper", choices=("whisper", "pocketsphinx"))
    parser.add_argument("--load", action="store_true")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--concurrency", action="store_true")
    parser.add_argument("--confidence", action="store_true")
    parser.add_argument("--levels", default="1,2,4,10", help="concurrent callers to try (comma-separated)")
    parser.add_argument("--turns", type=int, default=40, help="turns per concurrency level")
    args = parser.parse_args(argv)
    everything = not (args.load or args.latency or args.concurrency or args.confidence)
    if args.load or everything:
        bench_load(args.engine)
    if not (args.latency or args.concurrency or args.confidence or everything):
        return 0
    cache = VoiceCache()
    rec = make_recognizer(args.engine)
    if args.latency or everything:
        bench_latency(rec, cache)
    if args.concurrency or everything:
        bench_concurrency(rec, cache, [int(n) for n in args.levels.split(",")], args.turns)
    if args.confidence or everything:
        bench_confidence(rec, cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
