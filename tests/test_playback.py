"""PlaybackTracker (ivr.call.playback): what the caller has actually heard, from mark echoes alone.

Why: on barge-in the model is told ``audio_end_ms`` for the item it was speaking. Too much and the model
believes the caller heard words they never did; too little and it repeats itself. These tests drive the
tracker with the exact sequences Twilio produces: in-order echoes, echoes of every pending mark after a
``clear`` (which do *not* mean the audio played), and barriers that must fire either way.
"""

from __future__ import annotations

from ivr.call.playback import MarkKind, MarkResult, PlaybackTracker, Truncation


def _send(tracker: PlaybackTracker, item_id: str, *chunks_ms: float) -> list[str]:
    return [tracker.on_audio_sent(item_id, ms) for ms in chunks_ms]


def test_each_chunk_gets_its_own_mark_name() -> None:
    tracker = PlaybackTracker()
    names = _send(tracker, "item_A", 20, 20, 20)
    names += _send(tracker, "item_B", 20)
    assert len(set(names)) == 4
    assert tracker.barrier("bye") not in names


def test_sent_and_played_ms_accumulate_per_item() -> None:
    tracker = PlaybackTracker()
    a = _send(tracker, "item_A", 100, 150)
    b = _send(tracker, "item_B", 40)
    assert (tracker.sent_ms("item_A"), tracker.sent_ms("item_B")) == (250, 40)
    assert (tracker.played_ms("item_A"), tracker.played_ms("item_B")) == (0, 0)
    assert tracker.playing

    assert tracker.on_mark(a[0]) == MarkResult(MarkKind.PLAYED, item_id="item_A", played_ms=100)
    assert tracker.played_ms("item_A") == 100
    assert tracker.on_mark(a[1]) == MarkResult(MarkKind.PLAYED, item_id="item_A", played_ms=250)
    assert tracker.playing  # item_B still outstanding
    assert tracker.on_mark(b[0]) == MarkResult(MarkKind.PLAYED, item_id="item_B", played_ms=40)
    assert not tracker.playing
    assert tracker.stale_marks == 0


def test_unknown_item_reports_zero() -> None:
    tracker = PlaybackTracker()
    assert tracker.sent_ms("nope") == 0
    assert tracker.played_ms("nope") == 0
    assert not tracker.playing


def test_fractional_durations_add_up_before_rounding() -> None:
    tracker = PlaybackTracker()
    names = _send(tracker, "item_A", *([12.5] * 8))
    assert tracker.sent_ms("item_A") == 100
    tracker.on_mark(names[2])
    assert tracker.played_ms("item_A") == 37  # 37.5 truncated to whole ms


def test_a_later_mark_implies_the_earlier_ones_of_the_item() -> None:
    tracker = PlaybackTracker()
    names = _send(tracker, "item_A", 20, 20, 20, 20)
    result = tracker.on_mark(names[2])
    assert result == MarkResult(MarkKind.PLAYED, item_id="item_A", played_ms=60)
    assert tracker.playing  # the fourth chunk is still queued
    # The earlier marks were consumed implicitly: their echoes no longer count as playback,
    # and they cannot move played_ms backwards.
    assert tracker.on_mark(names[0]).kind is MarkKind.STALE
    assert tracker.played_ms("item_A") == 60
    tracker.on_mark(names[3])
    assert not tracker.playing
    assert tracker.played_ms("item_A") == 80


def test_interrupt_truncates_at_confirmed_played_ms() -> None:
    tracker = PlaybackTracker()
    names = _send(tracker, "item_A", 100, 100, 100)
    tracker.on_mark(names[0])
    assert tracker.interrupt() == [Truncation("item_A", 100)]
    assert not tracker.playing
    # What was cleared will never play: sent is cut back to what was heard.
    assert tracker.sent_ms("item_A") == 100
    assert tracker.played_ms("item_A") == 100


def test_interrupt_before_any_echo_truncates_at_zero() -> None:
    tracker = PlaybackTracker()
    _send(tracker, "item_A", 20, 20)
    assert tracker.interrupt() == [Truncation("item_A", 0)]
    assert tracker.sent_ms("item_A") == 0


def test_interrupt_with_nothing_pending_returns_nothing() -> None:
    tracker = PlaybackTracker()
    assert tracker.interrupt() == []
    names = _send(tracker, "item_A", 20, 20)
    tracker.on_mark(names[1])
    assert tracker.interrupt() == []  # fully heard: nothing to truncate
    assert tracker.sent_ms("item_A") == 40


def test_interrupt_skips_fully_played_items_and_orders_unfinished_ones() -> None:
    tracker = PlaybackTracker()
    a = _send(tracker, "item_A", 50)
    b = _send(tracker, "item_B", 50, 50)
    _send(tracker, "item_C", 50)
    tracker.on_mark(a[0])
    tracker.on_mark(b[0])
    assert tracker.interrupt() == [Truncation("item_B", 50), Truncation("item_C", 0)]


def test_interrupt_clamps_played_to_sent() -> None:
    """audio_end_ms never exceeds what was sent, whichever of the two is larger."""
    tracker = PlaybackTracker()
    names = _send(tracker, "item_A", 80, 80)
    tracker.on_mark(names[0])
    truncations = tracker.interrupt()
    assert truncations == [Truncation("item_A", 80)]
    assert all(t.audio_end_ms <= tracker.sent_ms(t.item_id) for t in truncations)
    # More audio for the same item after the barge-in continues from what was heard.
    more = _send(tracker, "item_A", 20)
    assert tracker.sent_ms("item_A") == 100
    assert tracker.interrupt() == [Truncation("item_A", 80)]
    assert tracker.on_mark(more[0]).kind is MarkKind.STALE


