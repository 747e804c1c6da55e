"""What a flow may declare under ``tools``: one model per tool ``type``, joined in :data:`ToolConfig`.

Each config holds only data (the implementations live in :mod:`ivr.tools`), so a flow file can be checked
without Redis or the network. Every tool has an approval policy (enforced by the call runtime, not by the
tool) and a timeout. A new tool type is a new member of :data:`ToolConfig` with its own ``type`` literal,
plus a builder in :data:`ivr.tools.builtin.BUILDERS`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import AfterValidator, Field

from ivr.approvals.policy import ApprovalPolicy
from ivr.flows.fields import Issue, PhoneNumber, Slug, Strict, Text, ToolName, did_you_mean, in_range

#: ``${NAME}`` or ``${NAME:-default}`` inside a header value or URL.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]{0,39}")
#: Headers httpx computes itself; setting them by hand breaks requests.
_RESERVED_HEADERS = frozenset({"content-length", "host", "transfer-encoding", "connection"})

_REASON_PARAMETERS = frozenset({"reason"})


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid HTTP header name (letters, digits and '-', e.g. X-Api-Key)"
        )
    if value.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{value!r} is set by the HTTP client itself; remove it")
    return value


def _service(value: str) -> str:
    if not _SERVICE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid service name (1-40 letters, digits, spaces, '_' or '-', e.g. cleaning)"
        )
    return value


def _step(value: int) -> int:
    if 1440 % value:
        raise ValueError(f"{value} does not divide a day evenly (use e.g. 5, 10, 15, 20, 30 or 60)")
    return value


def malformed_env_references(text: str) -> list[str]:
    """Snippets starting with ``${`` that are not a valid ``${NAME}`` / ``${NAME:-default}``."""
    valid = {m.start() for m in ENV_REFERENCE.finditer(text)}
    bad = []
    for m in re.finditer(r"\$\{", text):
        if m.start() not in valid:
            end = text.find("}", m.start())
            bad.append(text[m.start() : end + 1 if end != -1 else min(len(text), m.start() + 30)])
    return bad


HeaderName = Annotated[str, AfterValidator(_header_name)]
ServiceName = Annotated[str, AfterValidator(_service)]


class _ToolConfigBase(Strict):
    name: ToolName
    description: Text
    #: Whether a call of this tool waits for a human operator (enforced by the call runtime).
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    #: Longest a call of this tool may run before the model is told it timed out.
    timeout_s: Annotated[float, in_range(0.5, 600.0)] = 10.0

    def parameter_names(self) -> frozenset[str] | None:
        """Top-level argument names the model may send (``None`` when any are possible)."""
        return _REASON_PARAMETERS

    def issues(self) -> list[Issue]:
        """Problems inside this tool's config (paths relative to it)."""
        issues: list[Issue] = []
        names = self.parameter_names()
        if names is not None:
            for field in sorted(self.approval.fields):
                root = field.split(".")[0]
                if root not in names:
                    issues.append(
                        Issue(
                            ("approval", "when"),
                            f"the condition reads {root!r}{did_you_mean(root, names)}, which is not an "
                            f"argument of this tool (its arguments: {', '.join(sorted(names)) or 'none'})",
                            root,
                        )
                    )
        return issues


class EndCallConfig(_ToolConfigBase):
    """Lets the model hang up once the conversation is over."""

    type: Literal["end_call"] = "end_call"
    name: ToolName = "end_call"
    description: Text = (
        "Hang up the call. Use it when the caller says goodbye, asks to end the call, or the conversation "
        "is clearly finished."
    )


class TransferToHumanConfig(_ToolConfigBase):
    """Lets the model hand the caller to a person."""

    type: Literal["transfer_to_human"] = "transfer_to_human"
    name: ToolName = "transfer_to_human"
    description: Text = (
        "Transfer the caller to a human team member. Use it when the caller asks for a person or when you "
        "cannot help with their request."
    )
    #: Overrides ``transfer.number`` of the flow for this tool.
    number: PhoneNumber | None = None


#: Arguments of the booking tool, whatever the action.
BOOKING_PARAMETERS = frozenset(
    {"action", "service", "date", "after_time", "start", "name", "phone", "booking_id", "party_size"}
)


class BookingConfig(_ToolConfigBase):
    """Appointments on a calendar kept in Redis: find free times, book, reschedule, cancel.

    Free times come from the flow's opening hours, the service's duration and existing bookings. The
    calendar is cut into ``slot_step_minutes`` slots; a booking claims every slot it covers atomically.
    """

    type: Literal["booking"] = "booking"
    name: ToolName = "appointments"
    description: Text = (
        "Find free appointment times, book an appointment, move one to another time, or cancel one."
    )
    #: Calendar id in Redis; flows that share a calendar share its bookings.
    calendar: Slug = Field(description="an id for the calendar in Redis, e.g. dental-main")
    #: Service name → minutes it takes.
    durations: dict[ServiceName, Annotated[int, in_range(5, 1440)]] = Field(
        description="service names and their minutes, e.g. {cleaning: 60, checkup: 30}"
    )
    slot_step_minutes: Annotated[int, in_range(5, 240), AfterValidator(_step)] = 15
    #: How far ahead bookings are offered and accepted.
    days_ahead: Annotated[int, in_range(1, 366)] = 14
    #: The earliest start is this long after now.
    min_notice_minutes: Annotated[int, in_range(0, 43200)] = 0
    #: How many free times one find_slots call returns.
    max_slots: Annotated[int, in_range(1, 20)] = 5
    #: Appointments that can run at the same time (chairs, tables).
    capacity: Annotated[int, in_range(1, 100)] = 1
    #: When set, ``book`` takes a ``party_size`` (1 to this) and stores it with the booking.
    max_party_size: Annotated[int, in_range(1, 1000)] | None = None

    def parameter_names(self) -> frozenset[str]:
        if self.max_party_size is None:
            return BOOKING_PARAMETERS - {"party_size"}
        return BOOKING_PARAMETERS

    def issues(self) -> list[Issue]:
        issues = super().issues()
        if not self.durations:
            issues.append(Issue(("durations",), "no services given (add e.g. checkup: 30)"))
        return issues


class LookupConfig(_ToolConfigBase):
    """Find one record by key in a dataset loaded into Redis from a CSV or JSON file (``ivr data load``)."""

    type: Literal["lookup"] = "lookup"
    #: Dataset id in Redis; tools (and flows) naming the same dataset read the same records.
    dataset: Slug = Field(description="an id for the dataset in Redis, e.g. patients")
    #: CSV or JSON file (a list of objects), relative to the flow file.
    source: Text = Field(description="the CSV or JSON file to load, relative to the flow file")
    #: Column whose value the caller gives (e.g. phone).
    key_field: Text = Field(description="the column to look records up by, e.g. phone")
    #: Columns returned to the model; nothing else is stored or shown.
    fields: list[Text] = Field(description="the columns returned to the model, e.g. [first_name, last_visit]")
    normalize: Literal["phone", "lower", "none"] = "none"

    def parameter_names(self) -> frozenset[str]:
        return frozenset({"key"})

    def issues(self) -> list[Issue]:
        issues = super().issues()
        if not self.fields:
            issues.append(Issue(("fields",), "no fields listed (name the columns to return)"))
        seen: dict[str, int] = {}
        for i, name in enumerate(self.fields):
            if name in seen:
                issues.append(Issue(("fields", i), f"{name!r} is listed twice (also fields[{seen[name]}])"))
            seen.setdefault(name, i)
        if not self.source.lower().endswith((".csv", ".json")):
            issues.append(Issue(("source",), f"{self.source!r} is neither a .csv nor a .json file"))
        return issues


_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


class HttpConfig(_ToolConfigBase):
    """Call the user's own backend: arguments become the JSON body (POST/PUT/PATCH) or the query string."""

    type: Literal["http"] = "http"
    #: May contain ``${ENV_VAR}`` or ``${ENV_VAR:-default}``.
    url: Text = Field(description="the URL to call, e.g. https://api.example.com/orders")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    #: Header name → literal value, or ``${ENV_VAR}`` (read when the tool runs, never logged).
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    #: JSON Schema of the arguments object the model sends.
    parameters: dict[str, Any] = Field(default_factory=lambda: dict(_EMPTY_OBJECT))
    #: Per attempt.
    timeout_s: Annotated[float, in_range(0.5, 120.0)] = 5.0
    #: Extra attempts after a network error or a 502/503/504, only for idempotent methods.
    retries: Annotated[int, in_range(0, 5)] = 2
    max_response_chars: Annotated[int, in_range(100, 100000)] = 4000

    def parameter_names(self) -> frozenset[str] | None:
        properties = self.parameters.get("properties", {})
        if not isinstance(properties, dict) or self.parameters.get("additionalProperties", True) is not False:
            return None  # the schema lets the model send any name
        return frozenset(properties)

    def issues(self) -> list[Issue]:
        issues = super().issues()
        if self.parameters.get("type") != "object":
            issues.append(
                Issue(("parameters",), "must be a JSON Schema of an object (start with type: object)")
            )
        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            issues.append(
                Issue(
                    ("parameters",),
                    f"is not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else ""),
                )
            )
        for snippet in malformed_env_references(self.url):
            issues.append(
                Issue(("url",), f"malformed {snippet!r} (write ${{NAME}} or ${{NAME:-default}})", snippet)
            )
        resolved = ENV_REFERENCE.sub(lambda m: m.group(2) if m.group(2) is not None else "x", self.url)
        if not (resolved.startswith(("http://", "https://")) or self.url.startswith("${")):
            issues.append(Issue(("url",), f"{self.url!r} is not an http:// or https:// URL"))
        for header, value in self.headers.items():
            for snippet in malformed_env_references(value):
                issues.append(
                    Issue(
                        ("headers", header), f"malformed {snippet!r} (write ${{NAME}} or ${{NAME:-default}})"
                    )
                )
        return issues


#: Every tool type a flow may declare; add new members here (each with its own ``type`` literal).
ToolConfig = Annotated[
    EndCallConfig | TransferToHumanConfig | BookingConfig | LookupConfig | HttpConfig,
    Field(discriminator="type"),
]
