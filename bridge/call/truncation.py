"""Telling the model what the caller heard, once the `clear` has been placed (issue 14).

At a barge-in the bridge clears Twilio's buffer at once, but the caller goes on hearing until the
`clear` lands, one downlink trip later, and how long that trip takes is not known when it leaves.
Twilio returns the pending marks the moment the `clear` lands, so their echo, one uplink trip
later, places the landing from the other side (`PlaybackTracker.heard_at_clear`). The truncate
waits for that echo, for at most about a round trip: the caller is still speaking, and the model
answers only after they stop, so it is told before it can use the item again. It never says less
than the estimate made when the `clear` left. Anything that may lead to a new answer (the caller
stopping, a new response, another barge-in) sends it at once with what is known.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import dialects
from ..barge_in import BargeInPlan, Truncation, refine_truncation
from ..deadlines import poll_until

if TYPE_CHECKING:
    from .ports import ModelPort
    from .session import CallSession

MAX_WAIT_S = 0.5  # the longest a truncate waits for the clear's echo
WAIT_SPREADS = 4.0  # beyond the round trip, this many of its spreads
WAIT_FLOOR_S = 0.05
POLL_S = 0.02  # the wait polls the call's clock (which may be a replay's scaled clock)


@dataclass(slots=True)
class _Held:
    plan: BargeInPlan
    truncation: Truncation  # the plan's, as estimated when the clear left
    connection: ModelPort | None  # the session the item belongs to
    deadline: float


class Truncator:
    """One per call: the truncate of the last barge-in, sent now or once its clear is placed."""

    def __init__(self, call: CallSession) -> None:
        self.call = call
        self._held: _Held | None = None

    @property
    def holding(self) -> bool:
        return self._held is not None

    def submit(self, plan: BargeInPlan) -> asyncio.Task[None] | None:
        """After the clear: send the plan's truncate now, or hold it for the clear's echo; returns
        the task that sends it by the deadline, if held (the caller owns it)."""
        self.flush("superseded")
        call = self.call
        network = call.tracker.network
        round_trip = network.round_trip_s
        if plan.truncation is None or round_trip is None or not call.tracker.awaiting_clear_echo:
            self._send(plan, plan.truncation, "at_clear")
            return None
        # The echo comes back a round trip after the clear left, behind whatever audio and frames
        # share the two lines (in order, as over TCP): allow two round trips before giving up.
        wait = min(MAX_WAIT_S, max(WAIT_FLOOR_S, 2 * round_trip + WAIT_SPREADS * network.spread_s))
        self._held = _Held(plan, plan.truncation, call.link.connection, call.clock() + wait)
        return asyncio.create_task(self._by_deadline(self._held), name="truncate_deadline")

    def echoed(self) -> None:
        """A mark echo came back: if it placed the clear, the held truncate goes now."""
        if self._held is not None and self.call.tracker.clear_placed:
            self.flush("echo")

    def flush(self, why: str) -> None:
        """Send the held truncate now (`why`: echo, deadline, event, superseded)."""
        held, self._held = self._held, None
        if held is None:
            return
        if held.connection is not self.call.link.connection:
            # The session was replaced meanwhile: the item is not in the new one.
            self.call.log.info("caller.truncate_dropped", reason="session_replaced", item_id=held.truncation.item_id)
            return
        t = held.truncation
        heard = self.call.tracker.heard_at_clear(t.item_id, t.content_index)
        heard_ms = None if heard is None else heard * 1000.0 / self.call.tracker.sample_rate
        refined = refine_truncation(t, heard_ms, self.call.tracker.received_ms(t.item_id, t.content_index))
        self._send(held.plan, refined, why if refined is not t else f"{why}_unchanged")

    async def _by_deadline(self, held: _Held) -> None:
        await poll_until(self.call.clock, held.deadline, lambda: self._held is not held, POLL_S)
        if self._held is held:
            self.flush("deadline")

    def _send(self, plan: BargeInPlan, t: Truncation | None, placed_by: str) -> None:
        call = self.call
        if t is not None:
            call.link.send(dialects.truncate_item(t.item_id, t.content_index, t.audio_end_ms))
            call.metrics.truncations.inc()
            call.transcript.truncated(t.item_id, t.audio_end_ms)
        call.trace.barge_in(t.audio_end_ms if t else None, plan.cancel_response_id is not None, len(plan.deletions))
        call.log.info(
            "caller.barge_in",
            cancelled=plan.cancel_response_id,
            truncated_item=t.item_id if t else None,
            audio_end_ms=t.audio_end_ms if t else None,
            audio_end_ms_at_clear=plan.truncation.audio_end_ms if plan.truncation else None,
            placed_by=placed_by if t else None,
            deleted_items=len(plan.deletions),
            **call.events.network_estimate(),
        )
