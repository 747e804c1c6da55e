"""Local speech benchmark: hibari TTS, pocketsphinx ASR on the phone path, and WebRTC VAD turn detection.

Run: ``python benchmarks/bench_speech.py`` (``--quick`` uses 10 caller lines and skips the slow stock-LM and
8 kHz-native decodes; ``--verbose`` prints every recognition). Everything runs offline on one process.

``--set`` runs the offline speech test set instead (tests/speech_set/lines.yaml: caller lines of the three
shipped flows, spoken by espeak-ng en-us and flite slt/kal/awb/rms through the phone path, plus the two real
recordings of tests/support/recordings.py) with pocketsphinx as shipped (a language model from each flow's
phrases) and Whisper side by side: word accuracy per voice (numbers scored by their best reading), slot
accuracy per slot through the dialogue's parsers, and decode time. ``--json PATH`` also writes the figures.

- TTS: model load time, real-time factor (synthesis time / audio duration) over the caller lines, and time
  to the first chunk of ``stream_mulaw`` against synthesizing a whole three-sentence reply.
- ASR, phone path: each of ``SAMPLE_CALLER_LINES`` is synthesized by hibari, resampled 24 → 8 kHz by our
  ``Downsampler24to8``, μ-law encoded, decoded and recognised. Word accuracy (1 − WER) for: the flow LM
  (generic phone corpus + ``DEMO_FLOW_PHRASES``, which never contain the test lines), the generic corpus
  alone, pocketsphinx's stock LM, an "oracle" LM that contains the test lines (an upper bound, not a fair
  figure), and 8 kHz-native front ends instead of upsampling to 16 kHz.
- Confidence: mean and range for correctly and wrongly recognised lines, out-of-domain speech and noise.
- VAD: webrtcvad-wheels against ``pocketsphinx.Vad`` through the same :class:`TurnDetector`, on the caller
  lines separated by 1 s of silence, clean and with white noise; start/stop error against the true edges
  (first/last 10 ms window within 40 dB of the loudest), missed/extra turns, false starts on noise alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from ivr.speech.asr import Recognizer
from ivr.speech.corpus import DEMO_FLOW_PHRASES, SAMPLE_CALLER_LINES
from ivr.speech.lm import normalize_words
from ivr.speech.tts import Synthesizer
from ivr.speech.vad import FRAME_BYTES, SpeechStarted, SpeechStopped, TurnDetector, frame_classifier
from ivr.speech.wer import WordErrors, word_errors

RATE = 8000
OUT_OF_DOMAIN = (
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light energy into chemical energy.",
    "The parliament debated the new fishing quotas yesterday.",
    "Bring me the blue umbrella from the attic.",
    "My cat knocked the glass off the kitchen table.",
    "Please send the quarterly report to accounting.",
)
REPLY = (
    "Thanks, Maria. I have a cleaning on Tuesday at ten thirty with Doctor Patel. "
    "Shall I book it for you? You can also say another day."
)


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def white_noise(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 32768 * 10 ** (dbfs / 20), round(seconds * RATE))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def phone(pcm: np.ndarray) -> np.ndarray:
    """Through the μ-law codec, as a call would carry it."""
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm))


# -- TTS ------------------------------------------------------------------------------------------------
def bench_tts(lines: Sequence[str]) -> dict[str, bytes]:
    start = time.perf_counter()
    synth = Synthesizer(cache_size=0)
    synth.load()
    load_s = time.perf_counter() - start
    audio: dict[str, bytes] = {}
    start = time.perf_counter()
    for line in lines:
        audio[line] = synth.synthesize_mulaw(line)
    synth_s = time.perf_counter() - start
    seconds = sum(len(a) for a in audio.values()) / RATE
    start = time.perf_counter()
    chunks = synth.stream_mulaw(REPLY)
    first = next(chunks)
    first_s = time.perf_counter() - start
    rest = list(chunks)
    stream_s = time.perf_counter() - start
    reply_s = (len(first) + sum(len(c) for c in rest)) / RATE
    table(
        "TTS (hibari heart, 1 onnx thread, phone path to 8 kHz μ-law)",
        ["measure", "value"],
        [
            ["load (model + G2P + warm-up)", f"{load_s:.2f} s"],
            [f"synthesis of {len(lines)} caller lines", f"{synth_s:.2f} s for {seconds:.1f} s of audio"],
            [
                "real-time factor (synthesis / audio)",
                f"{synth_s / seconds:.4f} ({seconds / synth_s:.0f}x real time)",
            ],
            [f"stream_mulaw first chunk ({1 + len(rest)} sentences)", f"{first_s * 1000:.0f} ms"],
            ["stream_mulaw whole reply", f"{stream_s * 1000:.0f} ms for {reply_s:.1f} s of audio"],
        ],
    )
    return audio


# -- ASR ------------------------------------------------------------------------------------------------
class NativeDecoder:
    """pocketsphinx on 8 kHz audio directly: the en-us model with an 8 kHz filter bank (for comparison)."""

    def __init__(self, lm_path: Path, dict_path: Path, upperf: int, nfilt: int, workdir: Path) -> None:
        import pocketsphinx

        src = Path(pocketsphinx.get_model_path("en-us/en-us"))
        hmm = workdir / f"hmm-{upperf}-{nfilt}"
        hmm.mkdir()
        for f in src.iterdir():
            if f.name != "feat.params":
                os.symlink(f, hmm / f.name)
        params = (src / "feat.params").read_text()
        params = params.replace("-upperf 6800", f"-upperf {upperf}").replace("-nfilt 25", f"-nfilt {nfilt}")
        (hmm / "feat.params").write_text(params)
        self.decoder: Any = pocketsphinx.Decoder(
            hmm=str(hmm), lm=str(lm_path), dict=str(dict_path), samprate=RATE, nfft=256, loglevel="FATAL"
        )

    def recognize(self, pcm16_8k: bytes) -> str:
        self.decoder.start_utt()
        self.decoder.process_raw(pcm16_8k, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def run_asr(
    name: str, recognize: Callable[[bytes], Any], audio: dict[str, bytes], verbose: bool
) -> tuple[list[Any], WordErrors, float]:
    total = WordErrors(0, 0, 0, 0)
    decode_s = 0.0
    results = []
    for line, mulaw in audio.items():
        pcm = ulaw_to_pcm16(mulaw).astype("<i2").tobytes()
        start = time.perf_counter()
        result = recognize(pcm)
        decode_s += time.perf_counter() - start
        text = result if isinstance(result, str) else result.text
        errors = word_errors(line, text)
        total = total + errors
        results.append((line, result, errors))
        if verbose and errors.errors:
            print(f"  [{name}] {line!r} → {text!r}")
    seconds = sum(len(a) for a in audio.values()) / RATE
    return results, total, decode_s / seconds


def bench_asr(audio: dict[str, bytes], quick: bool, verbose: bool, synth_ood: dict[str, bytes]) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        os.environ["IVR_SPEECH_CACHE"] = tmp  # build the LMs afresh, so load times include building
        configs: list[tuple[str, dict[str, Any]]] = [
            ("flow LM (generic + flow phrases), 8k→16k", {"sentences": DEMO_FLOW_PHRASES}),
            ("generic phone corpus only, 8k→16k", {"sentences": ()}),
            (
                "oracle LM (+ the test lines!), 8k→16k",
                {"sentences": (*DEMO_FLOW_PHRASES, *SAMPLE_CALLER_LINES)},
            ),
        ]
        if not quick:
            configs.append(("stock en-us LM, 8k→16k", {}))
        flow: Recognizer | None = None
        flow_results: list[Any] = []
        for name, kwargs in configs:
            start = time.perf_counter()
            rec = Recognizer(**kwargs)
            rec.load()
            load_s = time.perf_counter() - start
            results, errors, rtf = run_asr(name, rec.recognize, audio, verbose)
            rows.append([name, f"{errors.accuracy:.3f}", errors.errors, f"{rtf:.3f}", f"{load_s:.2f} s"])
            if flow is None:
                flow, flow_results = rec, results
        assert flow is not None and flow.lm_path is not None
        if not quick:
            dict_path = flow.lm_path.with_suffix(".dict")
            for upperf, nfilt in ((3500, 25), (4000, 25), (3700, 20)):
                start = time.perf_counter()
                native = NativeDecoder(flow.lm_path, dict_path, upperf, nfilt, Path(tmp))
                load_s = time.perf_counter() - start
                name = f"flow LM, 8 kHz native (upperf {upperf}, {nfilt} filters)"
                _, errors, rtf = run_asr(name, native.recognize, audio, verbose)
                rows.append([name, f"{errors.accuracy:.3f}", errors.errors, f"{rtf:.3f}", f"{load_s:.2f} s"])
        words = sum(len(normalize_words(line)) for line in audio)
        table(
            f"ASR on the phone path ({len(audio)} caller lines, {words} words; accuracy = 1 − WER)",
            ["configuration", "accuracy", "errors", "RTF", "load"],
            rows,
        )
        bench_confidence(flow, flow_results, synth_ood)


def bench_confidence(rec: Recognizer, results: list[Any], ood: dict[str, bytes]) -> None:
    groups: dict[str, list[float]] = {"in-domain, recognised exactly": [], "in-domain, with errors": []}
    for _, result, errors in results:
        groups["in-domain, recognised exactly" if errors.errors == 0 else "in-domain, with errors"].append(
            result.confidence
        )
    groups["out-of-domain speech"] = [
        rec.recognize(ulaw_to_pcm16(a).astype("<i2").tobytes()).confidence for a in ood.values()
    ]
    noise = []
    for i, dbfs in enumerate((-45, -35, -25)):
        noise.append(phone(white_noise(2.0, dbfs, seed=i)))
    t = np.arange(2 * RATE) / RATE
    noise.append(phone((3000 * np.sin(2 * np.pi * 120 * t)).astype(np.int16)))
    reversed_speech = [ulaw_to_pcm16(a)[::-1].astype(np.int32) for a in list(ood.values())[:4]]
    n = min(len(r) for r in reversed_speech)
    noise.append(phone(np.clip(sum(r[:n] for r in reversed_speech) // 2, -32768, 32767).astype(np.int16)))
    noise_results = [rec.recognize(x.astype("<i2").tobytes()) for x in noise]
    groups["noise (white −45/−35/−25 dBFS, hum, babble)"] = [r.confidence for r in noise_results]
    rows = []
    for name, values in groups.items():
        if values:
            rows.append([name, len(values), f"{np.mean(values):.2f}", f"{min(values):.2f}–{max(values):.2f}"])
    table("ASR confidence (flow LM)", ["input", "n", "mean", "range"], rows)
    empty = sum(1 for r in noise_results if not r.text)
    print(f"noise inputs decoded to no words: {empty} of {len(noise_results)}")


# -- VAD ------------------------------------------------------------------------------------------------
def speech_edges_ms(pcm: np.ndarray) -> tuple[int, int]:
    win = RATE // 100
    n = len(pcm) // win
    energy = (pcm[: n * win].astype(np.float64).reshape(n, win) ** 2).mean(axis=1)
    loud = np.nonzero(energy > energy.max() * 1e-4)[0]
    return int(loud[0]) * 10, (int(loud[-1]) + 1) * 10


def bench_vad(audio: dict[str, bytes]) -> None:
    silence = np.zeros(RATE, dtype=np.int16)
    parts: list[np.ndarray] = [silence]
    truth: list[tuple[int, int]] = []
    offset_ms = 1000
    for mulaw in audio.values():
        pcm = ulaw_to_pcm16(mulaw)
        start, end = speech_edges_ms(pcm)
        truth.append((offset_ms + start, offset_ms + end))
        parts += [pcm, silence]
        offset_ms += len(pcm) * 1000 // RATE + 1000
    clean = np.concatenate(parts)
    rows = []
    agreement_rows = []
    for label, dbfs in (("clean", None), ("white noise −45 dBFS", -45.0), ("white noise −35 dBFS", -35.0)):
        signal = (
            clean
            if dbfs is None
            else np.clip(
                clean.astype(np.int32) + white_noise(len(clean) / RATE, dbfs, seed=11), -32768, 32767
            ).astype(np.int16)
        )
        data = phone(signal).astype("<i2").tobytes()
        for backend in ("webrtcvad", "pocketsphinx"):
            start = time.perf_counter()
            events = TurnDetector(backend=backend).feed_pcm16(data)
            cost_us = (time.perf_counter() - start) / (len(data) / FRAME_BYTES) * 1e6
            starts = [e.at_ms for e in events if isinstance(e, SpeechStarted)]
            stops = [e.at_ms for e in events if isinstance(e, SpeechStopped)]
            start_err, stop_err, missed = [], [], 0
            for t0, t1 in truth:
                near = [s for s in starts if abs(s - t0) < 500]
                near_stop = [s for s in stops if abs(s - t1) < 700]
                if not near or not near_stop:
                    missed += 1
                    continue
                start_err.append(near[0] - t0)
                stop_err.append(near_stop[0] - t1)
            extra = len(starts) - (len(truth) - missed)
            rows.append(
                [
                    label,
                    backend,
                    f"{len(starts)}/{len(truth)}",
                    missed,
                    extra,
                    f"{np.mean(start_err):+.0f} / {np.max(np.abs(start_err)):.0f}",
                    f"{np.mean(stop_err):+.0f} / {np.max(np.abs(stop_err)):.0f}",
                    f"{cost_us:.1f}",
                ]
            )
        frames = [data[i : i + FRAME_BYTES] for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES)]
        for mode in range(4):
            a = frame_classifier("webrtcvad", mode)
            b = frame_classifier("pocketsphinx", mode)
            same = sum(a(f) == b(f) for f in frames)
            agreement_rows.append([label, mode, f"{same}/{len(frames)}"])
    table(
        "VAD turn detection (aggressiveness 2, start 120 ms, stop 600 ms); errors in ms, mean / max |error|",
        ["audio", "backend", "turns", "missed", "extra", "start error", "stop error", "µs/frame"],
        rows,
    )
    table(
        "VAD per-frame decisions, webrtcvad vs pocketsphinx.Vad",
        ["audio", "mode", "identical"],
        agreement_rows,
    )
    false_rows = []
    for dbfs in (-50.0, -45.0, -40.0, -35.0, -30.0):
        data = phone(white_noise(60.0, dbfs, seed=5)).astype("<i2").tobytes()
        counts = [
            sum(isinstance(e, SpeechStarted) for e in TurnDetector(backend=b).feed_pcm16(data))
            for b in ("webrtcvad", "pocketsphinx")
        ]
        false_rows.append([f"{dbfs:.0f} dBFS", *counts])
    table(
        "VAD false starts on 60 s of white noise only",
        ["noise level", "webrtcvad", "pocketsphinx"],
        false_rows,
    )


# -- the offline speech test set: pocketsphinx (as shipped) vs Whisper ------------------------------------
def _set_engines(engines: Sequence[str]) -> dict[str, Callable[[Any], Callable[[bytes], Any]]]:
    """Engine name → (line → recognise function); pocketsphinx gets the line's flow's language model."""
    from ivr.engines.local import flow_phrases
    from ivr.speech.recognizer import shared_recognizer
    from tests.support.speech_set import _flows

    made: dict[str, Callable[[Any], Callable[[bytes], Any]]] = {}
    if "pocketsphinx" in engines:
        by_flow = {fid: Recognizer(sentences=flow_phrases(flow)) for fid, flow in _flows().items()}
        for rec in by_flow.values():
            rec.load()
        made["pocketsphinx"] = lambda line: by_flow[line.flow if line else "general-reception"].recognize
    if "whisper" in engines:
        whisper = shared_recognizer("whisper")
        whisper.load()
        if whisper.kind != "whisper":
            raise SystemExit(f"bench_speech: Whisper did not load ({whisper.degraded})")
        made["whisper"] = lambda line: whisper.recognize
    return made


def bench_set(engines: Sequence[str], verbose: bool, json_path: str | None) -> None:
    import json

    from ivr.speech.wer import best_reading_errors
    from tests.support import recordings
    from tests.support.speech_set import SLOT_KINDS, LineResult, SetRun, load_lines, read_slots, slots_right
    from tests.support.voices import VOICES, VoiceCache, missing_voices

    if missing_voices():
        raise SystemExit(f"bench_speech --set: install {sorted({v.binary for v in missing_voices()})} first")
    lines = load_lines()
    cache = VoiceCache()
    start = time.perf_counter()
    for voice in VOICES:
        for line in lines:
            cache.mulaw(voice, line.text)
    synth_s = time.perf_counter() - start
    words = sum(len(normalize_words(line.text)) for line in lines)
    print(
        f"\nspeech test set: {len(lines)} lines ({words} words) × {len(VOICES)} voices, synthesized and put "
        f"through the phone path in {synth_s:.1f} s"
    )
    runs: dict[str, SetRun] = {}
    real: dict[str, dict[str, float]] = {}
    for name, recognizer_for in _set_engines(engines).items():
        run = SetRun()
        started = time.perf_counter()
        for voice in VOICES:
            for line in lines:
                result = recognizer_for(line)(cache.pcm16(voice, line.text))
                found = read_slots(line, result.text)
                errors = best_reading_errors(line.text, result.text)
                run.results.append(
                    LineResult(
                        voice.name, line, result.text, result.confidence, errors, found,
                        slots_right(line, found), result.decode_ms,
                    )
                )  # fmt: skip
                if verbose and (errors.errors or not all(run.results[-1].right.values())):
                    print(f"  [{name}/{voice.name}] {line.text!r} → {result.text!r} {found}")
        run.seconds = time.perf_counter() - started
        runs[name] = run
        real[name] = {}
        for recording in recordings.RECORDINGS:
            turns = recordings.phone_turns(recordings.fetch(recording))
            heard = " ".join(recognizer_for(None)(turn).text for turn in turns)
            real[name][recording.name] = best_reading_errors(recording.text, heard).accuracy
            if verbose:
                print(f"  [{name}/{recording.name}] {heard!r}")
    names = list(runs)
    rows = [
        [voice, *(f"{runs[n].words(voice).accuracy:.3f}" for n in names)] for voice in runs[names[0]].voices()
    ]
    rows.append(["all 5 voices", *(f"{runs[n].words().accuracy:.3f}" for n in names)])
    for recording in recordings.RECORDINGS:
        rows.append([f"{recording.name} (real)", *(f"{real[n][recording.name]:.3f}" for n in names)])
    table("word accuracy (1 − WER, numbers by their best reading)", ["voice", *names], rows)
    rows = []
    for kind in (*SLOT_KINDS, None):
        counts = {n: runs[n].slot_counts(kind=kind) for n in names}
        rows.append(
            [kind or "all slots", *(f"{r / t:.3f} ({r}/{t})" if t else "-" for r, t in counts.values())]
        )
    table("slot accuracy (the dialogue's parsers on the recognised text)", ["slot", *names], rows)
    rows = []
    for kind in (*SLOT_KINDS, None):
        counts = {n: runs[n].slot_counts(kind=kind, chosen=True) for n in names}
        rows.append(
            [kind or "all slots", *(f"{r / t:.3f} ({r}/{t})" if t else "-" for r, t in counts.values())]
        )
    table(
        "slot accuracy with the dialogue's choice (a close runner-up, or a weekday heard as other words)",
        ["slot", *names],
        rows,
    )
    rows = []
    for voice in runs[names[0]].voices():
        rows.append(
            [
                voice,
                *(
                    f"{runs[n].slot_accuracy(voice):.3f} / {runs[n].slot_accuracy(voice, chosen=True):.3f}"
                    for n in names
                ),
            ]
        )
    table("slot accuracy per voice (best text / with the dialogue's choice)", ["voice", *names], rows)
    rows = []
    for n in names:
        decode = sorted(r.decode_ms for r in runs[n].results)
        rows.append(
            [
                n,
                f"{np.median(decode):.0f} ms",
                f"{np.percentile(decode, 90):.0f} ms",
                f"{runs[n].seconds:.0f} s",
            ]
        )
    table("decode time per line", ["engine", "median", "p90", "whole set"], rows)
    if json_path:
        figures = {
            n: {
                "words": {v: runs[n].words(v).accuracy for v in runs[n].voices()}
                | {"all": runs[n].words().accuracy},
                "real": real[n],
                "slots": {k: runs[n].slot_accuracy(kind=k) for k in SLOT_KINDS}
                | {"all": runs[n].slot_accuracy()},
                "slots_with_choice": {k: runs[n].slot_accuracy(kind=k, chosen=True) for k in SLOT_KINDS}
                | {"all": runs[n].slot_accuracy(chosen=True)},
                "decode_ms_median": float(np.median([r.decode_ms for r in runs[n].results])),
            }
            for n in names
        }
        Path(json_path).write_text(json.dumps(figures, indent=2))
        print(f"\nfigures written to {json_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 lines; skip stock-LM and 8 kHz-native decodes"
    )
    parser.add_argument("--verbose", action="store_true", help="print every misrecognised line")
    parser.add_argument(
        "--set",
        action="store_true",
        help="the offline speech test set: pocketsphinx vs Whisper, side by side",
    )
    parser.add_argument(
        "--engines", default="pocketsphinx,whisper", help="with --set: comma-separated engines to compare"
    )
    parser.add_argument("--json", metavar="PATH", help="with --set: also write the figures as JSON")
    args = parser.parse_args()
    if args.set:
        print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
        bench_set([e.strip() for e in args.engines.split(",") if e.strip()], args.verbose, args.json)
        return
    lines = SAMPLE_CALLER_LINES[:10] if args.quick else SAMPLE_CALLER_LINES
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    audio = bench_tts(lines)
    ood_synth = Synthesizer(cache_size=0)
    ood = {line: ood_synth.synthesize_mulaw(line) for line in OUT_OF_DOMAIN}
    bench_asr(audio, args.quick, args.verbose, ood)
    bench_vad(audio)


if __name__ == "__main__":
    main()
