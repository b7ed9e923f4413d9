"""What to do when the caller starts speaking over the model (pure: decided, not sent, here)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .playback import ItemKey, PlaybackTracker, is_bridge_item


@dataclass(frozen=True, slots=True)
class Truncation:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class BargeInPlan:
    clear_playback: bool
    cancel_response_id: str | None
    truncation: Truncation | None
    # Audio items the caller heard nothing of: deleted, since a truncate cannot say "nothing"
    # (0 is rejected) and left whole the model would believe it said them.
    deletions: tuple[ItemKey, ...] = ()

    @property
    def is_noop(self) -> bool:
        return not self.clear_playback and self.cancel_response_id is None and self.truncation is None


NOTHING = BargeInPlan(clear_playback=False, cancel_response_id=None, truncation=None)


def plan_barge_in(
    tracker: PlaybackTracker,
    active_response_id: str | None,
    last_item: ItemKey | None,
    now: float,
    response_items_of: Callable[[ItemKey], Sequence[ItemKey]] = lambda item: (),
) -> BargeInPlan:
    """Stop playback, cancel the response still being generated, truncate the item being heard,
    and delete the items of that response the caller heard nothing of.

    `last_item` is the newest item the model sent audio for; it is what the caller hears next
    when Twilio's buffer is momentarily empty while the response is still arriving.
    `response_items_of(item)` gives the audio items of the response `item` belongs to, in order.
    """
    if not tracker.is_playing and active_response_id is None:
        return NOTHING
    item = tracker.playing_item(now) or last_item
    if is_bridge_item(item):
        # The caller is hearing the bridge's filler: the model's audio behind it was not heard at all.
        item = tracker.pending_model_item() or (None if is_bridge_item(last_item) else last_item)
    truncation = None
    deletions: list[ItemKey] = []
    if item is not None:
        received_ms = tracker.received_ms(*item)
        # Floor, so that we never claim the caller heard a sample they did not; and the service
        # rejects both 0 and anything past the item's end.
        heard_ms = math.floor(min(tracker.played_ms(*item, now=now), received_ms))
        if heard_ms == 0 and received_ms >= 1 and tracker.may_be_heard(*item, now=now):
            # On a network the estimate errs short: if the caller may already hear the item, say
            # they heard its first millisecond rather than delete what they were hearing.
            heard_ms = 1
        if 0 < heard_ms < math.floor(received_ms) or (0 < heard_ms and active_response_id is not None):
            truncation = Truncation(item_id=item[0], content_index=item[1], audio_end_ms=heard_ms)
        response_items = response_items_of(item)
        if item in response_items:
            # Playback is in order: whatever follows the item being heard was not heard at all.
            deletions = list(response_items[response_items.index(item) + 1 :])
            if heard_ms == 0:
                deletions.insert(0, item)
    return BargeInPlan(
        clear_playback=True,
        cancel_response_id=active_response_id,
        truncation=truncation,
        deletions=tuple(deletions),
    )


def settle_plan(
    truncation: Truncation | None,
    deletions: tuple[ItemKey, ...],
    heard_at_clear_ms: Callable[[ItemKey], float | None],
    received_ms: Callable[[ItemKey], float],
) -> tuple[Truncation | None, tuple[ItemKey, ...]]:
    """The plan's truncate and deletions once the clear's echo has placed the clear
    (`heard_at_clear_ms(item)`: what was heard of an item it reached, None for one it did not).

    An item planned for deletion that the echo shows was reached was being heard: it is truncated
    there instead, and those before it were heard whole (no truncate: left whole, as heard).
    Otherwise the planned truncate is refined (`refine_truncation`)."""
    reached = [key for key in deletions if (heard_at_clear_ms(key) or 0.0) > 0.0]
    if not reached:
        if truncation is None:
            return None, deletions
        key = (truncation.item_id, truncation.content_index)
        return refine_truncation(truncation, heard_at_clear_ms(key), received_ms(key)), deletions
    key = reached[-1]
    heard = heard_at_clear_ms(key) or 0.0
    settled = Truncation(key[0], key[1], max(1, math.floor(min(heard, received_ms(key)))))
    return settled, deletions[deletions.index(key) + 1 :]


def hedge_late_clear(
    truncation: Truncation | None, deletions: tuple[ItemKey, ...]
) -> tuple[Truncation | None, tuple[ItemKey, ...]]:
    """The plan when its clear's echo is overdue and must go before it is back: something held the
    clear (or its echo) on the way, so the clear may have landed later than planned and the caller
    may have begun to hear the first item it was meant to keep from them. That item is truncated at
    1 ms rather than deleted: a millisecond claimed too much, not a heard item claimed unheard."""
    if truncation is not None or not deletions:
        return truncation, deletions
    return Truncation(deletions[0][0], deletions[0][1], 1), deletions[1:]


def refine_truncation(truncation: Truncation, heard_at_clear_ms: float | None, received_ms: float) -> Truncation:
    """The truncation once the clear's echo has placed it (`heard_at_clear_ms`, a bound that errs
    short): it replaces the estimate made when the clear left, which had to guess the clear's own
    trip; never past what the model sent, never 0 (the item was reached)."""
    if heard_at_clear_ms is None:
        return truncation
    heard_ms = max(1, math.floor(min(heard_at_clear_ms, received_ms)))
    return truncation if heard_ms == truncation.audio_end_ms else replace(truncation, audio_end_ms=heard_ms)
