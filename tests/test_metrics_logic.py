"""The pure parts of metrics and latency: the turn timer, the heard-transcript holder, label bounds, the
per-call meter and the Prometheus registry — no sockets, no Redis, no clock but the values passed in."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ivr.call.heard import Cut, HeardLines, Line
from ivr.call.meter import LIVE_TURNS, MAX_TURNS, CallMeter
from ivr.call.playback import PlaybackTracker, Truncation
from ivr.call.registry import CallFeed, CallRecord
from ivr.call.turns import Measured, TurnTimer
from ivr.demo.report import turn_latency_line, turn_latency_summary
from ivr.metrics import BoundedLabel, Metrics
from ivr.state import RedisServices
from ivr.tools.registry import ToolOutcome
from tests.support.server import make_settings

# ---- TurnTimer ------------------------------------------------------------------------------------------


def test_greeting_is_timed_from_the_start_to_the_first_audio() -> None:
    timer = TurnTimer(started_at=10.0)
    assert timer.waiting
    assert timer.audio_sent(11.25) == Measured("greeting", 0, 1.25)
    assert not timer.waiting
    assert timer.audio_sent(11.5) is None  # later frames of the same answer measure nothing


def test_a_reply_is_timed_from_the_end_of_speech_and_numbered() -> None:
    timer = TurnTimer(started_at=0.0)
    timer.audio_sent(1.0)
    timer.speech_started()
    timer.audio_sent(2.0)  # audio while the caller speaks (not a reply to anything yet)
    timer.speech_stopped(3.0)
    first = timer.audio_sent(3.4)
    assert first is not None and (first.kind, first.n) == ("turn", 1)
    assert first.seconds == pytest.approx(0.4) and first.ms == 400.0
    timer.speech_started()
    timer.speech_stopped(5.0)
    second = timer.audio_sent(5.9)
    assert second is not None and (second.kind, second.n, second.ms) == ("turn", 2, 900.0)
    assert timer.turns == 2


def test_speaking_again_before_the_reply_restarts_the_turn() -> None:
    timer = TurnTimer(started_at=0.0)
    timer.audio_sent(0.5)
    timer.speech_stopped(1.0)
    timer.speech_started()  # "…and also" — the caller goes on
    assert not timer.waiting
    timer.speech_stopped(2.0)
    measured = timer.audio_sent(2.3)
    assert measured is not None and measured.ms == 300.0 and measured.n == 1


def test_a_caller_who_speaks_first_gets_no_greeting_measure() -> None:
    timer = TurnTimer(started_at=0.0)
    timer.speech_started()
    timer.speech_stopped(1.0)
    measured = timer.audio_sent(1.5)
    assert measured is not None and measured.kind == "turn"
    timer.speech_stopped(2.0)
    timer.speech_stopped(2.5)  # a repeated stop restarts from the last one
    assert timer.audio_sent(2.75) == Measured("turn", 2, 0.25)


# ---- HeardLines -----------------------------------------------------------------------------------------


def test_a_line_is_held_until_its_audio_has_played() -> None:
    lines = HeardLines()
    assert lines.said("i1", "Hello there.", played_ms=200, sent_ms=1000, cancelled=False) is None
    assert lines.holding
    assert lines.played("i1", 600, 1000) is None
    assert lines.played("other", 1000, 1000) is None
    assert lines.played("i1", 1000, 1000) == Line("i1", "Hello there.")
    assert not lines.holding
    assert Line("i1", "x").fields() == {"item_id": "i1"}


def test_a_line_already_heard_or_without_audio_is_written_at_once() -> None:
    lines = HeardLines()
    assert lines.said("i1", "Played.", played_ms=800, sent_ms=800, cancelled=False) == Line("i1", "Played.")
    assert lines.said("i2", "Text only.", played_ms=0, sent_ms=0, cancelled=False) == Line("i2", "Text only.")


def test_barge_in_after_the_transcript_marks_the_held_line() -> None:
    lines = HeardLines()
    lines.said("i1", "A long answer about opening hours.", played_ms=100, sent_ms=3000, cancelled=False)
    lines.said("i0", "An older line.", played_ms=0, sent_ms=500, cancelled=False)
    out = lines.cut([Cut("i1", 1200, 3000)])
    assert out[0] == Line("i1", "A long answer about opening hours.", Cut("i1", 1200, 3000))
    assert out[0].fields() == {"item_id": "i1", "interrupted": True, "heard_ms": 1200, "total_ms": 3000}
    assert out[1] == Line("i0", "An older line.")  # released with the barge-in, not lost
    assert not lines.holding


def test_barge_in_before_the_transcript_marks_the_line_when_it_comes() -> None:
    lines = HeardLines()
    assert lines.cut([Cut("i1", 700, 900)]) == []
    line = lines.said("i1", "Let me check that for", played_ms=700, sent_ms=700, cancelled=True)
    assert line is not None and line.cut == Cut("i1", 700, 900)
    # The cut is used once; another item is not affected by it.
    assert lines.said("i2", "Next.", played_ms=0, sent_ms=0, cancelled=False) == Line("i2", "Next.")


def test_a_cancelled_response_heard_not_at_all_is_marked_interrupted() -> None:
    line = HeardLines().said("i9", "Well,", played_ms=0, sent_ms=0, cancelled=True)
    assert line is not None
    assert line.fields() == {"item_id": "i9", "interrupted": True, "heard_ms": 0, "total_ms": 0}


def test_a_cancelled_item_heard_in_full_before_the_cancel_is_not_marked() -> None:
    line = HeardLines().said("i3", "All played.", played_ms=800, sent_ms=800, cancelled=True)
    assert line == Line("i3", "All played.")
    cut = HeardLines().said("i4", "Half played.", played_ms=300, sent_ms=800, cancelled=True)
    assert cut is not None and cut.cut == Cut("i4", 300, 800)


def test_lines_still_playing_at_the_end_are_cut_where_playback_got_to() -> None:
    lines = HeardLines()
    lines.said("i1", "An answer the caller hung up on.", played_ms=300, sent_ms=2000, cancelled=False)
    lines.said("i2", "A line whose last mark came back late.", played_ms=0, sent_ms=500, cancelled=False)
    progress = {"i1": (700, 2000), "i2": (500, 500)}
    out = lines.release(progress.__getitem__)
    assert out == [
        Line("i1", "An answer the caller hung up on.", Cut("i1", 700, 2000)),
        Line("i2", "A line whose last mark came back late."),
    ]
    assert out[0].fields() == {"item_id": "i1", "interrupted": True, "heard_ms": 700, "total_ms": 2000}


def test_a_barge_in_cuts_other_held_lines_where_playback_got_to() -> None:
    lines = HeardLines()
    lines.said("old", "Still playing from before.", played_ms=100, sent_ms=900, cancelled=False)
    lines.said("new", "Being cut.", played_ms=0, sent_ms=400, cancelled=False)
    out = lines.cut([Cut("new", 200, 400)], {"old": (100, 900)}.__getitem__)
    assert [(line.item_id, line.cut) for line in out] == [
        ("new", Cut("new", 200, 400)),
        ("old", Cut("old", 100, 900)),
    ]


def test_release_lets_everything_go_in_order_and_cuts_stay_bounded() -> None:
    lines = HeardLines()
    for n in range(3):
        lines.said(f"i{n}", f"line {n}", played_ms=0, sent_ms=100, cancelled=False)
    assert [line.text for line in lines.release()] == ["line 0", "line 1", "line 2"]
    lines.cut([Cut(f"c{n}", 0, 10) for n in range(100)])
    assert lines.said("c0", "old", played_ms=0, sent_ms=0, cancelled=False) == Line("c0", "old")
    assert lines.said("c99", "new", played_ms=0, sent_ms=0, cancelled=False).cut is not None  # type: ignore[union-attr]


def test_truncations_carry_what_was_sent() -> None:
    tracker = PlaybackTracker()
    first = tracker.on_audio_sent("item", 100)
    tracker.on_audio_sent("item", 200)
    tracker.on_audio_sent("item", 300)
    tracker.on_mark(first)
    [cut] = tracker.interrupt()
    assert cut == Truncation("item", 100) and cut.sent_ms == 600


# ---- labels and the registry ----------------------------------------------------------------------------


def test_tool_error_types_cannot_use_up_the_call_outcome_labels() -> None:
    m = Metrics()
    for n in range(60):
        m.tool_done("book", f"error_type_{n}", 0.01)
    m.call_ended("dental", "completed")
    assert _sample(m, "ivr_calls_ended_total", flow="dental", outcome="completed") == 1
    assert _sample(m, "ivr_calls_ended_total", outcome="other") is None
    assert _sample(m, "ivr_tool_duration_seconds_count", tool="book", outcome="other") == 10


def test_bounded_label_caps_distinct_values_and_refuses_ids_and_numbers() -> None:
    label = BoundedLabel(limit=2)
    assert label("dental") == "dental" and label("hotel") == "hotel" and label("dental") == "dental"
    assert label("third") == "other"
    fresh = BoundedLabel()
    assert fresh("") == "none"
    assert fresh("+13125550101") == "other"
    assert fresh("CA" + "0123456789abcdef" * 2) == "other"
    assert fresh("free text with spaces") == "other"
    assert fresh("gpt-realtime-2025-08-28") == "gpt-realtime-2025-08-28"


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


class _Writer:
    def counters(self) -> dict[str, object]:
        return {"pending": 7, "dropped": 3, "written": 100, "failed": 1, "retries": 2, "redis_down": True}


def test_each_app_has_its_own_registry_and_scrape_time_gauges() -> None:
    one, two = Metrics(), Metrics()
    one.bind(live_calls=lambda: 4, writer=lambda: _Writer())
    two.bind(live_calls=lambda: 0, writer=lambda: None)
    one.call_started("dental", "realtime")
    assert _sample(one, "ivr_calls_started_total", flow="dental", engine="realtime") == 1
    assert _sample(two, "ivr_calls_started_total", flow="dental") is None
    assert _sample(one, "ivr_live_calls") == 4 and _sample(two, "ivr_live_calls") == 0
    assert _sample(one, "ivr_redis_writer_pending") == 7
    assert _sample(one, "ivr_redis_writer_dropped_total") == 3
    assert _sample(one, "ivr_redis_writer_redis_down") == 1
    assert _sample(two, "ivr_redis_writer_pending") is None  # no writer (yet): no gauge


def test_histograms_and_usage_counters() -> None:
    m = Metrics()
    m.turn("dental", "local", 0.45)
    m.turn("dental", "local", 12.0)
    m.interrupted("dental", "local", 0.0007)
    m.usage("gpt-realtime", 120, 30, 0.0025)
    m.usage("gpt-realtime", 0, 0, 0.0)
    assert _sample(m, "ivr_turn_latency_seconds_count", flow="dental", engine="local") == 2
    assert _sample(m, "ivr_turn_latency_seconds_bucket", flow="dental", le="0.5") == 1
    assert _sample(m, "ivr_turn_latency_seconds_bucket", flow="dental", le="10.0") == 1
    assert _sample(m, "ivr_interruption_stop_seconds_bucket", le="0.001") == 1
    assert _sample(m, "ivr_model_tokens_total", model="gpt-realtime", kind="input") == 120
    assert _sample(m, "ivr_model_tokens_total", model="gpt-realtime", kind="output") == 30
    assert _sample(m, "ivr_model_cost_usd_total", model="gpt-realtime") == pytest.approx(0.0025)


# ---- CallMeter ------------------------------------------------------------------------------------------


def _meter(metrics: Metrics | None) -> tuple[CallMeter, CallRecord, CallFeed]:
    record = CallRecord(call_sid="CA" + "1" * 32, flow_id="dental")
    feed = CallFeed(record)
    meter = CallMeter(
        metrics=metrics,
        record=record,
        feed=feed,
        flow_id="dental",
        model="gpt-realtime",
        engine="realtime",
        started_at=0.0,
        tool_names=frozenset({"book"}),
    )
    return meter, record, feed


def test_meter_records_turns_in_the_record_and_the_feed() -> None:
    metrics = Metrics()
    meter, record, feed = _meter(metrics)
    meter.audio_sent()
    assert record.greeting_ms is not None and record.greeting_ms > 0
    for _ in range(3):
        meter.speech_started()
        meter.speech_stopped()
        meter.audio_sent()
    assert [t["n"] for t in record.turns] == [1, 2, 3]
    assert all(t["latency_ms"] >= 0 and t["at"] > 0 for t in record.turns)
    kinds = [(e["kind"], e["turn"]) for e in feed.events if e["type"] == "turn.latency"]
    assert kinds == [("greeting", 0), ("turn", 1), ("turn", 2), ("turn", 3)]
    assert _sample(metrics, "ivr_turn_latency_seconds_count", flow="dental", engine="realtime") == 3
    assert _sample(metrics, "ivr_greeting_first_audio_seconds_count", flow="dental") == 1


async def test_the_first_audio_frame_only_reads_the_clock_the_report_comes_just_after() -> None:
    metrics = Metrics()
    meter, record, feed = _meter(metrics)
    meter.audio_sent()  # the greeting's first frame, on the audio path
    assert record.greeting_ms is None and feed.events == []
    assert _sample(metrics, "ivr_greeting_first_audio_seconds_count", flow="dental") is None
    await asyncio.sleep(0)
    assert record.greeting_ms is not None
    assert [(e["type"], e["kind"]) for e in feed.events] == [("turn.latency", "greeting")]
    assert _sample(metrics, "ivr_greeting_first_audio_seconds_count", flow="dental") == 1
    meter.speech_stopped()
    meter.audio_sent()
    meter.call_ended("completed")  # the call ends before the loop came round: reported first, not lost
    assert [t["n"] for t in record.turns] == [1] and feed.events[-1]["turn"] == 1
    await asyncio.sleep(0)
    assert len(feed.events) == 2


class _Calls:
    """What the Redis sink calls on the CallStore, recorded."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.ended: list[dict[str, Any]] = []

    def call_updated(self, sid: str, fields: dict[str, Any]) -> None:
        self.updates.append(dict(fields))

    def call_ended(self, sid: str, fields: dict[str, Any]) -> None:
        self.ended.append(dict(fields))

    def event(self, sid: str, type_: str, data: dict[str, Any]) -> None:
        pass


