"""Where a clear landed, placed by its echo among the caller's media frames (bridge/playback.py
with bridge/uplink_clock.py), and what the held truncate then says (bridge/barge_in.py), without
sockets. Times are the bridge's clock; Twilio's is 30 ms behind it on the way up and the way down.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from bridge.barge_in import Truncation, hedge_late_clear, settle_plan
from bridge.playback import PlaybackTracker

UP = DOWN = 0.030


def _tracker_with_frames(until: float) -> PlaybackTracker:
    """A tracker that knows the round trip (60 ms) and has seen Twilio's frames up to `until`."""
    tracker = PlaybackTracker()
    for _ in range(5):
        tracker.network.round_trip_sample(UP + DOWN)
    _frames(tracker, 0.0, until)
    return tracker


def _frames(tracker: PlaybackTracker, start: float, until: float) -> None:
    """Twilio's frames sent in [start, until) (its clock), each in at the bridge 30 ms later."""
    k = round(start / 0.02)
    while k * 0.02 < until:
        tracker.media_received(k * 20, k * 0.02 + UP)
        k += 1


def test_the_first_echo_the_clear_overtook_places_the_clear() -> None:
    """Audio sent at 1.000 plays from 1.090 (arrival + 60 ms playout delay, not yet measured); the
    clear leaves at 1.120, before the echo of the item's first frame (played by 1.110, in at 1.140),
    and lands at 1.150: 60 ms heard. That echo came back before a frame that came before the
    clear's own echo, so it had played: the clock runs on from it."""
    tracker = _tracker_with_frames(until=1.0)
    first = tracker.chunk_sent("a", 0, 160, now=1.0)
    tracker.chunk_sent("a", 0, 6400, now=1.0)
    last = f"{tracker.epoch}.2"
    tracker.audio_received("a", 0, 820.0)
    _frames(tracker, 1.0, 1.10)
    tracker.cleared(now=1.120)
    assert not tracker.mark_echoed(first, now=1.140)  # an old epoch's now
    _frames(tracker, 1.10, 1.15)
    assert not tracker.mark_echoed(last, now=1.180)
    heard_ms = tracker.clears.heard("a", 0) / 8
    assert 52.0 <= heard_ms <= 60.0


def test_without_that_echo_audio_placed_from_its_send_time_is_not_counted() -> None:
    """The same clear with the first echo lost: the playout delay was never measured, so nothing
    can be said (as before: the truncate keeps the estimate made when the clear left)."""
    tracker = _tracker_with_frames(until=1.0)
    tracker.chunk_sent("a", 0, 160, now=1.0)
    tracker.chunk_sent("a", 0, 6400, now=1.0)
    last = f"{tracker.epoch}.2"
    _frames(tracker, 1.0, 1.15)
    tracker.cleared(now=1.120)
    tracker.mark_echoed(last, now=1.180)
    assert tracker.clears.placed(tracker.clears.last) and tracker.clears.heard("a", 0) is None


def test_what_was_echoed_of_an_item_counts_where_the_clock_had_not_reached_its_next_chunk() -> None:
    """No network: 200 ms of "a" played and echoed at 1.260, and a clear sent at once lands before
    the bound (which errs short) reaches the next chunk: the placement says the 200 ms echoed, not
    nothing (nor the 1 ms of an item that may just have begun)."""
    tracker = PlaybackTracker()
    for _ in range(5):
        tracker.network.round_trip_sample(0.0)
    tracker.network.first_echo_sample(0.060 + 0.100, 0.100)
    for k in range(63):
        tracker.media_received(k * 20, k * 0.02)
    first = tracker.chunk_sent("a", 0, 1600, now=1.0)
    tracker.chunk_sent("a", 0, 1600, now=1.0)
    last = f"{tracker.epoch}.2"
    assert tracker.mark_echoed(first, now=1.2605)
    tracker.cleared(now=1.2605)
    tracker.mark_echoed(last, now=1.2606)
    assert 1600 <= tracker.clears.heard("a", 0) <= 1600 + 8


