"""Which environment variables a flow's http tool may read (ivr.tool_env, ivr.tools.http_tool).

Why: a flow file is data; whoever edits it must not be able to send the deployment's OpenAI key or Twilio
auth token to a URL of their choosing. Flows are checked through the real loader (file, line, the variable
and the rule); the tool's own check is exercised against a real HTTP server on loopback, which must never
receive the secret.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ivr.flows import Flow, FlowError, FlowSet, parse_flow
from ivr.flows.tool_configs import HttpConfig
from ivr.settings import Settings, SettingsError
from ivr.tool_env import ENV_VAR, RESERVED
from ivr.tools.http_tool import HttpTool
from ivr.tools.registry import ToolContext, ToolError

SHIPPED_FLOWS = Path(__file__).resolve().parent.parent / "flows"
HEAD = 'id: shop\ninstructions: "Check orders."\ntools:\n'


def _flow_text(url: str, header: str) -> str:
    return (
        HEAD
        + "  - type: http\n"
        + "    name: orders\n"
        + "    description: Order status.\n"
        + f'    url: "{url}"\n'
        + "    headers:\n"
        + f'      Authorization: "{header}"\n'
    )


@pytest.fixture
def default_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield


@pytest.mark.usefixtures("default_prefix")
@pytest.mark.parametrize(
    "secret", ["OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "IVR_STREAM_SECRET", "IVR_OPERATOR_TOKEN", "REDIS_URL"]
)
def test_a_secret_of_the_app_in_a_header_fails_at_load_with_file_line_and_rule(secret: str) -> None:
    text = _flow_text("https://api.example.com/orders", f"Bearer ${{{secret}}}")
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "flows/shop.yaml")
    message = str(caught.value)
    assert (
        f"flows/shop.yaml:9: tools[0].headers.Authorization: ${{{secret}}} is a variable ivr itself uses"
        in (message)
    )
    assert "http tools may never read it" in message


@pytest.mark.usefixtures("default_prefix")
def test_a_variable_without_the_prefix_fails_at_load_naming_the_prefix_and_the_setting() -> None:
    text = _flow_text("${ORDERS_URL:-https://api.example.com}/orders", "Bearer ${IVR_TOOL_ORDERS_TOKEN}")
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "flows/shop.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        "flows/shop.yaml:7: tools[0].url: ${ORDERS_URL} is not readable by http tools: only variables "
        f"starting with IVR_TOOL_ are (rename it to IVR_TOOL_ORDERS_URL, or have the operator set {ENV_VAR})"
    ]


@pytest.mark.usefixtures("default_prefix")
def test_prefixed_variables_load() -> None:
    text = _flow_text("${IVR_TOOL_ORDERS_URL:-https://api.example.com}/orders", "Bearer ${IVR_TOOL_TOKEN}")
    flow = parse_flow(text, "flows/shop.yaml").flow
    assert flow.tools[0].type == "http"


def test_the_operator_chooses_the_prefix_but_never_unlocks_the_apps_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, "ACME_")
    assert parse_flow(_flow_text("https://api.example.com", "Bearer ${ACME_TOKEN}"), "x.yaml").flow
    with pytest.raises(FlowError, match=r"\$\{IVR_TOOL_TOKEN\} is not readable by http tools.*ACME_"):
        parse_flow(_flow_text("https://api.example.com", "Bearer ${IVR_TOOL_TOKEN}"), "x.yaml")
    monkeypatch.setenv(ENV_VAR, "OPENAI_")  # a careless prefix still cannot reach the key
    with pytest.raises(FlowError, match=r"\$\{OPENAI_API_KEY\} is a variable ivr itself uses"):
        parse_flow(_flow_text("https://api.example.com", "Bearer ${OPENAI_API_KEY}"), "x.yaml")


def test_the_prefix_setting_is_validated() -> None:
    assert Settings.from_env({}).http_env_prefix == "IVR_TOOL_"
    assert Settings.from_env({ENV_VAR: "ACME_"}).http_env_prefix == "ACME_"
    with pytest.raises(SettingsError, match=f"{ENV_VAR}='acme' is not a usable prefix"):
        Settings.from_env({ENV_VAR: "acme"})


@pytest.mark.usefixtures("default_prefix")
def test_shipped_flows_load_with_the_default_prefix() -> None:
    flows = FlowSet.load(SHIPPED_FLOWS)
    assert "restaurant" in {f.id for f in flows}


def test_every_secret_the_settings_read_is_reserved() -> None:
    for name in (
        "OPENAI_API_KEY",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
        "IVR_OPERATOR_TOKEN",
        "REDIS_URL",
    ):
        assert name in RESERVED


# ------------------------------------------------------------------------------------------------
# the tool's own check, against a real server
# ------------------------------------------------------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def echo(request: Request) -> Response:
        seen.append({"url": str(request.url), "authorization": request.headers.get("authorization", "")})
        return JSONResponse({"ok": True})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = Starlette(routes=[Route("/{path:path}", echo)])
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server._serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class NoCall:
    def request_hangup(self, reason: str) -> None:
        raise AssertionError("unexpected hang-up")

    def request_transfer(self, number: str, announcement: str | None) -> None:
        raise AssertionError("unexpected transfer")


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("{base}/orders", {"Authorization": "Bearer ${OPENAI_API_KEY}"}),
        ("{base}/orders?token=${TWILIO_AUTH_TOKEN}", {}),
        ("{base}/orders", {"X-Key": "${ORDERS_KEY}"}),
    ],
)
async def test_the_tool_never_sends_a_variable_it_may_not_read(
    backend: tuple[str, list[dict[str, str]]],
    url: str,
    headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, seen = backend
    # A config that skipped the flow check (built in code): the tool itself still refuses.
    config = HttpConfig(
        name="orders", description="Orders.", url=url.replace("{base}", base), headers=headers
    )
    env = {
        "OPENAI_API_KEY": "sk-live-secret-0001",
        "TWILIO_AUTH_TOKEN": "twilio-secret-0002",
        "ORDERS_KEY": "orders-secret-0003",
    }
    flow = Flow.model_validate({"id": "shop", "instructions": "hi"})
    ctx = ToolContext(call_sid="CA1", flow=flow, call=NoCall(), caller_number="+1", env=env)
    with pytest.raises(ToolError) as caught:
        await HttpTool(config).run({}, ctx)
    assert caught.value.error_type == "configuration_error"
    assert seen == []  # nothing left the process
    assert "is a variable ivr itself uses" in caplog.text or "is not readable by http tools" in caplog.text
    for secret in env.values():
        assert secret not in caplog.text and secret not in caught.value.message


async def test_the_tool_sends_an_allowed_variable(backend: tuple[str, list[dict[str, str]]]) -> None:
    base, seen = backend
    config = HttpConfig(
        name="orders",
        description="Orders.",
        url=f"{base}/orders",
        headers={"Authorization": "Bearer ${ACME_T}"},
    )
    flow = Flow.model_validate({"id": "shop", "instructions": "hi"})
    env = {ENV_VAR: "ACME_", "ACME_T": "backend-token"}
    ctx = ToolContext(call_sid="CA1", flow=flow, call=NoCall(), caller_number="+1", env=env)
    assert (await HttpTool(config).run({}, ctx))["ok"] is True
    assert seen == [{"url": f"{base}/orders", "authorization": "Bearer backend-token"}]
