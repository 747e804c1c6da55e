"""Tool configs in flow YAML (booking, lookup, http, approval policies): defaults and located errors."""

from __future__ import annotations

import textwrap

import pytest

from ivr.flows import Flow, FlowError, parse_flow
from ivr.flows.tool_configs import BookingConfig, HttpConfig, LookupConfig

SOURCE = "flows/shop.yaml"
HEAD = """\
id: shop
instructions: hi
timezone: Europe/Berlin
opening_hours: {mon: ["09:00-17:00"]}
tools:
"""


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text), SOURCE).flow


def errors_of(tools: str, head: str = HEAD) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse(head + textwrap.dedent(tools))
    return str(caught.value).splitlines()


def test_defaults() -> None:
    flow = parse(
        HEAD
        + """\
  - {type: booking, calendar: main, durations: {checkup: 30}}
  - {type: lookup, name: find, description: Find., dataset: people, source: people.csv, key_field: id,
     fields: [name]}
  - {type: http, name: status, description: Status., url: "https://api.example.com/status"}
  - {type: end_call, approval: {required: always, reason: Check first.}, timeout_s: 3}
"""
    )
    booking, lookup, http, end_call = flow.tools
    assert isinstance(booking, BookingConfig) and booking.name == "appointments"
    assert (booking.slot_step_minutes, booking.days_ahead, booking.min_notice_minutes) == (15, 14, 0)
    assert (booking.capacity, booking.max_slots, booking.max_party_size, booking.timeout_s) == (
        1,
        5,
        None,
        10.0,
    )
    assert booking.approval.required == "never"
    assert isinstance(lookup, LookupConfig) and lookup.normalize == "none"
    assert isinstance(http, HttpConfig) and (http.method, http.timeout_s, http.retries) == ("GET", 5.0, 2)
    assert http.max_response_chars == 4000 and http.parameters["type"] == "object"
    assert end_call.approval.required == "always" and end_call.timeout_s == 3.0
    assert end_call.approval.requires_approval({}) is True


def test_booking_errors() -> None:
    assert errors_of(
        """\
          - type: booking
            calendar: main
            durations: {"check up!": 30, cleaning: 0}
            slot_step_minutes: 7
        """
    ) == [
        "flows/shop.yaml:8: tools[0].durations.check up!: 'check up!' is not a valid service name "
        "(1-40 letters, digits, spaces, '_' or '-', e.g. cleaning)",
        "flows/shop.yaml:8: tools[0].durations.cleaning: 0 is out of range (use 5 to 1440)",
        "flows/shop.yaml:9: tools[0].slot_step_minutes: 7 does not divide a day evenly "
        "(use e.g. 5, 10, 15, 20, 30 or 60)",
    ]
    assert errors_of("  - {type: booking, calendar: main}\n") == [
        "flows/shop.yaml:6: tools[0].durations: required field is missing "
        "(service names and their minutes, e.g. {cleaning: 60, checkup: 30})"
    ]
    no_hours = "id: shop\ninstructions: hi\ntools:\n"
    assert errors_of("  - {type: booking, calendar: main, durations: {a: 30}}\n", head=no_hours) == [
        "flows/shop.yaml:4: tools[0]: a booking tool offers times within the opening hours, and this flow "
        'has none (add opening_hours, e.g. mon: ["09:00-17:00"])'
    ]
    assert errors_of("  - {type: booking, calendar: main, durations: {}}\n") == [
        "flows/shop.yaml:6: tools[0].durations: no services given (add e.g. checkup: 30)"
    ]


def test_approval_conditions_are_checked_against_the_tool_arguments() -> None:
    assert errors_of(
        """\
          - type: booking
            calendar: main
            durations: {table: 90}
            approval:
              required: when
              when: "party_sise > 8"
        """
    ) == [
        "flows/shop.yaml:11: tools[0].approval.when: the condition reads 'party_sise', which is not an "
        "argument of this tool (its arguments: action, after_time, booking_id, date, name, phone, service, "
        "start)",
    ]
    ok = parse(
        HEAD
        + """\
  - type: booking
    calendar: main
    durations: {table: 90}
    max_party_size: 20
    approval: {required: when, when: "party_size > 8"}
"""
    )
    assert ok.tools[0].approval.requires_approval({"action": "book", "party_size": 9})
    assert not ok.tools[0].approval.requires_approval({"action": "book", "party_size": 2})
    (line,) = errors_of("  - {type: end_call, approval: {required: when, when: 'len(reason) > 3'}}\n")
    assert line.startswith("flows/shop.yaml:6: tools[0].approval.when: function calls are not allowed")
    (line,) = errors_of("  - {type: end_call, approval: {required: when}}\n")
    assert line.startswith("flows/shop.yaml:6: tools[0].approval: required: when needs a 'when' condition")


