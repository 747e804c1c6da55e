"""pytest fixtures for the protocol-faithful stand-ins (imported by tests/conftest.py).

Why: each test gets its own started fake, in its own event loop, and the teardown fails the test with a
readable list when anything broke the protocol — a violation seen inside a server handler would otherwise
only show up as a log line and a confusing failure elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.fake_realtime import FakeRealtimeServer
from tests.support.fake_twilio_rest import FakeTwilioRest

__all__ = [
    "OPENAI_TEST_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "fake_realtime",
    "fake_twilio_rest",
    "format_violations",
]

OPENAI_TEST_KEY = "sk-test"
TWILIO_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def format_violations(who: str, violations: list[str]) -> str:
    lines = "\n".join(f"  {i + 1}. {v}" for i, v in enumerate(violations))
    return f"{who} saw {len(violations)} protocol violation(s):\n{lines}"


@pytest.fixture
async def fake_realtime() -> AsyncIterator[FakeRealtimeServer]:
    """A started FakeRealtimeServer (api key ``sk-test``); teardown asserts no protocol violations."""
    server = FakeRealtimeServer(api_key=OPENAI_TEST_KEY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert server.violations == [], format_violations("fake OpenAI Realtime", server.violations)


@pytest.fixture
async def fake_twilio_rest() -> AsyncIterator[FakeTwilioRest]:
    """A started FakeTwilioRest for TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN; teardown asserts no violations."""
    server = FakeTwilioRest(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    assert server.violations == [], format_violations("fake Twilio REST", server.violations)
