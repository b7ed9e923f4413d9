"""Twilio's round trip and playout start delay, measured online from mark echoes (pure: no I/O).

Three kinds of samples, all taken by `PlaybackTracker`:

- a probe: a mark sent while nothing plays (nothing before it in Twilio's buffer) is echoed as
  soon as it arrives, so send → echo is one round trip;
- a `clear`: Twilio returns every pending mark at once when the `clear` arrives, so the last of
  them comes back one round trip after the `clear` left (taken only when that mark's audio
  could not have finished playing by then, i.e. it was surely released by the `clear`);
- a response's first echo: audio sent into an empty buffer is echoed after one round trip, the
  playout start delay and its own length, so, once the round trip is known, it gives the playout
  start delay.

Each estimate is the median of the last few samples: jitter and a delivery burst (a stall that
holds an echo back) move it little, and a round trip that changes during the call is followed
within half a window of samples. The lead used for barge-in is the round trip less a margin for
the jitter the `clear` itself will meet: erring short keeps over-claims rare. Before any sample the round trip and the playout delay are taken as 0,
which is exactly the accounting without a network model.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

WINDOW = 21  # samples each estimate is taken from
MAX_ROUND_TRIP_S = 3.0  # longer is not a network delay (a stalled peer, a lost echo): ignored
# The caller must not be said to have heard what they did not. The clear's own delay varies as
# the samples do and cannot be known when it leaves, so the lead is the median round trip less
# LEAD_SPREADS spreads; audio placed from its send time (no echo yet) carries its own trip's jitter
# as well, and starts GAP_SPREADS spreads later still.
LEAD_SPREADS = 1.2
# Playback advances in steps (5 ms in the simulator, 20 ms frames at Twilio): at least this much
# uncertainty about whether an item has begun to play when the clear lands.
MIN_UNCERTAINTY_S = 0.005
GAP_SPREADS = 0.5


class RoundTripEstimator:
    """The round trip to Twilio and back, and Twilio's playout start delay, for one call."""

    def __init__(self, window: int = WINDOW, on_sample: Callable[[float], None] | None = None) -> None:
        self.on_sample = on_sample  # told each round-trip sample taken (the metric)
        self._round_trips: deque[float] = deque(maxlen=window)
        self._playout: deque[float] = deque(maxlen=window)
        self.samples = 0  # round-trip samples taken in all

    def round_trip_sample(self, seconds: float) -> bool:
        """A measured round trip (probe or clear); False if it is not plausible and was ignored."""
        if not 0.0 <= seconds <= MAX_ROUND_TRIP_S:
            return False
        self._round_trips.append(seconds)
        self.samples += 1
        if self.on_sample is not None:
            self.on_sample(seconds)
        return True

    def first_echo_sample(self, echo_after_s: float, audio_s: float) -> bool:
        """A chunk of `audio_s` sent into an empty buffer was echoed `echo_after_s` after it was sent."""
        if self.round_trip_s is None or not 0.0 <= echo_after_s <= MAX_ROUND_TRIP_S + audio_s + 1.0:
            return False
        self._playout.append(max(0.0, echo_after_s - audio_s - self.round_trip_s))
        return True

    @property
    def round_trip_s(self) -> float | None:
        """The current estimate, or None before the first sample."""
        return statistics.median(self._round_trips) if self._round_trips else None

    @property
    def has_playout_delay(self) -> bool:
        """Measured at least once (it may be 0)."""
        return bool(self._playout)

    @property
    def playout_delay_s(self) -> float:
        return statistics.median(self._playout) if self._playout else 0.0

    @property
    def spread_s(self) -> float:
        """How much the round trip varies: a robust standard deviation (interquartile range / 1.35)
        of the samples; with under 4 samples, a guess of 15 % of the round trip."""
        rtt = self.round_trip_s
        if rtt is None:
            return 0.0
        if len(self._round_trips) < 4:
            return 0.15 * rtt
        low, _, high = statistics.quantiles(self._round_trips, n=4)
        return (high - low) / 1.349

    @property
    def uncertainty_s(self) -> float:
        """How much further than the lead playback may be when a clear lands (the lead errs short)."""
        rtt = self.round_trip_s
        return 0.0 if rtt is None else max(MIN_UNCERTAINTY_S, rtt - self.lead_s + 1.5 * self.spread_s)

    @property
    def lead_s(self) -> float:
        """How far the caller's ear is ahead of the echoes when a `clear` lands: about one round
        trip, erring short by the jitter the clear itself may meet (see LEAD_SPREADS)."""
        rtt = self.round_trip_s
        return 0.0 if rtt is None else max(0.0, rtt - LEAD_SPREADS * self.spread_s)

    @property
    def gap_margin_s(self) -> float:
        """How much later than estimated audio sent into an empty buffer is taken to start."""
        return GAP_SPREADS * self.spread_s

