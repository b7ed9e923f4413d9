"""Twilio sends audio in real time; a peer far ahead of the clock is flooding us."""

from __future__ import annotations


class FloodGuard:
    """Media may run ahead of the wall clock by `max_ahead_ms` (network catch-up), no more;
    and frames of any kind may not come faster than a burst-limited rate."""

    def __init__(self, max_ahead_ms: float = 2000.0, frames_per_s: float = 200.0, frame_burst: int = 400) -> None:
        self.max_ahead_ms = max_ahead_ms
        self.frames_per_s = frames_per_s
        self.frame_burst = frame_burst
        self._started: float | None = None
        self._audio_ms = 0.0
        self._tokens = float(frame_burst)
        self._last: float | None = None

    def admit(self, audio_ms: float, now: float) -> bool:
        """Count one inbound frame carrying `audio_ms` of audio; False once the peer is flooding."""
        if self._started is None:
            self._started = now
        if self._last is not None:
            self._tokens = min(self.frame_burst, self._tokens + (now - self._last) * self.frames_per_s)
        self._last = now
        self._tokens -= 1
        self._audio_ms += audio_ms
        elapsed_ms = (now - self._started) * 1000.0
        return self._tokens >= 0 and self._audio_ms - elapsed_ms <= self.max_ahead_ms
