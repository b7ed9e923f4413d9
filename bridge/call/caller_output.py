"""What the caller hears: model audio transcoded to μ-law, sent as Twilio frames with a mark per
slice, and the one way to stop it.

A huge model delta is played slice by slice (MODEL_SLICE_MS of model audio), yielding to the event
loop between slices, so one delta of any size cannot hold up other calls; frames to Twilio are at
most TWILIO_FRAME_BYTES (20 ms of μ-law, Twilio's own frame size).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import Counter

from voice_codecs import AudioMode, make_transcoders

from ..playback import BRIDGE_ITEM_PREFIX, PROBE_INTERVAL_S, PlaybackTracker
from ..turn_timeline import TurnTimeline
from .ports import TwilioPort

TWILIO_FRAME_BYTES = 160
MODEL_SLICE_MS = 200
FILLER_ITEM = f"{BRIDGE_ITEM_PREFIX}filler"  # the filler's item id in playback accounting (never the model's)


class CallerOutput:
    def __init__(
        self,
        twilio: TwilioPort,
        mode: AudioMode,
        tracker: PlaybackTracker,
        timeline: TurnTimeline,
        clock: Callable[[], float],
        frames_out: Counter,
        on_first_audio: Callable[[float], None],
    ) -> None:
        self.twilio = twilio
        self.mode = mode
        self.tracker = tracker
        self.timeline = timeline
        self.clock = clock
        self._frames_out = frames_out
        self._on_first_audio: Callable[[float], None] | None = on_first_audio
        _, self.to_caller = make_transcoders(mode)
        self._slice_bytes = mode.model_bytes(MODEL_SLICE_MS)
        # One sender at a time (issue 16): the filler is sent by the watchdog's task, model audio by
        # the model's; neither may interleave frames with the other, nor with a clear.
        self._sending = asyncio.Lock()
        self.on_idle: Callable[[float], None] | None = None  # told when a stop leaves nothing playing

    async def play_model_audio(self, item_id: str, content_index: int, audio: bytes, still_wanted: Callable[[], bool]) -> bool:
        """Transcode and play one delta slice by slice; False if `still_wanted()` turned false
        between slices (the response was cancelled meanwhile)."""
        step = self._slice_bytes
        for offset in range(0, len(audio), step):
            if offset:
                await asyncio.sleep(0)
                if not still_wanted():
                    return False
            await self.play(item_id, content_index, self.to_caller.process(audio[offset : offset + step]))
        return True

    async def finish_item(self, item_id: str, content_index: int) -> None:
        """The item's audio is complete: the transcoder holds back a few ms, without a flush the word ending is lost."""
        await self.play(item_id, content_index, self.to_caller.flush())

    async def play(self, item_id: str, content_index: int, mulaw: bytes) -> None:
        """Send `mulaw` in Twilio-sized frames, then one mark for all of them."""
        if not mulaw:
            return
        async with self._sending:
            now = self.clock()
            mark = await self._send(item_id, content_index, mulaw, now)
        self.timeline.media_sent(mark, now)
        if self._on_first_audio is not None:
            first, self._on_first_audio = self._on_first_audio, None
            first(now)

    async def play_filler(self, mulaw: bytes) -> float:
        """The bridge's own filler (issue 16), accounted like model audio under FILLER_ITEM so model
        audio sent after it is placed behind it; not a model answer (no turn stage, no first audio).
        Returns when it was sent."""
        async with self._sending:
            now = self.clock()
            await self._send(FILLER_ITEM, 0, mulaw, now)
        return now

    async def _send(self, item_id: str, content_index: int, mulaw: bytes, now: float) -> str:
        """Frames, then a mark; returns the first mark sent. An item's first audio gets a mark after
        its first frame too: that echo comes back once the item has begun to play, and places where
        it started (after the network and playout delay, when it went into an empty buffer) one
        slice sooner than the chunk's own. (Decided by the item, not by whether Twilio's buffer
        looks empty, so that what is sent depends on the model's events only, not on echo timing:
        a replayed call sends the same marks.)"""
        first = None
        if self.tracker.sent_samples(item_id, content_index) == 0 and len(mulaw) > TWILIO_FRAME_BYTES:
            first = await self._send_marked(item_id, content_index, mulaw[:TWILIO_FRAME_BYTES], now)
            mulaw = mulaw[TWILIO_FRAME_BYTES:]
        mark = await self._send_marked(item_id, content_index, mulaw, now)
        return first or mark

    async def _send_marked(self, item_id: str, content_index: int, mulaw: bytes, now: float) -> str:
        for offset in range(0, len(mulaw), TWILIO_FRAME_BYTES):
            await self.twilio.send_media(mulaw[offset : offset + TWILIO_FRAME_BYTES])
            self._frames_out.inc()
        mark = self.tracker.chunk_sent(item_id, content_index, len(mulaw), now)
        await self.twilio.send_mark(mark)
        return mark

    async def stop(self, generating: bool) -> None:
        """Stop what the caller hears, now; every path that silences the model (barge-in, goodbye,
        a replaced session) comes through here. Twilio's buffer is cleared when it may hold our
        audio: marks are pending (the model's or a filler's), or the model is still `generating` a
        response (a slice goes out frame by frame, so its first frames may be on the way before its
        mark). The audio the transcoder holds back is dropped either way."""
        now = self.clock()
        async with self._sending:
            if self.tracker.is_playing or generating:
                await self.twilio.send_clear()
                now = self.clock()
                self.tracker.cleared(now)
            self.to_caller.reset()
        if self.on_idle is not None:
            self.on_idle(now)

    async def probe_round_trip(self, active: Callable[[], bool]) -> None:
        """While nothing plays, now and then a bare mark: Twilio echoes it at once (one round trip)."""
        while True:
            if active():
                name = self.tracker.probe_due(self.clock())
                if name is not None:
                    await self.twilio.send_mark(name)
            await asyncio.sleep(PROBE_INTERVAL_S / 2)