def test_the_call_hash_gets_the_latest_turns_per_reply_and_all_of_them_at_the_end() -> None:
    services = RedisServices(make_settings())
    services.calls = calls = _Calls()  # type: ignore[assignment]
    record = CallRecord(call_sid="CA" + "1" * 32, flow_id="dental")
    feed = CallFeed(record, services.sink(record))
    meter = CallMeter(
        metrics=None,
        record=record,
        feed=feed,
        flow_id="dental",
        model="gpt-realtime",
        engine="realtime",
        started_at=0.0,
        tool_names=frozenset(),
    )
    for _ in range(3 * LIVE_TURNS):
        meter.speech_stopped()
        meter.audio_sent()
    written = [u["turns"] for u in calls.updates if "turns" in u]
    assert len(written) == 3 * LIVE_TURNS
    assert max(len(turns) for turns in written) == LIVE_TURNS  # bounded bytes per reply
    assert [t["n"] for t in written[-1]] == list(range(2 * LIVE_TURNS + 1, 3 * LIVE_TURNS + 1))
    feed.emit("call.ended", outcome="completed")
    assert [t["n"] for t in calls.ended[0]["turns"]] == list(range(1, 3 * LIVE_TURNS + 1))


def test_meter_keeps_a_bounded_number_of_turns_and_works_without_metrics() -> None:
    meter, record, _feed = _meter(None)
    for _ in range(MAX_TURNS + 5):
        meter.speech_stopped()
        meter.audio_sent()
    assert len(record.turns) == MAX_TURNS and record.turns[-1]["n"] == MAX_TURNS + 5


