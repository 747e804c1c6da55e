"""Property-based fuzzing of the Twilio Media Streams parser and builder (ivr.telephony.media_stream).

Why: every frame a caller's stream carries goes through ``parse``; one exception there ends a live call, and
the socket is reachable by anyone who can open it. Hypothesis throws arbitrary bytes, arbitrary JSON and
mutations of Twilio's own documented messages at it: the parser must always answer with one of its typed
messages (a ``Malformed`` with a reason for anything unusable), documented messages must round-trip
field for field, and what ``StreamWriter`` builds must decode back to exactly what was put in.

Settings are fixed (``derandomize=True``) so a failure reproduces on every machine; the examples count
is modest so the whole file runs in a few seconds.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.telephony.media_stream import (
    Connected,
    Dtmf,
    Malformed,
    Mark,
    Media,
    Start,
    Stop,
    StreamWriter,
    decode_payload,
    parse,
)

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TYPED = (Connected, Start, Media, Dtmf, Mark, Stop, Malformed)
FIXTURES = Path(__file__).parent / "fixtures"
FROM_TWILIO: dict[str, dict[str, Any]] = json.loads(
    (FIXTURES / "twilio_examples.json").read_text(encoding="utf-8")
)["from_twilio"]
EXPECTED_CLASS = {
    "connected": Connected,
    "start": Start,
    "media": Media,
    "dtmf": Dtmf,
    "mark": Mark,
    "stop": Stop,
}

# JSON values as orjson can produce them (no NaN/Infinity: those are not JSON).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


def _check_typed(result: object) -> None:
    assert isinstance(result, TYPED), f"parse returned {type(result).__name__}, not a Twilio message"
    if isinstance(result, Malformed):
        assert result.reason, "a Malformed must say what was wrong"
        assert isinstance(result.excerpt, str)
        assert len(result.excerpt) <= 120


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check_typed(parse(raw))


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(raw: str) -> None:
    _check_typed(parse(raw))


@FUZZ
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    result = parse(orjson.dumps(value))
    _check_typed(result)
    if not isinstance(value, dict) or "event" not in value:
        assert isinstance(result, Malformed)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside a JSON document (dict keys and list indexes)."""
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


def _mutate(doc: Any, path: tuple[Any, ...], action: str, replacement: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    else:
        parent[last] = replacement
    return doc


@FUZZ
@given(
    st.sampled_from(sorted(FROM_TWILIO)),
    st.data(),
    st.sampled_from(["delete", "replace"]),
    json_values,
)
def test_mutated_documented_messages_stay_typed(
    name: str, data: st.DataObject, action: str, replacement: Any
) -> None:
    """Drop or replace any one field of a documented message: the right class, or Malformed with a reason."""
    example = FROM_TWILIO[name]
    path = data.draw(st.sampled_from(_paths(example)))
    mutated = _mutate(example, path, action, replacement)
    result = parse(orjson.dumps(mutated))
    _check_typed(result)
    if mutated.get("event") == name:
        assert isinstance(result, EXPECTED_CLASS[name] | Malformed)


@FUZZ
@given(
    st.sampled_from(sorted(FROM_TWILIO)),
    st.dictionaries(st.text(min_size=1, max_size=10), json_scalars, max_size=4),
)
def test_unknown_keys_are_tolerated(name: str, extra: dict[str, Any]) -> None:
    """Twilio adds fields without notice: extra top-level keys never change what a message parses to."""
    example = FROM_TWILIO[name]
    merged = {**{k: v for k, v in extra.items() if k not in example}, **example}
    assert parse(orjson.dumps(merged)) == parse(orjson.dumps(example))


@FUZZ
@given(st.sampled_from(sorted(FROM_TWILIO)), st.integers(min_value=0, max_value=400), st.binary(max_size=8))
def test_truncated_or_spliced_frames_never_raise(name: str, cut: int, junk: bytes) -> None:
    raw = orjson.dumps(FROM_TWILIO[name])
    _check_typed(parse(raw[:cut] + junk + raw[cut:]))
    _check_typed(parse(raw[:cut]))


_sid_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)


@FUZZ
@given(
    st.binary(max_size=320),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(["inbound", "outbound"]),
)
def test_media_round_trips(audio: bytes, chunk: int, timestamp: int, track: str) -> None:
    payload = base64.b64encode(audio).decode()
    raw = orjson.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "media": {"track": track, "chunk": str(chunk), "timestamp": str(timestamp), "payload": payload},
            "streamSid": "MZ" + "0" * 32,
        }
    )
    assert parse(raw) == Media(track=track, chunk=chunk, timestamp_ms=timestamp, payload=payload)
    assert decode_payload(payload) == audio


@FUZZ
@given(_sid_text, _sid_text, _sid_text, st.dictionaries(_sid_text, _sid_text, max_size=6))
def test_start_round_trips(stream_sid: str, account_sid: str, call_sid: str, params: dict[str, str]) -> None:
    raw = orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": stream_sid,
                "accountSid": account_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )
    result = parse(raw)
    assert isinstance(result, Start)
    assert (result.stream_sid, result.account_sid, result.call_sid) == (stream_sid, account_sid, call_sid)
    assert result.custom_parameters == params


@FUZZ
@given(_sid_text)
def test_mark_and_dtmf_round_trip(name: str) -> None:
    assert parse(orjson.dumps({"event": "mark", "mark": {"name": name}})) == Mark(name)
    for digit in "0123456789*#":
        assert parse(orjson.dumps({"event": "dtmf", "dtmf": {"digit": digit}})) == Dtmf(digit)


@FUZZ
@given(st.text(min_size=1, max_size=4).filter(lambda d: d not in set("0123456789*#ABCD")))
def test_dtmf_rejects_anything_but_a_key(digit: str) -> None:
    result = parse(orjson.dumps({"event": "dtmf", "dtmf": {"digit": digit}}))
    assert isinstance(result, Malformed)
    assert "dtmf" in result.reason


@FUZZ
@given(_sid_text, st.binary(max_size=400), _sid_text)
def test_stream_writer_output_decodes_to_what_was_put_in(stream_sid: str, audio: bytes, mark: str) -> None:
    writer = StreamWriter(stream_sid)
    payload = base64.b64encode(audio).decode()
    assert json.loads(writer.media(payload)) == {
        "event": "media",
        "streamSid": stream_sid,
        "media": {"payload": payload},
    }
    assert json.loads(writer.mark(mark)) == {"event": "mark", "streamSid": stream_sid, "mark": {"name": mark}}
    assert json.loads(writer.clear()) == {"event": "clear", "streamSid": stream_sid}


@FUZZ
@given(st.text(max_size=200))
def test_decode_payload_never_raises(text: str) -> None:
    result = decode_payload(text)
    assert result is None or isinstance(result, bytes)
