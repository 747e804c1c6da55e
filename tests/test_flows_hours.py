"""Opening hours: parsing and errors with file:line, intervals across closed dates and clock changes,
is_open / next_opening, the after-hours decision and the placeholders it feeds."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ivr.flows import Flow, FlowError, parse_flow
from ivr.flows.hours import DEFAULT_CLOSED_MESSAGE, OpeningHours, after_hours_decision, describe_opening

CHICAGO = ZoneInfo("America/Chicago")
SOURCE = "flows/clinic.yaml"

CLINIC = """\
id: clinic
instructions: hi
timezone: America/Chicago
transfer: {number: "+15550009999"}
opening_hours:
  mon: ["08:00-12:00", "13:00-18:00"]
  tue: 8:00-12:00
  wed: closed
  thu: null
  fri: ["08:00-14:00"]
  sun: ["01:00-04:00"]
  closed_dates: ["2026-03-16", 2026-12-25]
"""


def parse(text: str) -> Flow:
    return parse_flow(textwrap.dedent(text), SOURCE).flow


def errors_of(text: str) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse(text)
    return str(caught.value).splitlines()


def warnings_of(text: str) -> list[str]:
    return [str(w) for w in parse_flow(textwrap.dedent(text), SOURCE).warnings]


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=CHICAGO)


@pytest.fixture
def hours() -> OpeningHours:
    flow = parse(CLINIC)
    assert flow.opening_hours is not None
    return flow.opening_hours


def test_friendly_spellings_and_the_flow_zone(hours: OpeningHours) -> None:
    assert hours.mon == ["08:00-12:00", "13:00-18:00"]
    assert hours.tue == ["08:00-12:00"]  # one range as text, hours padded
    assert hours.wed == [] and hours.thu == [] and hours.sat == []
    assert hours.closed_dates == [date(2026, 3, 16), date(2026, 12, 25)]
    assert hours.timezone == "America/Chicago" and hours.zone == CHICAGO
    assert hours.describe_week() == (
        "mon 08:00-12:00, 13:00-18:00; tue 08:00-12:00; wed-thu closed; fri 08:00-14:00; sat closed; "
        "sun 01:00-04:00"
    )
    assert hours.describe_day(date(2026, 3, 16)) == "closed (closed date)"
    own = parse(CLINIC.replace("  closed_dates", "  timezone: Europe/Berlin\n  closed_dates"))
    assert own.opening_hours is not None and own.opening_hours.timezone == "Europe/Berlin"


def test_intervals_are_aware_and_skip_closed_dates(hours: OpeningHours) -> None:
    assert hours.intervals(date(2026, 3, 2)) == [(at(2, 8), at(2, 12)), (at(2, 13), at(2, 18))]
    assert hours.intervals(date(2026, 3, 4)) == []  # wednesday: closed
    assert hours.intervals(date(2026, 3, 16)) == []  # a monday, but a closed date
    assert hours.intervals(date(2026, 3, 23))[0][0].utcoffset() == timedelta(hours=-5)  # CDT


def test_intervals_across_the_spring_clock_change(hours: OpeningHours) -> None:
    # Sunday 8 March 2026: Chicago jumps from 02:00 CST to 03:00 CDT, so 01:00-04:00 lasts two real hours
    ((start, end),) = hours.intervals(date(2026, 3, 8))
    assert start.astimezone(UTC) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    assert hours.is_open(datetime(2026, 3, 8, 8, 30, tzinfo=UTC))  # 03:30 CDT
    assert not hours.is_open(datetime(2026, 3, 8, 9, 0, tzinfo=UTC))


def test_is_open_edges_and_other_zones(hours: OpeningHours) -> None:
    assert hours.is_open(at(2, 8)) and not hours.is_open(at(2, 7, 59))
    assert hours.is_open(at(2, 11, 59)) and not hours.is_open(at(2, 12)) and hours.is_open(at(2, 13))
    assert not hours.is_open(at(2, 18))
    assert hours.is_open(datetime(2026, 3, 2, 14, 0))  # naive is UTC: 08:00 CST
    assert hours.is_open(datetime(2026, 3, 2, 15, 0, tzinfo=ZoneInfo("Europe/Berlin")))  # 08:00 CST
    assert not hours.is_open(at(16, 9))  # closed date


def test_next_opening(hours: OpeningHours) -> None:
    assert hours.next_opening(at(2, 9)) == at(2, 9)  # open now
    assert hours.next_opening(at(2, 6, 30)) == at(2, 8)
    assert hours.next_opening(at(2, 12, 30)) == at(2, 13)
    assert hours.next_opening(at(6, 15)) == at(8, 1)  # friday after closing -> sunday 01:00
    assert hours.next_opening(at(15, 5)) == at(17, 8)  # sunday late; monday 16th is closed -> tuesday
    never = parse(CLINIC.split("opening_hours:")[0] + "opening_hours: {mon: [], closed_dates: []}\n")
    assert never.opening_hours is not None and never.opening_hours.next_opening(at(2, 9)) is None


def test_describe_opening() -> None:
    now = at(2, 12, 30)
    assert describe_opening(at(2, 12, 30), now) == "now"
    assert describe_opening(at(2, 13), now) == "today at 1:00 PM"
    assert describe_opening(at(3, 8), now) == "tomorrow at 8:00 AM"
    assert describe_opening(at(6, 8), now) == "Friday at 8:00 AM"
    assert describe_opening(at(17, 8), now) == "Tuesday, March 17 at 8:00 AM"
    assert describe_opening(None, now) == "not scheduled"


def test_call_context_has_open_now_next_opening_and_stage() -> None:
    flow = parse(CLINIC)
    context = flow.call_context(caller_number="+1", called_number="+2", call_sid="CA", now=at(2, 12, 30))
    assert (context["open_now"], context["next_opening"], context["stage"]) == (
        "no",
        "today at 1:00 PM",
        "main",
    )
    context = flow.call_context(caller_number="+1", called_number="+2", call_sid="CA", now=at(2, 9))
    assert (context["open_now"], context["next_opening"]) == ("yes", "now")
    always = parse("id: x\ninstructions: hi\n")
    context = always.call_context(caller_number="+1", called_number="+2", call_sid="CA", now=at(2, 3))
    assert (context["open_now"], context["next_opening"]) == ("yes", "now")


def test_after_hours_decision() -> None:
    flow = parse(CLINIC + "after_hours: {action: message_and_hangup}\n")
    assert after_hours_decision(flow, at(2, 9)) is None
    decision = after_hours_decision(flow, at(2, 19))
    assert decision is not None and decision.action == "message_and_hangup"
    assert decision.message == DEFAULT_CLOSED_MESSAGE

    flow = parse(
        CLINIC + "after_hours:\n  action: message_and_hangup\n  message: We open again {{ next_opening }}.\n"
    )
    decision = after_hours_decision(flow, at(2, 19))
    assert decision is not None
    context = flow.call_context(caller_number="+1", called_number="+2", call_sid="CA", now=at(2, 19))
    assert flow.render(decision.message or "", context) == "We open again tomorrow at 8:00 AM."

    transfer = parse(CLINIC + "after_hours: {action: transfer}\n")
    decision = after_hours_decision(transfer, at(2, 19))
    assert decision is not None and (decision.action, decision.number) == ("transfer", "+15550009999")
    own = parse(CLINIC + "after_hours: {action: transfer, number: '+15550001111', message: Forwarding.}\n")
    decision = after_hours_decision(own, at(2, 19))
    assert decision is not None and (decision.number, decision.message) == ("+15550001111", "Forwarding.")

    default = parse(CLINIC)  # continue: answer as usual with open_now = no
    decision = after_hours_decision(default, at(2, 19))
    assert decision is not None and decision.action == "continue" and decision.message is None
    assert after_hours_decision(parse("id: x\ninstructions: hi\n"), at(2, 19)) is None


# --- errors and warnings with file:line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "  mon: ['8-12']\n",
            "flows/clinic.yaml:4: opening_hours.mon[0]: '8-12' is not a time range (write HH:MM-HH:MM, "
            "e.g. 08:00-12:00)",
        ),
        (
            "  mon: ['18:00-02:00']\n",
            "flows/clinic.yaml:4: opening_hours.mon[0]: '18:00-02:00' ends before it starts (a range "
            "cannot cross "
            "midnight: use 22:00-24:00 on one day and 00:00-02:00 on the next)",
        ),
        (
            "  mon: ['22:00-24:30']\n",
            "flows/clinic.yaml:4: opening_hours.mon[0]: '22:00-24:30' has an impossible time (hours 00-23, "
            "minutes 00-59; 24:00 ends a day)",
        ),
        (
            "  monday: ['08:00-12:00']\n",
            "flows/clinic.yaml:4: opening_hours.monday: unknown key (did you mean 'mon'?)",
        ),
        (
            "  closed_dates: ['2026-13-01']\n",
            "flows/clinic.yaml:4: opening_hours.closed_dates[0]: '2026-13-01' is not a date (write "
            "YYYY-MM-DD, "
            "e.g. 2026-12-25)",
        ),
    ],
)
def test_opening_hours_field_errors(snippet: str, expected: str) -> None:
    text = "id: clinic\ninstructions: hi\nopening_hours:\n" + snippet + "timezone: America/Chicago\n"
    assert errors_of(text) == [expected]


def test_overlaps_duplicates_and_after_hours_errors() -> None:
    text = """\
        id: clinic
        instructions: hi
        timezone: America/Chicago
        opening_hours:
          mon:
            - "08:00-12:00"
            - "13:00-18:00"
            - "11:00-13:30"
          closed_dates: [2026-12-25, "2026-12-25"]
        after_hours:
          action: transfer
          message: "Closed, {{ who }}."
        """
    assert errors_of(text) == [
        "flows/clinic.yaml:8: opening_hours.mon[2]: 11:00-13:30 overlaps 08:00-12:00 (mon[0]); join them "
        "into "
        "one range or fix the times",
        "flows/clinic.yaml:8: opening_hours.mon[2]: 11:00-13:30 overlaps 13:00-18:00 (mon[1]); join them "
        "into "
        "one range or fix the times",
        "flows/clinic.yaml:9: opening_hours.closed_dates[1]: 2026-12-25 is listed twice (also "
        "closed_dates[0])",
        "flows/clinic.yaml:11: after_hours.action: transfer has no number to call (set after_hours.number "
        "or add "
        "transfer.number)",
        "flows/clinic.yaml:12: after_hours.message: unknown placeholder {{ who }} (use one of: call_sid, "
        "called_number, caller_number, flow_id, next_opening, now, open_now, stage, today; or add it under "
        "variables)",
    ]
    assert errors_of("id: x\ninstructions: hi\nafter_hours: {action: hang_up}\n") == [
        "flows/clinic.yaml:3: after_hours.action: 'hang_up' is not allowed "
        "(use one of: message_and_hangup, transfer, continue)"
    ]


def test_warnings_do_not_stop_loading() -> None:
    text = """\
        id: clinic
        instructions: hi
        opening_hours: {mon: ["09:00-17:00"]}
        after_hours: {message: "We are closed."}
        """
    assert warnings_of(text) == [
        "flows/clinic.yaml:3: opening_hours: no timezone is set, so these hours are read as UTC (add "
        "timezone: "
        "to the flow, e.g. timezone: America/New_York)",
        "flows/clinic.yaml:4: after_hours.message: is not said with action: continue (use message_and_hangup "
        "or transfer, or put it in the instructions using {{ open_now }})",
    ]
    assert warnings_of("id: x\ninstructions: hi\nafter_hours: {action: continue}\n") == [
        "flows/clinic.yaml:3: after_hours: has no effect without opening_hours (add opening_hours or remove "
        "after_hours)"
    ]
    assert warnings_of("id: x\ninstructions: hi\ntimezone: UTC\nopening_hours: {}\n") == [
        "flows/clinic.yaml:4: opening_hours: no day has any hours, so the line is always closed (add e.g. "
        "mon: "
        '["09:00-17:00"])'
    ]
