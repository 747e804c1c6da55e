"""The sans-I/O Twilio simulator: message shapes (checked by the §6.3 oracle), playback/mark timing, TwiML."""

from __future__ import annotations

import base64
import json
import re

import pytest
from twilio.twiml.voice_response import Connect, VoiceResponse

from ivr.caller.twilio_side import (
    MULAW_SILENCE,
    Clear,
    Mark,
    Media,
    PlaybackBuffer,
    SayHangup,
    ServerMessageError,
    StreamInstruction,
    TwilioStreamSimulator,
    TwimlError,
    new_sid,
    parse_server_message,
    parse_twiml,
)
from tests.support.oracles import check_from_twilio, check_to_twilio

AC, CA, MZ = new_sid("AC"), new_sid("CA"), new_sid("MZ")


def sim(params: dict[str, str] | None = None) -> TwilioStreamSimulator:
    return TwilioStreamSimulator(AC, CA, MZ, params or {"tenant": "acme"})


# ----------------------------------------------------------------------------------------------------------
# new_sid
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["AC", "CA", "MZ"])
def test_new_sid_is_prefix_plus_32_hex(prefix: str) -> None:
    sid = new_sid(prefix)
    assert re.fullmatch(prefix + r"[0-9a-f]{32}", sid)
    assert new_sid(prefix) != sid


@pytest.mark.parametrize("bad", ["C", "ca", "CAX", "1A"])
def test_new_sid_rejects_bad_prefix(bad: str) -> None:
    with pytest.raises(ValueError, match="two upper-case letters"):
        new_sid(bad)


# ----------------------------------------------------------------------------------------------------------
# TwilioStreamSimulator
# ------------------------------------------------------------------------------------------------------------


def test_full_stream_passes_oracle_and_numbers_increase() -> None:
    s = sim({"tenant": "acme", "flow": "support"})
    frames = [s.connected(), s.start()]
    for i in range(5):
        frames.append(s.media(bytes([i]) * 160, i * 20))
        if i == 2:
            frames.append(s.dtmf("5"))
            frames.append(s.mark("greeting-1"))
    frames.append(s.stop())

    for raw in frames:
        check_from_twilio(raw)  # raises ProtocolViolation on any shape error
    msgs = [json.loads(f) for f in frames]

    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["sequenceNumber"] == "1"
    assert start["start"]["customParameters"] == {"tenant": "acme", "flow": "support"}
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert (start["start"]["accountSid"], start["start"]["callSid"]) == (AC, CA)

    seqs = [int(m["sequenceNumber"]) for m in msgs[1:]]
    assert seqs == list(range(1, len(msgs)))  # one counter across ALL messages after connected
    media = [m for m in msgs if m["event"] == "media"]
    assert [m["media"]["chunk"] for m in media] == ["1", "2", "3", "4", "5"]
    assert [m["media"]["timestamp"] for m in media] == ["0", "20", "40", "60", "80"]
    assert base64.b64decode(media[3]["media"]["payload"]) == bytes([3]) * 160
    assert all(m["streamSid"] == MZ for m in msgs[1:])
    dtmf = next(m for m in msgs if m["event"] == "dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert msgs[-1]["stop"] == {"accountSid": AC, "callSid": CA}
    assert s.stopped


def test_simulator_enforces_message_order() -> None:
    s = sim()
    with pytest.raises(RuntimeError, match="cannot build 'media'"):
        s.media(b"\xff" * 160, 0)
    s.connected()
    with pytest.raises(RuntimeError, match="cannot build 'connected'"):
        s.connected()
    s.start()
    s.stop()
    with pytest.raises(RuntimeError, match="cannot build 'dtmf'"):
        s.dtmf("1")


def test_simulator_rejects_bad_input_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="call_sid must be CA"):
        TwilioStreamSimulator(AC, "CA123", MZ, {})
    with pytest.raises(ValueError, match="custom parameter"):
        TwilioStreamSimulator(AC, CA, MZ, {"n": 1})  # type: ignore[dict-item]
    s = sim()
    s.connected()
    s.start()
    with pytest.raises(ValueError, match="DTMF digit"):
        s.dtmf("x")
    with pytest.raises(ValueError, match="empty"):
        s.media(b"", 0)
    s.media(b"\xff", 40)
    with pytest.raises(ValueError, match="went backwards"):
        s.media(b"\xff", 20)
    with pytest.raises(ValueError, match="non-negative"):
        s.media(b"\xff", -1)


# ----------------------------------------------------------------------------------------------------------
# PlaybackBuffer
# ------------------------------------------------------------------------------------------------------------