def test_a_mark_the_clear_released_bounds_the_placement_when_a_stall_held_the_audio_back() -> None:
    """Audio sent at 1.000 was held 40 ms by a stall on the way down: it played from 1.130 (not
    1.090), and the clear, sent at 1.110, landed at 1.140, 10 ms in. Placed from its send time the
    clock would say about 48 ms; but the mark after the item's first 20 ms came back with the
    clear's own (no frame between them): it had not played more than a frame before the clear
    landed. The clock is more than a frame past its end, so the frames contradict it: how long
    the stall held the audio is not known, and the item is said to be just begun (1 sample, a
    1 ms truncate, never a deletion)."""
    tracker = _tracker_with_frames(until=1.0)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    first = tracker.chunk_sent("a", 0, 160, now=1.0)
    tracker.chunk_sent("a", 0, 6400, now=1.0)
    last = f"{tracker.epoch}.2"
    tracker.cleared(now=1.110)
    _frames(tracker, 1.0, 1.14)
    tracker.mark_echoed(first, now=1.170)
    tracker.mark_echoed(last, now=1.170)
    assert tracker.clears.heard("a", 0) == 1


def test_an_item_beginning_within_a_frame_of_the_bound_may_have_been_reached() -> None:
    """"a" (195 ms and a 2.5 ms tail) plays from 1.120 (arrival scale), "b" from 1.3175; the clear
    lands 1.325, 7.5 ms into "b". Every echo comes back between the same two frames (in at 1.31
    and 1.33), so "a" may not have finished; but Twilio's clock places the landing anywhere in
    that frame, and "b" begins within it: it may have been reached, and is kept (1 sample), not
    deleted."""
    tracker = _tracker_with_frames(until=1.0)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    first = tracker.chunk_sent("a", 0, 1560, now=1.0)
    tail = tracker.chunk_sent("a", 0, 20, now=1.0)
    tracker.chunk_sent("b", 0, 3200, now=1.0)
    last = f"{tracker.epoch}.3"
    _frames(tracker, 1.0, 1.28)
    tracker.cleared(now=1.265)
    tracker.mark_echoed(first, now=1.315)
    tracker.mark_echoed(tail, now=1.3175)
    tracker.mark_echoed(last, now=1.325)
    clear = tracker.clears.last
    assert tracker.clears.placed(clear)
    assert 1400 <= tracker.clears.heard("a", 0, clear) <= 1560
    assert tracker.clears.heard("b", 0, clear) == 1


def test_two_clears_in_quick_succession_are_each_placed_by_their_own_echo() -> None:
    tracker = _tracker_with_frames(until=1.0)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    tracker.chunk_sent("a", 0, 3200, now=1.0)
    first_last = f"{tracker.epoch}.1"
    tracker.cleared(now=1.200)
    first_clear = tracker.clears.last
    tracker.chunk_sent("b", 0, 3200, now=1.210)
    second_last = f"{tracker.epoch}.2"
    tracker.cleared(now=1.240)
    second_clear = tracker.clears.last
    assert first_clear != second_clear
    assert tracker.clears.awaiting(first_clear) and tracker.clears.awaiting(second_clear)
    _frames(tracker, 1.0, 1.25)
    tracker.mark_echoed(first_last, now=1.260)
    assert tracker.clears.placed(first_clear) and not tracker.clears.placed(second_clear)
    # 1.0 + 30 ms + 60 ms playout: "a" played from 1.090 until the clear landed at 1.230.
    assert 130.0 <= tracker.clears.heard("a", 0, first_clear) / 8 <= 140.0
    _frames(tracker, 1.25, 1.27)
    tracker.mark_echoed(second_last, now=1.300)
    assert tracker.clears.placed(second_clear)
    assert tracker.clears.heard("b", 0, second_clear) is None  # "b" had not begun when it landed


def _heard(table: dict[str, float]):
    return lambda key: table.get(key[0])


@pytest.mark.parametrize(
    ("truncation", "deletions", "heard", "expected_truncation", "expected_deletions"),
    [
        # Nothing reached beyond the item planned: its truncate is refined.
        (Truncation("a", 0, 190), (("b", 0),), {"a": 215.6}, Truncation("a", 0, 215), (("b", 0),)),
        # The echo shows "b" had begun: it is truncated there, "a" was heard whole, "c" is deleted.
        (Truncation("a", 0, 480), (("b", 0), ("c", 0)), {"a": 500.0, "b": 5.5}, Truncation("b", 0, 5), (("c", 0),)),
        # Begun by less than a millisecond: 1 ms, never a deletion of what was being heard.
        (None, (("a", 0), ("b", 0)), {"a": 0.4}, Truncation("a", 0, 1), (("b", 0),)),
        # No echo placement at all: as planned.
        (Truncation("a", 0, 190), (("b", 0),), {}, Truncation("a", 0, 190), (("b", 0),)),
    ],
)
def test_a_held_plan_is_settled_by_what_the_echo_shows(truncation, deletions, heard, expected_truncation, expected_deletions) -> None:
    settled = settle_plan(truncation, deletions, _heard(heard), lambda key: 1000.0)
    assert settled == (expected_truncation, expected_deletions)


