"""Local speech for the offline engine: text-to-speech (hibari), turn detection (WebRTC VAD), speech
recognition (pocketsphinx) with flow-specific language models, and word error rate for measuring it.

Heavy models load lazily, on first use or on an explicit ``load()``.
"""

from __future__ import annotations

from ivr.speech.asr import Recognition, Recognizer
from ivr.speech.corpus import SAMPLE_CALLER_LINES, generic_phone_sentences
from ivr.speech.lm import build_arpa, normalize_words
from ivr.speech.tts import Synthesizer, shared_synthesizer
from ivr.speech.vad import SpeechStarted, SpeechStopped, TurnDetector, VadEvent
from ivr.speech.wer import WordErrors, word_accuracy, word_errors

__all__ = [
    "SAMPLE_CALLER_LINES",
    "Recognition",
    "Recognizer",
    "SpeechStarted",
    "SpeechStopped",
    "Synthesizer",
    "TurnDetector",
    "VadEvent",
    "WordErrors",
    "build_arpa",
    "generic_phone_sentences",
    "normalize_words",
    "shared_synthesizer",
    "word_accuracy",
    "word_errors",
]
