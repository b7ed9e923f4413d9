"""The Twilio round-trip estimate and network-aware playback accounting, without sockets."""

from __future__ import annotations

import random

import pytest

from bridge.barge_in import Truncation, plan_barge_in, refine_truncation
from bridge.playback import PROBE_INTERVAL_S, PlaybackTracker
from bridge.round_trip import LEAD_SPREADS, WINDOW, RoundTripEstimator


def test_cold_start_knows_nothing_and_adds_nothing() -> None:
    estimator = RoundTripEstimator()
    assert estimator.round_trip_s is None and estimator.lead_s == 0.0 and estimator.playout_delay_s == 0.0
    # Without a round trip a first echo cannot be split into round trip and playout delay.
    assert not estimator.first_echo_sample(0.3, 0.1)
    assert estimator.playout_delay_s == 0.0


def test_jitter_and_a_burst_barely_move_the_estimate() -> None:
    rng = random.Random(4)
    estimator = RoundTripEstimator()
    for n in range(40):
        sample = 0.060 + rng.uniform(-0.010, 0.010) + rng.uniform(-0.010, 0.010)  # 30 ± 10 ms each way
        if n % 9 == 4:
            sample += 0.080  # a stall held this echo back
        estimator.round_trip_sample(sample)
        if n >= 8:
            assert estimator.round_trip_s == pytest.approx(0.060, abs=0.010)


def test_a_changing_round_trip_is_followed_within_half_a_window() -> None:
    estimator = RoundTripEstimator()
    half = WINDOW // 2 + 1
    for _ in range(WINDOW):
        estimator.round_trip_sample(0.020)
    for n in range(WINDOW):
        estimator.round_trip_sample(0.120)
        if n + 1 >= half:
            assert estimator.round_trip_s == pytest.approx(0.120)
            assert estimator.lead_s <= 0.120
    for _ in range(half):
        estimator.round_trip_sample(0.040)
    assert estimator.round_trip_s == pytest.approx(0.040)


def test_implausible_samples_are_ignored_and_the_metric_sees_the_rest() -> None:
    seen: list[float] = []
    estimator = RoundTripEstimator(on_sample=seen.append)
    assert not estimator.round_trip_sample(-0.001) and not estimator.round_trip_sample(30.0)
    assert estimator.round_trip_sample(0.05) and seen == [0.05]


def test_the_playout_delay_is_what_a_first_echo_takes_beyond_round_trip_and_audio() -> None:
    estimator = RoundTripEstimator()
    estimator.round_trip_sample(0.060)
    for extra in (0.058, 0.061, 0.060, 0.2, 0.059):
        estimator.first_echo_sample(0.060 + 0.100 + extra, 0.100)
    assert estimator.playout_delay_s == pytest.approx(0.060, abs=0.002)
    estimator.first_echo_sample(0.1, 0.1)  # sooner than a round trip: noise, not a negative delay
    assert estimator.playout_delay_s >= 0.0


# --- the tracker: where playback is when the clear lands -------------------------------------


def test_a_probe_is_sent_only_while_nothing_plays_one_at_a_time_and_measures_the_round_trip() -> None:
    tracker = PlaybackTracker()
    probe = tracker.probe_due(now=0.0)
    assert probe is not None and probe.startswith("rtt.")
    assert tracker.probe_due(now=5.0) is None  # still outstanding
    assert not tracker.mark_echoed(probe, now=0.062)  # not playback
    assert tracker.network.round_trip_s == pytest.approx(0.062)
    assert tracker.probe_due(now=0.5) is None  # too soon
    tracker.chunk_sent("a", 0, 800, now=2.0)
    assert tracker.probe_due(now=2.0) is None  # audio is pending: an echo would include playback
    assert tracker.probe_due(now=2.0 + 0.1) is None
    assert tracker.mark_echoed("rtt.99", now=2.2) is False and tracker.network.samples == 1


