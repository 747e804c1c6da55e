"""The ``lookup`` tool: one record by key from a dataset that ``ivr data load`` put into Redis.

The model gets exactly the record's listed fields, or ``{"found": false}`` — never a guess, a near match or
another record's data. Keys are normalised the same way when loading and when looking up
(:func:`normalise_key`), so "+1 (555) 010-0001" finds the record written as "+15550100001".

A record found by the number the call comes from (``normalize: phone`` and the key equal to the caller's
own number) is remembered as *verified* for the call (``ToolContext.verified_records``); a record found
by a number somebody said is not.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from ivr.flows.tool_configs import LookupConfig
from ivr.tools.identity import caller_identity
from ivr.tools.registry import ToolContext, ToolError, ToolSpec

log = logging.getLogger(__name__)

_NOT_DIGIT = re.compile(r"\D")
_SPACES = re.compile(r"\s+")


def normalise_key(value: str, how: Literal["phone", "lower", "none"]) -> str:
    """The form a key is stored and looked up in.

    ``phone``: digits only (``+1 (555) 010-0001`` → ``15550100001``; datasets should hold numbers with
    their country code). ``lower``: case-folded, inner whitespace collapsed. ``none``: trimmed only.
    """
    text = value.strip()
    if how == "phone":
        return _NOT_DIGIT.sub("", text)
    if how == "lower":
        return _SPACES.sub(" ", text).casefold()
    return text


class LookupTool:
    """Find one record of a dataset by its key field."""

    def __init__(self, config: LookupConfig) -> None:
        self.config = config
        parameters = {
            "type": "object",
            "properties": {
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": f"The {config.key_field} to look up.",
                }
            },
            "required": ["key"],
            "additionalProperties": False,
        }
        description = (
            f"{config.description.rstrip()} Returns {', '.join(config.fields)} of the matching record, or "
            "found: false. Never guess details that are not returned."
        )
        self.spec = ToolSpec(config.name, description, parameters, config.timeout_s)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        redis, keys = ctx.require_redis(self.config.name)
        key = normalise_key(str(args["key"]), self.config.normalize)
        if not key:
            raise ToolError(
                "invalid_arguments",
                f"{args['key']!r} has nothing to look up by (expected a {self.config.key_field}). "
                "Ask the caller again.",
            )
        dataset = self.config.dataset
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.dataset_record(dataset, key), self.config.fields)
            pipe.exists(keys.dataset_record(dataset, key))
            pipe.exists(keys.dataset_meta(dataset))
            values, found, loaded = await pipe.execute()
        if found:
            if self.config.normalize == "phone" and key == caller_identity(ctx.caller_number):
                # found by the number the call comes from, not by one somebody said: this record is the
                # caller's (the booking tool lets it stand in for the number; see docs/security.md)
                ctx.verified_records.add(f"{dataset}:{key}")
            return {
                "found": True,
                **{f: v if v is not None else "" for f, v in zip(self.config.fields, values, strict=True)},
            }
        if not loaded:
            log.warning(
                "lookup %s: dataset %r is not loaded into Redis (run `ivr data load`)",
                self.config.name,
                dataset,
            )
            raise ToolError(
                "unavailable",
                "Records cannot be looked up right now. Do not guess; tell the caller and offer a transfer.",
            )
        return {"found": False}
