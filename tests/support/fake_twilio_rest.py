"""A local stand-in for the one Twilio REST endpoint the app uses: updating a live call.

Why: transfers and hang-ups go through ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` with ``Twiml=`` or
``Status=completed`` (PROTOCOLS.md §5.3). Tests need to see exactly what the app sent and to fail when the
request would be refused by Twilio — wrong account, bad credentials, malformed TwiML, a status Twilio does
not accept — without a network or a paid account. The request check is pure (:func:`check_call_update`);
the server around it is a few lines of HTTP/1.1 over ``asyncio.start_server`` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["CallUpdate", "FakeTwilioRest", "HttpRequest", "HttpResponse", "check_call_update"]

_CALL_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<call>[^/]+)\.json$")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_ALLOWED_STATUS = frozenset({"completed", "canceled"})
_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class CallUpdate:
    """One accepted call update, as the app sent it."""

    call_sid: str
    twiml: str | None
    status: str | None
    form: dict[str, str]


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""


@dataclass
class HttpResponse:
    status: int
    body: dict[str, Any]
    violation: str | None = None
    update: CallUpdate | None = None


def _twilio_error(status: HTTPStatus, code: int, message: str, *, violation: bool = True) -> HttpResponse:
    """An error body shaped like Twilio's (the SDK reads ``code``/``message`` into TwilioRestException)."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": int(status),
    }
    return HttpResponse(int(status), body, violation=message if violation else None)


def check_call_update(
    request: HttpRequest, account_sid: str, auth_token: str, ended_calls: frozenset[str] = frozenset()
) -> HttpResponse:
    """Decide how Twilio would answer one request (pure): a call resource, or an error plus a violation."""
    url = urlsplit(request.target)
    match = _CALL_PATH.match(url.path)
    if match is None:
        return _twilio_error(
            HTTPStatus.NOT_FOUND, 20404, f"{request.method} {url.path}: not a call update URL"
        )
    if request.method != "POST":
        return _twilio_error(
            HTTPStatus.METHOD_NOT_ALLOWED, 20004, f"{request.method} {url.path}: only POST updates a call"
        )
    if url.query:
        return _twilio_error(
            HTTPStatus.BAD_REQUEST, 20001, f"unexpected query string {url.query!r} on a call update"
        )
    if not _basic_auth_ok(request.headers.get("authorization", ""), account_sid, auth_token):
        return _twilio_error(
            HTTPStatus.UNAUTHORIZED, 20003, "Authenticate: HTTP Basic AccountSid:AuthToken missing or wrong"
        )
    if match["account"] != account_sid:
        return _twilio_error(
            HTTPStatus.NOT_FOUND,
            20404,
            f"account SID in the URL {match['account']!r} is not the configured one",
        )
    call_sid = match["call"]
    if not _CALL_SID.match(call_sid):
        return _twilio_error(HTTPStatus.NOT_FOUND, 20404, f"{call_sid!r} is not a call SID (CA + 32 hex)")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return _twilio_error(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            20001,
            f"body must be form-encoded, got Content-Type {content_type!r}",
        )
    try:
        fields = parse_qs(
            request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(request.body)
        )
    except (UnicodeDecodeError, ValueError) as exc:
        return _twilio_error(HTTPStatus.BAD_REQUEST, 20001, f"body is not a valid form: {exc}")
    repeated = sorted(k for k, v in fields.items() if len(v) > 1)
    if repeated:
        return _twilio_error(HTTPStatus.BAD_REQUEST, 20001, f"form fields given more than once: {repeated}")
    form = {k: v[0] for k, v in fields.items()}
    unknown = sorted(set(form) - {"Twiml", "Status"})
    if unknown:
        return _twilio_error(
            HTTPStatus.BAD_REQUEST, 20001, f"unexpected form fields {unknown}; send Twiml and/or Status"
        )
    twiml, status = form.get("Twiml"), form.get("Status")
    if twiml is None and status is None:
        return _twilio_error(HTTPStatus.BAD_REQUEST, 20001, "a call update needs Twiml or Status")
    if status is not None and status not in _ALLOWED_STATUS:
        return _twilio_error(
            HTTPStatus.BAD_REQUEST,
            21218,
            f"Status {status!r} is invalid; only 'completed' or 'canceled' are accepted",
        )
    if twiml is not None:
        problem = _twiml_problem(twiml)
        if problem:
            return _twilio_error(HTTPStatus.BAD_REQUEST, 12100, f"Twiml: {problem}")
    if call_sid in ended_calls:
        # Twilio's answer to updating a call that already ended; legitimate in races, so not a violation.
        return _twilio_error(
            HTTPStatus.BAD_REQUEST, 21220, "Call is not in-progress. Cannot redirect.", violation=False
        )
    update = CallUpdate(call_sid=call_sid, twiml=twiml, status=status, form=form)
    return HttpResponse(HTTPStatus.OK, _call_resource(account_sid, call_sid, status), update=update)