def test_the_marks_released_by_a_clear_measure_the_round_trip() -> None:
    tracker = PlaybackTracker()
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("a", 0, 8000, now=0.0)
    last = tracker.chunk_sent("a", 0, 8000, now=0.01)
    tracker.mark_echoed(first, now=0.15)
    tracker.cleared(now=0.3)  # two seconds of audio were still to play
    assert not tracker.mark_echoed(last, now=0.3 + 0.07)
    assert tracker.network.round_trip_s == pytest.approx(0.07)


def test_a_clear_whose_last_mark_had_already_played_is_no_sample() -> None:
    tracker = PlaybackTracker()
    tracker.chunk_sent("a", 0, 800, now=0.0)
    last = tracker.chunk_sent("a", 0, 160, now=0.0)
    tracker.cleared(now=0.115)  # the audio ended at 0.12: its echo was on its way anyway
    tracker.mark_echoed(last, now=0.13)
    assert tracker.network.round_trip_s is None


def test_the_first_echo_of_a_response_measures_the_playout_delay() -> None:
    tracker = PlaybackTracker()
    tracker.network.round_trip_sample(0.060)
    first = tracker.chunk_sent("a", 0, 800, now=1.0)
    tracker.chunk_sent("a", 0, 800, now=1.0)
    tracker.mark_echoed(first, now=1.0 + 0.060 + 0.060 + 0.100)
    assert tracker.network.playout_delay_s == pytest.approx(0.060)


def test_without_measurements_the_accounting_is_the_one_without_a_network() -> None:
    tracker = PlaybackTracker()
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("a", 0, 800, now=0.0)
    assert tracker.played_samples("a", 0, now=0.05) == 400
    tracker.mark_echoed(first, now=0.1)
    assert tracker.played_samples("a", 0, now=0.125) == 1000


def test_with_a_round_trip_known_the_estimate_is_where_playback_is_when_the_clear_lands() -> None:
    """30 ms each way, 60 ms playout delay: the first chunk arrives at 0.030, plays 0.090-0.190,
    its echo arrives at 0.220; a clear sent at 0.250 lands at 0.280, 90 ms past that chunk."""
    tracker = PlaybackTracker()
    for _ in range(5):
        tracker.network.round_trip_sample(0.060)  # no jitter: no margin
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)  # playout delay 60 ms
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("a", 0, 8000, now=0.0)
    # Before any echo: arrives at 0.030, plays from 0.090; a clear sent at 0.100 lands at 0.130.
    assert tracker.played_samples("a", 0, now=0.100) == 320
    tracker.mark_echoed(first, now=0.030 + 0.060 + 0.100 + 0.030)
    assert tracker.played_samples("a", 0, now=0.250) == 800 + 720
    tracker.audio_received("a", 0, 1100.0)
    plan = plan_barge_in(tracker, "resp", ("a", 0), now=0.250)
    assert plan.truncation is not None and plan.truncation.audio_end_ms == 190


def test_the_lead_keeps_a_margin_for_jitter() -> None:
    estimator = RoundTripEstimator()
    estimator.round_trip_sample(0.060)
    # One sample: the jitter is a guess, and the median of one sample may be far off.
    one = estimator.lead_s
    assert 0.030 < one < 0.060 - LEAD_SPREADS * estimator.spread_s
    for sample in (0.050, 0.070, 0.055, 0.065, 0.060, 0.045, 0.075):
        estimator.round_trip_sample(sample)
    assert estimator.round_trip_s == pytest.approx(0.060)
    assert 0.008 < estimator.spread_s < 0.020  # the samples vary by about 9 ms (sd)
    # The clear may be as quick as the quickest samples, and the median of 8 is not exact either.
    margin = LEAD_SPREADS * estimator.spread_s + 1.25 * estimator.spread_s / 8**0.5
    assert estimator.lead_s == pytest.approx(0.060 - margin)
    assert one < estimator.lead_s or estimator.spread_s > 0.009  # more samples, a surer median
    assert estimator.uncertainty_s > 0.060 - estimator.lead_s


def test_the_round_trip_never_pushes_the_estimate_past_what_was_sent_or_into_the_playout_delay() -> None:
    tracker = PlaybackTracker()
    tracker.network.round_trip_sample(0.100)
    tracker.network.first_echo_sample(0.100 + 0.060 + 0.100, 0.100)
    tracker.chunk_sent("a", 0, 800, now=0.0)
    assert tracker.played_samples("a", 0, now=0.05) == 0  # the clear lands before playback starts
    assert tracker.played_samples("a", 0, now=5.0) == 800


