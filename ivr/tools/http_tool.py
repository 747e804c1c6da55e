"""The ``http`` tool: call the deployment's own backend with the model's arguments.

Arguments go out as a JSON body (POST, PUT, PATCH) or as the query string (GET, DELETE, HEAD, OPTIONS);
the answer comes back to the model as ``{"status", "ok", "body"}`` with the body parsed as JSON when it
is JSON, and cut to ``max_response_chars`` (with a note saying so) so one large response cannot flood the
conversation. A non-2xx status is still a result — ``ok`` tells the model it failed — while a timeout or
an unreachable server is a structured error.

Retries only where repeating is safe: idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are retried
after a network error, a timeout or a 502/503/504; POST and PATCH never, since the first attempt may have
done its work. Header values and the URL may use ``${ENV_VAR}`` (``${ENV_VAR:-default}``); a variable
that is not set is an error naming it, and resolved values are never logged. Only variables the operator
allows may be read (names starting with ``IVR_HTTP_ENV_PREFIX``, default ``IVR_TOOL_``, and never one ivr
itself uses, see :mod:`ivr.tool_env`): flows are checked when they load, and the tool checks again here
before it expands anything, so a secret of the deployment never leaves in a URL or header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx

from ivr.flows.tool_configs import ENV_REFERENCE, HttpConfig
from ivr.tool_env import prefix_from, refusal
from ivr.tools.registry import ToolContext, ToolError, ToolSpec

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_RETRY_STATUSES = frozenset({502, 503, 504})


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 0.2, 0.4, 0.8 ... at most 2."""
    return min(0.2 * 2**attempt, 2.0)


class MissingVariable(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class RefusedVariable(Exception):
    """A ``${NAME}`` the operator does not let http tools read; ``reason`` states the rule."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def check_references(texts: list[str], prefix: str) -> None:
    """Raise :class:`RefusedVariable` for the first reference in ``texts`` the prefix rule refuses."""
    for text in texts:
        for match in ENV_REFERENCE.finditer(text):
            reason = refusal(match.group(1), prefix)
            if reason is not None:
                raise RefusedVariable(match.group(1), reason)


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; raises :class:`MissingVariable` for an unset one."""

    def value(match: Any) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found is not None and found != "":
            return found
        if default is not None:
            return str(default)
        raise MissingVariable(name)

    return ENV_REFERENCE.sub(value, text)


def _query(args: Mapping[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, value in args.items():
        values = value if isinstance(value, list) and all(_scalar(v) for v in value) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                params.append((name, "true" if item else "false"))
            elif _scalar(item):
                params.append((name, str(item)))
            else:
                params.append((name, json.dumps(item, separators=(",", ":"), sort_keys=True)))
    return params


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class HttpTool:
    """One backend endpoint as a tool (see the module docstring)."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.attempts = 1 + (config.retries if config.method in IDEMPOTENT else 0)
        # The registry's bound covers every attempt and the waits between them.
        total = config.timeout_s * self.attempts + sum(backoff(i) for i in range(self.attempts - 1)) + 1.0
        self.spec = ToolSpec(config.name, config.description, config.parameters, total)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        config = self.config
        env: Mapping[str, str] = ctx.env if ctx.env is not None else os.environ
        try:
            check_references([config.url, *config.headers.values()], prefix_from(env))
        except (RefusedVariable, ValueError) as exc:
            reason = exc.reason if isinstance(exc, RefusedVariable) else str(exc)
            log.error("tool %s refused to run: %s", config.name, reason)
            raise ToolError(
                "configuration_error",
                "This tool is not set up correctly. Tell the caller it cannot be done right now and offer "
                "another way to help.",
            ) from None
        try:
            url = substitute(config.url, env)
            headers = {name: substitute(value, env) for name, value in config.headers.items()}
        except MissingVariable as exc:
            log.error("tool %s: environment variable %s is not set", config.name, exc.name)
            raise ToolError(
                "configuration_error",
                f"This tool is not set up: the environment variable {exc.name} is not set. Tell the caller "
                "it cannot be done right now and offer another way to help.",
            ) from None
        request: dict[str, Any] = {"headers": headers}
        if config.method in _BODY_METHODS:
            request["json"] = args
        elif args:
            request["params"] = _query(args)

        last_error = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(backoff(attempt - 1))
            try:
                status, body, truncated = await self._send(url, request)
            except httpx.TimeoutException:
                last_error = "timeout"
                log.warning(
                    "tool %s: %s %s timed out (attempt %d)",
                    config.name,
                    config.method,
                    config.url,
                    attempt + 1,
                )
                continue
            except httpx.HTTPError as exc:
                last_error = f"unreachable ({type(exc).__name__})"
                log.warning(
                    "tool %s: %s %s failed: %s (attempt %d)",
                    config.name,
                    config.method,
                    config.url,
                    type(exc).__name__,
                    attempt + 1,
                )
                continue
            if status in _RETRY_STATUSES and attempt + 1 < self.attempts:
                log.warning("tool %s: %s answered %d; retrying", config.name, config.url, status)
                continue
            return self._result(status, body, truncated)
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        if last_error == "timeout":
            raise ToolError(
                "timeout",
                f"The backend did not answer within {config.timeout_s:g} seconds{tries}. Tell the caller it "
                "cannot be checked right now and offer another way to help.",
            )
        raise ToolError(
            "unreachable",
            f"The backend could not be reached{tries}. Tell the caller it cannot be checked right now and "
            "offer another way to help.",
        )

    async def _send(self, url: str, request: dict[str, Any]) -> tuple[int, bytes, bool]:
        """One attempt: ``(status, body bytes, truncated)``, reading no more than the cap needs."""
        limit = self.config.max_response_chars * 4 + 4  # UTF-8: at most 4 bytes per character
        async with (
            httpx.AsyncClient(timeout=self.config.timeout_s, follow_redirects=False) as client,
            client.stream(self.config.method, url, **request) as response,
        ):
            chunks: list[bytes] = []
            size = 0
            truncated = False
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    truncated = True
                    break
            return response.status_code, b"".join(chunks), truncated

    def _result(self, status: int, raw: bytes, cut: bool) -> dict[str, Any]:
        cap = self.config.max_response_chars
        text = raw.decode("utf-8", errors="replace")
        result: dict[str, Any] = {"status": status, "ok": 200 <= status < 300}
        body: Any = text
        if not cut and text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        shown = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        if cut or len(shown) > cap:
            result["body"] = shown[:cap]
            result["truncated"] = True
            result["note"] = (
                f"The response was longer than {cap} characters and was cut; use only what is shown and "
                "do not guess the rest."
            )
        else:
            result["body"] = body
        return result