def test_a_clear_whose_echo_is_later_than_the_round_trip_explains_is_overdue() -> None:
    tracker = _tracker_with_frames(until=1.0)
    tracker.chunk_sent("a", 0, 3200, now=1.0)
    last = f"{tracker.epoch}.1"
    tracker.cleared(now=1.200)
    clear = tracker.clears.last
    assert not tracker.clears.overdue(clear, now=1.250)  # within the 60 ms round trip
    assert tracker.clears.overdue(clear, now=1.300)  # 40 ms late: a stall on the way
    _frames(tracker, 1.0, 1.3)
    tracker.mark_echoed(last, now=1.310)
    assert not tracker.clears.overdue(clear, now=1.320)  # back: placed, not awaited


@pytest.mark.parametrize(
    ("truncation", "deletions", "expected_truncation", "expected_deletions"),
    [
        # Planned as unheard: it may have begun while the clear was held, so 1 ms, not a deletion.
        (None, (("a", 0), ("b", 0)), Truncation("a", 0, 1), (("b", 0),)),
        # An item being heard is truncated as planned; what follows it stays deleted.
        (Truncation("a", 0, 190), (("b", 0),), Truncation("a", 0, 190), (("b", 0),)),
        (None, (), None, ()),
    ],
)
def test_a_plan_sent_before_its_overdue_echo_hedges_its_first_deletion(truncation, deletions, expected_truncation, expected_deletions) -> None:
    assert hedge_late_clear(truncation, deletions) == (expected_truncation, expected_deletions)


def test_the_echoes_that_played_before_the_clear_landed_run_the_clock_by_their_mean() -> None:
    """Three 20 ms chunks play from 1.120 (arrival scale), echoed at 1.140, 1.160 and 1.180; the
    clear, sent at 1.135 before any came back, lands at 1.195: 75 ms heard (600 samples). The last
    echo before the landing comes back 8 ms early (its uplink trip was short). Resting the clock on
    it alone would claim 8 ms too much; the mean of the three echoes is off by a third of that."""
    tracker = _tracker_with_frames(until=1.0)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    marks = [tracker.chunk_sent("a", 0, 160, now=1.0) for _ in range(3)]
    last = tracker.chunk_sent("a", 0, 6400, now=1.0)
    tracker.audio_received("a", 0, 820.0)
    _frames(tracker, 1.0, 1.12)  # the last in at 1.130
    tracker.cleared(now=1.135)
    assert not tracker.mark_echoed(marks[0], now=1.140)  # the cleared epoch's
    _frames(tracker, 1.12, 1.14)  # in at 1.150
    tracker.mark_echoed(marks[1], now=1.160)
    _frames(tracker, 1.14, 1.16)  # in at 1.170
    tracker.mark_echoed(marks[2], now=1.172)
    _frames(tracker, 1.16, 1.18)  # in at 1.190
    tracker.mark_echoed(last, now=1.195)
    heard = tracker.clears.heard("a", 0)
    assert 600 - 8 * 8 <= heard <= 600 + 3 * 8, heard


def test_repeated_and_unknown_echoes_of_a_cleared_epoch_neither_raise_nor_move_the_clock() -> None:
    """A peer echoes a mark twice, and one it had already echoed before the clear: they are not
    marks the clear left pending, or not for the first time, and do not count (they used to raise
    inside the placement, which ended the call). The placement is the one the genuine echoes give."""

    def placed(extra: bool) -> int | None:
        tracker = _tracker_with_frames(until=1.0)
        tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
        first, second, _, last = (tracker.chunk_sent("a", 0, samples, now=1.0) for samples in (160, 800, 800, 800))
        _frames(tracker, 1.0, 1.12)
        assert tracker.mark_echoed(first, now=1.140)  # played: the clock is anchored
        tracker.cleared(now=1.150)
        if extra:
            tracker.mark_echoed(first, now=1.160)  # already confirmed before the clear
        _frames(tracker, 1.12, 1.16)
        tracker.mark_echoed(second, now=1.241)
        if extra:
            tracker.mark_echoed(second, now=1.242)  # the same mark again
            tracker.mark_echoed(f"{tracker.epoch - 1}.999", now=1.243)  # never sent
        _frames(tracker, 1.16, 1.24)
        tracker.mark_echoed(last, now=1.250)
        return tracker.clears.heard("a", 0)

    assert placed(extra=True) == placed(extra=False) is not None


