"""The http tool against a real local HTTP server (uvicorn + starlette on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ivr.flows import Flow
from ivr.tools.http_tool import MissingVariable, substitute
from ivr.tools.registry import ToolContext, ToolOutcome, registry_for_flow

SECRET = "k-123-secret"


@dataclass
class Backend:
    """What the server saw, and a gate the slow endpoint waits on (opened at teardown)."""

    base_url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def backend_app(backend: Backend) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        seen = {
            "method": request.method,
            "query": list(request.query_params.multi_items()),
            "api_key": request.headers.get("x-api-key"),
            "content_type": request.headers.get("content-type"),
            "json": json.loads(body) if body else None,
        }
        backend.requests.append(seen)
        return JSONResponse(seen)

    async def flaky(request: Request) -> Response:
        key = f"{request.method} {request.url.path}"
        backend.hits[key] += 1
        fails = int(request.query_params.get("fails", "2"))
        if backend.hits[key] <= fails:
            return PlainTextResponse("busy", status_code=503)
        return JSONResponse({"attempt": backend.hits[key]})

    async def slow(request: Request) -> Response:
        backend.hits["slow"] += 1
        await backend.release.wait()
        return JSONResponse({"late": True})

    async def big(request: Request) -> Response:
        return JSONResponse(
            {"items": [{"n": i, "text": "x" * 40} for i in range(int(request.query_params["n"]))]}
        )

    async def text(request: Request) -> Response:
        return PlainTextResponse("order 123: ready for pickup")

    async def missing(request: Request) -> Response:
        return JSONResponse({"detail": "no such order"}, status_code=404)

    return Starlette(
        routes=[
            Route("/orders", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            Route("/flaky", flaky, methods=["GET", "POST", "PUT"]),
            Route("/slow", slow),
            Route("/big", big),
            Route("/text", text),
            Route("/missing", missing),
        ]
    )


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    state = Backend()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    state.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(backend_app(state), log_config=None, lifespan="off"))
    task = asyncio.create_task(server._serve(sockets=[sock]))  # _serve: no signal handlers in tests
    try:
        yield state
    finally:
        state.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class NoCall:
    def request_hangup(self, reason: str) -> None:
        raise AssertionError("unexpected hang-up")

    def request_transfer(self, number: str, announcement: str | None) -> None:
        raise AssertionError("unexpected transfer")


ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "order_number": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rush": {"type": "boolean"},
        "address": {"type": "object"},
    },
    "additionalProperties": False,
}


async def run_http(
    env: dict[str, str], arguments: dict[str, Any], **tool: Any
) -> tuple[ToolOutcome, dict[str, Any]]:
    config = {
        "type": "http",
        "name": "orders",
        "description": "Order status.",
        "parameters": ORDER_SCHEMA,
        **tool,
    }
    flow = Flow.model_validate({"id": "shop", "instructions": "hi", "tools": [config]})
    ctx = ToolContext(call_sid="CA1", flow=flow, call=NoCall(), caller_number="+1", env=env)
    outcome = await registry_for_flow(flow).dispatch("orders", json.dumps(arguments), "fc1", ctx)
    return outcome, dict(json.loads(outcome.output))


async def test_get_sends_arguments_as_query_and_header_from_env(backend: Backend) -> None:
    env = {"IVR_TOOL_ORDERS_URL": backend.base_url, "IVR_TOOL_ORDERS_KEY": SECRET}
    outcome, result = await run_http(
        env,
        {"order_number": "123", "tags": ["a", "b"], "rush": True, "address": {"city": "Oslo"}},
        url="${IVR_TOOL_ORDERS_URL:-http://127.0.0.1:9}/orders",
        headers={"X-Api-Key": "${IVR_TOOL_ORDERS_KEY}", "Accept": "application/json"},
    )
    assert outcome.ok
    assert result == {
        "status": 200,
        "ok": True,
        "body": {
            "method": "GET",
            "query": [
                ["order_number", "123"],
                ["tags", "a"],
                ["tags", "b"],
                ["rush", "true"],
                ["address", '{"city":"Oslo"}'],
            ],
            "api_key": SECRET,
            "content_type": None,
            "json": None,
        },
    }


async def test_post_sends_arguments_as_json_body(backend: Backend) -> None:
    _, result = await run_http(
        {"IVR_TOOL_KEY": "literal-too"},
        {"order_number": "77", "rush": False},
        url=f"{backend.base_url}/orders",
        method="POST",
        headers={"X-Api-Key": "prefix-${IVR_TOOL_KEY}"},
    )
    assert result["status"] == 200 and result["ok"] is True
    assert result["body"]["json"] == {"order_number": "77", "rush": False}
    assert result["body"]["query"] == [] and result["body"]["content_type"] == "application/json"
    assert result["body"]["api_key"] == "prefix-literal-too"


async def test_missing_env_var_is_named_without_calling_the_backend(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    outcome, result = await run_http(
        {"OTHER": SECRET},
        {},
        url=f"{backend.base_url}/orders",
        headers={"X-Api-Key": "${IVR_TOOL_ORDERS_KEY}"},
    )
    assert outcome.error_type == "configuration_error"
    assert "environment variable IVR_TOOL_ORDERS_KEY is not set" in result["error"]["message"]
    assert backend.requests == []
    assert "IVR_TOOL_ORDERS_KEY" in caplog.text and SECRET not in caplog.text


async def test_retries_503_for_get_but_not_post(backend: Backend) -> None:
    _, result = await run_http({}, {}, url=f"{backend.base_url}/flaky?fails=2", retries=2)
    assert result == {"status": 200, "ok": True, "body": {"attempt": 3}}
    assert backend.hits["GET /flaky"] == 3

    _, result = await run_http({}, {}, url=f"{backend.base_url}/flaky?fails=2", method="POST", retries=2)
    assert result == {"status": 503, "ok": False, "body": "busy"}
    assert backend.hits["POST /flaky"] == 1

    _, result = await run_http({}, {}, url=f"{backend.base_url}/flaky?fails=9", method="PUT", retries=1)
    assert result == {"status": 503, "ok": False, "body": "busy"}  # retries exhausted: the last answer
    assert backend.hits["PUT /flaky"] == 2


async def test_timeout_is_a_structured_error_and_retried_for_get(backend: Backend) -> None:
    outcome, result = await run_http({}, {}, url=f"{backend.base_url}/slow", timeout_s=0.5, retries=1)
    assert outcome.error_type == "timeout"
    assert "did not answer within 0.5 seconds after 2 attempts" in result["error"]["message"]
    assert backend.hits["slow"] == 2


async def test_unreachable_backend() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    outcome, result = await run_http({}, {}, url=f"http://127.0.0.1:{port}/orders", retries=0)
    assert outcome.error_type == "unreachable"
    assert result["error"]["message"].startswith("The backend could not be reached.")


async def test_truncation_text_and_error_statuses(backend: Backend) -> None:
    # small enough to read whole (and parse), too long to show: the JSON text is cut
    _, result = await run_http({}, {}, url=f"{backend.base_url}/big?n=5", max_response_chars=200)
    assert result["status"] == 200 and result["ok"] is True and result["truncated"] is True
    assert len(result["body"]) == 200 and result["body"].startswith('{"items": [{"n": 0, "text": "xxx')
    assert "longer than 200 characters" in result["note"]

    _, result = await run_http({}, {}, url=f"{backend.base_url}/big?n=3000", max_response_chars=100)
    assert result["truncated"] is True and len(result["body"]) == 100  # cut while reading (~150 kB body)
    assert result["body"].startswith('{"items":[{"n":0,"text":"xxx')

    _, result = await run_http({}, {}, url=f"{backend.base_url}/big?n=2")
    assert "truncated" not in result and result["body"]["items"][1]["n"] == 1

    _, result = await run_http({}, {}, url=f"{backend.base_url}/text")
    assert result == {"status": 200, "ok": True, "body": "order 123: ready for pickup"}
    _, result = await run_http({}, {}, url=f"{backend.base_url}/missing")
    assert result == {"status": 404, "ok": False, "body": {"detail": "no such order"}}


def test_substitute() -> None:
    assert substitute("${A}/${B:-x}/${C:-}", {"A": "1"}) == "1/x/"
    assert substitute("${B:-x}", {"B": "set"}) == "set"
    with pytest.raises(MissingVariable) as caught:
        substitute("Bearer ${TOKEN}", {"TOKEN": ""})
    assert caught.value.name == "TOKEN"
