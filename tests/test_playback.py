"""Playback accounting and barge-in planning, without sockets."""

from __future__ import annotations

import pytest

from bridge.barge_in import plan_barge_in
from bridge.playback import PlaybackTracker


def test_marks_confirm_played_samples_per_item() -> None:
    tracker = PlaybackTracker()
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    second = tracker.chunk_sent("a", 0, 800, now=0.0)
    assert tracker.is_playing and tracker.playing_item(0.0) == ("a", 0)
    assert tracker.mark_echoed(first, now=0.1)
    assert tracker.played_samples("a", 0, now=0.1) == 800
    assert tracker.mark_echoed(second, now=0.2)
    assert tracker.played_samples("a", 0, now=5.0) == 1600  # nothing pending: no clock estimate
    assert not tracker.is_playing


def test_the_clock_moves_through_unconfirmed_chunks_but_never_past_what_was_sent() -> None:
    tracker = PlaybackTracker()
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("a", 0, 800, now=0.0)
    assert tracker.played_samples("a", 0, now=0.05) == 400  # 50 ms into the first chunk
    assert tracker.played_samples("a", 0, now=0.15) == 1200  # its echo is late: on into the second
    assert tracker.played_samples("a", 0, now=1.0) == 1600  # all that was sent, no more
    tracker.mark_echoed(first, now=0.1)
    assert tracker.played_samples("a", 0, now=0.125) == 1000  # from the echo, not from the send


def test_a_chunk_sent_after_the_buffer_ran_dry_starts_when_sent() -> None:
    tracker = PlaybackTracker()
    tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("a", 0, 800, now=0.3)  # the model was slow: 200 ms of nothing in between
    assert tracker.played_samples("a", 0, now=0.2) == 800
    assert tracker.played_samples("a", 0, now=0.35) == 1200


def test_a_chunk_sent_into_an_empty_buffer_starts_playing_when_sent() -> None:
    tracker = PlaybackTracker()
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.mark_echoed(first, now=0.1)
    tracker.chunk_sent("a", 0, 800, now=2.0)  # Twilio sat idle from 0.1 to 2.0
    assert tracker.played_samples("a", 0, now=2.05) == 1200


def test_echoes_released_by_clear_are_not_played() -> None:
    tracker = PlaybackTracker()
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    second = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.mark_echoed(first, now=0.1)
    tracker.cleared()
    assert not tracker.mark_echoed(second, now=0.11)  # old epoch
    assert tracker.played_samples("a", 0, now=1.0) == 800
    assert tracker.sent_samples("a", 0) == 800
    assert not tracker.is_playing
    new = tracker.chunk_sent("b", 0, 160, now=1.0)
    assert new.startswith("1.")


def test_unknown_and_malformed_marks_are_refused() -> None:
    tracker = PlaybackTracker()
    tracker.chunk_sent("a", 0, 160, now=0.0)
    for name in ("0.99", "junk", "", "0.", "1.1"):
        assert not tracker.mark_echoed(name, now=0.1)
    with pytest.raises(ValueError):
        tracker.chunk_sent("a", 0, 0, now=0.0)


def test_items_are_accounted_separately() -> None:
    tracker = PlaybackTracker()
    tracker.chunk_sent("a", 0, 800, now=0.0)
    b = tracker.chunk_sent("b", 0, 800, now=0.0)
    assert tracker.played_samples("b", 0, now=0.05) == 0  # b waits behind a
    assert tracker.playing_item(0.05) == ("a", 0) and tracker.playing_item(0.15) == ("b", 0)
    assert tracker.played_samples("a", 0, now=0.15) == 800 and tracker.played_samples("b", 0, now=0.15) == 400
    tracker.mark_echoed(b, now=0.2)
    assert tracker.played_samples("a", 0, now=0.2) == 800
    assert tracker.played_samples("b", 0, now=0.2) == 800


def test_no_barge_in_when_nothing_plays_and_no_response_is_active() -> None:
    tracker = PlaybackTracker()
    assert plan_barge_in(tracker, None, None, now=0.0).is_noop


