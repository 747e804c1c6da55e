"""Which environment variables a flow's ``http`` tools may read through ``${NAME}``.

A flow file is data; whoever edits it must not be able to send the deployment's own secrets to a URL of their
choice. So an ``http`` tool may only read variables whose name starts with the operator's prefix
(``IVR_HTTP_ENV_PREFIX``, default ``IVR_TOOL_``), and never a variable ivr itself reads
(:data:`RESERVED`), whatever the prefix. Flows are checked when they load (file and line of the reference)
and the tool checks again before it expands anything.

Pure functions; the one place that reads the process environment is :func:`current_prefix`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = [
    "DEFAULT_PREFIX",
    "ENV_VAR",
    "RESERVED",
    "current_prefix",
    "parse_prefix",
    "prefix_from",
    "refusal",
]

#: The operator's setting.
ENV_VAR = "IVR_HTTP_ENV_PREFIX"
DEFAULT_PREFIX = "IVR_TOOL_"

#: Variables ivr reads itself (keys, tokens, where its data lives): never readable by a flow.
RESERVED = frozenset(
    {
        "OPENAI_API_KEY",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "IVR_STREAM_SECRET",
        "IVR_OPERATOR_TOKEN",
        "IVR_CONSOLE_SECRET",
        "REDIS_URL",
        "IVR_REDIS_PREFIX",
        "IVR_REALTIME_URL",
        "IVR_OPENAI_BASE_URL",
        "IVR_TWILIO_API_BASE",
        "IVR_PUBLIC_URL",
        ENV_VAR,
    }
)

_PREFIX = re.compile(r"[A-Z][A-Z0-9_]{1,63}")


def parse_prefix(raw: str | None) -> str:
    """The prefix from the setting's raw value (unset or blank → :data:`DEFAULT_PREFIX`)."""
    value = (raw or "").strip()
    if not value:
        return DEFAULT_PREFIX
    if not _PREFIX.fullmatch(value):
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not a usable prefix (use 2-64 upper-case letters, digits and '_', "
            f"starting with a letter, e.g. {DEFAULT_PREFIX})"
        )
    return value


def prefix_from(env: Mapping[str, str]) -> str:
    return parse_prefix(env.get(ENV_VAR))


def current_prefix() -> str:
    """The prefix in force for this process (read from its environment)."""
    return prefix_from(os.environ)


def refusal(name: str, prefix: str) -> str | None:
    """Why an http tool may not read ``${name}``, or ``None`` when it may."""
    if name in RESERVED:
        return (
            f"${{{name}}} is a variable ivr itself uses; http tools may never read it (give the backend its "
            f"own credential in a variable starting with {prefix}, e.g. {prefix}ORDERS_TOKEN)"
        )
    if not name.startswith(prefix):
        return (
            f"${{{name}}} is not readable by http tools: only variables starting with {prefix} are "
            f"(rename it to {prefix}{name}, or have the operator set {ENV_VAR})"
        )
    return None
