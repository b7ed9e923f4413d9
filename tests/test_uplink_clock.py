"""Twilio's clock from the caller's media frames (bridge/uplink_clock.py), without sockets.

Messages cross a simulated uplink (the phone simulator's own `DelayLine`: uniform jitter, in
order as over TCP) behind 20 ms frames stamped as Twilio stamps them; the placement of each is
checked against the moment it was really sent.
"""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings, strategies as st

from bridge.devtools.phone.network import DelayLine, NetworkProfile
from bridge.uplink_clock import FRAME_S, MIN_FRAMES, STALE_S, UplinkClock


def _uplink(delay_ms: float, jitter_ms: float, seed: int) -> DelayLine[tuple[str, float]]:
    return DelayLine(NetworkProfile(delay_ms=delay_ms, jitter_ms=jitter_ms), random.Random(seed))


def _through(line: DelayLine[tuple[str, float]], sends: list[tuple[str, float]]) -> list[tuple[float, str, float]]:
    """(arrival, kind, sent) of each message, in the order the line delivers them."""
    for kind, at in sorted(sends, key=lambda s: s[1]):
        line.send((kind, at), at)
    out = []
    while (due := line.next_due()) is not None:
        out += [(due, kind, at) for kind, at in line.due(due)]
    return out


def _run(delay_ms: float, jitter_ms: float, seed: int = 1, frames: int = 600) -> list[tuple[float, float, object]]:
    """Frames every 20 ms and, now and then, a message sent between two of them; returns, for each
    message, (when it was sent, when it arrived, its placement)."""
    rng = random.Random(seed + 100)
    line = _uplink(delay_ms, jitter_ms, seed)
    sends: list[tuple[str, float]] = []
    for k in range(frames):
        sends.append(("frame", k * FRAME_S))
        if k > MIN_FRAMES + 5 and k % 7 == 0:
            sends.append(("echo", k * FRAME_S + rng.uniform(0.0, FRAME_S)))
    deliveries = _through(line, sends)
    clock = UplinkClock()
    out = []
    for arrived, kind, sent in deliveries:
        if kind == "frame":
            clock.media(round(sent * 1000), arrived)
        else:
            out.append((sent, arrived, clock.place(arrived)))
    return out


def test_no_placement_before_enough_frames_or_after_they_stop() -> None:
    clock = UplinkClock()
    for k in range(MIN_FRAMES - 1):
        clock.media(k * 20, 0.03 + k * FRAME_S)
    assert clock.place(0.03 + MIN_FRAMES * FRAME_S) is None
    clock.media((MIN_FRAMES - 1) * 20, 0.03 + (MIN_FRAMES - 1) * FRAME_S)
    last = 0.03 + (MIN_FRAMES - 1) * FRAME_S
    assert clock.place(last + 0.005) is not None
    assert clock.place(last + STALE_S + 0.01) is None  # frames stopped: the bracket's end is unknown


def test_a_stamp_that_does_not_move_forward_is_not_a_frame() -> None:
    clock = UplinkClock()
    clock.media(100, 1.0)
    clock.media(100, 1.02)
    clock.media(80, 1.04)
    assert clock.frames == 1


@pytest.mark.parametrize(("delay_ms", "jitter_ms", "better"), [(30.0, 10.0, 1.3), (60.0, 20.0, 2.0)])
def test_the_frames_place_a_message_far_better_than_its_arrival(delay_ms: float, jitter_ms: float, better: float) -> None:
    """On the scale of arrivals a message sent at t is at t + the median delay (which the order
    kept, as over TCP, makes a little longer than the line's own): its arrival is off by its
    own jitter, the placement by less (the bracket is one frame, 20 ms, whatever the jitter), and
    `early` rarely errs long."""
    results = [(sent, arrived, p) for sent, arrived, p in _run(delay_ms, jitter_ms) if p is not None]
    assert len(results) > 60
    by_arrival = [arrived - sent for sent, arrived, _ in results]
    by_frames = [p.likely - sent for sent, _, p in results]  # type: ignore[attr-defined]
    median = statistics.median(by_frames)
    assert abs(median - statistics.median(by_arrival)) < jitter_ms / 1000 / 2
    arrival_error = statistics.mean(abs(e - statistics.median(by_arrival)) for e in by_arrival)
    frames_error = statistics.mean(abs(e - median) for e in by_frames)
    assert arrival_error > jitter_ms / 1000 / 2 * 0.8
    assert frames_error < arrival_error / better
    late = sum(1 for sent, _, p in results if p.early - median > sent + 0.001)  # type: ignore[attr-defined]
    assert late <= 0.1 * len(results)
    assert all(p.early <= p.likely for _, _, p in results)  # type: ignore[attr-defined]


def test_messages_sent_together_place_their_moment_better_than_one() -> None:
    """A clear releases its marks at once: the joint placement is narrower and still holds the moment."""
    line = _uplink(60.0, 20.0, seed=9)
    clock = UplinkClock()
    sends = [("frame", k * FRAME_S) for k in range(200)]
    moment = 150 * FRAME_S + 0.007
    sends += [("echo", moment)] * 5
    placements = []
    for arrived, kind, sent in _through(line, sends):
        if kind == "frame":
            clock.media(round(sent * 1000), arrived)
        else:
            placements.append(clock.place(arrived))
    assert all(p is not None for p in placements)
    joint = placements[0]
    for other in placements[1:]:
        joint &= other
    width = lambda p: p.likely - p.early  # noqa: E731
    assert width(joint) <= width(placements[0])
    assert joint.low <= moment + 0.060 <= joint.low + FRAME_S


def test_a_message_behind_a_stall_is_not_placed() -> None:
    """Later than any delay seen explains (a stall held it): the caller falls back to its arrival."""
    clock = UplinkClock()
    for k in range(100):
        clock.media(k * 20, 0.030 + k * FRAME_S)
    assert clock.place(0.030 + 99 * FRAME_S + 0.150) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**15), st.floats(-1e6, 1e6, allow_nan=False)), max_size=200),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_any_frames_a_peer_sends_give_a_placement_inside_its_bracket_or_none(frames, now) -> None:
    """Stamps and arrivals from a peer that does not behave (out of order, huge, far apart):
    never an exception, and a placement, if any, has early <= likely within one frame after its start."""
    clock = UplinkClock()
    for stamp, arrived in frames:
        clock.media(stamp, arrived)
    placement = clock.place(now)
    assert clock.spread_s >= 0.0
    if placement is not None:
        assert placement.low <= placement.early <= placement.likely <= placement.low + FRAME_S + 1e-9
