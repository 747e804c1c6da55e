"""Realtime GA server events built as plain dicts (sans-I/O), for the in-process engines.

The shapes are those of the GA ``openai.types.realtime`` server events; the tests check every event an
engine emits against those types (tests/support/oracles.py). Ids are sequential per writer so runs are
reproducible.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Realtime's name for 8 kHz G.711 μ-law in GA session formats.
PCMU_FORMAT = {"type": "audio/pcmu"}


@dataclass
class ResponseState:
    """One response being written: its ids, output items and what it has said so far."""

    response_id: str
    item_id: str | None = None
    transcript: str = ""
    audio_ms: float = 0.0
    output: list[dict[str, Any]] = field(default_factory=list)
    started_audio: bool = False
    done: bool = False


class ServerEventWriter:
    """Builds GA server events; one writer per engine session."""

    def __init__(self, prefix: str = "local") -> None:
        self._prefix = prefix
        self._ids = itertools.count(1)
        self.last_item_id: str | None = None

    def new_id(self, kind: str) -> str:
        return f"{kind}_{self._prefix}{next(self._ids):06d}"

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "event_id": self.new_id("event"), **fields}

    @staticmethod
    def dump(event: dict[str, Any]) -> bytes:
        return orjson.dumps(event)

    # ---- session ------------------------------------------------------------------------------------------

    def session(
        self, *, model: str, instructions: str, voice: str, tools: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The effective session, as ``session.created``/``session.updated`` report it (μ-law both ways)."""
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.new_id("sess"),
            "model": model,
            "output_modalities": ["audio"],
            "instructions": instructions,
            "max_output_tokens": "inf",
            "tool_choice": "auto",
            "tools": tools,
            "tracing": None,
            "truncation": "auto",
            "audio": {
                "input": {
                    "format": dict(PCMU_FORMAT),
                    "noise_reduction": None,
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 600,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": dict(PCMU_FORMAT), "voice": voice, "speed": 1.0},
            },
        }

    # ---- caller turns -------------------------------------------------------------------------------------

    def speech_started(self, item_id: str, at_ms: int) -> dict[str, Any]:
        return self.event("input_audio_buffer.speech_started", audio_start_ms=at_ms, item_id=item_id)

    def speech_stopped(self, item_id: str, at_ms: int) -> dict[str, Any]:
        return self.event("input_audio_buffer.speech_stopped", audio_end_ms=at_ms, item_id=item_id)

    def committed(self, item_id: str) -> dict[str, Any]:
        previous, self.last_item_id = self.last_item_id, item_id
        return self.event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)

    def transcription(self, item_id: str, transcript: str, seconds: float) -> dict[str, Any]:
        return self.event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(seconds, 3)},
        )

    def item_added(self, item: dict[str, Any]) -> dict[str, Any]:
        previous, self.last_item_id = self.last_item_id, item["id"]
        return self.event("conversation.item.added", previous_item_id=previous, item=item)

    def truncated(self, item_id: str, audio_end_ms: int) -> dict[str, Any]:
        return self.event(
            "conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=audio_end_ms
        )

    def error(self, code: str, message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
        return self.event("error", error={"type": type_, "code": code, "message": message, "param": None})

    # ---- responses ----------------------------------------------------------------------------------------

    @staticmethod
    def _response(state: ResponseState, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
        details = {"type": status, "reason": "turn_detected"} if status == "cancelled" else None
        return {
            "id": state.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": state.output,
            "usage": usage,
        }

    def response_created(self, state: ResponseState) -> dict[str, Any]:
        return self.event("response.created", response=self._response(state, "in_progress", None))

    @staticmethod
    def _message(item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
        content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def begin_message(self, state: ResponseState) -> list[dict[str, Any]]:
        """Open the assistant audio item of a response."""
        state.item_id = self.new_id("item")
        item = self._message(state.item_id, "in_progress", None)
        where = self._where(state)
        return [
            self.event(
                "response.output_item.added",
                response_id=state.response_id,
                output_index=len(state.output),
                item=item,
            ),
            self.item_added(item),
            self.event("response.content_part.added", **where, part={"type": "audio", "transcript": ""}),
        ]

    def _where(self, state: ResponseState) -> dict[str, Any]:
        assert state.item_id is not None
        return {
            "response_id": state.response_id,
            "item_id": state.item_id,
            "output_index": len(state.output),
            "content_index": 0,
        }

    def audio_delta(self, state: ResponseState, b64: str, ms: float) -> dict[str, Any]:
        state.audio_ms += ms
        return self.event("response.output_audio.delta", **self._where(state), delta=b64)

    def transcript_delta(self, state: ResponseState, text: str) -> dict[str, Any]:
        state.transcript += text
        return self.event("response.output_audio_transcript.delta", **self._where(state), delta=text)

    def end_message(self, state: ResponseState, status: str = "completed") -> list[dict[str, Any]]:
        """Close the assistant audio item (``incomplete`` when cut short)."""
        where = self._where(state)
        done = self._message(state.item_id or "", status, state.transcript)
        events = [
            self.event("response.output_audio.done", **where),
            self.event("response.output_audio_transcript.done", **where, transcript=state.transcript),
            self.event(
                "response.content_part.done", **where, part={"type": "audio", "transcript": state.transcript}
            ),
            self.event(
                "response.output_item.done",
                response_id=state.response_id,
                output_index=where["output_index"],
                item=done,
            ),
            self.event("conversation.item.done", previous_item_id=None, item=done),
        ]
        state.output.append(done)
        state.item_id = None
        return events

    def function_call(
        self, state: ResponseState, call_id: str, name: str, arguments: str
    ) -> list[dict[str, Any]]:
        item_id = self.new_id("item")
        index = len(state.output)

        def item(status: str, args: str) -> dict[str, Any]:
            return {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": status,
                "call_id": call_id,
                "name": name,
                "arguments": args,
            }

        done = item("completed", arguments)
        events = [
            self.event(
                "response.output_item.added",
                response_id=state.response_id,
                output_index=index,
                item=item("in_progress", ""),
            ),
            self.item_added(item("in_progress", "")),
            self.event(
                "response.function_call_arguments.done",
                response_id=state.response_id,
                item_id=item_id,
                output_index=index,
                call_id=call_id,
                name=name,
                arguments=arguments,
            ),
            self.event(
                "response.output_item.done", response_id=state.response_id, output_index=index, item=done
            ),
            self.event("conversation.item.done", previous_item_id=None, item=done),
        ]
        state.output.append(done)
        return events

    def response_done(
        self, state: ResponseState, status: str, usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        state.done = True
        return self.event("response.done", response=self._response(state, status, usage or zero_usage()))


def zero_usage() -> dict[str, Any]:
    """Token usage of a response that used no tokens (the local engine)."""
    return {
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "input_token_details": {
            "text_tokens": 0,
            "audio_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 0, "audio_tokens": 0},
    }
