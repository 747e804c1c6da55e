"""How values are flattened into Redis hash fields and stream entries, and read back.

Why a separate module: the encoding is part of the public key schema (docs/redis.md) — dashboards decode the
same hashes — so it lives in one small, pure place. Strings are stored verbatim so that ``HGETALL`` reads
naturally; every other value (numbers, booleans, null, lists, objects) is stored as JSON text and its field
name is listed in the hash's ``_json`` field (comma-separated), which is how a reader knows to parse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "JSON_FIELD",
    "decode_hash",
    "dumps",
    "encode_fields",
    "loads_or_raw",
]

#: Name of the hash field listing which other fields hold JSON.
JSON_FIELD = "_json"


def dumps(value: Any) -> str:
    """Compact JSON text; values orjson cannot represent natively (sets, custom objects) become strings."""
    return orjson.dumps(value, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()


def _fallback(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def loads_or_raw(text: str) -> Any:
    """Parse JSON text; text that is not valid JSON (written by hand, say) is returned unchanged."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def encode_fields(fields: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    """``{name: value}`` → (``{name: text}``, names stored as JSON).

    Field names must be non-empty strings without ``,`` (the ``_json`` list separator) and must not be
    ``_json`` itself.
    """
    flat: dict[str, str] = {}
    json_names: set[str] = set()
    for name, value in fields.items():
        if not isinstance(name, str) or not name or "," in name or name == JSON_FIELD:
            raise ValueError(
                f"hash field name {name!r} is not allowed: use a non-empty string without ',' other than "
                f"{JSON_FIELD!r}"
            )
        if isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = dumps(value)
            json_names.add(name)
    return flat, json_names


def decode_hash(raw: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of :func:`encode_fields` for a whole hash read with ``HGETALL``."""
    json_names = {name for name in raw.get(JSON_FIELD, "").split(",") if name}
    return {
        name: loads_or_raw(value) if name in json_names else value
        for name, value in raw.items()
        if name != JSON_FIELD
    }
