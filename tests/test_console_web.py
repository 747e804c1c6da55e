"""The console's web layer over loopback HTTP (no browser): auth, roles, CSRF, headers, escaping, SSE, export.

A real app under uvicorn with a real Redis; call state is written through the app's own CallStore (the same
path a live call uses), so the pages read exactly what production writes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from ivr.console.sse import SseHub, StreamEntry
from ivr.store.keys import KeySchema
from tests.support.console import Sse, logged_in, wait_ready
from tests.support.server import RunningServer, make_settings, running_server

XSS = "<script>window.__xss = 1; alert(1)</script>"
SID = "CA" + "c2" * 16
HTML = {"Accept": "text/html"}


@pytest.fixture
async def server(redis_url: str, redis_prefix: str) -> AsyncIterator[RunningServer]:
    async with running_server(make_settings(redis_url=redis_url, redis_prefix=redis_prefix)) as running:
        await wait_ready(running)
        yield running


async def flush(server: RunningServer) -> None:
    writer = server.state.services.writer
    assert writer is not None and await writer.flush(5.0)


def start_call(server: RunningServer, sid: str = SID, **fields: Any) -> None:
    calls = server.state.services.calls
    assert calls is not None
    record = {
        "call_sid": sid,
        "flow_id": "test-clinic",
        "caller": "+15557654321",
        "called": "+15550100004",
        "stage": "reception",
        "engine": "realtime",
        "model": "gpt-realtime",
        "started_at": time.time(),
        **fields,
    }
    calls.call_started(record)


def say(server: RunningServer, role: str, text: str, sid: str = SID, **extra: Any) -> None:
    """A transcript line the way the app's sink writes it: the line's stream and a transcript event."""
    calls = server.state.services.calls
    assert calls is not None
    calls.transcript(sid, role, text, time.time(), extra)
    calls.event(sid, "transcript", {"role": role, "text": text, **extra})


# ------------------------------------------------------------------------------------------ auth and roles


async def test_pages_need_a_login_browsers_are_redirected_and_clients_get_401(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        bare = await http.get("/ops")
        assert bare.status_code == 308 and bare.headers["location"] == "/ops/"
        for path in ("/ops/", "/ops/history", "/ops/fleet", f"/ops/calls/{SID}"):
            browser = await http.get(path, headers=HTML)
            assert browser.status_code == 303, path
            assert browser.headers["location"].startswith("/ops/login?next=/ops/")
            api = await http.get(path)
            assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer", path
        for path in ("/ops/events", f"/ops/calls/{SID}/events", "/ops/fleet/events"):
            assert (await http.get(path, headers={"Accept": "text/event-stream"})).status_code == 401
        login = await http.get("/ops/login")
        assert login.status_code == 200 and 'name="token"' in login.text


async def test_wrong_token_is_refused_and_login_sets_a_strict_cookie(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        wrong = await http.post("/ops/login", data={"token": "ivrop_not-a-real-token"})
        assert wrong.status_code == 401
        assert "That token is not valid" in wrong.text and "ivr_session" not in wrong.headers.get(
            "set-cookie", ""
        )
        token = await server.state.services.operators.add("dana", "approver")  # type: ignore[union-attr]
        ok = await http.post("/ops/login", data={"token": token, "next": "https://evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ops/"  # no open redirect
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        board = await http.get("/ops/")
        assert board.status_code == 200
        assert 'data-testid="operator-name">dana<' in board.text and ">approver<" in board.text


async def test_console_pages_carry_a_strict_csp_and_no_store(server: RunningServer) -> None:
    async with logged_in(server, "vic", "viewer") as vic:
        for path in ("/ops/", "/ops/history", "/ops/fleet"):
            response = await vic.client.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "same-origin"
            assert response.headers["cache-control"] == "no-store"
            assert "<script>" not in response.text  # no inline script: only <script src=…>
            assert "https://" not in response.text.split("<body", 1)[0]  # nothing from a CDN


async def test_static_files_have_types_and_long_cache(server: RunningServer) -> None:
    async with logged_in(server, "vic", "viewer") as vic:
        page = (await vic.client.get("/ops/")).text
        urls = re.findall(r'(?:src|href)="(/ops/static/[^"]+)"', page)
        assert len(urls) == 5, urls
        for url in urls:
            response = await vic.client.get(url)
            assert response.status_code == 200
            expected = {"css": "text/css", "svg": "image/svg+xml"}.get(
                url.split("?")[0].rsplit(".", 1)[-1], "text/javascript"
            )
            assert response.headers["content-type"].startswith(expected)
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert response.headers["x-content-type-options"] == "nosniff"
            again = await vic.client.get(url, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304
        assert (await vic.client.get("/ops/static/../web.py")).status_code == 404


async def test_viewer_sees_no_buttons_and_cannot_decide_hang_up_or_transfer(server: RunningServer) -> None:
    start_call(server)
    approvals = server.state.services.approvals
    assert approvals is not None
    request = await approvals.request(
        call_sid=SID,
        instance_id="i",
        flow_id="test-clinic",
        tool="appointments",
        call_id="c1",
        arguments={"action": "book", "start": "2030-01-02T10:00"},
        reason="front desk",
        timeout_s=60,
    )
    await flush(server)
    async with logged_in(server, "vic", "viewer") as vic, logged_in(server, "ann", "approver") as ann:
        board = await vic.client.get("/ops/")
        assert f'data-approval="{request.id}"' in board.text and "Approve</button>" not in board.text
        assert "Approve</button>" in (await ann.client.get("/ops/")).text
        call = await vic.client.get(f"/ops/calls/{SID}")
        assert call.status_code == 200 and "Hang up</button>" not in call.text
        for path, form in (
            (f"/ops/approvals/{request.id}", {"decision": "approve"}),
            (f"/ops/calls/{SID}/hangup", {}),
            (f"/ops/calls/{SID}/transfer", {}),
        ):
            forged = await vic.client.post(path, data={**form, "csrf": vic.csrf})
            assert forged.status_code == 403, (path, forged.text)
            assert "viewer role" in forged.text
        assert (await approvals.get(request.id)).status == "pending"  # type: ignore[union-attr]


async def test_csrf_is_required_and_the_decider_is_the_logged_in_operator(server: RunningServer) -> None:
    start_call(server)
    approvals = server.state.services.approvals
    assert approvals is not None
    request = await approvals.request(
        call_sid=SID,
        instance_id="i",
        flow_id="test-clinic",
        tool="appointments",
        call_id="c1",
        arguments={"action": "book"},
        reason="r",
        timeout_s=60,
    )
    await flush(server)
    async with logged_in(server, "ann", "approver") as ann:
        path = f"/ops/approvals/{request.id}"
        assert (await ann.client.post(path, data={"decision": "approve"})).status_code == 403
        wrong = await ann.client.post(path, data={"decision": "approve", "csrf": "x" * 40})
        assert wrong.status_code == 403
        foreign = await ann.client.post(
            path, data={"decision": "approve", "csrf": ann.csrf}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert (await approvals.get(request.id)).status == "pending"  # type: ignore[union-attr]
        ok = await ann.client.post(
            path,
            data={"decision": "approve", "note": "<b>ok</b>", "operator": "mallory"},
            headers={"HX-Request": "true", "X-CSRF-Token": ann.csrf},
        )
        assert ok.status_code == 200, ok.text
        assert (
            "Approved" in ok.text and "<strong>ann</strong>" in ok.text and "&lt;b&gt;ok&lt;/b&gt;" in ok.text
        )
        record = await approvals.get(request.id)
        assert record is not None and record.decided_by == "ann"
        again = await ann.client.post(
            path, data={"decision": "deny"}, headers={"HX-Request": "true", "X-CSRF-Token": ann.csrf}
        )
        assert again.status_code == 409 and "already approved by ann" in again.text


async def test_logout_ends_the_session(server: RunningServer) -> None:
    async with logged_in(server, "vic", "viewer") as vic:
        assert (await vic.client.post("/ops/logout")).status_code == 403  # no CSRF token
        out = await vic.client.post("/ops/logout", data={"csrf": vic.csrf})
        assert out.status_code == 303 and out.headers["location"] == "/ops/login"
        assert (await vic.client.get("/ops/", headers=HTML)).status_code == 303


# -------------------------------------------------------------------------------------- operators (admins)


def new_token(page: str) -> str:
    found = re.findall(r'data-testid="new-token">(ivrop_[^<]+)<', page)
    assert len(found) == 1, page[:2000]
    return found[0]


async def test_only_admins_see_and_open_the_operators_page(server: RunningServer) -> None:
    async with (
        logged_in(server, "ada", "admin") as ada,
        logged_in(server, "ann", "approver") as ann,
        logged_in(server, "vic", "viewer") as vic,
    ):
        page = await ada.client.get("/ops/operators")
        assert page.status_code == 200
        assert 'href="/ops/operators" aria-current="page">Operators<' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
        rows = re.findall(r'data-testid="operator" data-operator="([^"]+)"', page.text)
        assert rows == ["ada", "ann", "vic"]
        assert ">approver<" in page.text and ">viewer<" in page.text and "(you)" in page.text
        for secret in (ada.token, ann.token, vic.token, "ivrop_"):  # never a token, nor its hash
            assert secret not in page.text
        record = await server.state.services.redis.hgetall(  # type: ignore[union-attr]
            server.state.services.keys.operator("ann")
        )
        assert record["token_sha256"] not in page.text
        assert 'data-testid="bootstrap-note"' in page.text and "IVR_OPERATOR_TOKEN" in page.text
        for other in (ann, vic):
            assert 'href="/ops/operators"' not in (await other.client.get("/ops/")).text  # no nav link
            refused = await other.client.get("/ops/operators")
            assert refused.status_code == 403 and "only an admin can manage operators" in refused.text
            forged = await other.client.post(
                "/ops/operators", data={"name": "eve", "role": "admin", "csrf": other.csrf}
            )
            assert forged.status_code == 403
            gone = await other.client.post(
                "/ops/operators/ann/remove", data={"confirm": "yes", "csrf": other.csrf}
            )
            assert gone.status_code == 403
        assert await server.state.services.operators.get("eve") is None  # type: ignore[union-attr]
        assert await server.state.services.operators.get("ann") is not None  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        browser = await anonymous.get("/ops/operators", headers=HTML)
        assert browser.status_code == 303 and browser.headers["location"] == "/ops/login?next=/ops/operators"
        assert (await anonymous.get("/ops/operators")).status_code == 401
        assert (
            await anonymous.post("/ops/operators", data={"name": "eve", "role": "admin"})
        ).status_code == 401
        bearer = {"Authorization": "Bearer operator-secret-token"}  # the bootstrap admin, as a script
        assert (await anonymous.get("/ops/operators", headers=bearer)).status_code == 200


async def test_bootstrap_note_only_when_the_bootstrap_admin_is_configured(
    redis_url: str, redis_prefix: str
) -> None:
    settings = make_settings(redis_url=redis_url, redis_prefix=redis_prefix, operator_token="")
    async with running_server(settings) as running:
        await wait_ready(running)
        async with logged_in(running, "ada", "admin") as ada:
            page = await ada.client.get("/ops/operators")
            assert page.status_code == 200 and 'data-testid="bootstrap-note"' not in page.text


async def test_an_admin_adds_an_operator_whose_token_is_shown_once_and_logs_in(server: RunningServer) -> None:
    async with logged_in(server, "ada", "admin") as ada:
        assert (
            await ada.client.post("/ops/operators", data={"name": "amy", "role": "approver"})
        ).status_code == 403
        foreign = await ada.client.post(
            "/ops/operators",
            data={"name": "amy", "role": "approver", "csrf": ada.csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert await server.state.services.operators.get("amy") is None  # type: ignore[union-attr]

        added = await ada.client.post(
            "/ops/operators", data={"name": "amy", "role": "approver", "csrf": ada.csrf}
        )
        assert added.status_code == 201, added.text
        token = new_token(added.text)
        assert "It will not be shown again." in added.text and 'data-copy="new-token"' in added.text
        assert added.headers["cache-control"] == "no-store"
        assert 'data-operator="amy"' in added.text  # the list under it already has amy
        again = await ada.client.get("/ops/operators")
        assert token not in again.text and 'data-testid="new-token"' not in again.text
        assert re.search(r'data-operator="amy".*?never', again.text, re.S)  # no login yet

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        login = await http.post("/ops/login", data={"token": token})
        assert login.status_code == 303 and login.headers["location"] == "/ops/"
        board = await http.get("/ops/")
        assert 'data-testid="operator-name">amy<' in board.text and ">approver<" in board.text
    info = await server.state.services.operators.get("amy")  # type: ignore[union-attr]
    assert info is not None and info.role == "approver" and info.last_login_at is not None


async def test_bad_operator_input_is_explained_inline(server: RunningServer) -> None:
    async with logged_in(server, "ada", "admin") as ada:

        async def add(name: str, role: str) -> httpx.Response:
            return await ada.client.post(
                "/ops/operators", data={"name": name, "role": role, "csrf": ada.csrf}
            )

        cases = [
            ("bad name", "viewer", 422, "Operator name &#39;bad name&#39; is not allowed"),
            ("<b>x</b>", "viewer", 422, "Operator name &#39;&lt;b&gt;x&lt;/b&gt;&#39; is not allowed"),
            ("", "viewer", 422, "Type a name for the new operator"),
            ("x" * 65, "viewer", 422, "at most 64"),
            ("admin", "admin", 422, "is reserved"),
            ("bob", "root", 422, "Role &#39;root&#39; is not one of viewer, approver, admin"),
            ("bob", "", 422, "Choose a role"),
            ("ada", "viewer", 409, "There is already an operator named ada"),
        ]
        for name, role, status, words in cases:
            response = await add(name, role)
            assert response.status_code == status, (name, role, response.text[:300])
            error = re.search(r'data-testid="operator-error">([^<]*)</p>', response.text)
            assert error and words in error.group(1), (name, role, error and error.group(1))
            assert "<b>x</b>" not in response.text and "ivrop_" not in response.text
        kept = await add("bad name", "approver")
        assert 'value="bad name"' in kept.text and '<option value="approver" selected>' in kept.text
        names = [o.name for o in await server.state.services.operators.list()]  # type: ignore[union-attr]
        assert names == ["ada"]


async def test_removing_an_operator_asks_first_then_ends_their_open_session(server: RunningServer) -> None:
    async with logged_in(server, "ada", "admin") as ada, logged_in(server, "rob", "viewer") as rob:
        assert (await rob.client.get("/ops/")).status_code == 200
        path = "/ops/operators/rob/remove"
        assert (await ada.client.post(path, data={"confirm": "yes"})).status_code == 403  # no CSRF token
        ask = await ada.client.post(path, data={"csrf": ada.csrf})
        assert ask.status_code == 200 and "Remove rob?" in ask.text
        assert 'name="confirm" value="yes"' in ask.text and 'href="/ops/operators"' in ask.text  # or Cancel
        assert (await rob.client.get("/ops/")).status_code == 200  # asking removed nothing

        done = await ada.client.post(path, data={"csrf": ada.csrf, "confirm": "yes"})
        assert done.status_code == 200 and "rob was removed" in done.text
        assert 'data-operator="rob"' not in done.text
        assert (await rob.client.get("/ops/", headers=HTML)).status_code == 303  # the open session is over
        assert (await rob.client.get("/ops/")).status_code == 401
        bearer = await rob.client.get("/api/approvals", headers={"Authorization": f"Bearer {rob.token}"})
        assert bearer.status_code == 401  # and so is the token
        relogin = await rob.client.post("/ops/login", data={"token": rob.token})
        assert relogin.status_code == 401

        missing = await ada.client.post(path, data={"csrf": ada.csrf, "confirm": "yes"})
        assert missing.status_code == 404 and "There is no operator named rob" in missing.text
        bootstrap = await ada.client.post("/ops/operators/admin/remove", data={"csrf": ada.csrf})
        assert bootstrap.status_code == 400 and "IVR_OPERATOR_TOKEN" in bootstrap.text


async def test_an_admin_who_removes_themselves_is_logged_out(server: RunningServer) -> None:
    async with logged_in(server, "ada", "admin") as ada:
        ask = await ada.client.post("/ops/operators/ada/remove", data={"csrf": ada.csrf})
        assert "This is you" in ask.text
        done = await ada.client.post("/ops/operators/ada/remove", data={"csrf": ada.csrf, "confirm": "yes"})
        assert done.status_code == 303 and done.headers["location"] == "/ops/login"
        assert (await ada.client.get("/ops/operators")).status_code == 401


# ------------------------------------------------------------------------------------------ escaping


async def test_what_a_caller_says_is_escaped_on_pages_and_in_live_fragments(server: RunningServer) -> None:
    start_call(server)
    say(server, "caller", XSS)
    await flush(server)
    async with logged_in(server, "vic", "viewer") as vic:
        for path in ("/ops/", f"/ops/calls/{SID}"):
            text = (await vic.client.get(path)).text
            assert "&lt;script&gt;window.__xss = 1; alert(1)&lt;/script&gt;" in text, path
            assert "<script>window" not in text
            assert "+15557654321" not in text and "+1********21" in text  # the number is masked
        async with vic.client.stream("GET", f"/ops/calls/{SID}/events?after=0-0") as response:
            messages = await Sse(response).take(2)
        fragment = messages[1][1]
        assert "&lt;script&gt;" in fragment and "<script>" not in fragment


async def test_an_interrupted_answer_shows_what_the_caller_heard_and_where_it_was_cut(
    server: RunningServer,
) -> None:
    start_call(server)
    answer = "We are open from nine in the morning until five in the evening on weekdays"
    # As the call writes it after a barge-in: the whole answer, plus how much of its audio played.
    cut = {"item_id": "item_1", "interrupted": True, "heard_ms": 1500, "total_ms": 5000}
    say(server, "agent", answer, **cut)
    await flush(server)
    async with logged_in(server, "vic", "viewer") as vic:
        page = (await vic.client.get(f"/ops/calls/{SID}")).text
        struck = re.search(r"<del[^>]*>([^<]+)</del>", page)
        assert struck, "the unheard part of the answer is not struck through"
        heard = page[: struck.start()].rsplit("<p>", 1)[-1].strip()
        assert heard and answer.startswith(heard)  # the heard part comes first, at a word boundary
        assert (heard + " " + struck.group(1)).split() == answer.split()  # and nothing is lost
        assert len(heard) < len(answer) / 2  # 1.5 s of 5 s heard: well under half the words
        assert "interrupted at 1.5 s" in page
        async with vic.client.stream("GET", f"/ops/calls/{SID}/events?after=0-0") as response:
            messages = await Sse(response).take(2)
        fragment = messages[1][1]
        assert "<del" in fragment and "interrupted at 1.5 s" in fragment


# ------------------------------------------------------------------------------------------ live updates


async def test_call_stream_resumes_exactly_after_last_event_id(server: RunningServer) -> None:
    start_call(server)
    for n in range(5):
        say(server, "caller", f"line {n}")
    await flush(server)
    ids = [
        entry_id
        for entry_id, _ in await server.state.services.redis.xrange(  # type: ignore[union-attr]
            server.state.services.keys.call_events(SID)
        )
    ]
    assert len(ids) == 6  # call.started + 5 lines
    async with logged_in(server, "vic", "viewer") as vic:
        page = await vic.client.get(f"/ops/calls/{SID}")
        assert f'data-last-id="{ids[-1]}"' in page.text  # the snapshot says where it ended
        headers = {"Last-Event-ID": ids[2]}
        async with vic.client.stream(
            "GET", f"/ops/calls/{SID}/events?after=0-0", headers=headers
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = Sse(response)
            got = await sse.take(3)
            assert [i for i, _ in got] == ids[3:]
            assert "line 2" in got[0][1] and "line 4" in got[2][1]
            say(server, "agent", "live line")  # arrives through the hub's reader, after the replay
            await flush(server)
            (live,) = await sse.take(1)
            assert "live line" in live[1] and live[0] > ids[-1]


async def test_board_stream_resumes_and_one_reader_serves_every_browser(server: RunningServer) -> None:
    redis, keys = server.state.services.redis, server.state.services.keys
    assert redis is not None
    async with logged_in(server, "vic", "viewer") as vic, logged_in(server, "ann", "approver") as ann:
        start_call(server)
        await flush(server)
        (first,) = [i for i, _ in await redis.xrange(keys.events())]
        async with (
            vic.client.stream("GET", "/ops/events", headers={"Last-Event-ID": first}) as one,
            ann.client.stream("GET", f"/ops/events?after={first}") as two,
        ):
            first_browser, second_browser = Sse(one), Sse(two)  # (an abandoned reader closes its stream)
            say(server, "caller", "I need a check-up")
            await flush(server)
            (a,), (b,) = await first_browser.take(1), await second_browser.take(1)
            assert a[0] == b[0] and "I need a check-up" in a[1] and 'id="last-' + SID in a[1]
            readers = _console(server).hub.readers()
            assert readers == {keys.events(): 2}
        await _until(lambda: not _console(server).hub.readers())  # the reader stops with its last browser


def _console(server: RunningServer) -> Any:
    """The app's console router (its SSE hub is what these tests look into)."""
    return server.server.config.app.state.console.ctx


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_slow_subscriber_is_dropped_not_buffered(
    redis_url: str, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    key = redis_keys.events()
    hub = SseHub(
        lambda: aioredis.Redis.from_url(redis_url, decode_responses=True),
        queue_size=3,
        block_ms=200,
        idle_tick_s=0.05,
    )
    try:
        fast: list[StreamEntry] = []
        slow = hub.follow(key, None)
        assert await anext(slow) is None  # joined: an idle tick, nothing to replay
        follower = hub.follow(key, None)

        async def consume() -> None:
            async for entry in follower:
                if entry is not None:
                    fast.append(entry)
                    if len(fast) == 10:
                        return

        task = asyncio.create_task(consume())
        await _until(lambda: sum(hub.readers().values()) == 2)
        for n in range(10):
            await redis_client.xadd(key, {"type": "x", "n": str(n)})
        await asyncio.wait_for(task, 5)
        assert [e.fields["n"] for e in fast] == [str(n) for n in range(10)]
        assert hub.dropped == 1  # the one that never read
        rest = [e async for e in slow if e is not None]
        assert len(rest) <= 3  # it ends after what its bounded queue held
    finally:
        await hub.close()


# ------------------------------------------------------------------------------------------ history and fleet


def end_call(
    server: RunningServer, sid: str, *, ended_at: float, outcome: str, caller: str, line: str
) -> None:
    calls = server.state.services.calls
    assert calls is not None
    start_call(server, sid, caller=caller, started_at=ended_at - 60)
    say(server, "caller", line, sid)
    calls.call_ended(
        sid,
        {
            "call_sid": sid,
            "flow_id": "test-clinic",
            "caller": caller,
            "outcome": outcome,
            "ended_at": ended_at,
            "duration_s": 60.0,
        },
    )


async def test_history_filters_in_the_operators_zone_and_exports(server: RunningServer) -> None:
    # 2030-01-15 09:30 and 11:30 in Paris (UTC+1 in winter) are 08:30 and 10:30 UTC.
    morning, later = 1894696200.0, 1894703400.0
    end_call(
        server,
        "CA" + "a1" * 16,
        ended_at=morning,
        outcome="completed",
        caller="+15550001111",
        line="Can I move my appointment?",
    )
    end_call(
        server,
        "CA" + "b2" * 16,
        ended_at=later,
        outcome="transferred",
        caller="+15550002222",
        line="I want a nurse",
    )
    await flush(server)
    async with logged_in(server, "vic", "viewer") as vic:
        page = await vic.client.get("/ops/history")
        assert page.status_code == 200 and page.text.count('data-testid="history-row"') == 2
        only = await vic.client.get("/ops/history", params={"outcome": "transferred"})
        assert only.text.count('data-testid="history-row"') == 1 and "+1********22" in only.text
        by_caller = await vic.client.get("/ops/history", params={"caller": "11"})
        assert by_caller.text.count('data-testid="history-row"') == 1 and "+1********11" in by_caller.text
        by_text = await vic.client.get("/ops/history", params={"text": "nurse"})
        assert by_text.text.count('data-testid="history-row"') == 1 and "I want a nurse" in by_text.text
        # 09:00-10:00 in Paris is 08:00-09:00 UTC: only the morning call (08:30 UTC); in UTC, neither.
        paris = {"from": "2030-01-15T09:00", "to": "2030-01-15T09:59", "tz": "Europe/Paris"}
        window = await vic.client.get("/ops/history", params=paris)
        assert window.text.count('data-testid="history-row"') == 1 and "+1********11" in window.text
        utc = await vic.client.get("/ops/history", params={**paris, "tz": "+00:00"})
        assert utc.text.count('data-testid="history-row"') == 0
        bad = await vic.client.get("/ops/history", params={"caller": "12ab"})
        assert bad.status_code == 200 and "caller digits" in bad.text

        csv = await vic.client.get("/ops/history", params={"format": "csv"})
        assert csv.status_code == 200 and csv.headers["content-type"] == "text/csv; charset=utf-8"
        assert "attachment" in csv.headers["content-disposition"]
        lines = csv.text.splitlines()
        assert lines[0].startswith("call_sid,started_at,ended_at") and len(lines) == 3
        assert "+15550002222" not in csv.text and "+1********22" in csv.text
        assert "caller: I want a nurse" in csv.text  # the transcript rides along in exports
        as_json = await vic.client.get("/ops/history", params={"format": "json", "outcome": "completed"})
        assert as_json.headers["content-type"] == "application/json"
        body = as_json.json()
        assert [c["outcome"] for c in body["calls"]] == ["completed"] and body["total"] == 1
        assert (await vic.client.get("/ops/history", params={"format": "xml"})).status_code == 400


async def test_fleet_page_and_its_shared_ticker(server: RunningServer) -> None:
    instance = server.state.services.instance_id
    calls = server.state.services.calls
    assert calls is not None
    await calls.heartbeat()
    async with logged_in(server, "vic", "viewer") as vic:
        page = await vic.client.get("/ops/fleet")
        assert f'data-instance="{instance}"' in page.text and "alive" in page.text
        async with vic.client.stream("GET", "/ops/fleet/events") as stream:
            text = ""
            async for chunk in stream.aiter_text():
                text += chunk
                if "event: fleet" in text and f'data-instance="{instance}"' in text:
                    break
            assert _console(server).hub.readers() == {"tick:fleet": 1}


async def test_a_draining_instance_sheds_its_live_streams(server: RunningServer) -> None:
    """Browsers then resume on a healthy instance (Last-Event-ID), and this one can stop without waiting."""
    async with logged_in(server, "vic", "viewer") as vic:
        async with vic.client.stream("GET", "/ops/events") as stream:
            assert stream.status_code == 200
            assert await server.state.drain(0.1)  # no live calls: the drain is over at once
            await asyncio.wait_for(stream.aread(), 5)  # …and the server ended the stream
        refused = await vic.client.get("/ops/events")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    await _until(lambda: not _console(server).hub.readers())


async def test_resuming_while_entries_keep_arriving_skips_none_and_repeats_none(
    redis_url: str, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """Join mid-stream after entry 50 while a writer keeps appending: exactly 51, 52, … arrive, in order."""
    key = redis_keys.events()
    hub = SseHub(
        lambda: aioredis.Redis.from_url(redis_url, decode_responses=True), block_ms=200, idle_tick_s=0.05
    )
    ids: list[str] = []
    fifty = asyncio.Event()

    async def write() -> None:
        for n in range(300):
            ids.append(await redis_client.xadd(key, {"n": str(n)}))
            if n == 50:
                fifty.set()
            if n % 20 == 0:
                await asyncio.sleep(0)  # let the hub's reader interleave with the writes

    try:
        early = hub.follow(key, None)  # a first browser: the topic's reader runs before the resume
        assert await anext(early) is None
        writer = asyncio.create_task(write())
        await fifty.wait()
        seen: list[int] = []
        async for entry in hub.follow(key, ids[50]):
            if entry is not None:
                seen.append(int(entry.fields["n"]))
                if seen[-1] == 299:
                    break
        await writer
        assert seen == list(range(51, 300))
        await early.aclose()
    finally:
        await hub.close()


# ------------------------------------------------------------------------------------------ review fixes


async def test_live_streams_end_when_the_login_ends(server: RunningServer) -> None:
    """Removal, logout (and so expiry: the same check) end an open stream within the re-check interval."""
    server.state.auth.recheck_s = 0.2  # production: every 15 s
    start_call(server)
    await flush(server)
    store = server.state.services.operators
    assert store is not None
    bearer = {"Authorization": "Bearer " + await store.add("api-bot", "viewer")}
    async with (
        logged_in(server, "vic", "viewer") as vic,
        logged_in(server, "rob", "viewer") as rob,
        vic.client.stream("GET", "/ops/events") as board,
        rob.client.stream("GET", "/ops/fleet/events") as fleet,
        vic.client.stream("GET", f"/api/calls/{SID}/events", headers=bearer) as api,
    ):
        assert board.status_code == fleet.status_code == api.status_code == 200
        await store.remove("vic")
        await store.remove("api-bot")
        text = (await asyncio.wait_for(board.aread(), 5)).decode()
        assert "event: reload" in text and "log in again" in text  # the page goes to the login page
        assert "log in again" in (await asyncio.wait_for(api.aread(), 5)).decode()
        out = await rob.client.post("/ops/logout", data={"csrf": rob.csrf})
        assert out.status_code == 303
        assert "event: reload" in (await asyncio.wait_for(fleet.aread(), 5)).decode()


async def test_a_call_stream_leaves_the_hub_when_the_call_ends(server: RunningServer) -> None:
    start_call(server)
    await flush(server)
    key = server.state.services.keys.call_events(SID)
    hub = _console(server).hub
    at_the_end: list[dict[str, int]] = []
    app = server.server.config.app
    inner = app.middleware_stack  # built by the first request (the login)
    assert inner is not None

    async def watch(scope: Any, receive: Any, send: Any) -> None:
        """Notes the hub's subscribers when the stream's last message goes out (the response still alive)."""

        async def send_and_note(message: Any) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body", False)
            if last and scope["path"].endswith("/events"):
                at_the_end.append(hub.readers())
            await send(message)

        await inner(scope, receive, send_and_note)

    async with logged_in(server, "vic", "viewer") as vic:
        app.middleware_stack = watch
        try:
            async with vic.client.stream("GET", f"/ops/calls/{SID}/events?after=0-0") as response:
                sse = Sse(response)
                await sse.take(1)  # call.started
                assert hub.readers() == {key: 1}
                server.state.services.calls.event(SID, "call.ended", {"outcome": "completed"})  # type: ignore[union-attr]
                await flush(server)
                assert "event: end" in await asyncio.wait_for(_to_the_end(sse), 5)
        finally:
            app.middleware_stack = inner
    # The subscriber left when its stream ended, not whenever its generator is collected.
    assert at_the_end == [{key: 0}]


async def _to_the_end(sse: Sse) -> str:
    """What is left of a stream, once the server has ended it."""
    return "\n".join([line async for line in sse.lines])


async def test_a_redis_error_in_the_middle_of_a_stream_ends_it_cleanly(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The headers are sent by then: one warning, an SSE comment, the end — no traceback, no broken body."""
    redis, keys = server.state.services.redis, server.state.services.keys
    calls = server.state.services.calls
    assert redis is not None and calls is not None
    start_call(server)
    for n in range(500):  # the first replay page (500 entries) is read before the response starts
        say(server, "caller", f"line {n}")
    # The second page holds an approval event whose record Redis refuses to read (a string, not a hash).
    calls.event(SID, "approval.decided", {"approval_id": "ap-broken"})
    calls.call_ended(SID, {"outcome": "completed"})  # an ended call: its stream is replayed, then closed
    await flush(server)
    await redis.set(keys.approval("ap-broken"), "not a hash")
    async with (
        logged_in(server, "vic", "viewer") as vic,
        vic.client.stream("GET", f"/ops/calls/{SID}/events?after=0-0") as response,
    ):
        assert response.status_code == 200
        text = (await asyncio.wait_for(response.aread(), 5)).decode()
    assert text.endswith(": a Redis read failed; reconnecting\n\n"), text[-300:]
    assert "line 498" in text and "line 499" not in text  # the first page went out, then the stream ended
    ended = [r for r in caplog.records if r.getMessage().startswith("ended the live stream")]
    assert len(ended) == 1 and ended[0].levelname == "WARNING" and "WRONGTYPE" in ended[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_history_page_numbers_are_checked_and_redis_faults_are_not_outages(
    server: RunningServer,
) -> None:
    async with logged_in(server, "vic", "viewer") as vic:
        for page in ("100000000000000000000", "0", "-1", "abc", "1e3", "100001", "²"):
            response = await vic.client.get("/ops/history", params={"page": page})
            assert response.status_code == 400, (page, response.text[:300])
            assert response.headers["content-type"].startswith("text/html")
            assert "Page must be a whole number from 1 to 100,000" in response.text
            assert "unreachable" not in response.text
        assert (await vic.client.get("/ops/history", params={"page": "3"})).status_code == 200
        # A command Redis refuses (here: an index of the wrong type) is a fault, not an outage.
        redis, keys = server.state.services.redis, server.state.services.keys
        assert redis is not None
        await redis.set(keys.recent_calls(), "not a sorted set")
        broken = await vic.client.get("/ops/history")
        assert broken.status_code == 500 and "unreachable" not in broken.text
        assert "Redis refused the console&#39;s request (ResponseError: " in broken.text
        assert "WRONGTYPE" in broken.text
        assert "retry-after" not in broken.headers


async def test_login_checks_the_origin_as_every_other_form_does(server: RunningServer) -> None:
    token = await server.state.services.operators.add("dana", "viewer")  # type: ignore[union-attr]
    foreign_scheme = server.base_url.replace("http://", "https://")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for headers in (
            {"Origin": "null"},
            {"Origin": "https://evil.example"},
            {"Origin": foreign_scheme},  # same host and port, another origin
            {"Referer": "https://evil.example/login"},  # no Origin: the Referer's origin counts
        ):
            refused = await http.post("/ops/login", data={"token": token}, headers=headers)
            assert refused.status_code == 403, headers
            assert "Cross-site request refused" in refused.text
            assert "ivr_session" not in refused.headers.get("set-cookie", "")
        ok = await http.post("/ops/login", data={"token": token}, headers={"Origin": server.base_url})
        assert ok.status_code == 303 and "ivr_session" in ok.headers["set-cookie"]


async def test_the_back_link_of_an_action_keeps_only_a_console_path(server: RunningServer) -> None:
    admin = {"Authorization": "Bearer operator-secret-token"}  # a script: no CSRF, any Referer
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for referer, back in (
            (server.base_url + ".evil.example/ops/calls/x", "/ops/calls/x"),
            ("//evil.example/ops/", "/ops/"),
            ("https://evil.example/elsewhere", "/ops/"),
            ("javascript:alert(1)", "/ops/"),
            (server.base_url + "/ops/history", "/ops/history"),
        ):
            page = await http.post(f"/ops/calls/{SID}/hangup", headers={**admin, "Referer": referer})
            assert page.status_code == 404, page.text[:300]
            assert re.findall(r'<p><a href="([^"]*)">Back</a></p>', page.text) == [back], referer


async def test_ids_in_console_urls_are_encoded(server: RunningServer) -> None:
    """The key schema allows '?', '#' and '%' in a call sid: links must still lead to that call."""
    odd = "CA?q=1#x%41"
    encoded = "CA%3Fq%3D1%23x%2541"
    start_call(server, odd)
    approvals = server.state.services.approvals
    assert approvals is not None
    request = await approvals.request(
        call_sid=odd,
        instance_id="i",
        flow_id="test-clinic",
        tool="appointments",
        call_id="c1",
        arguments={"action": "book"},
        reason="r",
        timeout_s=60,
    )
    await flush(server)
    async with logged_in(server, "ann", "approver") as ann:
        board = (await ann.client.get("/ops/")).text
        links = set(re.findall(r'href="(/ops/calls/[^"]*)"', board))
        assert links == {f"/ops/calls/{encoded}"}, links
        call = await ann.client.get(f"/ops/calls/{encoded}")
        assert call.status_code == 200 and f'<span class="mono muted">{odd}</span>' in call.text
        assert f'action="/ops/calls/{encoded}/hangup"' in call.text
        assert f'sse-connect="/ops/calls/{encoded}/events?after=' in call.text
        assert f'action="/ops/approvals/{request.id}"' in board  # approval ids need no encoding, but get it
    env = _console(server).env
    card = env.get_template("_approval.html").render(
        a=type(
            "A",
            (),
            {"id": "a/b?c", "status": "pending", "call_sid": "s#1", "deadline": 0, "created_at": 0},
        )(),
        me_can_decide=True,
        csrf="t",
        now=0,
    )
    assert 'action="/ops/approvals/a%2Fb%3Fc"' in card and 'href="/ops/calls/s%231"' in card
    remove = env.get_template("operators.html").render(
        operators=[type("O", (), {"name": "a.b-c_d", "role": "viewer", "created_at": 0})()],
        roles=(),
        form={},
        csrf="t",
    )
    assert 'action="/ops/operators/a.b-c_d/remove"' in remove


async def test_errors_of_console_routes_are_html(server: RunningServer) -> None:
    start_call(server)
    await flush(server)
    async with logged_in(server, "ann", "approver") as ann:
        htmx = {"HX-Request": "true"}
        refused = await ann.client.post(f"/ops/calls/{SID}/hangup", headers=htmx)  # no CSRF token
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("text/html")  # console.js shows it in place
        assert refused.text.startswith('<span class="error" role="status">Missing or wrong CSRF token')
        page = await ann.client.post(f"/ops/calls/{SID}/hangup", data={})  # a plain form, no token
        assert page.status_code == 403 and "<h1>Not allowed</h1>" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        escaped = await ann.client.get("/ops/calls/%3Cb%3Ex:y/events")
        assert escaped.status_code == 404 and escaped.headers["content-type"].startswith("text/html")
        assert "&lt;b&gt;x:y" in escaped.text and "<b>x" not in escaped.text
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        fragment = await anonymous.post(f"/ops/calls/{SID}/hangup", headers=htmx)
        assert fragment.status_code == 401 and fragment.headers["www-authenticate"] == "Bearer"
        assert fragment.text.startswith('<span class="error"')
        form = await anonymous.post(
            f"/ops/calls/{SID}/hangup", headers={"Referer": server.base_url + f"/ops/calls/{SID}"}
        )
        assert form.status_code == 401 and "<h1>Not logged in</h1>" in form.text
        assert f'href="/ops/login?next=/ops/calls/{SID}">Log in</a>' in form.text
        browser = await anonymous.get("/ops/history?x=1&y=2", headers=HTML)
        assert browser.status_code == 303
        assert browser.headers["location"] == "/ops/login?next=/ops/history%3Fx%3D1%26y%3D2"