def test_mark_echoes_only_after_its_audio_has_played() -> None:
    buf = PlaybackBuffer()
    buf.push_media(b"\x01" * 400)  # 50 ms
    buf.push_mark("a")
    buf.push_media(b"\x02" * 160)  # 20 ms
    buf.push_mark("b")

    played, marks = buf.advance(20)
    assert (played, marks) == (b"\x01" * 160, [])
    played, marks = buf.advance(20)
    assert (played, marks) == (b"\x01" * 160, [])
    played, marks = buf.advance(20)  # last 10 ms of the first chunk, then 10 ms of the second
    assert played == b"\x01" * 80 + b"\x02" * 80
    assert marks == ["a"]
    played, marks = buf.advance(20)  # rest of the second chunk then silence
    assert played == b"\x02" * 80 + bytes([MULAW_SILENCE]) * 80
    assert marks == ["b"]
    assert buf.played_bytes == 560
    assert buf.advance(20) == (bytes([MULAW_SILENCE]) * 160, [])


def test_mark_exactly_at_tick_boundary_echoes_in_that_tick() -> None:
    buf = PlaybackBuffer()
    buf.push_media(b"\x03" * 160)
    buf.push_mark("end")
    assert buf.advance(20) == (b"\x03" * 160, ["end"])


def test_mark_on_empty_buffer_echoes_on_next_advance() -> None:
    buf = PlaybackBuffer()
    buf.push_mark("first")
    buf.push_mark("second")
    assert buf.pending_marks == ["first", "second"]
    played, marks = buf.advance(0)
    assert (played, marks) == (b"", ["first", "second"])
    assert buf.pending_marks == []


def test_clear_drops_audio_and_echoes_all_pending_marks() -> None:
    buf = PlaybackBuffer()
    buf.push_media(b"\x04" * 800)
    buf.push_mark("m1")
    buf.push_media(b"\x05" * 800)
    buf.push_mark("m2")
    buf.advance(20)
    assert buf.queued_bytes == 1600 - 160
    assert buf.clear() == ["m1", "m2"]
    assert buf.queued_bytes == 0
    played, marks = buf.advance(20)
    assert (played, marks) == (bytes([MULAW_SILENCE]) * 160, [])
    buf.push_media(b"\x06" * 8)  # the queue keeps working after a clear
    assert buf.advance(2) == (b"\x06" * 8 + bytes([MULAW_SILENCE]) * 8, [])


def test_played_timeline_concatenates_to_the_queued_audio_with_silence_gaps() -> None:
    buf = PlaybackBuffer()
    heard = bytearray()
    heard += buf.advance(20)[0]  # 20 ms of silence before the agent speaks
    buf.push_media(bytes(range(1, 201)))  # 25 ms in an odd size
    buf.push_media(bytes(range(1, 41)))  # 5 ms
    for _ in range(3):
        heard += buf.advance(20)[0]
    assert len(heard) == 80 * 8
    assert heard == bytes([MULAW_SILENCE]) * 160 + bytes(range(1, 201)) + bytes(range(1, 41)) + bytes(
        [MULAW_SILENCE]
    ) * (480 - 240)
    assert buf.elapsed_ms == 80


def test_advance_rejects_bad_durations() -> None:
    buf = PlaybackBuffer()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative whole number"):
            buf.advance(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------
# parse_server_message
# ------------------------------------------------------------------------------------------------------------


def test_parse_valid_server_messages() -> None:
    media = {"event": "media", "streamSid": MZ, "media": {"payload": base64.b64encode(b"\x00\x7f").decode()}}
    mark = {"event": "mark", "streamSid": MZ, "mark": {"name": "greeting-1"}}
    clear = {"event": "clear", "streamSid": MZ}
    for msg in (media, mark, clear):
        check_to_twilio(msg)  # the fixtures themselves are valid Twilio messages
    assert parse_server_message(json.dumps(media), MZ) == Media(MZ, b"\x00\x7f")
    assert parse_server_message(json.dumps(mark), MZ) == Mark(MZ, "greeting-1")
    assert parse_server_message(json.dumps(clear), MZ) == Clear(MZ)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\x00\x01", "binary frame"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON list"),
        (json.dumps({"event": "stop", "streamSid": MZ}), "unknown event 'stop'"),
        (json.dumps({"event": "media", "media": {"payload": ""}}), "streamSid is missing"),
        (json.dumps({"event": "media", "streamSid": "MZ" + "0" * 32}), "does not match"),
        (json.dumps({"event": "media", "streamSid": MZ}), "'media' object is missing"),
        (json.dumps({"event": "media", "streamSid": MZ, "media": {"payload": "@@@"}}), "not valid base64"),
        (
            json.dumps({"event": "media", "streamSid": MZ, "media": {"payload": 5}}),
            "media.payload is missing",
        ),
        (
            json.dumps(
                {
                    "event": "media",
                    "streamSid": MZ,
                    "media": {"payload": base64.b64encode(b"RIFF..").decode()},
                }
            ),
            "WAV/AU file",
        ),
        (json.dumps({"event": "mark", "streamSid": MZ, "name": "x"}), "'mark' object is missing"),
        (json.dumps({"event": "mark", "streamSid": MZ, "mark": {}}), "mark.name is missing"),
    ],
)
def test_parse_bad_server_messages_returns_error_object(raw: str | bytes, fragment: str) -> None:
    result = parse_server_message(raw, MZ)
    assert isinstance(result, ServerMessageError)
    assert fragment in result.reason


# ----------------------------------------------------------------------------------------------------------
# parse_twiml
# ------------------------------------------------------------------------------------------------------------


