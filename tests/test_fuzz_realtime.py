"""Property-based fuzzing of the Realtime server-event parser (ivr.realtime.events).

Why: every frame the model socket delivers is parsed by ``ServerEventParser.parse``, about fifty a second
per call; an exception there would end the model task. Hypothesis feeds it arbitrary bytes, arbitrary JSON,
and each documented event (from the GA and beta examples plus one per handled type) with one field dropped
or replaced. The parser must always return a typed event, a ``MalformedEvent`` naming what was wrong, or
``Ignored``; valid events must round-trip in both dialects to the same class; and the per-connection name map
(beta function calls) must never keep entries once their response is done, whatever order events come in.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.realtime import events as ev

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIXTURES = Path(__file__).parent / "fixtures"

TYPED = (
    ev.SessionCreated,
    ev.SessionUpdated,
    ev.SpeechStarted,
    ev.SpeechStopped,
    ev.InputCommitted,
    ev.UserTranscript,
    ev.AudioDelta,
    ev.AudioDone,
    ev.AgentTranscriptDelta,
    ev.AgentTranscriptDone,
    ev.ResponseCreated,
    ev.ResponseDone,
    ev.OutputItemAdded,
    ev.FunctionCallDone,
    ev.ItemTruncated,
    ev.ErrorEvent,
    ev.Ignored,
    ev.MalformedEvent,
)

#: One minimal valid example per event type the parser handles, and the class it must give.
HANDLED: dict[str, tuple[dict[str, Any], type]] = {
    "session.created": ({"session": {"id": "sess_1"}}, ev.SessionCreated),
    "session.updated": ({"session": {"id": "sess_1"}}, ev.SessionUpdated),
    "input_audio_buffer.speech_started": ({"item_id": "item_1", "audio_start_ms": 10}, ev.SpeechStarted),
    "input_audio_buffer.speech_stopped": ({"item_id": "item_1", "audio_end_ms": 900}, ev.SpeechStopped),
    "input_audio_buffer.committed": ({"item_id": "item_1", "previous_item_id": None}, ev.InputCommitted),
    "conversation.item.input_audio_transcription.completed": (
        {"item_id": "item_1", "content_index": 0, "transcript": "hello"},
        ev.UserTranscript,
    ),
    "response.output_audio.delta": ({"response_id": "r1", "item_id": "i1", "delta": "AAAA"}, ev.AudioDelta),
    "response.audio.delta": ({"response_id": "r1", "item_id": "i1", "delta": "AAAA"}, ev.AudioDelta),
    "response.output_audio.done": ({"response_id": "r1", "item_id": "i1"}, ev.AudioDone),
    "response.audio.done": ({"response_id": "r1", "item_id": "i1"}, ev.AudioDone),
    "response.output_audio_transcript.delta": (
        {"response_id": "r1", "item_id": "i1", "delta": "Hel"},
        ev.AgentTranscriptDelta,
    ),
    "response.audio_transcript.delta": (
        {"response_id": "r1", "item_id": "i1", "delta": "Hel"},
        ev.AgentTranscriptDelta,
    ),
    "response.output_audio_transcript.done": (
        {"response_id": "r1", "item_id": "i1", "transcript": "Hello"},
        ev.AgentTranscriptDone,
    ),
    "response.audio_transcript.done": (
        {"response_id": "r1", "item_id": "i1", "transcript": "Hello"},
        ev.AgentTranscriptDone,
    ),
    "response.created": ({"response": {"id": "r1", "status": "in_progress"}}, ev.ResponseCreated),
    "response.done": (
        {
            "response": {
                "id": "r1",
                "status": "completed",
                "status_details": None,
                "usage": {"total_tokens": 3},
                "output": [
                    {"type": "function_call", "id": "i2", "call_id": "c1", "name": "f", "arguments": "{}"}
                ],
            }
        },
        ev.ResponseDone,
    ),
    "response.output_item.added": (
        {"response_id": "r1", "item": {"id": "i2", "type": "function_call", "name": "f"}},
        ev.OutputItemAdded,
    ),
    "response.function_call_arguments.done": (
        {"response_id": "r1", "item_id": "i2", "call_id": "c1", "name": "f", "arguments": "{}"},
        ev.FunctionCallDone,
    ),
    "conversation.item.truncated": ({"item_id": "i1", "audio_end_ms": 300}, ev.ItemTruncated),
    "error": ({"error": {"type": "invalid_request_error", "code": "x", "message": "bad"}}, ev.ErrorEvent),
}


def _examples() -> list[dict[str, Any]]:
    out = [{"type": t, "event_id": "event_1", **fields} for t, (fields, _) in HANDLED.items()]
    for name in ("realtime_ga_examples.json", "realtime_beta_examples.json"):
        out.extend(json.loads((FIXTURES / name).read_text(encoding="utf-8"))["server"])
    return out


EXAMPLES = _examples()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
dialects = st.sampled_from(["ga", "beta"])


def _check_typed(result: object) -> None:
    assert isinstance(result, TYPED), f"parse returned {type(result).__name__}"
    if isinstance(result, ev.MalformedEvent):
        assert result.reason
        assert len(result.raw_excerpt) <= 160


@FUZZ
@given(dialects, st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(dialect: str, raw: bytes) -> None:
    _check_typed(ev.ServerEventParser(dialect).parse(raw))  # type: ignore[arg-type]


@FUZZ
@given(dialects, st.text(max_size=400))
def test_arbitrary_text_never_raises(dialect: str, raw: str) -> None:
    _check_typed(ev.ServerEventParser(dialect).parse(raw))  # type: ignore[arg-type]


@FUZZ
@given(dialects, st.sampled_from(sorted(HANDLED)), json_values)
def test_any_payload_under_a_known_type_never_raises(dialect: str, etype: str, payload: Any) -> None:
    """A known type with arbitrary fields: typed, or Malformed naming the type."""
    fields = payload if isinstance(payload, dict) else {"x": payload}
    result = ev.ServerEventParser(dialect).parse(orjson.dumps({**fields, "type": etype}))  # type: ignore[arg-type]
    _check_typed(result)
    assert isinstance(result, HANDLED[etype][1] | ev.MalformedEvent)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append((*prefix, index))
            out.extend(_paths(child, (*prefix, index)))
    return out


@FUZZ
@given(dialects, st.sampled_from(EXAMPLES), st.data(), st.sampled_from(["delete", "replace"]), json_values)
def test_mutated_events_stay_typed(
    dialect: str, example: dict[str, Any], data: st.DataObject, action: str, replacement: Any
) -> None:
    doc = copy.deepcopy(example)
    path = data.draw(st.sampled_from(_paths(doc)))
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    parser = ev.ServerEventParser(dialect)  # type: ignore[arg-type]
    result = parser.parse(orjson.dumps(doc))
    _check_typed(result)
    etype = doc.get("type")
    if isinstance(etype, str) and etype in HANDLED:
        assert isinstance(result, HANDLED[etype][1] | ev.MalformedEvent)
    elif type(etype) is not str:
        assert isinstance(result, ev.MalformedEvent)


_ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)


@FUZZ
@given(dialects, _ids, _ids, st.text(max_size=200))
def test_ga_and_beta_names_give_the_same_event(dialect: str, rid: str, iid: str, text: str) -> None:
    parser = ev.ServerEventParser(dialect)  # type: ignore[arg-type]
    pairs = [
        ("response.output_audio.delta", "response.audio.delta", {"delta": text}),
        ("response.output_audio_transcript.delta", "response.audio_transcript.delta", {"delta": text}),
        ("response.output_audio_transcript.done", "response.audio_transcript.done", {"transcript": text}),
        ("response.output_audio.done", "response.audio.done", {}),
    ]
    for ga, beta, extra in pairs:
        fields = {"response_id": rid, "item_id": iid, **extra}
        a = parser.parse(orjson.dumps({"type": ga, **fields}))
        b = parser.parse(orjson.dumps({"type": beta, **fields}))
        assert a == b
        assert not isinstance(a, ev.MalformedEvent | ev.Ignored)


@FUZZ
@given(dialects, st.integers(min_value=-(2**62), max_value=2**62), _ids)
def test_integer_fields_round_trip_and_refuse_other_numbers(dialect: str, ms: int, iid: str) -> None:
    parser = ev.ServerEventParser(dialect)  # type: ignore[arg-type]
    raw = {"type": "input_audio_buffer.speech_started", "item_id": iid, "audio_start_ms": ms}
    assert parser.parse(orjson.dumps(raw)) == ev.SpeechStarted(iid, ms)
    for bad in (float(ms) + 0.5, str(ms), True, None):
        assert isinstance(parser.parse(orjson.dumps({**raw, "audio_start_ms": bad})), ev.MalformedEvent)


# A sequence of function-call events over a few responses/items, in any order and with any gaps.
_call_events = st.lists(
    st.tuples(
        st.sampled_from(["added", "done_named", "done_unnamed", "response_done"]),
        st.sampled_from(["r1", "r2", "r3"]),
        st.sampled_from(["i1", "i2", "i3", "i4"]),
    ),
    max_size=40,
)


@FUZZ
@given(dialects, _call_events)
def test_function_name_memory_is_released_at_response_done(
    dialect: str, sequence: list[tuple[str, str, str]]
) -> None:
    """Whatever order the events come in, once every response is done nothing is remembered."""
    parser = ev.ServerEventParser(dialect)  # type: ignore[arg-type]
    remembered: dict[tuple[str, str], str] = {}
    for kind, rid, iid in sequence:
        if kind == "added":
            frame: dict[str, Any] = {
                "type": "response.output_item.added",
                "response_id": rid,
                "item": {"id": iid, "type": "function_call", "name": f"tool_{iid}"},
            }
            assert isinstance(parser.parse(orjson.dumps(frame)), ev.OutputItemAdded)
            remembered[(rid, iid)] = f"tool_{iid}"
        elif kind.startswith("done"):
            frame = {
                "type": "response.function_call_arguments.done",
                "response_id": rid,
                "item_id": iid,
                "call_id": f"call_{iid}",
                "arguments": "{}",
            }
            if kind == "done_named":
                frame["name"] = "explicit"
            result = parser.parse(orjson.dumps(frame))
            known = remembered.pop((rid, iid), None)
            if kind == "done_named":
                assert result == ev.FunctionCallDone(f"call_{iid}", "explicit", "{}", iid, rid)
            elif known is not None:
                assert result == ev.FunctionCallDone(f"call_{iid}", known, "{}", iid, rid)
            else:
                assert isinstance(result, ev.MalformedEvent)
                assert "no 'name'" in result.reason
        else:
            frame = {"type": "response.done", "response": {"id": rid, "status": "completed", "output": []}}
            assert isinstance(parser.parse(orjson.dumps(frame)), ev.ResponseDone)
            remembered = {k: v for k, v in remembered.items() if k[0] != rid}
        assert parser.pending_function_names == len(remembered)
    for rid in ("r1", "r2", "r3"):
        parser.parse(orjson.dumps({"type": "response.done", "response": {"id": rid, "status": "completed"}}))
    assert parser.pending_function_names == 0


@FUZZ
@given(
    dialects, st.lists(st.sampled_from(EXAMPLES), max_size=30), st.lists(st.binary(max_size=60), max_size=10)
)
def test_a_stream_of_valid_and_junk_frames_never_raises(
    dialect: str, frames: list[dict[str, Any]], junk: list[bytes]
) -> None:
    """One parser across a whole connection: junk in between never poisons later valid frames."""
    parser = ev.ServerEventParser(dialect)  # type: ignore[arg-type]
    stream: list[bytes] = [orjson.dumps(f) for f in frames]
    for i, piece in enumerate(junk):
        stream.insert((i * 7) % (len(stream) + 1), piece)
    for raw in stream:
        _check_typed(parser.parse(raw))
    for etype, (fields, cls) in HANDLED.items():
        if etype != "response.function_call_arguments.done":
            assert isinstance(parser.parse(orjson.dumps({"type": etype, **fields})), cls)


_ID_FIELDS = ("response_id", "item_id", "call_id")
_WITH_IDS = [(t, k) for t, (fields, _) in sorted(HANDLED.items()) for k in _ID_FIELDS if k in fields]


@pytest.mark.parametrize(("etype", "key"), _WITH_IDS)
def test_empty_ids_are_malformed(etype: str, key: str) -> None:
    """An id is what later client events (truncate, cancel, function_call_output) must name; "" is not one.

    Found by fuzz_server: an audio delta with ``item_id: ""`` was accepted, and the barge-in that followed
    built ``conversation.item.truncate`` for item "", which raised inside the model task and ended the call.
    """
    fields, _cls = HANDLED[etype]
    for dialect in ("ga", "beta"):
        parser = ev.ServerEventParser(dialect)
        result = parser.parse(orjson.dumps({"type": etype, **fields, key: ""}))
        assert isinstance(result, ev.MalformedEvent), f"{etype} with {key}='' parsed as {result!r}"
