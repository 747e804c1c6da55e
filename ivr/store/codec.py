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
    "HSET_TYPED_SCRIPT",
    "JSON_FIELD",
    "decode_hash",
    "dumps",
    "encode_fields",
    "hset_typed_args",
    "loads_or_raw",
]

#: Name of the hash field listing which other fields hold JSON.
JSON_FIELD = "_json"

#: HSET that also maintains the hash's ``_json`` list (which fields hold JSON) and refreshes the TTL, in one
#: atomic step. KEYS[1] = hash; ARGV[1] = TTL seconds (0 = leave as is); then (name, value, kind) triples
#: where kind is "j" for a JSON value and "s" for a plain string (see :func:`hset_typed_args`).
HSET_TYPED_SCRIPT = """
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local json = {}
local current = redis.call('HGET', key, '_json')
if current then
  for name in string.gmatch(current, '[^,]+') do json[name] = true end
end
local args = {}
for i = 2, #ARGV, 3 do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[i + 1]
  if ARGV[i + 2] == 'j' then json[ARGV[i]] = true else json[ARGV[i]] = nil end
end
local names = {}
for name in pairs(json) do names[#names + 1] = name end
table.sort(names)
args[#args + 1] = '_json'
args[#args + 1] = table.concat(names, ',')
redis.call('HSET', key, unpack(args))
if ttl > 0 then redis.call('EXPIRE', key, ttl) end
return #names
"""


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


def hset_typed_args(fields: Mapping[str, Any], ttl_s: int) -> list[str]:
    """ARGV of :data:`HSET_TYPED_SCRIPT` for ``fields`` (encoded by :func:`encode_fields`) and a TTL."""
    flat, json_names = encode_fields(fields)
    args = [str(ttl_s)]
    for name, text in flat.items():
        args += [name, text, "j" if name in json_names else "s"]
    return args
