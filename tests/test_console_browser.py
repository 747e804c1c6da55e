"""The operations console in real headless Chromium (Debian's ``chromium``), driven by Playwright.

The issue's scenario, end to end against real parts: the bootstrap admin (``IVR_OPERATOR_TOKEN``) logs in,
adds the approver on the console's Operators page and reads the login token shown there once (the viewer is
added with the ``ivr operators`` CLI); the admin logs out and the approver logs in through the login form; a
simulated Twilio call (the project's Twilio-exact caller) to
a flow with a gated booking appears on the live board within 2 s and its transcript grows live; the pending
approval appears in the queue; the approver clicks Approve; the booking id reaches the call's transcript and
the approval shows who decided. A viewer sees no decision buttons and a forged POST from the viewer is
refused, as are a POST without the CSRF token and a wrong login token; a ``<script>`` said by the caller is
shown as text and never runs.

``IVR_SCREENSHOTS=1`` also saves each page to docs/img/console-*.png (fixed 1280×800 viewport) for
docs/console.md; CI leaves the docs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ivr import cli
from tests.support.calls import app_for, place_call
from tests.support.fake_realtime import FakeRealtimeServer, FakeSession, Reply
from tests.support.server import OPERATOR_TOKEN, RunningServer
from tests.test_call_state_e2e import _pending_booking

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
#: CI sets IVR_REQUIRE_BROWSER=1: there a missing browser fails the test instead of skipping it.
REQUIRED = os.environ.get("IVR_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not REQUIRED,
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium; .ci/run installs it)",
)

CLINIC = Path(__file__).parent / "data" / "flows-clinic"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
SHOTS = os.environ.get("IVR_SCREENSHOTS") == "1"
VIEWPORT = {"width": 1280, "height": 800}
XSS = "<script>window.__xss = 1; alert('xss')</script> can I book?"
CALLER = "+15557654321"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"IVR_REQUIRE_BROWSER=1 but there is no Chromium at {CHROMIUM}: apt-get install chromium")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def ivr_cli(*argv: str) -> str:
    """Run the real ``ivr`` command line (``ivr.cli.main``) and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    assert code == 0, out.getvalue()
    return out.getvalue()


async def add_operator(name: str, role: str) -> str:
    printed = await asyncio.to_thread(ivr_cli, "operators", "add", name, "--role", role)
    found = re.search(r"ivrop_\S+", printed)
    assert found, printed
    return found.group()


async def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    if SHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        await page.bring_to_front()
        await page.screenshot(path=str(DOCS_IMG / f"console-{name}.png"), full_page=full_page)


async def log_in(page: Any, base: str, token: str) -> None:
    await page.goto(base + "/ops/")
    assert "/ops/login" in page.url  # not logged in yet: sent to the login form
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/ops/")


class ConfirmReplies(deque):  # type: ignore[type-arg]
    """The fake model's next replies: once an approval notice arrived, it reads the booking id out."""

    def __init__(self, session: FakeSession) -> None:
        super().__init__(session.replies)  # whatever was still queued (the greeting) comes first
        self.session = session

    def __bool__(self) -> bool:
        return True

    def popleft(self) -> Reply:
        if len(self):
            return super().popleft()
        notices = [
            e["item"]["content"][0]["text"]
            for e in self.session.received
            if e["type"] == "conversation.item.create" and e["item"].get("role") == "system"
        ]
        found = re.search(r'"booking_id":\s*"(\w+)"', notices[-1]) if notices else None
        if found is None:
            return Reply(text="One moment, please.", audio_ms=200)
        return Reply(text=f"You are booked. Your booking id is {found.group(1)}.", audio_ms=300)


async def seed_history(server: RunningServer) -> None:
    """A few ended calls so the history screenshot shows a realistic page (screenshots only)."""
    calls = server.state.services.calls
    assert calls is not None
    now = time.time()
    samples = [
        ("completed", 184.0, "+14155550123", "Can I move my appointment to Friday?"),
        ("transferred", 96.5, "+442071838750", "I'd like to speak to a nurse."),
        ("caller-hung-up", 12.2, "+15125550199", "Hello? Is this the clinic?"),
        ("completed", 241.3, "+13105550148", "Do you have anything on Monday morning?"),
    ]
    for i, (outcome, length, caller, line) in enumerate(samples):
        sid = f"CA{i:02d}" + "5eed" * 7 + "ab"
        started = now - 3600 * (i + 1) - length
        calls.call_started(
            {
                "call_sid": sid,
                "flow_id": "test-clinic",
                "caller": caller,
                "called": "+15550100004",
                "stage": "booking",
                "engine": "realtime",
                "model": "gpt-realtime",
                "started_at": started,
            }
        )
        calls.transcript(sid, "caller", line, started + 5)
        calls.call_ended(
            sid,
            {
                "call_sid": sid,
                "flow_id": "test-clinic",
                "caller": caller,
                "outcome": outcome,
                "ended_at": started + length,
                "duration_s": length,
                "cost_usd": 0.0042 * length / 10,
                "usage": {"input_tokens": int(length * 40), "output_tokens": int(length * 12)},
            },
        )
    assert server.state.services.writer is not None and await server.state.services.writer.flush(5.0)


