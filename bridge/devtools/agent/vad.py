"""Energy-based voice activity detection: when the caller starts and stops speaking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class VadEvent:
    started: bool  # True: speech started; False: speech stopped
    at_ms: int  # position in the input audio stream


class EnergyVad:
    """Speech is a run of 20 ms frames above a loudness threshold; silence ends it after a pause."""

    def __init__(
        self,
        sample_rate: int,
        threshold_dbfs: float = -40.0,
        start_ms: int = 60,
        stop_ms: int = 500,
        frame_ms: int = 20,
    ) -> None:
        self._frame = sample_rate * frame_ms // 1000
        self._frame_ms = frame_ms
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self._start_frames = max(1, start_ms // frame_ms)
        self._stop_frames = max(1, stop_ms // frame_ms)
        self._pending = np.zeros(0, dtype=np.int16)
        self._frames_seen = 0
        self._run = 0  # consecutive frames disagreeing with the current state
        self.speaking = False

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        data = np.concatenate([self._pending, samples.astype(np.int16, copy=False)])
        whole = len(data) - len(data) % self._frame
        self._pending = data[whole:]
        events: list[VadEvent] = []
        for frame in data[:whole].reshape(-1, self._frame):
            self._frames_seen += 1
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) >= self._threshold
            self._run = self._run + 1 if loud != self.speaking else 0
            if not self.speaking and self._run >= self._start_frames:
                self.speaking, self._run = True, 0
                events.append(VadEvent(True, (self._frames_seen - self._start_frames) * self._frame_ms))
            elif self.speaking and self._run >= self._stop_frames:
                self.speaking, self._run = False, 0
                events.append(VadEvent(False, (self._frames_seen - self._stop_frames) * self._frame_ms))
        return events
