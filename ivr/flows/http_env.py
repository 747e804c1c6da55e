"""Load-time check of the ``${NAME}`` references in a flow's ``http`` tools (see :mod:`ivr.tool_env`)."""

from __future__ import annotations

from collections.abc import Sequence

from ivr.flows.fields import Issue
from ivr.flows.tool_configs import ENV_REFERENCE, HttpConfig, ToolConfig
from ivr.tool_env import current_prefix, refusal

__all__ = ["http_env_issues"]


def http_env_issues(tools: Sequence[ToolConfig], prefix: str | None = None) -> list[Issue]:
    """One issue per reference an http tool may not read, at the URL or header that holds it."""
    allowed = current_prefix() if prefix is None else prefix
    issues: list[Issue] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, HttpConfig):
            continue
        places: list[tuple[tuple[str | int, ...], str]] = [(("tools", i, "url"), tool.url)]
        places.extend((("tools", i, "headers", name), value) for name, value in tool.headers.items())
        for path, text in places:
            for match in ENV_REFERENCE.finditer(text):
                reason = refusal(match.group(1), allowed)
                if reason is not None:
                    issues.append(Issue(path, reason, match.group(0)))
    return issues