def test_stale_echoes_after_clear_are_counted_and_ignored() -> None:
    tracker = PlaybackTracker()
    names = _send(tracker, "item_A", 100, 100, 100)
    tracker.on_mark(names[0])
    tracker.interrupt()
    # Twilio echoes every pending mark after a clear: they must not count as playback.
    for name in names[1:]:
        assert tracker.on_mark(name) == MarkResult(MarkKind.STALE)
    assert tracker.stale_marks == 2
    assert tracker.played_ms("item_A") == 100
    assert not tracker.playing


def test_new_audio_after_interrupt_is_tracked_normally() -> None:
    tracker = PlaybackTracker()
    old = _send(tracker, "item_A", 100)
    tracker.interrupt()
    new = _send(tracker, "item_B", 60)
    assert tracker.on_mark(old[0]).kind is MarkKind.STALE
    assert tracker.on_mark(new[0]) == MarkResult(MarkKind.PLAYED, item_id="item_B", played_ms=60)


def test_barrier_fires_on_its_echo_with_its_tag() -> None:
    tracker = PlaybackTracker()
    audio = _send(tracker, "item_A", 100)
    barrier = tracker.barrier("hangup")
    assert tracker.on_mark(audio[0]).kind is MarkKind.PLAYED
    assert tracker.on_mark(barrier) == MarkResult(MarkKind.BARRIER, tag="hangup")
    # A barrier fires once.
    assert tracker.on_mark(barrier).kind is MarkKind.UNKNOWN
    assert tracker.stale_marks == 0


def test_barrier_does_not_count_as_playing() -> None:
    tracker = PlaybackTracker()
    tracker.barrier("noop")
    assert not tracker.playing


def test_barrier_still_fires_after_clear() -> None:
    tracker = PlaybackTracker()
    audio = _send(tracker, "item_A", 100, 100)
    barrier = tracker.barrier("transfer")
    tracker.interrupt()
    # After a clear Twilio echoes everything pending, barrier included.
    results = [tracker.on_mark(name) for name in [*audio, barrier]]
    assert [r.kind for r in results] == [MarkKind.STALE, MarkKind.STALE, MarkKind.BARRIER]
    assert results[-1].tag == "transfer"


def test_several_barriers_keep_their_own_tags() -> None:
    tracker = PlaybackTracker()
    first = tracker.barrier("one")
    second = tracker.barrier("two")
    assert first != second
    assert tracker.on_mark(second).tag == "two"
    assert tracker.on_mark(first).tag == "one"


def test_unknown_mark_names_are_unknown_not_stale() -> None:
    tracker = PlaybackTracker()
    assert tracker.on_mark("my label") == MarkResult(MarkKind.UNKNOWN)
    assert tracker.on_mark("b999") == MarkResult(MarkKind.UNKNOWN)
    assert tracker.stale_marks == 0


def test_retired_items_are_still_tracked_until_played_and_barriers_survive() -> None:
    """A new model session: the old session's audio already queued at Twilio still plays."""
    tracker = PlaybackTracker()
    done = _send(tracker, "item_A", 100)
    assert tracker.on_mark(done[0]).kind is MarkKind.PLAYED
    audio = _send(tracker, "item_B", 100, 100)
    barrier = tracker.barrier("goodbye")
    tracker.retire_items()
    assert tracker.sent_ms("item_A") == 0  # fully played: forgotten
    assert tracker.playing and tracker.sent_ms("item_B") == 200
    assert tracker.on_mark(audio[0]) == MarkResult(MarkKind.PLAYED, item_id="item_B", played_ms=100)
    assert tracker.stale_marks == 0
    [cut] = tracker.interrupt()  # a barge-in over the old audio: cut, but not to be truncated
    assert cut == Truncation("item_B", 100) and cut.sent_ms == 200 and cut.retired
    assert tracker.on_mark(barrier) == MarkResult(MarkKind.BARRIER, tag="goodbye")


def test_a_new_session_reusing_an_item_id_gets_a_fresh_item() -> None:
    tracker = PlaybackTracker()
    before = set(_send(tracker, "item_A", 20, 20))
    tracker.retire_items()
    after = _send(tracker, "item_A", 20, 20)
    assert not before & set(after)
    assert tracker.sent_ms("item_A") == 40
    assert tracker.on_mark(next(iter(before))).kind is MarkKind.STALE  # the old item's marks
    [cut] = tracker.interrupt()
    assert cut == Truncation("item_A", 0) and not cut.retired


def test_memory_stays_bounded_over_many_items() -> None:
    tracker = PlaybackTracker()
    for n in range(500):
        item = f"item_{n}"
        for name in _send(tracker, item, 20, 20, 20):
            assert tracker.on_mark(name).kind is MarkKind.PLAYED
    # Old items are forgotten, recent ones remembered.
    assert tracker.sent_ms("item_0") == 0
    assert tracker.sent_ms("item_499") == 60
    assert tracker.played_ms("item_499") == 60
    assert tracker.sent_ms("item_436") == 60
    # White-box: the per-item tables are capped (64 items), and echoed marks leave nothing behind.
    assert len(tracker._items) <= 64
    assert len(tracker._order) <= 64
    assert tracker._pending == {}
    assert tracker.stale_marks == 0


def test_evicted_item_marks_are_not_playback() -> None:
    tracker = PlaybackTracker()
    first = _send(tracker, "item_0", 20)
    for n in range(1, 70):
        _send(tracker, f"item_{n}", 20)
    result = tracker.on_mark(first[0])
    assert result.kind is MarkKind.STALE
    assert tracker.played_ms("item_0") == 0
