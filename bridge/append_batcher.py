"""Caller audio gathered into fewer, larger `input_audio_buffer.append`s (`VOICE_BRIDGE_APPEND_MS`).

Every WebSocket message costs the bridge CPU whatever its size, and the caller's audio is half of
all messages: one append per 20 ms Twilio frame. Gathering frames into longer appends trades CPU
for latency: the model hears each frame up to `append_ms - 20` ms later, so its voice activity
detection (and with it barge-in) reacts that much later. The default, 20 ms, sends every frame as
it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_codecs import MULAW_BYTES_PER_MS, TWILIO_FRAME_MS

from .append_limits import MAX_APPEND_MS, check_append_ms

__all__ = ["MAX_APPEND_MS", "MULAW_BYTES_PER_MS", "TWILIO_FRAME_MS", "AppendBatcher", "Batch", "check_append_ms"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Audio ready for one append: `frames` Twilio frames, the last of them taken in at `completed_at`."""

    audio: bytes
    frames: int
    completed_at: float


class AppendBatcher:
    """Collects μ-law frames until they hold `append_ms` of audio."""

    def __init__(self, append_ms: int = TWILIO_FRAME_MS) -> None:
        check_append_ms(append_ms)
        self.append_ms = append_ms
        self._batch_bytes = append_ms * MULAW_BYTES_PER_MS
        self._frames: list[bytes] = []
        self._size = 0

    def add(self, frame: bytes, arrived_at: float) -> Batch | None:
        """Take one frame; the batch once it holds `append_ms` of audio, else None."""
        if not self._frames and len(frame) >= self._batch_bytes:
            return Batch(frame, 1, arrived_at)  # the default: every frame is an append
        self._frames.append(frame)
        self._size += len(frame)
        if self._size < self._batch_bytes:
            return None
        batch = Batch(b"".join(self._frames), len(self._frames), arrived_at)
        self.clear()
        return batch

    @property
    def pending_ms(self) -> float:
        """Audio held back, waiting for the rest of its batch."""
        return self._size / MULAW_BYTES_PER_MS

    def clear(self) -> None:
        """Forget what is held back (the session it was meant for is gone)."""
        self._frames = []
        self._size = 0
