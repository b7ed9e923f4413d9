"""Playback accounting: how much of each model audio item the caller has actually heard.

Every chunk sent to Twilio is followed by a mark named `<epoch>.<seq>`. Twilio echoes a mark once
the audio before it has played, so an echo confirms exactly how many samples of an item were
heard. Between echoes the clock estimates progress through the chunks Twilio still holds, in
order, from the last echo (or from the send, for a chunk sent into an empty buffer); a chunk never
starts before it was sent, and the estimate never passes what was sent. An echo arrives after
its audio has played (by the network's delay), so the estimate lags the caller's ear by that
delay and must be free to move on into the next chunk — and the next item — without waiting for
it. A `clear` starts a new epoch: Twilio returns every pending mark at once on `clear`, and those
echoes mean "discarded", not "played".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .wire import ascii_uint

ItemKey = tuple[str, int]  # (item_id, content_index)


def parse_mark_name(name: str) -> tuple[int, int] | None:
    """`<epoch>.<seq>` (each 1-15 ASCII digits) → (epoch, seq); None for any other name."""
    epoch_text, dot, seq_text = name.partition(".")
    epoch, seq = ascii_uint(epoch_text), ascii_uint(seq_text)
    if not dot or epoch is None or seq is None:
        return None
    return epoch, seq


@dataclass(frozen=True, slots=True)
class _SentChunk:
    mark_name: str
    seq: int
    item: ItemKey
    samples: int
    item_samples_after: int  # the item's samples sent up to and including this chunk
    sent_at: float


class PlaybackTracker:
    """Sent, confirmed and estimated-played samples per item, for one call (pure: no I/O)."""

    def __init__(self, sample_rate: int = 8000) -> None:
        self.sample_rate = sample_rate
        self.epoch = 0
        self._seq = 0
        self._pending: deque[_SentChunk] = deque()
        self._sent: dict[ItemKey, int] = {}
        self._confirmed: dict[ItemKey, int] = {}
        self._received_ms: dict[ItemKey, float] = {}
        self._last_echo_at: float | None = None

    # --- what happened -------------------------------------------------------------------------

    def audio_received(self, item_id: str, content_index: int, ms: float) -> None:
        """The model sent `ms` more audio for this item (whether or not it reaches the caller)."""
        key = (item_id, content_index)
        self._received_ms[key] = self._received_ms.get(key, 0.0) + ms

    def chunk_sent(self, item_id: str, content_index: int, samples: int, now: float) -> str:
        """Record a chunk sent to Twilio; returns the name of the mark to send right after it."""
        if samples <= 0:
            raise ValueError("a sent chunk has at least one sample")
        key = (item_id, content_index)
        self._seq += 1
        total = self._sent.get(key, 0) + samples
        self._sent[key] = total
        name = f"{self.epoch}.{self._seq}"
        if not self._pending:
            # Twilio's buffer was empty, so this chunk starts playing now, not at the last echo.
            self._last_echo_at = None
        self._pending.append(_SentChunk(name, self._seq, key, samples, total, now))
        return name

    def mark_echoed(self, name: str, now: float) -> bool:
        """Twilio says the audio up to mark `name` has played. False for stale or unknown marks."""
        parsed = parse_mark_name(name)
        if parsed is None or parsed[0] != self.epoch:
            return False
        seq = parsed[1]
        if not any(chunk.seq == seq for chunk in self._pending):
            return False
        while self._pending and self._pending[0].seq <= seq:
            chunk = self._pending.popleft()
            self._confirmed[chunk.item] = chunk.item_samples_after
        self._last_echo_at = now
        return True

    def cleared(self) -> None:
        """Twilio's buffer was emptied: pending audio was never heard, old echoes are stale."""
        self.epoch += 1
        for chunk in self._pending:
            self._sent[chunk.item] = self._confirmed.get(chunk.item, 0)
        self._pending.clear()
        self._last_echo_at = None

    def forget(self, item_id: str, content_index: int) -> None:
        """Drop an old item's counts (a long call must not grow); kept while its audio is pending."""
        key = (item_id, content_index)
        if any(chunk.item == key for chunk in self._pending):
            return
        self._sent.pop(key, None)
        self._confirmed.pop(key, None)
        self._received_ms.pop(key, None)

    @property
    def items_known(self) -> int:
        return len(self._sent.keys() | self._received_ms.keys())

    # --- what follows --------------------------------------------------------------------------

    @property
    def is_playing(self) -> bool:
        """Audio has been sent to Twilio that it has not yet confirmed as played."""
        return bool(self._pending)

    def playing_item(self, now: float) -> ItemKey | None:
        """The item the caller is hearing by now, by the clock through the unconfirmed chunks."""
        chunk = None
        for chunk, _ in self._clock_walk(now):
            pass
        return chunk.item if chunk is not None else None

    def played_samples(self, item_id: str, content_index: int, now: float) -> int:
        """Samples of the item heard by now: confirmed by marks plus the clock's share of what follows."""
        key = (item_id, content_index)
        played = self._confirmed.get(key, 0)
        for chunk, heard in self._clock_walk(now):
            if chunk.item == key:
                played = chunk.item_samples_after - chunk.samples + heard
        return played

    def _clock_walk(self, now: float) -> Iterator[tuple[_SentChunk, int]]:
        """The unconfirmed chunks the clock has reached by `now`, each with its samples heard."""
        if not self._pending:
            return
        free_at = self._last_echo_at if self._last_echo_at is not None else self._pending[0].sent_at
        for chunk in self._pending:
            started = max(free_at, chunk.sent_at)
            heard = int(max(0.0, now - started) * self.sample_rate + 1e-6)
            if heard < chunk.samples or chunk is self._pending[-1]:
                yield chunk, min(heard, chunk.samples)
                return
            yield chunk, chunk.samples
            free_at = started + chunk.samples / self.sample_rate

    def played_ms(self, item_id: str, content_index: int, now: float) -> float:
        return self.played_samples(item_id, content_index, now) * 1000.0 / self.sample_rate

    def received_ms(self, item_id: str, content_index: int) -> float:
        return self._received_ms.get((item_id, content_index), 0.0)

    def sent_samples(self, item_id: str, content_index: int) -> int:
        return self._sent.get((item_id, content_index), 0)
