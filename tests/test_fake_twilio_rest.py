"""The fake Twilio REST API accepts exactly what the real ``twilio`` SDK sends for live-call updates.

The SDK is driven for real (blocking client in a worker thread, async client in the loop) and every request
crosses a real socket; malformed requests that Twilio would refuse are refused here too and recorded.
"""

from __future__ import annotations

import asyncio
import base64
import xml.etree.ElementTree as ET

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import VoiceResponse

from tests.support import fixtures as _fixtures
from tests.support.fake_twilio_rest import CallUpdate, FakeTwilioRest, HttpRequest, check_call_update
from tests.support.fixtures import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
from tests.support.twilio_client import LocalAsyncTwilioHttpClient, local_twilio_client, rebase_url

fake_twilio_rest = _fixtures.fake_twilio_rest

CALL_SID = "CA" + "feedfacecafebeef" * 2
OTHER_CALL = "CA" + "0badc0de0badc0de" * 2
CALL_PATH = f"/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Calls/{CALL_SID}.json"


def _transfer_twiml() -> VoiceResponse:
    response = VoiceResponse()
    response.say("Transferring you now.")
    response.dial(caller_id="+15550001111", timeout=20).number("+15559876543")
    return response


def _auth(sid: str = TWILIO_ACCOUNT_SID, token: str = TWILIO_AUTH_TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


async def _post(fake: FakeTwilioRest, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        return await http.post(path, data=data, headers={**_auth(), **headers})


async def test_sync_sdk_transfer_round_trips(fake_twilio_rest: FakeTwilioRest) -> None:
    client = local_twilio_client(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, fake_twilio_rest.base_url)
    call = await asyncio.to_thread(client.calls(CALL_SID).update, twiml=_transfer_twiml())
    assert call.sid == CALL_SID
    assert call.account_sid == TWILIO_ACCOUNT_SID
    assert call.status == "in-progress"

    update = await fake_twilio_rest.wait_for_update()
    assert update.call_sid == CALL_SID and update.status is None
    assert update.twiml is not None and set(update.form) == {"Twiml"}
    root = ET.fromstring(update.twiml)
    assert root.tag == "Response"
    dial = root.find("Dial")
    assert dial is not None and dial.get("callerId") == "+15550001111"
    assert dial.findtext("Number") == "+15559876543"


async def test_sync_sdk_hang_up_round_trips(fake_twilio_rest: FakeTwilioRest) -> None:
    client = local_twilio_client(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, fake_twilio_rest.base_url)
    call = await asyncio.to_thread(client.calls(CALL_SID).update, status="completed")
    assert call.status == "completed"
    assert fake_twilio_rest.requests == [
        CallUpdate(call_sid=CALL_SID, twiml=None, status="completed", form={"Status": "completed"})
    ]


async def test_async_sdk_update_round_trips(fake_twilio_rest: FakeTwilioRest) -> None:
    client = local_twilio_client(
        TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, fake_twilio_rest.base_url, asynchronous=True
    )
    http = client.http_client
    assert isinstance(http, LocalAsyncTwilioHttpClient)
    try:
        hangup = VoiceResponse()
        hangup.say("Goodbye.")
        hangup.hangup()
        await client.calls(CALL_SID).update_async(twiml=hangup)
        call = await client.calls(CALL_SID).update_async(status="completed")
    finally:
        await http.close()
    assert call.status == "completed"
    first = await fake_twilio_rest.wait_for_update()
    second = await fake_twilio_rest.wait_for_update()
    assert first.twiml is not None and "<Hangup />" in first.twiml
    assert second.status == "completed"


async def test_wrong_auth_token_is_refused_and_recorded(fake_twilio_rest: FakeTwilioRest) -> None:
    client = local_twilio_client(TWILIO_ACCOUNT_SID, "wrong-token", fake_twilio_rest.base_url)
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.calls(CALL_SID).update, status="completed")
    assert info.value.status == 401 and info.value.code == 20003
    assert len(fake_twilio_rest.violations) == 1 and "Basic" in fake_twilio_rest.violations[0]
    assert "wrong-token" not in fake_twilio_rest.violations[0]
    assert fake_twilio_rest.requests == []
    fake_twilio_rest.violations.clear()


async def test_other_account_is_refused(fake_twilio_rest: FakeTwilioRest) -> None:
    other = "AC" + "f" * 32
    other_path = f"/2010-04-01/Accounts/{other}/Calls/{CALL_SID}.json"
    client = local_twilio_client(other, TWILIO_AUTH_TOKEN, fake_twilio_rest.base_url)
    with pytest.raises(TwilioRestException) as info:  # credentials of an account the fake does not know
        await asyncio.to_thread(client.calls(CALL_SID).update, status="completed")
    assert info.value.status == 401
    response = await _post(
        fake_twilio_rest, other_path, {"Status": "completed"}
    )  # our credentials, their URL
    assert response.status_code == 404
    assert len(fake_twilio_rest.violations) == 2
    assert "is not the configured one" in fake_twilio_rest.violations[1]
    assert fake_twilio_rest.requests == []
    fake_twilio_rest.violations.clear()


@pytest.mark.parametrize(
    ("form", "status", "code", "reason"),
    [
        ({"Twiml": "<Response><Say>unclosed</Response>"}, 400, 12100, "not well-formed XML"),
        ({"Twiml": "<Dial>+15559876543</Dial>"}, 400, 12100, "expected <Response>"),
        ({"Status": "in-progress"}, 400, 21218, "only 'completed' or 'canceled'"),
        ({"Url": "https://example.com/twiml"}, 400, 20001, "unexpected form fields ['Url']"),
        ({}, 400, 20001, "needs Twiml or Status"),
    ],
)
async def test_requests_twilio_would_refuse_are_violations(
    fake_twilio_rest: FakeTwilioRest, form: dict[str, str], status: int, code: int, reason: str
) -> None:
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}  # httpx omits it for an empty form
    response = await _post(fake_twilio_rest, CALL_PATH, form, **form_type)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert len(fake_twilio_rest.violations) == 1 and reason in fake_twilio_rest.violations[0]
    assert fake_twilio_rest.requests == []
    fake_twilio_rest.violations.clear()


