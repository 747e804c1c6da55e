"""TwiML documents we answer with, built by the ``twilio`` package's own builders."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, VoiceResponse

#: Twilio: each <Parameter> name+value must stay under 500 characters.
MAX_PARAMETER_CHARS = 500


class TwimlError(ValueError):
    pass


def connect_stream(stream_url: str, parameters: Mapping[str, str], action: str | None = None) -> str:
    """``<Connect><Stream url>`` with the call context as ``<Parameter>``s (Twilio forbids a query string).

    ``action``: the absolute URL Twilio POSTs to when the stream ends (``<Connect action method="POST">``);
    its answer is the call's next TwiML (a resumed stream, or a hang-up).
    """
    if "?" in stream_url:
        raise TwimlError(f"stream URL {stream_url!r} must not carry a query string; use <Parameter>s")
    response = VoiceResponse()
    connect = Connect(action=action, method="POST") if action else Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        if len(name) + len(value) >= MAX_PARAMETER_CHARS:
            raise TwimlError(
                f"<Parameter name={name!r}> is {len(name) + len(value)} characters; Twilio allows < 500"
            )
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def say_and_hang_up(text: str) -> str:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


def dial(number: str, announcement: str | None = None, caller_id: str | None = None) -> str:
    """Transfer: optional announcement, then ``<Dial><Number>``."""
    response = VoiceResponse()
    if announcement:
        response.say(announcement)
    kwargs = {"caller_id": caller_id} if caller_id else {}
    response.dial(**kwargs).number(number)
    return str(response)


def empty() -> str:
    return str(VoiceResponse())


def hang_up() -> str:
    """``<Hangup/>``: the answer to a ``<Connect action>`` request for a call that is over."""
    response = VoiceResponse()
    response.hangup()
    return str(response)
