"""Twilio's outbound buffer as the caller experiences it (pure: the simulator's exact clock)."""

from __future__ import annotations

from collections import deque

MULAW_SILENCE = 0xFF


class PlayoutBuffer:
    """Plays queued media in order and releases each mark once the audio before it has played.

    `clear()` drops the queued audio and releases every pending mark at once, as Twilio does.
    """

    def __init__(self, playout_delay_samples: int = 0) -> None:
        # Audio that arrives into an empty buffer starts playing only after this many samples of
        # silence (Twilio's playout start delay); marks behind it wait too.
        self.playout_delay_samples = playout_delay_samples
        self._delay_left = 0
        self.last_step_delay = 0  # samples of the last `play` spent in the playout start delay
        self._queue: deque[bytes | str] = deque()  # bytes: audio; str: a mark name
        self._head_offset = 0  # bytes of the head audio segment already played
        self.played_samples = 0
        self.cleared_samples = 0
        # Samples played since the buffer last went from empty to playing: with a model that
        # streams faster than real time, that is "how much of this response was heard".
        self.segment_played_samples = 0

    @property
    def queued_samples(self) -> int:
        total = sum(len(entry) for entry in self._queue if isinstance(entry, bytes))
        return total - self._head_offset

    def add_media(self, mulaw: bytes) -> None:
        if mulaw:
            if self.queued_samples == 0:
                self.segment_played_samples = 0
                self._delay_left = self.playout_delay_samples
            self._queue.append(mulaw)

    def add_mark(self, name: str) -> list[str]:
        """Queue a mark; returns it at once if nothing is left to play before it."""
        if not any(isinstance(entry, bytes) for entry in self._queue):
            return [name]
        self._queue.append(name)
        return []

    def clear(self) -> list[str]:
        marks = [entry for entry in self._queue if isinstance(entry, str)]
        self.cleared_samples += self.queued_samples
        self._queue.clear()
        self._head_offset = 0
        self._delay_left = 0
        return marks

    def play(self, samples: int) -> tuple[bytes, int, list[str]]:
        """Play up to `samples`: (audio padded with silence, samples of real audio, marks reached)."""
        out = bytearray()
        marks: list[str] = []
        waiting = min(self._delay_left, samples) if self._queue else 0
        self._delay_left -= waiting
        self.last_step_delay = waiting
        out += bytes([MULAW_SILENCE]) * waiting
        while self._queue:
            head = self._queue[0]
            if isinstance(head, str):
                marks.append(self._queue.popleft())
                continue
            if len(out) == samples:
                break
            take = min(samples - len(out), len(head) - self._head_offset)
            out += head[self._head_offset : self._head_offset + take]
            self._head_offset += take
            if self._head_offset == len(head):
                self._queue.popleft()
                self._head_offset = 0
        real = len(out) - waiting
        self.played_samples += real
        self.segment_played_samples += real
        out += bytes([MULAW_SILENCE]) * (samples - len(out))
        return bytes(out), real, marks
