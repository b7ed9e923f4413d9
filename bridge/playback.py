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

On a real network an echo arrives one uplink delay after its audio played, and a `clear` lands one
downlink delay after it was sent, while the caller goes on hearing: so the position that matters,
where playback will be when the `clear` lands, is the echo-anchored estimate plus one round trip.
A chunk sent into an empty buffer starts when it arrives plus Twilio's playout start delay, which
in the same terms is its send time plus that delay. Both are measured online
(`bridge.round_trip`): probe marks sent while nothing plays, the marks released by a `clear`, and
each response's first echo. Before any measurement both are 0, the accounting without a network.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .round_trip import RoundTripEstimator
from .wire import ascii_uint

ItemKey = tuple[str, int]  # (item_id, content_index)


# Audio of the bridge's own (issue 16: the filler) is accounted like model audio, under an item id
# no model uses, so the model items after it are placed exactly; it is never truncated or deleted.
BRIDGE_ITEM_PREFIX = "bridge."


def is_bridge_item(key: ItemKey | None) -> bool:
    return key is not None and key[0].startswith(BRIDGE_ITEM_PREFIX)


def parse_mark_name(name: str) -> tuple[int, int] | None:
    """`<epoch>.<seq>` (each 1-15 ASCII digits) → (epoch, seq); None for any other name."""
    epoch_text, dot, seq_text = name.partition(".")
    epoch, seq = ascii_uint(epoch_text), ascii_uint(seq_text)
    if not dot or epoch is None or seq is None:
        return None
    return epoch, seq


def is_mark_name(name: str) -> bool:
    """A name the bridge sends as a mark: `<epoch>.<seq>`, or a round-trip probe `rtt.<n>`."""
    if name.startswith(PROBE_PREFIX):
        return ascii_uint(name[len(PROBE_PREFIX):]) is not None
    return parse_mark_name(name) is not None


@dataclass(frozen=True, slots=True)
class _SentChunk:
    mark_name: str
    seq: int
    item: ItemKey
    samples: int
    item_samples_after: int  # the item's samples sent up to and including this chunk
    sent_at: float
    into_empty: bool  # nothing was pending: Twilio's buffer was empty when it arrived


PROBE_PREFIX = "rtt."  # probe marks: "rtt.<n>", sent while nothing plays
PROBE_INTERVAL_S = 1.0  # at most one probe a second
PROBE_LOST_S = 10.0  # a probe not echoed by then is given up (another may be sent)
MIN_WEIGHT = 0.1  # the newest echo's least share in the anchor
SNAP_S = 0.015  # an echo this far from the prediction (or 4 spreads) is taken as is
CLEAR_MARGIN_S = 0.02  # a clear sample is taken only if the mark's audio had this much longer to play


@dataclass(frozen=True, slots=True)
class _ClearSent:
    epoch: str
    last_seq: int  # the newest mark pending when the clear left
    sent_at: float
    would_echo_at: float  # when that mark's echo was expected had there been no clear
    chunks: tuple[_SentChunk, ...]  # what was pending, to place the clear once its echo is back
    anchor: float | None  # the echoes' clock then (`_last_echo_at`)


def _chunk_starts(
    chunks: Iterable[_SentChunk],
    anchor: float | None,
    sample_rate: int,
    round_trip: float,
    playout: float,
    gap_margin: float = 0.0,
) -> Iterator[tuple[_SentChunk, float]]:
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


def _heard_at(
    starts: Iterator[tuple[_SentChunk, float]], at: float, sample_rate: int
) -> Iterator[tuple[_SentChunk, int]]:
    """The chunks playback has reached by `at` (the echoes' clock), each with its samples heard."""
    for chunk, started in starts:
        heard = int(max(0.0, at - started) * sample_rate + 1e-6)
        yield chunk, min(heard, chunk.samples)
        if heard < chunk.samples:
            return


