"""Where playback was when a `clear` landed, placed by the clear's echo (pure: no I/O).

Twilio returns every pending mark the moment a `clear` lands, so the echo of the last mark pending
when it left says when it landed: on Twilio's clock, from where it falls among the caller's media
frames (`bridge.uplink_clock`), or else from its arrival less a margin for its trip. The marks it
released left together, with no frame between them, and together place that moment better than
one. An echo of the same clear's marks that came back before a frame which came before the last
echo was sent before the clear landed (everything from Twilio comes in order): its audio had
played, and the echoes' clock runs on from it. On a long round trip that is often a response's
first echo, which the clear overtook. The first echo with no frame between it and the clear's own
had not played, or played at most a frame before the landing: playback was no further than its
chunk's end. The result is a bound that errs short; an item the clock may just have reached the
other way is said to be heard for one sample, so that it is truncated at 1 ms, not deleted.

Each clear is kept by the epoch it ended, so barge-ins in quick succession (the caller interrupts
the answer to an interruption) are each placed by their own echo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .playback_timeline import ItemKey, SentChunk, chunk_starts, heard_at, running_mean
from .round_trip import MIN_UNCERTAINTY_S, RoundTripEstimator
from .uplink_clock import FRAME_S, Placement, UplinkClock

CLEAR_MARGIN_S = 0.02  # a clear sample is taken only if the mark's audio had this much longer to play
# The share of the uplink delay's interquartile range by which a clear placed by its echo is
# taken to err beyond its own placement (the echoes' clock's error). Tuned on benchmarks/bargein.py
# (BENCHMARKS.md, issue 14): with the clock as the running mean of its echoes, a tenth left
# over-claims at 60 ms one way at 3.3-4.8 % over three seeds (p95 16.0-18.3 ms), 0.15 at
# 1.5-2.9 % (p95 18.1-19.5 ms).
LINE_SHARE = 0.15
OVERDUE_SPREADS = 3.0  # an echo later than the round trip by this many of its spreads is overdue
CLEARS_KEPT = 4  # clears remembered, awaiting their echo or placed by it


@dataclass(frozen=True, slots=True)
class EchoTime:
    """When an echo left Twilio, on the scale of arrivals, and how much earlier it may have left."""

    at: float
    error: float
    placement: Placement | None  # among the media frames, if they placed it


@dataclass(frozen=True, slots=True)
class _LateEcho:
    """An echo of a cleared epoch's mark, come back before the clear's own."""

    seq: int
    frames: int  # media frames seen by then (`UplinkClock.frames`)
    time: EchoTime


@dataclass(slots=True)
class _ClearSent:
    epoch: int
    last_seq: int  # the newest mark pending when the clear left
    sent_at: float
    would_echo_at: float  # when that mark's echo was expected had there been no clear
    chunks: tuple[SentChunk, ...]  # what was pending, to place the clear once its echo is back
    anchor: float | None  # the echoes' clock then
    anchor_echoes: int  # the echoes that clock is the running mean of
    # The echoes of its marks before the last one: played before the clear landed, or released by
    # it with the last; the frames tell.
    echoes: list[_LateEcho] = field(default_factory=list)


class ClearPlacements:
    """The clears of one call that left with marks pending, each placed once its echo is back."""

    def __init__(self, sample_rate: int, network: RoundTripEstimator, uplink: UplinkClock) -> None:
        self.sample_rate = sample_rate
        self.network = network
        self.uplink = uplink
        self._awaiting: dict[int, _ClearSent] = {}
        self._placed: dict[int, dict[ItemKey, int]] = {}
        self.last: int | None = None  # the epoch the newest clear ended, if it left marks pending

    def left(
        self,
        epoch: int,
        chunks: tuple[SentChunk, ...],
        now: float,
        would_echo_at: float,
        anchor: float | None,
        anchor_echoes: int = 1,
    ) -> None:
        """A clear left `now`, ending `epoch` with `chunks` (at least one) pending; the echoes'
        clock was at `anchor`, the running mean of `anchor_echoes` echoes."""
        self._awaiting[epoch] = _ClearSent(epoch, chunks[-1].seq, now, would_echo_at, chunks, anchor, anchor_echoes)
        self.last = epoch
        while len(self._awaiting) > CLEARS_KEPT:
            del self._awaiting[next(iter(self._awaiting))]  # its echo was lost: it will never be placed

    def left_nothing(self) -> None:
        """A clear left with no mark pending (or no send time): there is nothing to place."""
        self.last = None

    def echo(self, epoch: int, seq: int, now: float, time: EchoTime, playout: float) -> None:
        """An echo of mark `<epoch>.<seq>` came back at `now`, sent at `time`; `playout`: Twilio's
        playout start delay for audio placed from its send time (inf: not known, not counted)."""
        clear = self._awaiting.get(epoch)
        if clear is None:
            return
        if seq != clear.last_seq:
            clear.echoes.append(_LateEcho(seq, self.uplink.frames, time))
            return
        del self._awaiting[epoch]
        placement, likely, early = time.placement, time.at, time.at - time.error
        together = [e for e in clear.echoes if e.frames == self.uplink.frames]  # no frame between them and it
        released = [e.time.placement for e in together if e.time.placement]
        if placement is not None and released:
            for other in released:
                placement &= other
            likely, early = placement.likely, placement.early
        self._place(clear, likely, early, playout, min([e.seq for e in together], default=seq))
        # Played to its end, this mark would have come back at `would_echo_at`: far sooner, it was
        # released by the clear, one round trip after the clear left.
        if now < clear.would_echo_at - CLEAR_MARGIN_S:
            self.network.round_trip_sample(likely - clear.sent_at)

    def _place(self, clear: _ClearSent, likely: float, early: float, playout: float, unplayed: int) -> None:
        """The clear landed at `likely` (no earlier than `early`): playback had reached at least
        where the echoes' clock is then, less the margins, and had not finished chunk `unplayed`.

        (That is the first chunk whose echo left Twilio with no frame between it and the clear's:
        released by the clear, or played at most a frame before it landed. Either way playback
        was at most a frame past its end: it bounds the placement, which keeps a downlink stall
        that held the audio back from turning into an over-claim.)"""
        network = self.network
        if network.round_trip_s is None:
            return
        heard: dict[ItemKey, int] = {}
        chunks, anchor = clear.chunks, clear.anchor
        margin = likely - early
        # (Only echoes of marks the clear left pending count, each once and in order: a peer may
        # repeat or invent mark names.)
        pending = {chunk.seq for chunk in chunks}
        earlier: dict[int, _LateEcho] = {}
        for echo in clear.echoes:
            if echo.frames < self.uplink.frames and echo.seq in pending:
                earlier.setdefault(echo.seq, echo)
        played = [earlier[seq] for seq in sorted(earlier)]
        if played:
            anchor, error = self._run_clock(clear, played, playout)
            margin = math.hypot(margin, error)
            for chunk in chunks:
                if chunk.seq <= played[-1].seq:
                    heard[chunk.item] = chunk.item_samples_after
            chunks = tuple(chunk for chunk in chunks if chunk.seq > played[-1].seq)
        # The echoes' clock rests on echoes placed the same way, and its own error is not in that
        # margin: a share of the uplink's spread stands for it (LINE_SHARE).
        margin += LINE_SHARE * self.uplink.spread_s
        # Audio placed from its send time carries two trips' jitter (its own and the echo's): the gap
        # margin covers both, so the echo's own margin is not added to it again.
        gap = max(0.0, network.gap_margin_s - margin)
        timeline = list(chunk_starts(chunks, anchor, self.sample_rate, network.round_trip_s, playout, gap))
        for chunk, samples in heard_at(iter(timeline), likely - margin, self.sample_rate):
            # (Of an item echoed in part before the clear, what was echoed counts even where the
            # clock had not reached its next chunk.)
            if chunk.item_samples_after - chunk.samples + samples > 0:
                heard[chunk.item] = chunk.item_samples_after - chunk.samples + samples
        # An item the bound errs short of but the clock may have reached as far the other way may
        # have just begun: one sample, so that it is truncated at 1 ms rather than deleted.
        early_start = -(network.gap_margin_s + MIN_UNCERTAINTY_S)  # audio placed from its send time
        hedged = chunk_starts(chunks, anchor, self.sample_rate, network.round_trip_s, playout, early_start)
        for chunk, samples in heard_at(hedged, likely + margin, self.sample_rate):
            if samples and chunk.item not in heard:
                heard[chunk.item] = 1
        ends = [t + c.samples / self.sample_rate for c, t in timeline if c.seq == unplayed]
        contradicted = bool(ends) and likely - margin > ends[0] + FRAME_S
        self._bound(clear.chunks, heard, unplayed, contradicted)
        self._placed[clear.epoch] = heard
        while len(self._placed) > CLEARS_KEPT:
            del self._placed[next(iter(self._placed))]

    def _run_clock(self, clear: _ClearSent, played: list[_LateEcho], playout: float) -> tuple[float, float]:
        """The echoes' clock run on through the echoes that played before the clear landed: when
        the last of them was due, and how far that may be off. As for playback's own echoes, each
        is weighed against the clock's prediction by the running mean of the echoes in it; the
        clock starts afresh from an echo that surprises it by more than the jitter explains.

        The mean takes out the echoes' own jitter, but not their placement on Twilio's clock:
        chunks are whole frames, so successive echoes fall at the same point of their frame and
        share that error. The clock's error is taken as half an echo's once it rests on two or
        more (as much as averaging two), not as falling with their number: that margin kept
        over-claims at 60 ms under 5 %, the shrinking one did not (BENCHMARKS.md, issue 14)."""
        network = self.network
        assert network.round_trip_s is not None
        anchor, echoes = clear.anchor, clear.anchor_echoes
        chunks = clear.chunks
        for echo in played:
            if anchor is None:
                anchor, echoes = echo.time.at, 1
            else:
                starts = chunk_starts(chunks, anchor, self.sample_rate, network.round_trip_s, playout)
                predicted = next(t + c.samples / self.sample_rate for c, t in starts if c.seq == echo.seq)
                anchor, echoes = running_mean(predicted, echo.time.at, echoes, network.spread_s)
            chunks = tuple(chunk for chunk in chunks if chunk.seq > echo.seq)
        assert anchor is not None  # `played` is not empty
        return anchor, played[-1].time.error / (2.0 if echoes > 1 else 1.0)

    def _bound(
        self, chunks: tuple[SentChunk, ...], heard: dict[ItemKey, int], unplayed: int, contradicted: bool
    ) -> None:
        """Bound `heard` by chunk `unplayed`, which had not played more than a frame before the clear
        landed: its item no further than its end, an item beginning within a frame after it at
        most just begun (1 sample), one beginning later not reached. If the clock placed playback
        more than a frame past that end, the frames contradict it (a stall held the audio back by
        an unknown time): its item is said to be heard only as far as the chunk's start (at least
        begun: 1 sample), and nothing after it reached."""
        frame = self.sample_rate * FRAME_S
        after: int | None = None  # samples from the end of chunk `unplayed` to the chunk's start
        for chunk in chunks:
            if chunk.seq == unplayed:
                after = 0
                if chunk.item in heard:
                    bound = chunk.item_samples_after - (chunk.samples if contradicted else 0)
                    heard[chunk.item] = max(1, min(heard[chunk.item], bound))
            elif after is not None:
                if chunk.item_samples_after == chunk.samples and chunk.item in heard:  # the item begins here
                    if after < frame and not contradicted:
                        heard[chunk.item] = 1
                    else:
                        del heard[chunk.item]
                after += chunk.samples

    def awaiting(self, clear: int | None) -> bool:
        """That clear (the epoch it ended) left with marks pending, and its echo, which places it,
        is not back yet (and can place it: the round trip is known)."""
        return clear in self._awaiting and self.network.round_trip_s is not None

    def overdue(self, clear: int | None, now: float) -> bool:
        """That clear's echo is still awaited `now`, later than the round trip explains: a stall held
        the clear, its echo or both, so the clear may have landed later than planned."""
        sent = self._awaiting.get(clear) if clear is not None else None
        rtt = self.network.round_trip_s
        return sent is not None and rtt is not None and now > sent.sent_at + rtt + OVERDUE_SPREADS * self.network.spread_s

    def placed(self, clear: int | None) -> bool:
        """That clear's echo is back (it placed the clear, whatever items it reached)."""
        return clear in self._placed

    def heard(self, item_id: str, content_index: int, clear: int | None = None) -> int | None:
        """Samples of the item the caller had heard when a clear (by default the newest) landed, by
        its echo (a bound that errs short); None before that echo is back, or if the item was not
        reached."""
        clear = self.last if clear is None else clear
        placed = self._placed.get(clear) if clear is not None else None
        return None if placed is None else placed.get((item_id, content_index))