def test_probing_waits_between_probes() -> None:
    tracker = PlaybackTracker()
    probe = tracker.probe_due(now=0.0)
    assert probe is not None
    tracker.mark_echoed(probe, now=0.05)
    assert tracker.probe_due(now=PROBE_INTERVAL_S / 2) is None
    assert tracker.probe_due(now=PROBE_INTERVAL_S + 0.01) is not None


def test_an_item_that_may_just_have_started_is_truncated_at_1_ms_not_deleted() -> None:
    tracker = PlaybackTracker()
    for sample in (0.050, 0.070, 0.055, 0.065, 0.060, 0.045, 0.075):
        tracker.network.round_trip_sample(sample)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    tracker.audio_received("a", 0, 300.0)
    tracker.chunk_sent("a", 0, 2400, now=0.0)
    items = lambda item: [("a", 0)]  # noqa: E731
    # The clock says playback starts 60 ms after the send; the lead errs short by a few ms.
    assert tracker.played_samples("a", 0, now=0.055) == 0
    plan = plan_barge_in(tracker, "resp", ("a", 0), now=0.055, response_items_of=items)
    assert plan.truncation is not None and plan.truncation.audio_end_ms == 1 and plan.deletions == ()
    # Well before it can have started (a clear sent with the audio lands ~60 ms before it plays):
    # deleted, as nothing of it was heard.
    plan = plan_barge_in(tracker, "resp", ("a", 0), now=0.0, response_items_of=items)
    assert plan.truncation is None and plan.deletions == (("a", 0),)


def test_before_the_playout_delay_is_measured_audio_placed_from_its_send_is_not_counted() -> None:
    """The round trip is known (a probe) but no response has been echoed yet: Twilio's playout start
    delay is unknown, so nothing of the first response counts as heard until its first echo (an
    over-claim of that delay otherwise); the item it may be playing is truncated at 1 ms, not deleted."""
    tracker = PlaybackTracker()
    for _ in range(5):
        tracker.network.round_trip_sample(0.060)
    tracker.audio_received("a", 0, 1100.0)
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    tracker.chunk_sent("a", 0, 8000, now=0.0)
    items = lambda item: [("a", 0)]  # noqa: E731
    assert tracker.played_samples("a", 0, now=0.150) == 0  # with a 0 delay it would be 1200 samples
    plan = plan_barge_in(tracker, "resp", ("a", 0), now=0.150, response_items_of=items)
    assert plan.truncation is not None and plan.truncation.audio_end_ms == 1 and plan.deletions == ()
    # Its first echo measures the delay (60 ms); from then on the clock runs as usual.
    tracker.mark_echoed(first, now=0.030 + 0.060 + 0.100 + 0.030)
    assert tracker.network.playout_delay_s == pytest.approx(0.060)
    assert tracker.played_samples("a", 0, now=0.250) == 800 + 720


def test_the_spread_follows_the_jitter_and_a_step_in_the_round_trip_does_not_inflate_it() -> None:
    rng = random.Random(9)
    estimator = RoundTripEstimator()
    for _ in range(60):
        estimator.round_trip_sample(0.060 + rng.uniform(-0.010, 0.010) + rng.uniform(-0.010, 0.010))
    jitter_only = estimator.spread_s
    assert 0.006 < jitter_only < 0.011  # two ±10 ms trips: sd 8.2 ms
    for _ in range(WINDOW):  # the route changes: 120 ms, same jitter
        estimator.round_trip_sample(0.120 + rng.uniform(-0.010, 0.010) + rng.uniform(-0.010, 0.010))
    assert estimator.round_trip_s == pytest.approx(0.120, abs=0.005)
    assert estimator.spread_s < 1.3 * jitter_only  # one difference saw the step, not the window