def test_lookup_errors() -> None:
    assert errors_of(
        """\
          - type: lookup
            name: find
            description: Find.
            dataset: people
            source: people.xlsx
            key_field: phone
            fields: [name, name]
          - type: lookup
            name: find_again
            description: Find.
            dataset: people
            source: other.csv
            key_field: phone
            fields: []
        """
    ) == [
        "flows/shop.yaml:10: tools[0].source: 'people.xlsx' is neither a .csv nor a .json file",
        "flows/shop.yaml:12: tools[0].fields[1]: 'name' is listed twice (also fields[0])",
        "flows/shop.yaml:16: tools[1].dataset: dataset 'people' is also used by tools[0] with another "
        "source, key_field or normalize (use another dataset id, or make them match)",
        "flows/shop.yaml:19: tools[1].fields: no fields listed (name the columns to return)",
    ]
    assert errors_of(
        """\
          - {type: lookup, name: a, description: A., dataset: p, source: a.csv, key_field: id,
             fields: [x], normalize: digits}
        """
    ) == ["flows/shop.yaml:7: tools[0].normalize: 'digits' is not allowed (use one of: phone, lower, none)"]


def test_http_errors() -> None:
    assert errors_of(
        """\
          - type: http
            name: status
            description: Status.
            url: "https://api.example.com"
            method: FETCH
            headers: {"Content-Length": "1", "X Key": "v"}
            retries: 9
        """
    ) == [
        "flows/shop.yaml:10: tools[0].method: 'FETCH' is not allowed (did you mean 'PATCH'? "
        "use one of: GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)",
        "flows/shop.yaml:11: tools[0].headers.Content-Length: 'Content-Length' is set by the HTTP client "
        "itself; remove it",
        "flows/shop.yaml:11: tools[0].headers.X Key: 'X Key' is not a valid HTTP header name "
        "(letters, digits and '-', e.g. X-Api-Key)",
        "flows/shop.yaml:12: tools[0].retries: 9 is out of range (use 0 to 5)",
    ]
    assert errors_of(
        """\
          - type: http
            name: status
            description: Status.
            url: "ftp://${HOST/x"
            headers: {X-Token: "${TOKEN"}
            parameters: {type: array, items: {type: 5}}
        """
    ) == [
        "flows/shop.yaml:9: tools[0].url: malformed '${HOST/x' (write ${NAME} or ${NAME:-default})",
        "flows/shop.yaml:9: tools[0].url: 'ftp://${HOST/x' is not an http:// or https:// URL",
        "flows/shop.yaml:10: tools[0].headers.X-Token: malformed '${TOKEN' "
        "(write ${NAME} or ${NAME:-default})",
        "flows/shop.yaml:11: tools[0].parameters: must be a JSON Schema of an object "
        "(start with type: object)",
        "flows/shop.yaml:11: tools[0].parameters: is not a valid JSON Schema: 5 is not valid under any of "
        "the given schemas (at items/type)",
    ]
    flow = parse(HEAD + '  - {type: http, name: s, description: S., url: "${IVR_TOOL_API_URL}/s"}\n')
    assert flow.tools[0].type == "http"


def test_every_tool_definition_is_a_valid_realtime_function_tool() -> None:
    from openai.types.beta.realtime.session_update_event import SessionTool
    from openai.types.realtime import RealtimeFunctionTool

    from ivr.tools.registry import registry_for_flow

    flow = parse(
        HEAD
        + """\
  - {type: booking, calendar: main, durations: {checkup: 30}, max_party_size: 6}
  - {type: lookup, name: find, description: Find., dataset: people, source: people.csv, key_field: id,
     fields: [name]}
  - type: http
    name: status
    description: Status.
    url: "https://api.example.com/status"
    parameters: {type: object, properties: {order: {type: string}}, required: [order]}
  - {type: end_call}
stages:
  - id: a
    transitions: [{to: b, tool: go_b, description: Go to b.}]
  - id: b
"""
    )
    tools = registry_for_flow(flow).realtime_tools()
    assert [t["name"] for t in tools] == ["appointments", "find", "status", "end_call", "go_b"]
    for tool in tools:
        for model in (RealtimeFunctionTool, SessionTool):
            assert model.model_validate(tool, strict=True).model_dump(exclude_none=True) == tool
