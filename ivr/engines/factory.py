"""Which engine answers a call, and opening it.

- ``realtime``: OpenAI Realtime over a WebSocket (the default for OpenAI models).
- ``chat``: the Chat Completions audio models, named by the flow (``gpt-audio-1.5``,
  ``gpt-4o-audio-preview-2025-06-03``, ``gpt-4o-mini-audio-preview…``).
- ``local``: the offline engine — when IVR_ENGINE=local, when IVR_ENGINE=auto and there is no
  OPENAI_API_KEY, or mid-call as a flow's ``model.fallback: local``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..call.session import CallSession
    from ..settings import Settings
    from .base import InProcessModel

EngineKind = Literal["realtime", "chat", "local"]

#: Model-name prefixes served by Chat Completions (audio in, audio out), not by the Realtime API.
CHAT_AUDIO_PREFIXES = ("gpt-audio", "gpt-4o-audio-preview", "gpt-4o-mini-audio-preview")


def is_chat_audio_model(model: str) -> bool:
    """``gpt-audio-1.5``, ``gpt-4o-audio-preview…``: Chat Completions models; ``gpt-realtime`` is not."""
    name = model.strip().lower()
    return any(name == p or name.startswith(p + "-") or name.startswith(p + ".") for p in CHAT_AUDIO_PREFIXES)


def engine_kind(settings: Settings, model: str) -> EngineKind:
    if settings.uses_local_engine:
        return "local"
    return "chat" if is_chat_audio_model(model) else "realtime"


async def open_engine(kind: EngineKind, call: CallSession, *, fallback: bool = False) -> InProcessModel:
    """Create and open the in-process engine for ``call`` (``realtime`` is opened by the session itself)."""
    if kind == "local":
        from .local import LocalEngine

        return await LocalEngine.for_call(call, fallback=fallback).open()
    if kind == "chat":
        from .chat import ChatEngine

        return await ChatEngine.for_call(call).open()
    raise ValueError(f"engine {kind!r} is not an in-process engine")