def test_barge_in_mid_item_truncates_at_what_was_heard() -> None:
    tracker = PlaybackTracker()
    tracker.audio_received("item", 0, 1000.0)
    first = tracker.chunk_sent("item", 0, 4000, now=0.0)
    tracker.chunk_sent("item", 0, 4000, now=0.0)
    tracker.mark_echoed(first, now=0.5)
    plan = plan_barge_in(tracker, "resp", ("item", 0), now=0.6)
    assert plan.clear_playback and plan.cancel_response_id == "resp"
    assert plan.truncation is not None and plan.truncation.audio_end_ms == 600


def test_barge_in_before_any_audio_played_does_not_truncate() -> None:
    tracker = PlaybackTracker()
    tracker.audio_received("item", 0, 200.0)
    plan = plan_barge_in(tracker, "resp", ("item", 0), now=0.0)
    assert plan.clear_playback and plan.cancel_response_id == "resp" and plan.truncation is None


def test_truncation_never_exceeds_the_audio_received() -> None:
    tracker = PlaybackTracker()
    tracker.audio_received("item", 0, 50.0)
    tracker.chunk_sent("item", 0, 800, now=0.0)  # the transcoder may emit a few samples more
    plan = plan_barge_in(tracker, "resp", ("item", 0), now=10.0)
    assert plan.truncation is not None and plan.truncation.audio_end_ms == 50


def test_item_heard_in_full_with_response_done_is_not_truncated() -> None:
    tracker = PlaybackTracker()
    tracker.audio_received("item", 0, 100.0)
    tracker.chunk_sent("item", 0, 800, now=0.0)
    plan = plan_barge_in(tracker, None, ("item", 0), now=0.5)
    assert plan.clear_playback and plan.truncation is None


def test_items_heard_not_at_all_are_deleted() -> None:
    tracker = PlaybackTracker()
    for item in ("a", "b", "c"):
        tracker.audio_received(item, 0, 500.0)
    first = tracker.chunk_sent("a", 0, 4000, now=0.0)
    tracker.chunk_sent("b", 0, 4000, now=0.0)
    tracker.chunk_sent("c", 0, 4000, now=0.0)
    tracker.mark_echoed(first, now=0.5)
    plan = plan_barge_in(tracker, None, ("c", 0), now=0.6, response_items_of=lambda item: [("a", 0), ("b", 0), ("c", 0)])
    assert plan.truncation is not None and (plan.truncation.item_id, plan.truncation.audio_end_ms) == ("b", 100)
    assert plan.deletions == (("c", 0),)


def test_an_item_not_heard_at_all_is_deleted_not_truncated() -> None:
    tracker = PlaybackTracker()
    tracker.audio_received("a", 0, 300.0)
    plan = plan_barge_in(tracker, "resp", ("a", 0), now=0.0, response_items_of=lambda item: [("a", 0)])
    assert plan.truncation is None and plan.deletions == (("a", 0),)


def test_forgetting_an_item_keeps_it_while_its_audio_is_pending() -> None:
    tracker = PlaybackTracker()
    tracker.audio_received("old", 0, 100.0)
    mark = tracker.chunk_sent("old", 0, 800, now=0.0)
    tracker.forget("old", 0)
    assert tracker.items_known == 1  # still playing: kept
    tracker.mark_echoed(mark, now=0.1)
    tracker.forget("old", 0)
    assert tracker.items_known == 0


def test_barge_in_just_after_an_item_boundary_names_the_next_item_before_the_echo_arrives() -> None:
    """The echo of a's last mark is still on its way: the caller already hears b, which is kept."""
    tracker = PlaybackTracker()
    tracker.audio_received("a", 0, 100.0)
    tracker.audio_received("b", 0, 300.0)
    tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("b", 0, 2400, now=0.0)
    plan = plan_barge_in(tracker, "resp", ("b", 0), now=0.12, response_items_of=lambda item: [("a", 0), ("b", 0)])
    assert plan.truncation is not None and (plan.truncation.item_id, plan.truncation.audio_end_ms) == ("b", 20)
    assert plan.deletions == ()