async def test_operator_console_end_to_end(
    browser: Any,
    fake_realtime: FakeRealtimeServer,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from playwright.async_api import expect

    fake_realtime.default_replies = [Reply(text="Hello, clinic. How can I help?", audio_ms=200)]
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_REDIS_PREFIX", redis_prefix)
    victor = await add_operator("victor", "viewer")  # `ivr operators add`; amy is added on the page below
    timings: dict[str, float] = {}

    async with app_for(
        fake_realtime, flows_dir=CLINIC, redis_url=redis_url, redis_prefix=redis_prefix
    ) as server:
        base = server.base_url
        approver_ctx = await browser.new_context(viewport=VIEWPORT)
        viewer_ctx = await browser.new_context(viewport=VIEWPORT)
        try:
            errors: list[str] = []  # console errors, CSP violations and uncaught exceptions, on every page
            dialogs: list[str] = []  # alert() & co. — a script said by the caller would open one

            async def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.dismiss()

            for ctx in (approver_ctx, viewer_ctx):
                ctx.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                ctx.on("weberror", lambda e: errors.append(str(e.error)))
                ctx.on("page", lambda page: page.on("dialog", on_dialog))
            board = await approver_ctx.new_page()

            # A wrong token is refused at login.
            await board.goto(base + "/ops/")
            await expect(board.locator("#token")).to_be_visible()
            await shot(board, "login")
            await board.fill("#token", "ivrop_this-is-not-a-real-token")
            async with board.expect_response(lambda r: r.request.method == "POST") as refused:
                await board.click("button[type=submit]")
            assert (await refused.value).status == 401
            await expect(board.get_by_role("alert")).to_contain_text("That token is not valid")

            # The bootstrap admin logs in and adds amy as an approver on the Operators page.
            await board.fill("#token", OPERATOR_TOKEN)
            await board.click("button[type=submit]")
            await board.wait_for_url(base + "/ops/")
            await expect(board.get_by_test_id("operator-name")).to_have_text("admin")
            await board.get_by_role("link", name="Operators").click()
            await board.wait_for_url(base + "/ops/operators")
            await expect(board.get_by_test_id("bootstrap-note")).to_contain_text("IVR_OPERATOR_TOKEN")
            add_form = board.get_by_test_id("add-operator")
            await add_form.get_by_label("Name").fill("amy")
            await add_form.get_by_label("Role").select_option("approver")
            await add_form.get_by_role("button", name="Add operator").click()
            created = board.get_by_test_id("new-operator")
            await expect(created).to_contain_text("It will not be shown again.")
            amy = (await created.get_by_test_id("new-token").inner_text()).strip()
            assert amy.startswith("ivrop_"), amy
            await expect(board.locator('[data-operator="amy"]')).to_contain_text("approver")
            await expect(board.locator('[data-operator="victor"]')).to_contain_text("viewer")
            await approver_ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            await created.get_by_role("button", name="Copy").click()
            await expect(created.get_by_role("status")).to_have_text("Copied to the clipboard.")
            assert await board.evaluate("navigator.clipboard.readText()") == amy
            if SHOTS:  # the picture shows where the token goes, never a token
                await created.get_by_test_id("new-token").evaluate(
                    "el => { el.textContent = 'ivrop_' + '•'.repeat(43); }"
                )
                await shot(board, "operators")
            await board.get_by_role("button", name="Log out").click()
            await board.wait_for_url(re.compile(r".*/ops/login$"))

            # The approver logs in through the form with that token; the viewer too, in another context.
            await board.fill("#token", amy)
            await board.click("button[type=submit]")
            await board.wait_for_url(base + "/ops/")
            await expect(board.get_by_test_id("operator-name")).to_have_text("amy")
            await expect(board.get_by_role("link", name="Operators")).to_have_count(0)  # admins only
            viewer = await viewer_ctx.new_page()
            await log_in(viewer, base, victor)
            for page in (board, viewer):
                await expect(page.locator(".conn.up")).to_have_count(1)  # the live stream is open

            # A call arrives: on the board within 2 s.
            started = time.monotonic()
            live = await place_call(server, to_number="+15550100004", from_number=CALLER, duration_s=90)
            sid = live.call.call_sid
            row = board.locator(f"#call-{sid}")
            await expect(row).to_be_visible(timeout=2000)
            timings["call on the board"] = time.monotonic() - started
            assert timings["call on the board"] < 2.0
            await expect(row).to_contain_text("+1********21")
            await expect(viewer.locator(f"#call-{sid}")).to_be_visible()
            session = await fake_realtime.next_session()
            session.replies = ConfirmReplies(session)

            # Its page: the transcript grows live; what the caller says is text, never markup.
            call_page = await approver_ctx.new_page()
            await call_page.goto(f"{base}/ops/calls/{sid}")
            transcript = call_page.get_by_test_id("transcript")
            await expect(transcript).to_contain_text("Hello, clinic. How can I help?")
            await session.speech_started()  # the caller's turns, as server VAD reports them
            await session.speech_stopped()
            await session.user_said(XSS)
            await expect(transcript.get_by_text(XSS)).to_be_visible()
            await expect(row.get_by_test_id("last-line")).to_contain_text("window.__xss")
            said_at = time.monotonic()
            await session.speech_started()
            await session.speech_stopped()
            await session.user_said("I'd like a check-up tomorrow at ten, please.")
            await expect(transcript).to_contain_text("a check-up tomorrow at ten")
            timings["caller line on the call page"] = time.monotonic() - said_at

            # The gated booking: the pending approval appears in both queues, with buttons only for amy.
            _, pending = await _pending_booking(session)
            aid = pending["approval_id"]
            card = board.locator(f"#approval-{aid}")
            await expect(card).to_be_visible()
            await expect(card).to_contain_text("a check-up tomorrow at ten")  # what the caller asked
            await expect(card).to_contain_text("action book")  # the tool's arguments in words
            await expect(card.get_by_role("button", name="Approve")).to_be_visible()
            viewer_card = viewer.locator(f"#approval-{aid}")
            await expect(viewer_card).to_be_visible()
            assert await viewer_card.get_by_role("button").count() == 0
            await shot(board, "board")

            # A forged POST from the viewer (its own cookie and CSRF token) and a POST without CSRF: refused.
            csrf = await viewer.get_attribute("meta[name=csrf-token]", "content")
            forged = await viewer.request.post(
                f"{base}/ops/approvals/{aid}", form={"decision": "approve", "csrf": csrf}
            )
            assert forged.status == 403
            no_csrf = await board.request.post(f"{base}/ops/approvals/{aid}", form={"decision": "approve"})
            assert no_csrf.status == 403
            await expect(card.get_by_role("button", name="Approve")).to_be_visible()  # still pending

            # amy approves; the booking runs on the call and its id reaches the transcript.
            await board.bring_to_front()  # (a background tab's animation frames are throttled)
            await card.locator("input[name=note]").fill("Confirmed with Dr Lee")
            clicked = time.monotonic()
            await card.get_by_role("button", name="Approve").click()
            await expect(card.get_by_test_id("decision")).to_contain_text("Approved by amy")
            timings["click → decision shown"] = time.monotonic() - clicked
            news = await session.wait_for(
                "conversation.item.create", lambda e: e["item"].get("role") == "system", timeout=5
            )
            timings["click → approval notice at the model"] = time.monotonic() - clicked
            booking_id = re.search(r'"booking_id":\s*"(\w+)"', news["item"]["content"][0]["text"])
            assert booking_id, news
            bid = booking_id.group(1)
            await expect(transcript).to_contain_text(f"Your booking id is {bid}", timeout=8000)
            timeline = call_page.get_by_test_id("timeline")
            await expect(timeline).to_contain_text("Approval approved by amy for appointments")
            await expect(timeline).to_contain_text("Tool appointments ok")
            await expect(call_page.get_by_test_id("call-header")).to_contain_text("booking")  # the stage
            await call_page.bring_to_front()
            await shot(call_page, "call", full_page=True)

            # The viewer's page of the same call offers no hang-up or transfer.
            viewer_call = await viewer_ctx.new_page()
            await viewer_call.goto(f"{base}/ops/calls/{sid}")
            await expect(viewer_call.get_by_test_id("transcript")).to_contain_text(bid)
            assert await viewer_call.get_by_role("button", name="Hang up").count() == 0

            # The script the caller said never ran, anywhere.
            for page in (board, call_page, viewer, viewer_call):
                assert await page.evaluate("typeof window.__xss") == "undefined"
            assert dialogs == []
            await board.evaluate("alert('control')")  # (the detector itself works: a real alert is seen)
            assert dialogs == ["control"]

            # The call ends: the board and the call page follow; it shows in history.
            result = await live.hang_up()
            assert result.ended_by == "caller"
            await expect(call_page.get_by_test_id("call-status")).to_have_text("completed", timeout=5000)
            await expect(row).to_have_class(re.compile(r"\bended\b"))
            if SHOTS:
                await seed_history(server)
            history = await approver_ctx.new_page()
            await history.goto(f"{base}/ops/history")
            await expect(history.locator(f'a[href="/ops/calls/{sid}"]')).to_be_visible()
            await shot(history, "history")
            fleet = await approver_ctx.new_page()
            await fleet.goto(f"{base}/ops/fleet")
            await expect(fleet.get_by_test_id("instance")).to_have_count(1)
            await expect(fleet.get_by_test_id("instance")).to_contain_text("alive")
            await shot(fleet, "fleet")

            # A tablet: the layout reflows to one column, nothing scrolls sideways.
            for page in (board, call_page, history):
                await page.bring_to_front()
                await page.set_viewport_size({"width": 768, "height": 1024})
                assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            assert [e for e in errors if "401" not in e] == [], errors
        finally:
            # Close the browsers' live streams before the server stops (it waits for open connections).
            await approver_ctx.close()
            await viewer_ctx.close()
    with capsys.disabled():
        print("\n[console in Chromium] " + ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in timings.items()))
