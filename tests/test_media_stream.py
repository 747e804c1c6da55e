"""Twilio Media Streams parsing and building (ivr.telephony.media_stream), without any socket.

Why: every frame of every call goes through ``parse`` and ``StreamWriter``. The parser must accept all of
Twilio's documented messages (numbers as strings, unknown keys) and turn anything else into ``Malformed``
with a reason, never an exception; what we build must pass the strict Twilio oracle byte for byte.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

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
from tests.support.oracles import ProtocolViolation, check_to_twilio

FIXTURES = Path(__file__).parent / "fixtures"
TWILIO: dict[str, Any] = json.loads((FIXTURES / "twilio_examples.json").read_text(encoding="utf-8"))
FROM_TWILIO: dict[str, dict[str, Any]] = TWILIO["from_twilio"]
TO_TWILIO: dict[str, dict[str, Any]] = TWILIO["to_twilio"]
STREAM_SID: str = FROM_TWILIO["start"]["streamSid"]
ACCOUNT_SID: str = FROM_TWILIO["start"]["start"]["accountSid"]
CALL_SID: str = FROM_TWILIO["start"]["start"]["callSid"]


def _raw(message: dict[str, Any]) -> str:
    return json.dumps(message)


def _example(name: str) -> dict[str, Any]:
    return copy.deepcopy(FROM_TWILIO[name])


# ------------------------------------------------------------------------------------------------
# The six documented messages
# ------------------------------------------------------------------------------------------------


def test_documented_examples_cover_all_six_inbound_messages() -> None:
    assert sorted(FROM_TWILIO) == ["connected", "dtmf", "mark", "media", "start", "stop"]


def test_connected_example() -> None:
    assert parse(_raw(FROM_TWILIO["connected"])) == Connected(protocol="Call", version="1.0.0")


def test_start_example() -> None:
    message = parse(_raw(FROM_TWILIO["start"]))
    assert message == Start(
        stream_sid=STREAM_SID,
        account_sid=ACCOUNT_SID,
        call_sid=CALL_SID,
        tracks=("inbound", "outbound"),
        custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
    )


def test_media_example_numbers_as_strings_become_ints() -> None:
    example = FROM_TWILIO["media"]
    message = parse(_raw(example))
    assert isinstance(message, Media)
    assert message.track == "outbound"
    assert message.chunk == 1
    assert message.timestamp_ms == 5
    assert message.payload == example["media"]["payload"]


def test_dtmf_example() -> None:
    assert parse(_raw(FROM_TWILIO["dtmf"])) == Dtmf("1")


def test_mark_example() -> None:
    assert parse(_raw(FROM_TWILIO["mark"])) == Mark("my label")


def test_stop_example() -> None:
    assert parse(_raw(FROM_TWILIO["stop"])) == Stop(account_sid=ACCOUNT_SID, call_sid=CALL_SID)


@pytest.mark.parametrize("name", sorted(FROM_TWILIO))
def test_bytes_and_str_frames_parse_alike(name: str) -> None:
    raw = _raw(FROM_TWILIO[name])
    assert parse(raw.encode()) == parse(raw)
    assert not isinstance(parse(raw), Malformed)


# ------------------------------------------------------------------------------------------------
# Tolerance: unknown keys, optional fields, numbers in either form
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FROM_TWILIO))
def test_unknown_keys_are_ignored_at_every_level(name: str) -> None:
    message = _example(name)
    message["futureTopLevel"] = {"nested": [1, 2]}
    for value in message.values():
        if isinstance(value, dict):
            value["futureField"] = "x"
    assert parse(_raw(message)) == parse(_raw(FROM_TWILIO[name]))


def test_media_numbers_given_as_json_ints_are_accepted() -> None:
    message = _example("media")
    message["media"]["chunk"] = 7
    message["media"]["timestamp"] = 140
    parsed = parse(_raw(message))
    assert isinstance(parsed, Media)
    assert (parsed.chunk, parsed.timestamp_ms) == (7, 140)


def test_media_without_track_chunk_timestamp_gets_defaults() -> None:
    parsed = parse(_raw({"event": "media", "media": {"payload": "AAAA"}}))
    assert parsed == Media(track="inbound", chunk=0, timestamp_ms=0, payload="AAAA")


def test_start_media_format_numbers_as_strings_are_accepted() -> None:
    message = _example("start")
    message["start"]["mediaFormat"] = {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "1"}
    parsed = parse(_raw(message))
    assert isinstance(parsed, Start)
    assert (parsed.sample_rate, parsed.channels) == (8000, 1)


def test_start_reports_a_different_media_format_as_sent() -> None:
    message = _example("start")
    message["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 2}
    parsed = parse(_raw(message))
    assert isinstance(parsed, Start)
    assert (parsed.encoding, parsed.sample_rate, parsed.channels) == ("audio/l16", 16000, 2)


def test_start_minimal_gets_defaults_and_top_level_stream_sid() -> None:
    message = {
        "event": "start",
        "streamSid": STREAM_SID,
        "start": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    }
    assert parse(_raw(message)) == Start(
        stream_sid=STREAM_SID,
        account_sid=ACCOUNT_SID,
        call_sid=CALL_SID,
        tracks=("inbound",),
        custom_parameters={},
    )


def test_start_custom_parameter_values_become_strings() -> None:
    message = _example("start")
    message["start"]["customParameters"] = {"attempt": 2, "vip": True}
    parsed = parse(_raw(message))
    assert isinstance(parsed, Start)
    assert parsed.custom_parameters == {"attempt": "2", "vip": "True"}


def test_stop_without_body_still_parses() -> None:
    assert parse('{"event":"stop"}') == Stop("", "")


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_keypad_digit_is_accepted(digit: str) -> None:
    assert parse(_raw({"event": "dtmf", "dtmf": {"digit": digit}})) == Dtmf(digit)


# ------------------------------------------------------------------------------------------------
# Malformed frames: a reason, an excerpt, never an exception
# ------------------------------------------------------------------------------------------------


def _malformed(raw: str | bytes) -> Malformed:
    parsed = parse(raw)
    assert isinstance(parsed, Malformed), parsed
    return parsed


@pytest.mark.parametrize("raw", ["", "{", "not json at all", '{"event": "media",}', b"\xff\xfe\x00"])
def test_not_json(raw: str | bytes) -> None:
    assert _malformed(raw).reason.startswith("not JSON")


@pytest.mark.parametrize(
    ("raw", "kind"), [("[1, 2]", "list"), ('"media"', "str"), ("42", "int"), ("null", "NoneType")]
)
def test_non_object(raw: str, kind: str) -> None:
    reason = _malformed(raw).reason
    assert "expected a JSON object" in reason
    assert kind in reason


def test_no_event_field() -> None:
    assert _malformed('{"streamSid": "MZ1"}').reason == "no 'event' field"


def test_unknown_event_is_named() -> None:
    reason = _malformed('{"event": "teleport"}').reason
    assert "unknown event" in reason
    assert "teleport" in reason


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"event": "media"}, "'media' object is missing"),
        ({"event": "media", "media": "AAAA"}, "'media' object is missing"),
        ({"event": "media", "media": {"track": "inbound"}}, "media.payload"),
        ({"event": "media", "media": {"payload": 123}}, "media.payload"),
        ({"event": "media", "media": {"payload": "AA==", "chunk": "two"}}, "media.chunk"),
        ({"event": "media", "media": {"payload": "AA==", "chunk": "-1"}}, "media.chunk"),
        ({"event": "media", "media": {"payload": "AA==", "chunk": True}}, "media.chunk"),
        ({"event": "media", "media": {"payload": "AA==", "timestamp": 1.5}}, "media.timestamp"),
        ({"event": "media", "media": {"payload": "AA==", "timestamp": None}}, "media.timestamp"),
        ({"event": "mark"}, "'mark' object is missing"),
        ({"event": "mark", "mark": {}}, "mark.name"),
        ({"event": "mark", "mark": {"name": ""}}, "mark.name"),
        ({"event": "mark", "mark": {"name": 3}}, "mark.name"),
        ({"event": "dtmf", "dtmf": {}}, "dtmf.digit"),
        ({"event": "dtmf", "dtmf": {"digit": "E"}}, "not a keypad key"),
        ({"event": "dtmf", "dtmf": {"digit": "12"}}, "not a keypad key"),
        ({"event": "dtmf", "dtmf": {"digit": 1}}, "dtmf.digit"),
        ({"event": "start"}, "'start' object is missing"),
        ({"event": "start", "start": {"streamSid": "MZ1", "accountSid": "AC1"}}, "start.callSid"),
        ({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}, "start.accountSid"),
        ({"event": "start", "start": {"accountSid": "AC1", "callSid": "CA1"}}, "streamSid"),
        (
            {
                "event": "start",
                "start": {
                    "streamSid": "MZ1",
                    "accountSid": "AC1",
                    "callSid": "CA1",
                    "customParameters": ["a"],
                },
            },
            "customParameters",
        ),
        (
            {
                "event": "start",
                "start": {
                    "streamSid": "MZ1",
                    "accountSid": "AC1",
                    "callSid": "CA1",
                    "mediaFormat": {"sampleRate": "eight thousand"},
                },
            },
            "start message",
        ),
    ],
)
def test_malformed_reason_names_what_was_wrong(message: dict[str, Any], expected: str) -> None:
    parsed = _malformed(_raw(message))
    assert expected in parsed.reason
    assert parsed.reason.startswith(f"{message['event']} message: ")


def test_excerpt_is_bounded_and_shows_the_start() -> None:
    raw = '{"event": "media", "media": {"payload": 1}, "padding": "' + "x" * 5000 + '"}'
    parsed = _malformed(raw)
    assert parsed.excerpt == raw[:120]


def test_oversized_number_string_is_malformed_not_an_exception() -> None:
    # Python refuses int() on > 4300 digits with ValueError; the parser must turn that into Malformed.
    message = {"event": "media", "media": {"payload": "AA==", "chunk": "9" * 5000}}
    assert "media message" in _malformed(_raw(message)).reason


@pytest.mark.parametrize("media_format", ["audio/x-mulaw", ["audio/x-mulaw"], 8000])
def test_start_with_non_object_media_format_is_malformed(media_format: Any) -> None:
    message = _example("start")
    message["start"]["mediaFormat"] = media_format
    assert "mediaFormat" in _malformed(_raw(message)).reason


def test_parse_never_raises_on_mutilated_documented_messages() -> None:
    """Replace each field of each documented message with odd values; parse must always return."""
    odd_values: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], {}, [None], {"a": None}]
    rng = random.Random(20240611)
    for name, example in FROM_TWILIO.items():
        paths: list[tuple[str, ...]] = [(key,) for key in example]
        paths += [(k, sub) for k, v in example.items() if isinstance(v, dict) for sub in v]
        for path in paths:
            for value in odd_values:
                message = copy.deepcopy(example)
                target = message
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = value
                result = parse(_raw(message))
                assert isinstance(result, (Connected, Start, Media, Dtmf, Mark, Stop, Malformed)), (
                    name,
                    path,
                )
        # Truncations of the raw frame are never exceptions either.
        raw = _raw(example)
        for _ in range(20):
            cut = rng.randrange(len(raw))
            assert isinstance(parse(raw[:cut]), Malformed)


# ------------------------------------------------------------------------------------------------
# decode_payload
# ------------------------------------------------------------------------------------------------


def test_decode_payload_of_documented_media() -> None:
    payload = FROM_TWILIO["media"]["media"]["payload"]
    decoded = decode_payload(payload)
    assert decoded == base64.b64decode(payload)
    assert decoded is not None
    assert decoded[:4] == b"\x9e\x8f\x89\x86"


def test_decode_payload_empty() -> None:
    assert decode_payload("") == b""


@pytest.mark.parametrize("payload", ["AAA", "A===", "not base64!", "AA==AA==x", "ÄÖÜ=", "AA\nAA=="])
def test_decode_payload_rejects_invalid_base64(payload: str) -> None:
    assert decode_payload(payload) is None


def test_decode_payload_round_trips_all_byte_values() -> None:
    data = bytes(range(256))
    assert decode_payload(base64.b64encode(data).decode()) == data


# ------------------------------------------------------------------------------------------------
# StreamWriter: what we send passes the strict oracle
# ------------------------------------------------------------------------------------------------


def test_writer_media_matches_documented_example() -> None:
    expected = TO_TWILIO["media"]
    built = StreamWriter(expected["streamSid"]).media(expected["media"]["payload"])
    check_to_twilio(built)
    assert json.loads(built) == expected


def test_writer_mark_matches_documented_example() -> None:
    expected = TO_TWILIO["mark"]
    built = StreamWriter(expected["streamSid"]).mark(expected["mark"]["name"])
    check_to_twilio(built)
    assert json.loads(built) == expected


def test_writer_clear_matches_documented_example() -> None:
    expected = TO_TWILIO["clear"]
    built = StreamWriter(expected["streamSid"]).clear()
    check_to_twilio(built)
    assert json.loads(built) == expected


def test_writer_outputs_are_str_and_repeatable() -> None:
    writer = StreamWriter(STREAM_SID)
    assert writer.stream_sid == STREAM_SID
    for built in (writer.media("AAAA"), writer.mark("a1"), writer.clear()):
        assert isinstance(built, str)
    assert writer.clear() == writer.clear()


@pytest.mark.parametrize("name", ["a1", "b42", "my label", 'quote " and \\ backslash', "émoji 📞", "\n\t"])
def test_writer_mark_escapes_any_name(name: str) -> None:
    built = StreamWriter(STREAM_SID).mark(name)
    check_to_twilio(built)
    assert json.loads(built)["mark"]["name"] == name


def test_writer_escapes_a_hostile_stream_sid() -> None:
    sid = 'MZ"},"event":"clear'
    writer = StreamWriter(sid)
    for built in (writer.media("AAAA"), writer.mark("m"), writer.clear()):
        assert json.loads(built)["streamSid"] == sid
    assert json.loads(writer.media("AAAA"))["event"] == "media"


def test_oracle_would_catch_a_wav_payload() -> None:
    """Guards the test above: the oracle is strict enough to fail a wrong media payload."""
    wav = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
    with pytest.raises(ProtocolViolation):
        check_to_twilio(StreamWriter(STREAM_SID).media(wav))


def _random_sid(rng: random.Random) -> str:
    return "MZ" + "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(32))


def test_writer_property_random_payloads_and_sids() -> None:
    """Seeded random property test: media/mark/clear for random sids and μ-law payloads of any size."""
    rng = random.Random(8000)
    for _ in range(300):
        sid = _random_sid(rng)
        size = rng.choice([0, 1, 2, 3, 159, 160, 161, rng.randrange(1, 4000)])
        audio = bytes(rng.randrange(256) for _ in range(size))
        if audio[:4] in (b"RIFF", b".snd"):
            continue
        payload = base64.b64encode(audio).decode()
        writer = StreamWriter(sid)

        built = writer.media(payload)
        typed = check_to_twilio(built)
        assert typed.event == "media"
        decoded = json.loads(built)
        assert decoded == {"event": "media", "streamSid": sid, "media": {"payload": payload}}
        assert base64.b64decode(decoded["media"]["payload"]) == audio

        name = "".join(rng.choice("ab0123456789 _-") for _ in range(rng.randrange(1, 20)))
        assert json.loads(check_to_twilio(writer.mark(name)).model_dump_json()) == {
            "event": "mark",
            "streamSid": sid,
            "mark": {"name": name},
        }
        assert json.loads(writer.clear()) == {"event": "clear", "streamSid": sid}
        check_to_twilio(writer.clear())


def test_writer_media_round_trips_through_parse() -> None:
    """What we send as media is a media frame our own parser reads back (minus Twilio's extra fields)."""
    payload = base64.b64encode(bytes(range(160))).decode()
    parsed = parse(StreamWriter(STREAM_SID).media(payload))
    assert parsed == Media(track="inbound", chunk=0, timestamp_ms=0, payload=payload)
    assert decode_payload(parsed.payload) == bytes(range(160))