def _tracker_30ms_each_way() -> tuple[PlaybackTracker, str, str]:
    """30 ms each way, no jitter, 60 ms playout delay; 100 ms then 1 s of one item sent at 0: the
    first chunk plays 0.090-0.190 (Twilio's clock), its echo is back at 0.220."""
    tracker = PlaybackTracker()
    for _ in range(5):
        tracker.network.round_trip_sample(0.060)
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    last = tracker.chunk_sent("a", 0, 8000, now=0.0)
    tracker.mark_echoed(first, now=0.220)
    return tracker, first, last


def test_the_clears_echo_places_where_playback_was_when_it_landed() -> None:
    """A clear sent at 0.250 was held 25 ms on its way (it landed at 0.305, not 0.280): its echo,
    back at 0.335, says the caller heard up to 0.305 - 0.090 = 215 ms, 25 ms more than the estimate
    made when it left."""
    tracker, _, last = _tracker_30ms_each_way()
    tracker.audio_received("a", 0, 1100.0)
    at_clear = plan_barge_in(tracker, "resp", ("a", 0), now=0.250).truncation
    assert at_clear is not None and at_clear.audio_end_ms == 190
    tracker.cleared(now=0.250)
    assert tracker.clears.awaiting(tracker.clears.last) and tracker.clears.heard("a", 0) is None
    assert not tracker.mark_echoed(last, now=0.305 + 0.030)
    assert not tracker.clears.awaiting(tracker.clears.last)
    assert tracker.clears.heard("a", 0) == 215 * 8
    assert tracker.clears.heard("b", 0) is None  # not reached: nothing to say of it
    refined = refine_truncation(at_clear, tracker.clears.heard("a", 0) / 8, tracker.received_ms("a", 0))
    assert refined.audio_end_ms == 215
    tracker.cleared(now=0.5)  # the next clear forgets it
    assert tracker.clears.heard("a", 0) is None


def test_the_clears_echo_keeps_a_margin_for_its_own_jitter() -> None:
    rng = random.Random(2)
    tracker = PlaybackTracker()
    for _ in range(31):
        tracker.network.round_trip_sample(0.060 + rng.uniform(-0.010, 0.010) + rng.uniform(-0.010, 0.010))
    tracker.network.first_echo_sample(0.060 + 0.060 + 0.100, 0.100)
    first = tracker.chunk_sent("a", 0, 800, now=0.0)
    last = tracker.chunk_sent("a", 0, 8000, now=0.0)
    tracker.mark_echoed(first, now=0.220)
    tracker.cleared(now=0.250)
    tracker.mark_echoed(last, now=0.335)
    margin = tracker.network.echo_margin_s
    assert 0.005 < margin < 0.030
    assert tracker.clears.heard("a", 0) == pytest.approx((0.305 - margin - 0.090) * 8000, abs=8 * 4)


@pytest.mark.parametrize(
    ("at_clear", "heard_ms", "received_ms", "expected"),
    [
        (190, None, 1100.0, 190),  # no echo: the estimate made when the clear left
        (190, 215.7, 1100.0, 215),  # the echo places it later: floored
        (190, 150.0, 1100.0, 150),  # or earlier: the echo knows the clear's trip, the estimate guessed it
        (190, 1500.0, 1100.0, 1100),  # never past what the model sent
        (190, 0.4, 1100.0, 1),  # the item was reached: never 0
    ],
)
def test_a_truncation_is_replaced_by_the_echos_placement_within_the_item(at_clear, heard_ms, received_ms, expected) -> None:
    t = Truncation("a", 0, at_clear)
    assert refine_truncation(t, heard_ms, received_ms).audio_end_ms == expected


def test_the_clears_echo_places_the_clear_even_when_it_reached_no_audio_of_the_item() -> None:
    """The echo came back before the echoes' clock reached the second item: the clear is placed (a
    held truncate need not wait for its deadline) and there is nothing to say of that item."""
    tracker, _, last = _tracker_30ms_each_way()
    tracker.cleared(now=0.1)
    assert not tracker.clears.placed(tracker.clears.last)
    tracker.mark_echoed(last, now=0.16)
    assert tracker.clears.placed(tracker.clears.last) and tracker.clears.heard("b", 0) is None
