"""The chunks sent to Twilio and when each plays, on the clock of the echoes (pure: no I/O).

Shared by the playback accounting (`bridge.playback`) and the placement of a clear by its echo
(`bridge.clear_placement`): a chunk starts when the one before it ends, or, sent into an empty
buffer, one round trip and the playout start delay after it was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ItemKey = tuple[str, int]  # (item_id, content_index)
MIN_WEIGHT = 0.1  # the newest echo's least share in the echoes' clock, to follow a drift
SNAP_S = 0.015  # an echo this far from the clock's prediction (or 4 spreads) restarts the clock


@dataclass(frozen=True, slots=True)
class SentChunk:
    mark_name: str
    seq: int
    item: ItemKey
    samples: int
    item_samples_after: int  # the item's samples sent up to and including this chunk
    sent_at: float
    into_empty: bool  # nothing was pending: Twilio's buffer was empty when it arrived


def chunk_starts(
    chunks: Iterable[SentChunk],
    anchor: float | None,
    sample_rate: int,
    round_trip: float,
    playout: float,
    gap_margin: float = 0.0,
) -> Iterator[tuple[SentChunk, float]]:
    """Each unconfirmed chunk with when it starts, on the clock of the echoes: a chunk's echo is
    due when the next one starts; one that arrives into an empty buffer starts after the playout
    start delay. With `round_trip`/`playout` 0 that is the send clock."""
    free_at = anchor
    for chunk in chunks:
        if free_at is None or chunk.sent_at + round_trip >= free_at:
            started = chunk.sent_at + round_trip + playout + gap_margin
        else:
            started = free_at
        yield chunk, started
        free_at = started + chunk.samples / sample_rate


def heard_at(starts: Iterator[tuple[SentChunk, float]], at: float, sample_rate: int) -> Iterator[tuple[SentChunk, int]]:
    """The chunks playback has reached by `at` (the echoes' clock), each with its samples heard."""
    for chunk, started in starts:
        heard = int(max(0.0, at - started) * sample_rate + 1e-6)
        yield chunk, min(heard, chunk.samples)
        if heard < chunk.samples:
            return


def running_mean(predicted: float, echoed: float, echoes: int, spread: float) -> tuple[float, int]:
    """The echoes' clock after one more echo, and the echoes it now rests on: the echo (due at
    `echoed`) weighed against the clock's prediction by the running mean of the `echoes` already in
    it (at least `MIN_WEIGHT`). One that surprises by more than the jitter explains (a stall, a gap
    the clock did not see) is taken as is, and the clock starts afresh from it."""
    surprise = echoed - predicted
    if abs(surprise) > max(SNAP_S, 4 * spread):
        return echoed, 1
    return predicted + max(1.0 / (echoes + 1), MIN_WEIGHT) * surprise, echoes + 1