async def test_wrong_method_path_and_content_type_are_violations(fake_twilio_rest: FakeTwilioRest) -> None:
    async with httpx.AsyncClient(base_url=fake_twilio_rest.base_url) as http:
        assert (await http.get(CALL_PATH, headers=_auth())).status_code == 405
        assert (await http.post("/2010-04-01/Accounts/x/Calls.json", headers=_auth())).status_code == 404
        as_json = await http.post(CALL_PATH, json={"Status": "completed"}, headers=_auth())
        assert as_json.status_code == 415
        bad_sid = CALL_PATH.replace(CALL_SID, "CA123")
        assert (await http.post(bad_sid, data={"Status": "completed"}, headers=_auth())).status_code == 404
    assert len(fake_twilio_rest.violations) == 4
    fake_twilio_rest.violations.clear()


async def test_updating_an_ended_call_gets_twilios_error_without_a_violation(
    fake_twilio_rest: FakeTwilioRest,
) -> None:
    client = local_twilio_client(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, fake_twilio_rest.base_url)
    await asyncio.to_thread(client.calls(CALL_SID).update, status="completed")
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.calls(CALL_SID).update, twiml=_transfer_twiml())
    assert info.value.code == 21220
    await asyncio.to_thread(
        client.calls(OTHER_CALL).update, twiml=_transfer_twiml()
    )  # other calls unaffected
    assert [u.call_sid for u in fake_twilio_rest.requests] == [CALL_SID, OTHER_CALL]
    assert fake_twilio_rest.violations == []


async def test_wait_for_update_predicate_and_timeout(fake_twilio_rest: FakeTwilioRest) -> None:
    waiter = asyncio.create_task(
        fake_twilio_rest.wait_for_update(lambda u: u.status == "completed", timeout=5.0)
    )
    await _post(fake_twilio_rest, CALL_PATH, {"Twiml": "<Response><Pause /></Response>"})
    await _post(fake_twilio_rest, CALL_PATH, {"Status": "completed"})
    assert (await waiter).status == "completed"
    assert (await fake_twilio_rest.wait_for_update()).twiml == "<Response><Pause /></Response>"
    with pytest.raises(TimeoutError, match="Twilio call update"):
        await fake_twilio_rest.wait_for_update(timeout=0.05)


def test_check_call_update_is_pure_and_accepts_canceled() -> None:
    request = HttpRequest(
        method="POST",
        target=CALL_PATH,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            **{k.lower(): v for k, v in _auth().items()},
        },
        body=b"Status=canceled",
    )
    response = check_call_update(request, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    assert response.status == 200 and response.violation is None
    assert response.update == CallUpdate(CALL_SID, None, "canceled", {"Status": "canceled"})
    assert response.body["status"] == "canceled"


def test_rebase_url_keeps_path_and_query() -> None:
    assert (
        rebase_url("https://api.twilio.com/2010-04-01/Accounts/AC1/Calls/CA1.json?x=1", "http://127.0.0.1:9")
        == "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Calls/CA1.json?x=1"
    )
    with pytest.raises(ValueError, match="needs a scheme and host"):
        rebase_url("https://api.twilio.com/x", "127.0.0.1:9")
