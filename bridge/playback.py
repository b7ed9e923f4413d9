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
An echo's own trip is taken out where the caller's media frames allow: each echo is placed on
Twilio's clock by the frames around it (`bridge.uplink_clock`), and a clear by its echo
(`bridge.clear_placement`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

from .clear_placement import ClearPlacements, EchoTime
from .playback_timeline import ItemKey, SentChunk, chunk_starts, heard_at, running_mean
from .round_trip import RoundTripEstimator
from .uplink_clock import UplinkClock
from .wire import ascii_uint

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


PROBE_PREFIX = "rtt."  # probe marks: "rtt.<n>", sent while nothing plays
PROBE_INTERVAL_S = 1.0  # at most one probe a second
PROBE_LOST_S = 10.0  # a probe not echoed by then is given up (another may be sent)


class PlaybackTracker:
    """Sent, confirmed and estimated-played samples per item, for one call (pure: no I/O)."""

    def __init__(self, sample_rate: int = 8000, network: RoundTripEstimator | None = None) -> None:
        self.sample_rate = sample_rate
        self.network = network or RoundTripEstimator()
        self.uplink = UplinkClock()
        self.clears = ClearPlacements(sample_rate, self.network, self.uplink)
        self._probes = 0
        self._probe_sent_at: float | None = None  # the outstanding probe's send time
        self._last_probe_at = float("-inf")
        self._anchor_weight_n = 1  # echoes averaged into the anchor since the last gap
        self.epoch = 0
        self._seq = 0
        self._pending: deque[SentChunk] = deque()
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
        into_empty = not self._pending
        if into_empty:
            # Twilio's buffer was empty, so this chunk starts playing when it arrives, not at the last echo.
            self._last_echo_at = None
        self._pending.append(SentChunk(name, self._seq, key, samples, total, now, into_empty))
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

    def media_received(self, timestamp_ms: int, now: float) -> None:
        """A caller media frame arrived: Twilio's clock, which places the echoes (`UplinkClock`)."""
        self.uplink.media(timestamp_ms, now)

    def _echo_time(self, now: float) -> EchoTime:
        """When an echo arriving `now` left Twilio, on the scale of arrivals. From the media frames
        around it when they tell; otherwise its arrival, less the margin for its trip's jitter
        (`RoundTripEstimator.echo_margin_s`)."""
        placement = self.uplink.place(now)
        if placement is None:
            return EchoTime(now, self.network.echo_margin_s, None)
        return EchoTime(placement.likely, placement.likely - placement.early, placement)

    def _network_echo(self, name: str, now: float) -> None:
        """An echo that is not of playback: a probe's, or one of a cleared epoch (`ClearPlacements`)."""
        time = self._echo_time(now)
        if name.startswith(PROBE_PREFIX):
            if name == f"{PROBE_PREFIX}{self._probes}" and self._probe_sent_at is not None:
                self.network.round_trip_sample(time.at - self._probe_sent_at)
                self._probe_sent_at = None
            return
        parsed = parse_mark_name(name)
        if parsed is not None:
            self.clears.echo(*parsed, now, time, self._playout_s())

    def mark_echoed(self, name: str, now: float) -> bool:
        """Twilio says the audio up to mark `name` has played. False for stale or unknown marks."""
        parsed = parse_mark_name(name)
        if parsed is None or parsed[0] != self.epoch:
            self._network_echo(name, now)
            return False
        seq = parsed[1]
        if not any(chunk.seq == seq for chunk in self._pending):
            return False
        at = self._echo_time(now).at
        head = self._pending[0]
        if head.into_empty and head.seq == seq:
            # The first echo after audio went into an empty buffer: round trip + playout delay + its length.
            self.network.first_echo_sample(at - head.sent_at, head.samples / self.sample_rate)
        self._last_echo_at = self._anchor(seq, at)
        while self._pending and self._pending[0].seq <= seq:
            chunk = self._pending.popleft()
            self._confirmed[chunk.item] = chunk.item_samples_after
        return True

    def _anchor(self, seq: int, now: float) -> float:
        """When the echoed chunk's echo was due, for the clock to run on from.

        Each echo is late by its own uplink jitter, so while playback runs without a gap the
        anchor is the running mean of what the echoes say against the clock's prediction (at
        least `MIN_WEIGHT` for the newest, to follow a drift: `running_mean`); the first echo after a gap is
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
        if gap and not network.has_playout_delay:
            self._anchor_weight_n = 1
            return now
        anchor, self._anchor_weight_n = running_mean(free_at, now, 1 if gap else self._anchor_weight_n, network.spread_s)
        return anchor

    def cleared(self, now: float | None = None) -> None:
        """Twilio's buffer was emptied: pending audio was never heard, old echoes are stale.

        `now` (when the clear was sent) lets its echo place it (`ClearPlacements`) and measure the
        round trip."""
        if now is not None and self._pending:
            *_, (last, started) = self._chunk_times(self.network.round_trip_s or 0.0, self.network.playout_delay_s)
            would_echo_at = started + last.samples / self.sample_rate
            self.clears.left(self.epoch, tuple(self._pending), now, would_echo_at, self._last_echo_at, self._anchor_weight_n)
        else:
            self.clears.left_nothing()
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

    def _chunk_times(self, round_trip: float, playout: float, gap_margin: float = 0.0) -> Iterator[tuple[SentChunk, float]]:
        return chunk_starts(self._pending, self._last_echo_at, self.sample_rate, round_trip, playout, gap_margin)

    def may_be_heard(self, item_id: str, content_index: int, now: float) -> bool:
        """Whether the caller may already hear the item when a `clear` sent `now` lands, allowing
        for the network's jitter beyond the lead (never, before the round trip is measured)."""
        network = self.network
        if network.round_trip_s is None:
            return False
        key = (item_id, content_index)
        walk = self._clock_walk(now, network.uncertainty_s, optimistic=True)
        return any(chunk.item == key and heard > 0 for chunk, heard in walk)

    def _clock_walk(self, now: float, beyond_s: float = 0.0, optimistic: bool = False) -> Iterator[tuple[SentChunk, int]]:
        """The unconfirmed chunks playback has reached when a `clear` sent `now` lands, each with
        its samples heard: the echoes' clock one round trip ahead (see the module docstring).
        `optimistic` (see `_playout_s`) tells an item that may be heard from one that cannot be."""
        if not self._pending:
            return
        network = self.network
        starts = self._chunk_times(network.lead_s, self._playout_s(optimistic), network.gap_margin_s)
        yield from heard_at(starts, now + network.lead_s + beyond_s, self.sample_rate)

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