_STEP = st.one_of(
    st.tuples(st.just("send"), st.sampled_from("abc"), st.sampled_from([20, 160, 620, 800, 800, 3])),
    st.tuples(st.just("clear")),
    # Echoes of this epoch's or the last one's recent marks, mostly; some of any epoch and mark.
    st.tuples(st.just("echo"), st.sampled_from([0, 0, -1, -1, 1]), st.integers(0, 6)),
    st.tuples(st.just("echo"), st.integers(-3, 3), st.integers(-1, 60)),
    st.tuples(st.just("released"), st.integers(0, 3)),  # a mark the last clear released, or its last
    st.tuples(st.just("released"), st.just(0)),
    st.tuples(st.just("mark"), st.text(max_size=12)),
    st.tuples(st.just("again")),  # the last echo, repeated
    st.tuples(st.just("frame"), st.integers(0, 4)),  # the next frame(s), in step
    st.tuples(st.just("odd frame"), st.integers(-(10**6), 10**9)),
    st.tuples(st.just("rtt"), st.floats(-1.0, 5.0, allow_nan=False)),
    st.tuples(st.just("first"), st.floats(-1.0, 5.0, allow_nan=False), st.floats(0.0, 1.0)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_STEP, st.floats(0.0, 0.12, allow_nan=False)), min_size=10, max_size=150))
def test_any_echoes_frames_and_clears_a_peer_causes_place_clears_within_what_was_sent(steps) -> None:
    """Twilio (or a peer posing as it) echoes any mark name, of any epoch, at any time, between
    frames stamped anyhow: the accounting never raises (an exception here would end the call), and
    what a placed clear says was heard of an item is at least 1 sample and never more than was
    sent of it before that clear."""
    tracker = _tracker_with_frames(until=1.0)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    now, stamp, seq, cleared_at_seq, last_echo = 1.03, 1000, 0, 0, ""
    sent: dict[str, int] = {}
    sent_at_clear: dict[int, dict[str, int]] = {}
    for step, dt in steps:
        now += dt
        kind = step[0]
        if kind == "send":
            seq += 1
            sent[step[1]] = sent.get(step[1], 0) + step[2]
            tracker.audio_received(step[1], 0, step[2] / 8)
            tracker.chunk_sent(step[1], 0, step[2], now=now)
        elif kind == "clear":
            sent_at_clear[tracker.epoch] = dict(sent)
            tracker.cleared(now=now)
            cleared_at_seq = seq
            sent = {item: tracker.sent_samples(item, 0) for item in sent}
        elif kind == "echo":
            last_echo = f"{tracker.epoch + step[1]}.{seq - step[2] if step[2] < 7 else step[2]}"
            tracker.mark_echoed(last_echo, now=now)
        elif kind == "again":
            tracker.mark_echoed(last_echo, now=now)
        elif kind == "released":
            last_echo = f"{tracker.epoch - 1}.{cleared_at_seq - step[1]}"
            tracker.mark_echoed(last_echo, now=now)
        elif kind == "mark":
            tracker.mark_echoed(step[1], now=now)
        elif kind == "frame":
            for _ in range(step[1]):
                stamp += 20
                tracker.media_received(stamp, now)
        elif kind == "odd frame":
            tracker.media_received(step[1], now)
        elif kind == "rtt":
            tracker.network.round_trip_sample(step[1])
        else:
            tracker.network.first_echo_sample(step[1], step[2])
    for epoch, before in sent_at_clear.items():
        for item in "abc":
            heard = tracker.clears.heard(item, 0, epoch)
            if heard is not None:
                assert 1 <= heard <= before.get(item, 0), (epoch, item, heard, before)
