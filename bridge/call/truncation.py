"""Telling the model what the caller heard, once the `clear` has been placed (issue 14).

At a barge-in the bridge clears Twilio's buffer at once, but the caller goes on hearing until the
`clear` lands, one downlink trip later, and how long that trip takes is not known when it leaves.
Twilio returns the pending marks the moment the `clear` lands, so their echo, one uplink trip
later, places the landing from the other side (`bridge.clear_placement`). The truncate and the
deletions wait for that echo, for two round trips and a retransmission at most (a stall may hold
the clear or its echo): the caller is still speaking, and the model answers only after they stop,
so it is told before it can use the items again. What the
echo places replaces the estimate made when the `clear` left, which had to guess the clear's own
trip; an item planned for deletion that it shows was reached is truncated instead (`settle_plan`).
Anything after which the model may be asked for an answer before the echo is back (the caller
stopping, a tool call, the bridge's own `response.create`) sends it at once with what is known;
if the echo is overdue by then, the first item planned for deletion may have been reached and is
truncated at 1 ms instead (`hedge_late_clear`). A response the model has already begun was begun
without it either way: that does not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import dialects
from ..barge_in import BargeInPlan, Truncation, hedge_late_clear, settle_plan
from ..deadlines import poll_until

if TYPE_CHECKING:
    from .ports import ModelPort
    from .session import CallSession

MAX_WAIT_S = 0.5  # the longest a truncate waits for the clear's echo
WAIT_SPREADS = 4.0  # beyond the round trip, this many of its spreads
# And time for one lost TCP segment on either line: its retransmission holds everything behind it,
# the clear or its echo, for at least the minimum retransmission timeout (200 ms, RFC 6298 allows
# 1 s; Linux uses 200 ms). Waiting costs nothing while the caller speaks: their stopping sends it.
RETRANSMIT_S = 0.2
POLL_S = 0.02  # the wait polls the call's clock (which may be a replay's scaled clock)


@dataclass(slots=True)
class _Held:
    plan: BargeInPlan  # its truncation and deletions as planned when the clear left
    clear: int  # the clear it waits for (the epoch that clear ended)
    connection: ModelPort | None  # the session the item belongs to
    deadline: float


class Truncator:
    """One per call: the truncates of the last barge-ins, each sent now or once its clear is placed.

    Barge-ins can follow each other faster than a round trip (the caller interrupts the answer to
    an interruption): each truncate waits for its own clear's echo, unless a later one names the
    same item, which sends the earlier one first."""

    def __init__(self, call: CallSession) -> None:
        self.call = call
        self._held: list[_Held] = []

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def submit(self, plan: BargeInPlan) -> asyncio.Task[None] | None:
        """After the clear: send the plan's truncate now, or hold it for the clear's echo; returns
        the task that sends it by the deadline, if held (the caller owns it)."""
        call = self.call
        tracker = call.tracker
        items = _items(plan)
        self._flush([h for h in self._held if items & _items(h.plan)], "superseded")
        round_trip = tracker.network.round_trip_s
        clear = tracker.clears.last
        if not items or round_trip is None or clear is None or not tracker.clears.awaiting(clear):
            self._send(plan, plan.truncation, plan.deletions, "at_clear")
            return None
        # The echo comes back a round trip after the clear left, behind whatever audio and frames
        # share the two lines (in order, as over TCP): allow two round trips and a retransmission
        # before giving up.
        wait = min(MAX_WAIT_S, 2 * round_trip + WAIT_SPREADS * tracker.network.spread_s + RETRANSMIT_S)
        held = _Held(plan, clear, call.link.connection, call.clock() + wait)
        self._held.append(held)
        return asyncio.create_task(self._by_deadline(held), name="truncate_deadline")

    def echoed(self) -> None:
        """A mark echo came back: the truncates whose clear it placed go now."""
        self._flush([h for h in self._held if self.call.tracker.clears.placed(h.clear)], "echo")

    def flush(self, why: str) -> None:
        """Send every held truncate now (`why`: event, deadline, superseded)."""
        self._flush(list(self._held), why)

    def _flush(self, held: list[_Held], why: str) -> None:
        for h in held:
            self._held.remove(h)
            self._release(h, why)

    def _release(self, held: _Held, why: str) -> None:
        plan = held.plan
        if held.connection is not self.call.link.connection:
            # The session was replaced meanwhile: the items are not in the new one.
            self.call.log.info("caller.truncate_dropped", reason="session_replaced", items=len(_items(plan)))
            return
        tracker = self.call.tracker
        if tracker.clears.placed(held.clear):

            def heard_ms(key: tuple[str, int]) -> float | None:
                heard = tracker.clears.heard(*key, clear=held.clear)
                return None if heard is None else heard * 1000.0 / tracker.sample_rate

            t, deletions = settle_plan(plan.truncation, plan.deletions, heard_ms, lambda key: tracker.received_ms(*key))
        elif tracker.clears.overdue(held.clear, self.call.clock()):
            t, deletions = hedge_late_clear(plan.truncation, plan.deletions)
        else:
            t, deletions = plan.truncation, plan.deletions
        changed = t != plan.truncation or deletions != plan.deletions
        self._send(plan, t, deletions, why if changed else f"{why}_unchanged")

    async def _by_deadline(self, held: _Held) -> None:
        await poll_until(self.call.clock, held.deadline, lambda: held not in self._held, POLL_S)
        if held in self._held:
            self._flush([held], "deadline")

    def _send(self, plan: BargeInPlan, t: Truncation | None, deletions: tuple[tuple[str, int], ...], placed_by: str) -> None:
        call = self.call
        for item_id, _ in deletions:
            call.link.send(dialects.delete_item(item_id))
            call.transcript.unheard(item_id)
        if t is not None:
            call.link.send(dialects.truncate_item(t.item_id, t.content_index, t.audio_end_ms))
            call.metrics.truncations.inc()
            call.transcript.truncated(t.item_id, t.audio_end_ms)
        call.trace.barge_in(t.audio_end_ms if t else None, plan.cancel_response_id is not None, len(deletions))
        call.log.info(
            "caller.barge_in",
            cancelled=plan.cancel_response_id,
            truncated_item=t.item_id if t else None,
            audio_end_ms=t.audio_end_ms if t else None,
            audio_end_ms_at_clear=plan.truncation.audio_end_ms if plan.truncation else None,
            placed_by=placed_by if t else None,
            deleted_items=len(deletions),
            **call.events.network_estimate(),
        )


def _items(plan: BargeInPlan) -> set[str]:
    """The items a plan names: the one it truncates and those it deletes."""
    named = {item_id for item_id, _ in plan.deletions}
    return named | {plan.truncation.item_id} if plan.truncation is not None else named