def test_parse_twiml_stream_with_parameters_and_say() -> None:
    r = VoiceResponse()
    r.say("Connecting you.")
    c = Connect()
    s = c.stream(url="wss://agent.example.com/twilio/media")
    s.parameter(name="tenant", value="acme")
    s.parameter(name="caller", value="+15550100001")
    r.append(c)
    result = parse_twiml(str(r))
    assert result == StreamInstruction(
        "wss://agent.example.com/twilio/media",
        {"tenant": "acme", "caller": "+15550100001"},
        ("Connecting you.",),
    )


def test_parse_twiml_say_hangup() -> None:
    r = VoiceResponse()
    r.say("We are restarting, please call back.")
    r.hangup()
    assert parse_twiml(r.to_xml()) == SayHangup("We are restarting, please call back.")


def test_parse_twiml_empty_response_is_a_hang_up() -> None:
    assert parse_twiml("<Response/>") == SayHangup("")
    assert parse_twiml(str(VoiceResponse())) == SayHangup("")
    r = VoiceResponse()
    r.hangup()
    assert parse_twiml(str(r)) == SayHangup("")


def _connect_with_action(**connect_kwargs: str) -> str:
    r = VoiceResponse()
    c = Connect(**connect_kwargs)
    c.stream(url="wss://agent.example.com/twilio/media").parameter(name="gen", value="1")
    r.append(c)
    return str(r)


def test_parse_twiml_connect_action_and_method() -> None:
    xml = _connect_with_action(action="https://agent.example.com/twilio/stream-ended", method="POST")
    assert parse_twiml(xml) == StreamInstruction(
        "wss://agent.example.com/twilio/media",
        {"gen": "1"},
        (),
        "https://agent.example.com/twilio/stream-ended",
        "POST",
    )
    # the method defaults to POST; Twilio also allows GET (any case is read as the upper-case method)
    plain = parse_twiml(_connect_with_action(action="https://agent.example.com/next"))
    assert isinstance(plain, StreamInstruction)
    assert (plain.action, plain.method) == ("https://agent.example.com/next", "POST")
    got = parse_twiml(_connect_with_action(action="https://agent.example.com/next", method="get"))
    assert isinstance(got, StreamInstruction) and got.method == "GET"
    # no action: the call ends with the stream
    none = parse_twiml(_connect_with_action())
    assert isinstance(none, StreamInstruction) and none.action is None and none.method == "POST"


@pytest.mark.parametrize(
    ("action", "document_url", "expected"),
    [
        (
            "/twilio/stream-ended",
            "https://a.example.com/twilio/voice",
            "https://a.example.com/twilio/stream-ended",
        ),
        (
            "stream-ended?x=1",
            "https://a.example.com/twilio/voice",
            "https://a.example.com/twilio/stream-ended?x=1",
        ),
        ("../up", "https://a.example.com/twilio/voice", "https://a.example.com/up"),
        ("https://b.example.com/x", "https://a.example.com/twilio/voice", "https://b.example.com/x"),
    ],
)
def test_parse_twiml_relative_action_resolves_against_the_document(
    action: str, document_url: str, expected: str
) -> None:
    result = parse_twiml(_connect_with_action(action=action), document_url)
    assert isinstance(result, StreamInstruction)
    assert result.action == expected


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        ("<Response><Dial>+15550000000</Dial></Response>", "no <Connect><Stream> (found <Dial>"),
        ("<Response><Pause/></Response>", "no <Connect><Stream> (found <Pause>"),
        ('<Response><Connect method="PUT"><Stream url="wss://x/y"/></Connect></Response>', "method='PUT'"),
        (
            '<Response><Connect action="/next"><Stream url="wss://x/y"/></Connect></Response>',
            "is relative and the TwiML's own URL is unknown",
        ),
        (
            '<Response><Connect action="ftp://x/next"><Stream url="wss://x/y"/></Connect></Response>',
            "must be an http(s) URL",
        ),
        ('<Response><Connect action=""><Stream url="wss://x/y"/></Connect></Response>', "is empty"),
        ("<Response><Connect/></Response>", "<Connect> has no <Stream>"),
        ("not xml at all", "not XML TwiML"),
        ("<Foo/>", "root element is <Foo>"),
        ('<Response><Connect><Stream url="https://x/y"/></Connect></Response>', "must be a wss://"),
        ('<Response><Connect><Stream url="wss://x/y?a=1"/></Connect></Response>', "query string"),
        ("<Response><Connect><Stream/></Connect></Response>", "no url attribute"),
        (
            '<Response><Connect><Stream url="wss://x/y" track="both_tracks"/></Connect></Response>',
            "only inbound_track",
        ),
        (
            '<Response><Connect><Stream url="wss://x/y"><Parameter name="a"/></Stream></Connect></Response>',
            "needs both name and value",
        ),
    ],
)
def test_parse_twiml_errors_name_the_problem(xml: str, fragment: str) -> None:
    with pytest.raises(TwimlError) as info:
        parse_twiml(xml)
    assert fragment in str(info.value)