class PlaybackTracker:
    """Sent, confirmed and estimated-played samples per item, for one call (pure: no I/O)."""

    def __init__(self, sample_rate: int = 8000, network: RoundTripEstimator | None = None) -> None:
        self.sample_rate = sample_rate
        self.network = network or RoundTripEstimator()
        self._clear: _ClearSent | None = None
        self._probes = 0
        self._probe_sent_at: float | None = None  # the outstanding probe's send time
        self._last_probe_at = float("-inf")
        self._anchor_weight_n = 1  # echoes averaged into the anchor since the last gap
        self.epoch = 0
        self._seq = 0
        self._pending: deque[_SentChunk] = deque()
        self._sent: dict[ItemKey, int] = {}
        self._confirmed: dict[ItemKey, int] = {}
        self._received_ms: dict[ItemKey, float] = {}
        self._last_echo_at: float | None = None
        self._heard_at_clear: dict[ItemKey, int] | None = None  # placed by the last clear's echo

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
        into_empty = not self._pending
        if into_empty:
            # Twilio's buffer was empty, so this chunk starts playing when it arrives, not at the last echo.
            self._last_echo_at = None
        self._pending.append(_SentChunk(name, self._seq, key, samples, total, now, into_empty))
        return name

    def probe_due(self, now: float) -> str | None:
        """The name of a probe mark to send now, if one is useful: nothing plays (so nothing is
        before it in Twilio's buffer), none is outstanding, and the last was a while ago."""
        if self._pending or now - self._last_probe_at < PROBE_INTERVAL_S:
            return None
        if self._probe_sent_at is not None and now - self._probe_sent_at < PROBE_LOST_S:
            return None
        self._probes += 1
        self._probe_sent_at = self._last_probe_at = now
        return f"{PROBE_PREFIX}{self._probes}"

    def _network_echo(self, name: str, now: float) -> None:
        """An echo that is not of playback: a probe's, or one released by a clear."""
        if name.startswith(PROBE_PREFIX):
            if name == f"{PROBE_PREFIX}{self._probes}" and self._probe_sent_at is not None:
                self.network.round_trip_sample(now - self._probe_sent_at)
                self._probe_sent_at = None
            return
        clear = self._clear
        if clear is not None and name == f"{clear.epoch}.{clear.last_seq}":
            self._clear = None
            self._place_clear(clear, now)
            # Played to its end, this mark would have come back at `would_echo_at`: far sooner, it
            # was released by the clear, one round trip after the clear left.
            if now < clear.would_echo_at - CLEAR_MARGIN_S:
                self.network.round_trip_sample(now - clear.sent_at)

    def _place_clear(self, clear: _ClearSent, now: float) -> None:
        """The clear's echo is back: the clear landed one uplink trip before `now`, so playback
        had reached at least where the echoes' clock is then, less a margin for that trip's jitter
        (see `RoundTripEstimator.echo_margin_s`). Until the playout start delay is measured, audio
        placed from its send time is not counted (as in `_clock_walk`)."""
        network = self.network
        if network.round_trip_s is None:
            return
        playout = self._playout_s()
        # Audio placed from its send time carries two trips' jitter (its own and the echo's): the gap
        # margin covers both, so the echo's own margin is not added to it again.
        margin = network.echo_margin_s
        gap = max(0.0, network.gap_margin_s - margin)
        starts = _chunk_starts(clear.chunks, clear.anchor, self.sample_rate, network.round_trip_s, playout, gap)
        heard: dict[ItemKey, int] = {}
        for chunk, samples in _heard_at(starts, now - margin, self.sample_rate):
            if samples:
                heard[chunk.item] = chunk.item_samples_after - chunk.samples + samples
        self._heard_at_clear = heard

    def mark_echoed(self, name: str, now: float) -> bool:
        """Twilio says the audio up to mark `name` has played. False for stale or unknown marks."""
        parsed = parse_mark_name(name)
        if parsed is None or parsed[0] != self.epoch:
            self._network_echo(name, now)
            return False
        seq = parsed[1]
        if not any(chunk.seq == seq for chunk in self._pending):
            return False
        head = self._pending[0]
        if head.into_empty and head.seq == seq:
            # The first echo after audio went into an empty buffer: round trip + playout delay + its length.
            self.network.first_echo_sample(now - head.sent_at, head.samples / self.sample_rate)
        self._last_echo_at = self._anchor(seq, now)
        while self._pending and self._pending[0].seq <= seq:
            chunk = self._pending.popleft()
            self._confirmed[chunk.item] = chunk.item_samples_after
        return True

    def _anchor(self, seq: int, now: float) -> float:
        """When the echoed chunk's echo was due, for the clock to run on from.

        Each echo is late by its own uplink jitter, so while playback runs without a gap the
        anchor is the running mean of what the echoes say against the clock's prediction (at
        least `MIN_WEIGHT` for the newest, to follow a drift); the first echo after a gap is
        weighed equally against the prediction from its send time, once the round trip and the
        playout delay are known. An echo that surprises by more than the jitter explains is
        taken as is (a stall, a gap the clock did not see)."""
        network = self.network
        if network.round_trip_s is None:
            self._anchor_weight_n = 1
            return now
        free_at = self._last_echo_at
        gap = free_at is None
        # The prediction is the unbiased one (the median round trip, no margins).
        for chunk, started in self._chunk_times(network.round_trip_s, network.playout_delay_s):
            gap = gap or started != free_at
            free_at = started + chunk.samples / self.sample_rate
            if chunk.seq == seq:
                break
        assert free_at is not None
        surprise = now - free_at
        if abs(surprise) > max(SNAP_S, 4 * network.spread_s) or (gap and not network.has_playout_delay):
            self._anchor_weight_n = 1
            return now
        self._anchor_weight_n = 2 if gap else self._anchor_weight_n + 1
        return free_at + max(1.0 / self._anchor_weight_n, MIN_WEIGHT) * surprise

    def cleared(self, now: float | None = None) -> None:
        """Twilio's buffer was emptied: pending audio was never heard, old echoes are stale.

        `now` (when the clear was sent) lets the echoes it releases measure the round trip."""
        self._heard_at_clear = None
        if now is not None and self._pending:
            *_, (last, started) = self._chunk_times(self.network.round_trip_s or 0.0, self.network.playout_delay_s)
            would_echo_at = started + last.samples / self.sample_rate
            self._clear = _ClearSent(str(self.epoch), last.seq, now, would_echo_at, tuple(self._pending), self._last_echo_at)
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

    def pending_model_item(self) -> ItemKey | None:
        """The first model item (not the bridge's own audio) still waiting in Twilio's buffer."""
        return next((chunk.item for chunk in self._pending if not is_bridge_item(chunk.item)), None)

    def played_samples(self, item_id: str, content_index: int, now: float) -> int:
        """Samples of the item heard by now: confirmed by marks plus the clock's share of what follows."""
        key = (item_id, content_index)
        played = self._confirmed.get(key, 0)
        for chunk, heard in self._clock_walk(now):
            if chunk.item == key:
                played = chunk.item_samples_after - chunk.samples + heard
        return played

    def _chunk_times(self, round_trip: float, playout: float, gap_margin: float = 0.0) -> Iterator[tuple[_SentChunk, float]]:
        return _chunk_starts(self._pending, self._last_echo_at, self.sample_rate, round_trip, playout, gap_margin)

    @property
    def awaiting_clear_echo(self) -> bool:
        """A clear left with marks pending, and its echo, which places it, is not back yet."""
        return self._clear is not None and self.network.round_trip_s is not None

    @property
    def clear_placed(self) -> bool:
        """The last clear's echo is back (it placed the clear, whatever items it reached)."""
        return self._heard_at_clear is not None

    def heard_at_clear(self, item_id: str, content_index: int) -> int | None:
        """Samples of the item the caller had heard when the last clear landed, by its echo (a
        bound that errs short); None before that echo is back, or if the item was not reached."""
        if self._heard_at_clear is None:
            return None
        return self._heard_at_clear.get((item_id, content_index))

    def may_be_heard(self, item_id: str, content_index: int, now: float) -> bool:
        """Whether the caller may already hear the item when a `clear` sent `now` lands, allowing
        for the network's jitter beyond the lead (never, before the round trip is measured)."""
        network = self.network
        if network.round_trip_s is None:
            return False
        key = (item_id, content_index)
        walk = self._clock_walk(now, network.uncertainty_s, optimistic=True)
        return any(chunk.item == key and heard > 0 for chunk, heard in walk)

    def _clock_walk(self, now: float, beyond_s: float = 0.0, optimistic: bool = False) -> Iterator[tuple[_SentChunk, int]]:
        """The unconfirmed chunks playback has reached when a `clear` sent `now` lands, each with
        its samples heard: the echoes' clock one round trip ahead (see the module docstring).
        `optimistic` (see `_playout_s`) tells an item that may be heard from one that cannot be."""
        if not self._pending:
            return
        network = self.network
        starts = self._chunk_times(network.lead_s, self._playout_s(optimistic), network.gap_margin_s)
        yield from _heard_at(starts, now + network.lead_s + beyond_s, self.sample_rate)

    def _playout_s(self, optimistic: bool = False) -> float:
        """Twilio's playout start delay for audio placed from its send time. Once the round trip is
        known but no first echo has measured the delay, it could be anything: such audio is not
        counted (infinite), or, `optimistic`, counted as if the delay were 0."""
        network = self.network
        if network.round_trip_s is not None and not network.has_playout_delay and not optimistic:
            return math.inf
        return network.playout_delay_s

    def played_ms(self, item_id: str, content_index: int, now: float) -> float:
        return self.played_samples(item_id, content_index, now) * 1000.0 / self.sample_rate

    def received_ms(self, item_id: str, content_index: int) -> float:
        return self._received_ms.get((item_id, content_index), 0.0)

    def sent_samples(self, item_id: str, content_index: int) -> int:
        return self._sent.get((item_id, content_index), 0)
