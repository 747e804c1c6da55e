"""Local speech for the offline engine.

* Speech recognition: :func:`shared_recognizer` picks the engine from ``IVR_ASR`` — ``whisper`` (default:
  Whisper base through faster-whisper/CTranslate2, int8, its files shipped in two PyPI wheels and checked by
  SHA-256 before loading, see :mod:`ivr.speech.whisper`) or ``pocketsphinx`` (light, with a language model
  built from the flow's phrases, :mod:`ivr.speech.asr`). When Whisper cannot load, pocketsphinx is used and
  the start-up log says DEGRADED. One recogniser per process, shared by every call through a bounded queue.
* Turn detection: WebRTC VAD (:class:`TurnDetector`), with an adaptive end of turn for the offline engine
  (:mod:`ivr.speech.endpointing`: a short wait after a complete answer, a longer one after "um" or "the").
* Text-to-speech: hibari (:class:`Synthesizer`).
* Word error rate for measuring it all (:func:`word_errors`).

Heavy models load lazily, on first use or on an explicit ``load()``; nothing is downloaded at run time.
"""

from __future__ import annotations

from ivr.speech.asr import Recognition, Recognizer
from ivr.speech.corpus import SAMPLE_CALLER_LINES, generic_phone_sentences
from ivr.speech.endpointing import EndpointingPolicy
from ivr.speech.lm import build_arpa, normalize_words
from ivr.speech.recognizer import SharedRecognizer, shared_recognizer
from ivr.speech.tts import Synthesizer, shared_synthesizer
from ivr.speech.vad import SpeechPaused, SpeechStarted, SpeechStopped, TurnDetector, VadEvent
from ivr.speech.wer import WordErrors, word_accuracy, word_errors
from ivr.speech.whisper import ModelIntegrityError, WhisperRecognizer, WhisperUnavailable

__all__ = [
    "SAMPLE_CALLER_LINES",
    "EndpointingPolicy",
    "ModelIntegrityError",
    "Recognition",
    "Recognizer",
    "SharedRecognizer",
    "SpeechPaused",
    "SpeechStarted",
    "SpeechStopped",
    "Synthesizer",
    "TurnDetector",
    "VadEvent",
    "WhisperRecognizer",
    "WhisperUnavailable",
    "WordErrors",
    "build_arpa",
    "generic_phone_sentences",
    "normalize_words",
    "shared_recognizer",
    "shared_synthesizer",
    "word_accuracy",
    "word_errors",
]
