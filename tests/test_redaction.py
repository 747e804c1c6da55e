"""Caller data that must not leak: keypad digits in logs, and a flow's ``redact:`` rules (ivr.redaction).

Why: keypad digits may be a PIN or a card number, and callers say card numbers, SSNs and e-mail addresses
out loud. The detectors are checked directly on written and spoken forms; the flow key is checked through
the real loader (errors with file and line); and whole calls run over loopback sockets (simulated Twilio ⇄
the app under uvicorn ⇄ the fake model) with a real Redis that is read back afterwards, while every log line
of the process is captured through the production :class:`~ivr.logs.RedactingFilter`.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from ivr.flows import FlowError, parse_flow
from ivr.logs import RedactingFilter, use_redactor
from ivr.redaction import DETECTORS, Redactor, luhn_ok
from ivr.store.keys import KeySchema
from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, Reply
from tests.support.server import OPERATOR_TOKEN

REDACT_FLOWS = Path(__file__).parent / "data" / "flows-redact"
CARD = "4111111111111111"  # a Visa test number (passes Luhn)
SSN = "123-45-6789"
EMAIL = "ada.lovelace@example.com"
MEMBER = "M-123456"

ALL = Redactor.build(["card_number", "ssn", "email", "phone", "dtmf"], [("member_id", r"\bM-[0-9]{6}\b")])


# ------------------------------------------------------------------------------------------------
# detectors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "said",
    [
        "my card is 4111 1111 1111 1111 thanks",
        "my card is 4111-1111-1111-1111 thanks",
        "my card is 4111111111111111 thanks",
        "my card is 4111 1111 1111 1111, expiry 12 29",  # a number said right after the card
        "four one one one, one one one one, one one one one, one one one one",
        "it's four one double one, one one one one, one one one one, one triple one",
        "amex 3782 822463 10005 please",
    ],
)
def test_card_numbers_written_or_spoken_are_masked(said: str) -> None:
    cleaned = Redactor.build(["card_number"]).text(said)
    assert "[card_number]" in cleaned
    assert not re.search(r"\d{4}", cleaned.replace("12 29", "")), cleaned
    assert "one one one" not in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "order 12345 for 23.50",
        "booking for 2026-12-08T10:00, party of 4 at 10:30",
        "call CA0123456789abcdef0123456789abcdef stream MZ41111111111111110000",
    ],
)
def test_card_detector_leaves_other_numbers_alone(text: str) -> None:
    assert Redactor.build(["card_number"]).text(text) == text


def test_luhn() -> None:
    assert luhn_ok(CARD) and luhn_ok("378282246310005") and luhn_ok("5555555555554444")
    assert not luhn_ok("4111111111111112")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"my ssn is {SSN}.", "my ssn is [ssn]."),
        ("ssn 123456789", "ssn [ssn]"),
        ("one two three four five six seven eight nine", "[ssn]"),
        ("666-12-3456 and 000-12-3456 are never issued", "666-12-3456 and 000-12-3456 are never issued"),
        (f"write to {EMAIL} please", "write to [email] please"),
        ("it's ada dot lovelace at example dot com", "it's [email]"),
        ("call me on +1 (555) 123-4567 or 555-123-4567", "call me on [phone] or [phone]"),
        ("+447700900123 after six", "[phone] after six"),
        ("five five five, one two three, four five six seven", "[phone]"),
    ],
)
def test_builtin_detectors(text: str, expected: str) -> None:
    names = ["ssn", "email", "phone"]
    assert Redactor.build(names).text(text) == expected


def test_custom_patterns_run_before_builtins_and_label_their_matches() -> None:
    assert ALL.text(f"member {MEMBER}, card {CARD}") == "member [member_id], card [card_number]"


def test_events_keep_their_ids_and_mask_values_at_any_depth() -> None:
    event = {
        "type": "tool.called",
        "ts": 1.5,
        "call_sid": "CA4111111111111111",
        "name": "pay",
        "arguments": {"card": int(CARD), "items": [{"note": f"mail {EMAIL}"}], "count": 3, "ok": True},
        "output": json.dumps({"charged": f"card {CARD}"}),
    }
    out = ALL.event(event)
    assert out["call_sid"] == event["call_sid"] and out["ts"] == 1.5 and out["type"] == "tool.called"
    assert out["arguments"] == {
        "card": "[card_number]",
        "items": [{"note": "mail [email]"}],
        "count": 3,
        "ok": True,
    }
    assert CARD not in out["output"]
    assert event["arguments"]["card"] == int(CARD)  # the caller's copy is untouched


def test_dtmf_detector_masks_keypad_digits_and_key_triggers() -> None:
    keypad = Redactor.build(["dtmf"])
    assert keypad.event({"type": "dtmf", "digit": "7"})["digit"] == "*"
    assert keypad.event({"type": "stage.changed", "trigger": "key:7"})["trigger"] == "key:*"
    assert keypad.event({"type": "stage.changed", "trigger": "tool:pay"})["trigger"] == "tool:pay"
    assert Redactor.build([]).event({"type": "dtmf", "digit": "7"})["digit"] == "7"


# ------------------------------------------------------------------------------------------------
# the flow key
# ------------------------------------------------------------------------------------------------

HEAD = 'id: shop\ninstructions: "Take payments."\n'


def test_redact_key_loads_builtins_and_patterns() -> None:
    flow = parse_flow(
        HEAD + 'redact:\n  - card_number\n  - {name: member_id, pattern: "M-[0-9]{6}"}\n', "x.yaml"
    ).flow
    assert flow.redactor().text(f"{CARD} {MEMBER}") == "[card_number] [member_id]"
    assert not parse_flow(HEAD, "x.yaml").flow.redactor().active


def test_redact_errors_name_file_line_and_choices() -> None:
    text = HEAD + 'redact:\n  - card_numbr\n  - {pattern: "M-[0-9"}\n  - {pattern: "x*"}\n  - {name: a}\n'
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "flows/shop.yaml")
    lines = str(caught.value).splitlines()
    assert any(
        line.startswith("flows/shop.yaml:4: redact[0]: 'card_numbr' is not a built-in detector")
        and "did you mean 'card_number'" in line
        and ", ".join(DETECTORS) in line
        for line in lines
    ), lines
    assert any(
        line.startswith("flows/shop.yaml:5: ") and "not a valid regular expression" in line for line in lines
    )
    assert any(line.startswith("flows/shop.yaml:6: ") and "matches empty text" in line for line in lines)
    assert any(
        line.startswith("flows/shop.yaml:7: ") and "either a built-in detector" in line for line in lines
    )


# ------------------------------------------------------------------------------------------------
# whole calls: logs and Redis
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Every log line of the process at DEBUG, through the production redacting filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


async def test_keypad_digits_never_reach_the_logs(
    fake_realtime: FakeRealtimeServer, log_output: io.StringIO
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, test desk.", audio_ms=200)]
    async with app_for(fake_realtime) as server:
        live = await place_call(server)
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        for digit in "4729":
            live.call.press(digit)
        # The model heard every key (the digits are the caller's input to the conversation) ...
        await session.wait_for("conversation.item.create", lambda e: "pressed 9" in json.dumps(e))
        await live.hang_up()
    # ... but no log line of the server says which keys were pressed; each press is still logged. (Only the
    # server's own loggers: the test's stand-in model logs the frames it receives at DEBUG.)
    ours = "\n".join(line for line in log_output.getvalue().splitlines() if " ivr." in line[:40])
    assert not re.search(r"pressed\s+[0-9*#]", ours), re.findall(r".*pressed.*", ours)
    output = log_output.getvalue()
    assert output.count("caller pressed a keypad key") == 4, output


async def test_flow_redaction_applies_before_redis_the_feed_and_the_logs(
    fake_realtime: FakeRealtimeServer, redis_url: str, redis_prefix: str, log_output: io.StringIO
) -> None:
    fake_realtime.default_replies = [Reply(text="Hello, payments.", audio_ms=200)]
    async with app_for(
        fake_realtime, flows_dir=REDACT_FLOWS, redis_url=redis_url, redis_prefix=redis_prefix
    ) as server:
        live = await place_call(server, to_number="+15550100006")
        session = await fake_realtime.next_session()
        await session.wait_response_done()
        await session.user_said(f"My card is 4111 1111 1111 1111, SSN {SSN}, email {EMAIL}, member {MEMBER}.")
        await session.respond(Reply(text=f"Thanks. The receipt goes to {EMAIL}.", audio_ms=200))
        await session.wait_response_done()
        await session.respond(Reply(function_call=("take_payment", {"reason": "card 4111-1111-1111-1111"})))
        await session.wait_for("session.update", lambda e: "Confirm the payment" in json.dumps(e))
        await session.wait_response_done()
        # Provider errors may quote the input back; the log line must not.
        await session.send_error("invalid_value", f"Invalid value 4111 1111 1111 1111 for {MEMBER}")
        for digit in "52":
            live.call.press(digit)
        await session.wait_for("conversation.item.create", lambda e: "pressed 2" in json.dumps(e))
        result = await live.hang_up()
        call_sid = live.call.call_sid
        assert server.state.services.writer is not None
        assert await server.state.services.writer.flush(5.0)
        async with httpx.AsyncClient(base_url=server.base_url) as http:  # the record kept in memory
            response = await http.get(
                f"/api/calls/{call_sid}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            )
            response.raise_for_status()
            api_record = response.text

    keys = KeySchema(redis_prefix)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        transcript = [fields for _, fields in await client.xrange(keys.transcript(call_sid))]
        events = [fields for _, fields in await client.xrange(keys.call_events(call_sid))]
        global_events = [fields for _, fields in await client.xrange(keys.events())]
        record = await client.hgetall(keys.call(call_sid))
    finally:
        await client.aclose()

    caller_line = next(line["text"] for line in transcript if line["role"] == "caller")
    assert caller_line == "My card is [card_number], SSN [ssn], email [email], member [member_id]."
    assert any(line["text"] == "Thanks. The receipt goes to [email]." for line in transcript)
    tool = next(json.loads(e["data"]) for e in events if e["type"] == "tool.called")
    assert tool["arguments"] == {"reason": "card [card_number]"}
    dtmf = [json.loads(e["data"])["digit"] for e in events if e["type"] == "dtmf"]
    assert dtmf == ["*", "*"]

    stored = json.dumps([transcript, events, global_events, record])
    live_feed = json.dumps(result.transcript)
    logs = log_output.getvalue()
    assert "[card_number]" in api_record
    sources = (("Redis", stored), ("the live feed", live_feed), ("the API", api_record), ("the logs", logs))
    for where, text in sources:
        compact = re.sub(r"[\s\-]", "", text)
        assert CARD not in compact, where
        assert SSN not in text, where
        assert EMAIL not in text, where
        assert MEMBER not in text, where
    assert "Invalid value [card_number] for [member_id]" in logs


# ------------------------------------------------------------------------------------------------
# log lines
# ------------------------------------------------------------------------------------------------


def _filtered(message: str, *args: object) -> str:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, args, None)
    RedactingFilter().filter(record)
    return record.getMessage()


def test_every_log_line_masks_written_card_numbers_without_any_flow() -> None:
    assert _filtered("upstream said: bad value %s", "4111 1111 1111 1111") == (
        "upstream said: bad value [card_number]"
    )
    # Timestamps, ids and durations are not card numbers.
    line = "ts=1733577149.123 call=CA4111111111111111abcdef took 1234 ms"
    assert _filtered(line) == line


async def test_a_calls_rules_apply_to_log_lines_of_its_own_context_only() -> None:
    async def log_line() -> str:
        await asyncio.sleep(0)
        return _filtered(f"{EMAIL} {MEMBER}")

    call_context = contextvars.copy_context()  # what the call's WebSocket task holds
    call_context.run(use_redactor, Redactor.build(["email"], [("member_id", r"\bM-[0-9]{6}\b")]))
    inside = call_context.run(asyncio.ensure_future, log_line())
    assert await inside == "[email] [member_id]"  # a task the call started
    assert _filtered(f"{EMAIL} {MEMBER}") == f"{EMAIL} {MEMBER}"  # another call or none: untouched