def _basic_auth_ok(header: str, account_sid: str, auth_token: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return decoded == f"{account_sid}:{auth_token}"


def _twiml_problem(twiml: str) -> str | None:
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        return f"not well-formed XML ({exc})"
    if root.tag != "Response":
        return f"root element is <{root.tag}>, expected <Response>"
    return None


def _call_resource(account_sid: str, call_sid: str, status: str | None) -> dict[str, Any]:
    now = formatdate(usegmt=True)
    return {
        "sid": call_sid,
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "status": status or "in-progress",
        "direction": "inbound",
        "date_created": now,
        "date_updated": now,
        "start_time": now,
        "end_time": now if status else None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
    }


class FakeTwilioRest:
    """Twilio's call-update endpoint on http://127.0.0.1:PORT, recording what the app asked for."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.base_url: str = ""
        self.requests: list[CallUpdate] = []
        self.violations: list[str] = []
        self._server: asyncio.Server | None = None
        self._handed_out: set[int] = set()
        self._changed = asyncio.Event()
        self._ended: set[str] = set()
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeTwilioRest:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for_update(
        self, predicate: Callable[[CallUpdate], bool] | None = None, timeout: float = 5.0
    ) -> CallUpdate:
        """First recorded update matching ``predicate`` not yet returned here (already received or future)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for index, update in enumerate(self.requests):
                        if index not in self._handed_out and (predicate is None or predicate(update)):
                            self._handed_out.add(index)
                            return update
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for a Twilio call update; got {self.requests!r}"
            ) from None

    # ---- HTTP/1.1 shell --------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await self._read_request(reader, writer)
                if request is None:
                    return
                response = check_call_update(
                    request, self.account_sid, self._auth_token, frozenset(self._ended)
                )
                self._record(request, response)
                await self._write(
                    writer, response, keep_alive=request.headers.get("connection", "").lower() != "close"
                )
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(task)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> HttpRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # client closed an idle keep-alive connection
        except asyncio.LimitOverrunError:
            await self._reject(writer, "request head larger than 64 KiB")
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._reject(writer, f"malformed request line {lines[0]!r}")
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._reject(writer, "chunked request bodies are not supported; send Content-Length")
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            await self._reject(writer, f"bad Content-Length {headers['content-length']!r}")
            return None
        if not 0 <= length <= _MAX_BODY:
            await self._reject(writer, f"Content-Length {length} out of range")
            return None
        body = await reader.readexactly(length) if length else b""
        return HttpRequest(method=parts[0], target=parts[1], headers=headers, body=body)

    async def _reject(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self.violations.append(f"HTTP: {reason}")
        response = _twilio_error(HTTPStatus.BAD_REQUEST, 20001, reason)
        await self._write(writer, response, keep_alive=False)

    def _record(self, request: HttpRequest, response: HttpResponse) -> None:
        if response.violation:
            self.violations.append(f"{request.method} {urlsplit(request.target).path}: {response.violation}")
        if response.update is not None:
            self.requests.append(response.update)
            if response.update.status in _ALLOWED_STATUS:
                self._ended.add(response.update.call_sid)
            self._changed.set()
            self._changed = asyncio.Event()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: HttpResponse, *, keep_alive: bool) -> None:
        body = json.dumps(response.body).encode("utf-8")
        reason = HTTPStatus(response.status).phrase
        head = [
            f"HTTP/1.1 {response.status} {reason}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