def test_meter_usage_cost_and_tool_labels() -> None:
    metrics = Metrics()
    meter, record, feed = _meter(metrics)
    usage = {
        "total_tokens": 1500,
        "input_tokens": 1000,
        "output_tokens": 500,
        "input_token_details": {"audio_tokens": 1000, "text_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"audio_tokens": 500, "text_tokens": 0},
    }
    for _ in range(2):
        record.add_usage(usage)
        meter.response_done(usage)
    meter.response_done({"input_tokens": 0, "output_tokens": 0})  # offline engine: nothing emitted
    updates = [e for e in feed.events if e["type"] == "usage.updated"]
    assert len(updates) == 2 and updates[-1]["usage"]["input_tokens"] == 2000
    assert record.cost_usd == pytest.approx(2 * (1000 * 32 + 500 * 64) / 1e6)
    assert _sample(metrics, "ivr_model_cost_usd_total", model="gpt-realtime") == pytest.approx(
        record.cost_usd
    )
    meter.tool(ToolOutcome("book", "c1", True, "{}", None, 12.0, {}))
    meter.tool(ToolOutcome("launch_rockets", "c2", False, "{}", "unknown_tool", 0.1, None))
    assert _sample(metrics, "ivr_tool_duration_seconds_count", tool="book", outcome="ok") == 1
    assert _sample(metrics, "ivr_tool_duration_seconds_count", tool="unknown", outcome="unknown_tool") == 1
    meter.approval("book", "approved", 4.0)
    assert _sample(metrics, "ivr_approval_wait_seconds_count", tool="book", status="approved") == 1
    meter.fell_back("local")
    assert meter.engine == "local"
    assert _sample(metrics, "ivr_engine_fallbacks_total", flow="dental", model="gpt-realtime") == 1


# ---- the demo's summary ---------------------------------------------------------------------------------


def test_demo_summary_of_turn_latency_from_the_call_hash() -> None:
    record = {
        "turns": json.dumps(
            [{"n": n, "latency_ms": ms, "at": 1.0} for n, ms in enumerate([400, 900, 500, 600], 1)]
        ),
        "greeting_ms": "812.5",
    }
    figures = turn_latency_summary(record)
    assert figures == {
        "greeting_ms": 812.5,
        "turns_ms": [400.0, 900.0, 500.0, 600.0],
        "turns": 4,
        "median_ms": 550.0,
        "p90_ms": 900.0,
    }
    line = turn_latency_line(figures)
    assert line is not None and "greeting 812 ms" in line and "median 550 ms, p90 900 ms (4 turns)" in line
    empty = turn_latency_summary({})
    assert empty["turns"] == 0 and empty["median_ms"] is None and turn_latency_line(empty) is None
