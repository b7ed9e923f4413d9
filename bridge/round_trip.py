"""Twilio's round trip and playout start delay, measured online from mark echoes (pure: no I/O).

Three kinds of samples, all taken by `PlaybackTracker`:

- a probe: a mark sent while nothing plays (nothing before it in Twilio's buffer) is echoed as
  soon as it arrives, so send → echo is one round trip;
- a `clear`: Twilio returns every pending mark at once when the `clear` arrives, so the last of
  them comes back one round trip after the `clear` left (taken only when that mark's audio
  could not have finished playing by then, i.e. it was surely released by the `clear`);
- a response's first echo: audio sent into an empty buffer is echoed after one round trip, the
  playout start delay and its own length; kept as round trip + playout delay, and the delay is that
  less the current round trip estimate (until one is measured, `PlaybackTracker` counts no audio
  placed from its send time).

A sample's echo is placed by the caller's media frames where they allow (`bridge.uplink_clock`),
which takes most of the uplink trip's jitter out of it: the spread is then mostly the downlink's,
the trip the `clear` itself will make.

Each estimate is the median of the last few samples: jitter and a delivery burst (a stall that
holds an echo back) move it little, and a round trip that changes during the call is followed
within half a window of samples. The lead used for barge-in is the round trip less a margin for
the jitter the `clear` itself will meet: erring short keeps over-claims rare. Before any sample
the round trip and the playout delay are taken as 0, which is exactly the accounting without a
network model.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable

WINDOW = 31  # samples each estimate is taken from
# The jitter (spread) is taken from the differences between successive samples over a longer
# window: it changes slowly, an IQR of few samples moves the lead by a fair share of the jitter
# itself, and a step in the round trip (a route change) spoils one difference, not the window.
SPREAD_WINDOW = 3 * WINDOW
MEDIAN_ABS_DIFF_PER_SD = 0.954  # median |x - y| of two independent normal samples, in standard deviations
MAX_ROUND_TRIP_S = 3.0  # longer is not a network delay (a stalled peer, a lost echo): ignored
# The caller must not be said to have heard what they did not. The clear's own one-way delay
# cannot be known when it leaves: with uniform jitter ±j on it, any estimate over-claims in at most
# 5 % of barge-ins only if it errs short by about 0.9 j on average (and then |error| p95 is at
# least about 1.8 j). So the lead is the median round trip less LEAD_SPREADS spreads (a spread is
# ~0.8 j for two ±j trips) less the error of that median. Audio placed from its send time (no
# echo of it yet) also carries its own trip's unknown jitter: the difference of two ±j trips needs
# ~1.4 j (GAP_SPREADS spreads) for the same 5 %; in that case the lead cancels out, and the
# margin is GAP_SPREADS spreads and the error of the playout delay's estimate.
# The theory's 1.1 spreads (0.9 j) left out the echo-anchored clock's own error, which is larger
# since a response's first frame has a mark of its own (its clock rests on fewer echoes): 1.7
# spreads kept over-claims near 5 % under the benchmark's network (BENCHMARKS.md, issue 14).
# ECHO_SPREADS is the same margin for the one uplink trip of the clear's echo (`echo_margin_s`).
LEAD_SPREADS = 1.7
GAP_SPREADS = 1.7
ECHO_SPREADS = 2.2
# Playback advances in steps (5 ms in the simulator, 20 ms frames at Twilio): at least this much
# uncertainty about whether an item has begun to play when the clear lands.
MIN_UNCERTAINTY_S = 0.005


class RoundTripEstimator:
    """The round trip to Twilio and back, and Twilio's playout start delay, for one call."""

    def __init__(self, window: int = WINDOW, on_sample: Callable[[float], None] | None = None) -> None:
        self.on_sample = on_sample  # told each round-trip sample taken (the metric)
        self._round_trips: deque[float] = deque(maxlen=window)
        self._diffs: deque[float] = deque(maxlen=SPREAD_WINDOW)  # |successive samples' difference|
        self._playout: deque[float] = deque(maxlen=window)
        self.samples = 0  # round-trip samples taken in all

    def round_trip_sample(self, seconds: float) -> bool:
        """A measured round trip (probe or clear); False if it is not plausible and was ignored."""
        if not 0.0 <= seconds <= MAX_ROUND_TRIP_S:
            return False
        if self._round_trips:
            self._diffs.append(abs(seconds - self._round_trips[-1]))
        self._round_trips.append(seconds)
        self.samples += 1
        if self.on_sample is not None:
            self.on_sample(seconds)
        return True

    def first_echo_sample(self, echo_after_s: float, audio_s: float) -> bool:
        """A chunk of `audio_s` sent into an empty buffer was echoed `echo_after_s` after it was sent."""
        if self.round_trip_s is None or not 0.0 <= echo_after_s <= MAX_ROUND_TRIP_S + audio_s + 1.0:
            return False
        # Kept as round trip + playout delay: the delay is taken against the round trip of the
        # moment it is used, not the (perhaps still rough) one of the moment it was measured.
        self._playout.append(echo_after_s - audio_s)
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
        rtt = self.round_trip_s
        if not self._playout or rtt is None:
            return 0.0
        return max(0.0, statistics.median(self._playout) - rtt)

    def _median_error_s(self, samples: int) -> float:
        """The standard error of a median of `samples` samples (1.25 sd / sqrt(n))."""
        return 1.25 * self.spread_s / math.sqrt(samples) if samples else 0.0

    @property
    def spread_s(self) -> float:
        """How much the round trip varies: a robust standard deviation, from the median difference
        between successive samples (see SPREAD_WINDOW); with under 4 samples, a guess of 15 % of
        the round trip."""
        rtt = self.round_trip_s
        if rtt is None:
            return 0.0
        if len(self._diffs) < 3:
            return 0.15 * rtt
        return statistics.median(self._diffs) / MEDIAN_ABS_DIFF_PER_SD

    @property
    def uncertainty_s(self) -> float:
        """How much further than the lead playback may be when a clear lands (the lead errs short)."""
        rtt = self.round_trip_s
        return 0.0 if rtt is None else max(MIN_UNCERTAINTY_S, rtt - self.lead_s + self.gap_margin_s + 1.5 * self.spread_s)

    @property
    def lead_s(self) -> float:
        """How far the caller's ear is ahead of the echoes when a `clear` lands: about one round
        trip, erring short by the jitter the clear itself may meet (see LEAD_SPREADS)."""
        rtt = self.round_trip_s
        if rtt is None:
            return 0.0
        return max(0.0, rtt - LEAD_SPREADS * self.spread_s - self._median_error_s(len(self._round_trips)))

    @property
    def echo_margin_s(self) -> float:
        """How much earlier than its echo's arrival less the echoes' own delay an event at Twilio is
        taken to be: the jitter of that one echo's trip, as `lead_s` allows for the clear's."""
        if self.round_trip_s is None:
            return 0.0
        return ECHO_SPREADS * self.spread_s + self._median_error_s(len(self._round_trips))

    @property
    def gap_margin_s(self) -> float:
        """How much later than estimated audio sent into an empty buffer is taken to start: its own
        trip's jitter and the clear's, and the error of the playout delay's estimate (a
        difference of two medians)."""
        if not self._playout:
            return GAP_SPREADS * self.spread_s
        return GAP_SPREADS * self.spread_s + self._median_error_s(len(self._playout)) + self._median_error_s(len(self._round_trips))

