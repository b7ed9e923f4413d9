"""What waits to be sent to the model, bounded (pure: no I/O, no asyncio).

The caller's pump never waits on a send to the model: it offers events here and goes back to
reading Twilio; one sender task per call drains the queue. When the model stops reading, caller
audio beyond `max_audio` events is refused (the caller counts it as dropped) and memory stays
bounded; control events (cancel, truncate, tool output, keypad text) are few and kept, up to
`max_control`, because losing one would leave the conversation inconsistent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outgoing:
    event: dict[str, object] | str
    frames: int  # caller frames the event carries (0 for control events)
    completed_at: float | None  # perf_counter() when the audio batch was complete (relay latency)


class OutboundQueue:
    """FIFO of events for the model, with separate bounds for audio and control events."""

    def __init__(self, max_audio: int, max_control: int) -> None:
        self.max_audio = max_audio
        self.max_control = max_control
        self._items: deque[Outgoing] = deque()
        self._audio = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: Outgoing) -> bool:
        """Queue `item`; False (and nothing queued) if its kind is at its bound."""
        is_audio = item.frames > 0
        if is_audio and self._audio >= self.max_audio:
            return False
        if not is_audio and len(self._items) - self._audio >= self.max_control:
            return False
        self._items.append(item)
        self._audio += is_audio
        return True

    def pop(self) -> Outgoing | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self._audio -= item.frames > 0
        return item

    def clear(self) -> int:
        """Drop everything queued; returns the caller frames dropped."""
        frames = sum(item.frames for item in self._items)
        self._items.clear()
        self._audio = 0
        return frames


class FrameWindow:
    """Caller audio set aside, with a running count of the frames it carries (pure): the last few
    frames a session was sent (a lead-in for the next), or what is held for a replacement."""

    def __init__(self) -> None:
        self._items: deque[Outgoing] = deque()
        self.frames = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Outgoing, max_frames: int) -> bool:
        """Keep `item` unless the window would carry more than `max_frames`; True if kept."""
        if self.frames + item.frames > max_frames:
            return False
        self._append(item)
        return True

    def keep_last(self, item: Outgoing, frames: int) -> None:
        """Keep `item`, then drop the oldest items the newest `frames` frames do not need."""
        self._append(item)
        while self.frames - self._items[0].frames >= frames:
            self.frames -= self._items.popleft().frames

    def take(self) -> list[Outgoing]:
        """Everything kept, oldest first; the window is empty afterwards."""
        items = list(self._items)
        self._items.clear()
        self.frames = 0
        return items

    def _append(self, item: Outgoing) -> None:
        self._items.append(Outgoing(item.event, item.frames, None))  # relay latency is not measured twice
        self.frames += item.frames
