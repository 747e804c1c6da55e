"""TwiML documents we answer Twilio with (ivr.telephony.twiml), checked by parsing the XML back.

Why: Twilio rejects a stream URL with a query string and <Parameter>s of 500+ characters only at call
time, with a spoken "application error" to the caller. These tests parse the XML with xml.etree and check
its structure, so an escaping or nesting mistake cannot hide behind string comparisons.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ivr.telephony.twiml import (
    MAX_PARAMETER_CHARS,
    TwimlError,
    connect_stream,
    dial,
    empty,
    say_and_hang_up,
)

STREAM_URL = "wss://agent.example.com/twilio/media"


def _root(document: str) -> ET.Element:
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(document)
    assert root.tag == "Response"
    return root


def _children(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


def test_connect_stream_structure_and_parameters() -> None:
    params = {"flow": "support", "caller": "+1********67", "attempt": "1"}
    root = _root(connect_stream(STREAM_URL, params))
    assert _children(root) == ["Connect"]
    connect = root[0]
    assert _children(connect) == ["Stream"]
    stream = connect[0]
    assert stream.attrib == {"url": STREAM_URL}
    assert _children(stream) == ["Parameter"] * 3
    assert [(p.get("name"), p.get("value")) for p in stream] == list(params.items())
    assert all(set(p.attrib) == {"name", "value"} for p in stream)


def test_connect_stream_without_parameters() -> None:
    stream = _root(connect_stream(STREAM_URL, {}))[0][0]
    assert stream.tag == "Stream"
    assert list(stream) == []


def test_connect_stream_escapes_markup_in_parameters() -> None:
    hostile = {"note": "<Hangup/> & \"quotes\" 'too'", "<name>": "v"}
    stream = _root(connect_stream(STREAM_URL, hostile))[0][0]
    assert {p.get("name"): p.get("value") for p in stream} == hostile
    assert "Hangup" not in _children(stream)


@pytest.mark.parametrize(
    "url",
    ["wss://agent.example.com/twilio/media?call=CA1", "wss://agent.example.com/twilio/media?", "ws://h/?a=b"],
)
def test_query_string_in_stream_url_is_refused(url: str) -> None:
    with pytest.raises(TwimlError, match="query string"):
        connect_stream(url, {})


def test_parameter_just_under_the_limit_is_accepted() -> None:
    name = "ctx"
    value = "v" * (MAX_PARAMETER_CHARS - len(name) - 1)
    stream = _root(connect_stream(STREAM_URL, {name: value}))[0][0]
    assert stream[0].get("value") == value


@pytest.mark.parametrize("extra", [0, 1, 1000])
def test_parameter_at_or_over_500_chars_is_refused(extra: int) -> None:
    name = "ctx"
    value = "v" * (MAX_PARAMETER_CHARS - len(name) + extra)
    with pytest.raises(TwimlError, match="ctx") as info:
        connect_stream(STREAM_URL, {name: value})
    assert str(len(name) + len(value)) in str(info.value)


def test_long_parameter_name_counts_too() -> None:
    with pytest.raises(TwimlError):
        connect_stream(STREAM_URL, {"n" * 499: "v"})


def test_twiml_error_is_a_value_error() -> None:
    assert issubclass(TwimlError, ValueError)
    assert MAX_PARAMETER_CHARS == 500


def test_dial_without_announcement() -> None:
    root = _root(dial("+15550001111"))
    assert _children(root) == ["Dial"]
    dial_el = root[0]
    assert "callerId" not in dial_el.attrib
    assert _children(dial_el) == ["Number"]
    assert dial_el[0].text == "+15550001111"


def test_dial_with_announcement_and_caller_id() -> None:
    root = _root(dial("+15550001111", "Transferring you to <sales> & support", caller_id="+15552223333"))
    assert _children(root) == ["Say", "Dial"]
    assert root[0].text == "Transferring you to <sales> & support"
    assert root[1].get("callerId") == "+15552223333"
    assert root[1][0].text == "+15550001111"


def test_dial_empty_announcement_says_nothing() -> None:
    assert _children(_root(dial("+15550001111", ""))) == ["Dial"]


def test_say_and_hang_up() -> None:
    root = _root(say_and_hang_up("Sorry, we are closed. Goodbye & take care."))
    assert _children(root) == ["Say", "Hangup"]
    assert root[0].text == "Sorry, we are closed. Goodbye & take care."
    assert list(root[1]) == [] and not root[1].text


def test_empty_response() -> None:
    root = _root(empty())
    assert list(root) == []
