"""The network between Twilio and the bridge, as the phone simulator models it (pure: clock and seed injected).

One `DelayLine` per direction. Each message gets a one-way delay drawn uniformly from
`delay ± jitter` (never below zero) and is delivered no sooner than the message before it, as
over TCP: a late message holds back the ones behind it. Now and then the line stalls (a lost
segment being retransmitted, a busy router) and releases everything held during the stall at
once: a delivery burst. Stall starts are a Poisson process (`burst_every_s` apart on average),
each lasting `burst_ms`; both come from the seeded random generator, so a run can be repeated.

The async shell in `bridge.devtools.phone.simulator` only moves messages through these lines at their
delivery times; everything here is decided from the `now` it is given.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """The simulated network between Twilio's media servers and the bridge (milliseconds).

    `delay_ms` and `jitter_ms` apply to each direction; `playout_delay_ms` is how long Twilio
    waits before it starts playing audio that arrives into an empty buffer.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    playout_delay_ms: float = 0.0
    burst_every_s: float = 0.0  # mean time between stalls per direction; 0: no stalls
    burst_ms: float = 0.0  # how long each stall holds the line
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "playout_delay_ms", "burst_every_s", "burst_ms"):
            value = getattr(self, name)
            if not 0.0 <= value < 60_000.0:
                raise ValueError(f"{name} must be between 0 and 60000, not {value}")

    @property
    def is_direct(self) -> bool:
        """No network at all: the simulator talks to the socket directly, as before."""
        return self.delay_ms == 0 and self.jitter_ms == 0 and self.burst_ms == 0

    @classmethod
    def realistic(cls, delay_ms: float = 30.0, seed: int = 0) -> NetworkProfile:
        """The benchmarks' default: jitter a third of the delay, 60 ms playout start delay, and a
        40 ms stall about every 10 s in each direction."""
        return cls(delay_ms, delay_ms / 3.0, 60.0, 10.0 if delay_ms else 0.0, 40.0 if delay_ms else 0.0, seed)


class DelayLine(Generic[T]):
    """Messages in, the same messages out in order, each at its delivery time."""

    def __init__(self, profile: NetworkProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng
        self._queue: deque[tuple[float, T]] = deque()
        self._last_delivery = float("-inf")
        self._stall: tuple[float, float] | None = None  # (start, end) of the next or current stall
        self._origin: float | None = None

    def send(self, message: T, now: float) -> float:
        """Put `message` on the line at `now`; returns when it will be delivered."""
        p = self.profile
        delay = max(0.0, p.delay_ms + self._rng.uniform(-p.jitter_ms, p.jitter_ms)) / 1000.0
        at = max(now + delay, self._last_delivery)
        at = self._after_stalls(at, now)
        self._last_delivery = at
        self._queue.append((at, message))
        return at

    def due(self, now: float) -> list[T]:
        """Every message whose delivery time has come, in order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(self._queue.popleft()[1])
        return out

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)

    def _after_stalls(self, at: float, now: float) -> float:
        """A delivery that falls inside a stall waits for its end (with all the others held)."""
        p = self.profile
        if p.burst_every_s <= 0 or p.burst_ms <= 0:
            return at
        if self._origin is None:
            self._origin = now
            self._stall = self._next_stall(now)
        assert self._stall is not None
        while self._stall[1] <= at:  # that stall was over before this delivery: on to the next
            self._stall = self._next_stall(self._stall[1])
        start, end = self._stall
        return end if start <= at else at

    def _next_stall(self, after: float) -> tuple[float, float]:
        start = after + self._rng.expovariate(1.0 / self.profile.burst_every_s)
        return start, start + self.profile.burst_ms / 1000.0
