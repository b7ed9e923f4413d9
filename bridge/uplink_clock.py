"""When Twilio sent a message, from where it falls among the caller's media frames (pure: no I/O).

Twilio sends the caller's audio as a 20 ms frame every 20 ms, each stamped with its place in the
stream (`media.timestamp`), and everything it sends (frames, mark echoes) comes over one
WebSocket, in order. So a mark echo that arrives after frame k and before frame k+1 was sent
between those two frames: on Twilio's own clock it is known to within one frame, whatever the
network's jitter did to it on the way. Its arrival time alone places it only to within that
jitter, which on a real network is larger (±20 ms at 60 ms one way).

Both are used. The frames' arrival less their timestamps (the offset) spreads exactly as the
uplink's one-way delay does, so the last few seconds of offsets are a sample of that delay's
distribution. A message arriving at `now` was sent at some time t inside its frame bracket, every
t equally likely a priori, and each t is weighed by how many of the delays seen (within
`KERNEL_S`) would have brought it in at `now`. The median of that is the best estimate
(`Placement.likely`) and a low quantile a bound that errs short (`Placement.early`). Times are on
the scale of arrivals (Twilio's clock plus the median uplink delay), so a placement can stand in
for an arrival time anywhere the bridge uses one.

A message that came in right behind the one before it may have been held back by it (in order, as
over TCP): its arrival then only says it was sent early enough to arrive by then.

No placement (None) before enough frames have come, when frames have stopped, or when no delay
seen explains the arrival within the bracket (a stall, a route change, frames not sent at
Twilio's steady pace): the caller then uses the arrival time, as without this clock.
"""

from __future__ import annotations

import bisect
import statistics
from collections import deque
from dataclasses import dataclass

FRAME_S = 0.02  # Twilio's media frames: 20 ms of 8 kHz μ-law, one every 20 ms
WINDOW = 150  # frames (3 s) whose offsets sample the uplink's delay
MIN_FRAMES = 25  # fewer: no placement yet
STALE_S = 0.5  # no frame for this long: frames have stopped, the bracket's upper end is not known
EARLY_QUANTILE = 0.025  # `Placement.early`: the send time is earlier than this in 2.5 % of cases
GRID = 40  # the bracket is weighed at FRAME_S / GRID steps (0.5 ms)
KERNEL_S = 0.002  # each delay seen stands for those within this of it
HELD_S = 0.001  # a message this soon after the one before it may have been held back by it


@dataclass(frozen=True, slots=True)
class Placement:
    """When a message was sent: how likely each point of its frame bracket is (`low` on, in steps
    of FRAME_S / GRID), on the scale of arrivals."""

    low: float
    weights: tuple[float, ...]  # GRID + 1 of them, summing to 1

    @property
    def likely(self) -> float:
        """The best estimate (the median)."""
        return self._quantile(0.5)

    @property
    def early(self) -> float:
        """A bound that errs short: the message was sent before it in EARLY_QUANTILE of cases."""
        return self._quantile(EARLY_QUANTILE)

    def __and__(self, other: Placement) -> Placement:
        """The placement of a message sent at the same moment as two that were placed: messages
        Twilio sent together (a `clear` releases its marks at once) place that moment better
        than one of them. Itself if the two cannot have been sent together."""
        if other.low != self.low:
            return self
        joint = [a * b for a, b in zip(self.weights, other.weights, strict=True)]
        total = sum(joint)
        return Placement(self.low, tuple(w / total for w in joint)) if total > 0 else self

    def _quantile(self, q: float) -> float:
        running = 0.0
        for j, w in enumerate(self.weights):
            running += w
            if running >= q - 1e-12:
                return self.low + FRAME_S * j / GRID
        return self.low + FRAME_S


class UplinkClock:
    """Twilio's clock as the caller's media frames show it, for one call."""

    def __init__(self, window: int = WINDOW) -> None:
        self._offsets: deque[float] = deque(maxlen=window)
        self._last_stamp_s: float | None = None
        self._last_frame_at: float | None = None
        self._last_arrival = float("-inf")  # of anything from Twilio: frames and placed messages
        self.frames = 0

    def media(self, timestamp_ms: int, now: float) -> None:
        """A media frame stamped `timestamp_ms` arrived at `now`. A stamp that does not move forward
        (a replay, a reset) is not a new frame and is ignored."""
        stamp = timestamp_ms / 1000.0
        self._last_arrival = now
        if self._last_stamp_s is not None and stamp <= self._last_stamp_s:
            return
        self._offsets.append(now - stamp)
        self._last_stamp_s = stamp
        self._last_frame_at = now
        self.frames += 1

    @property
    def spread_s(self) -> float:
        """How much the uplink's delay varies: the interquartile range of the frames' offsets (0
        before enough frames)."""
        if len(self._offsets) < MIN_FRAMES:
            return 0.0
        ordered = sorted(self._offsets)
        return ordered[(3 * len(ordered)) // 4] - ordered[len(ordered) // 4]

    def place(self, now: float) -> Placement | None:
        """When a message that arrived at `now` (after every frame seen so far) was sent."""
        held = now - self._last_arrival < HELD_S
        self._last_arrival = now
        if len(self._offsets) < MIN_FRAMES or self._last_stamp_s is None or self._last_frame_at is None:
            return None
        if now - self._last_frame_at > STALE_S:
            return None
        median = statistics.median(self._offsets)
        low = self._last_stamp_s + median  # when the last frame was sent, on the scale of arrivals
        spreads = sorted(offset - median for offset in self._offsets)  # the uplink delay's, about its median
        times = [low + FRAME_S * j / GRID for j in range(GRID + 1)]  # the bracket: up to the next frame
        if held:
            # It came in right behind the message before it, so it may have been held back by it
            # (in order, as over TCP): all its arrival says is that it would have come by `now`.
            weights = [bisect.bisect_right(spreads, now - t) for t in times]
        else:
            weights = [
                bisect.bisect_right(spreads, now - t + KERNEL_S) - bisect.bisect_left(spreads, now - t - KERNEL_S)
                for t in times
            ]
        total = sum(weights)
        if total == 0:
            # No delay seen explains it: a stall held it back, the route changed, or the frames are
            # not as regular as Twilio's. Nothing here is to be trusted.
            return None
        return Placement(low, tuple(w / total for w in weights))
