"""The turn watchdog's shell (issue 16): the session feeds it the call's events, and one timer task
carries out what the pure `TurnWatchdog` decides — a filler, a retry, the apology, a check-in, a
goodbye. Every wait is bounded: the task sleeps until the next deadline or an event, at most
POLL_S at a time."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from .. import dialects
from .state import EndReason
from .watchdog import Action, Kind, TurnWatchdog

if TYPE_CHECKING:
    from .session import CallSession

POLL_S = 0.25


class TurnGuard:
    def __init__(self, call: CallSession) -> None:
        self.call = call
        self.dog: TurnWatchdog | None = None  # from the profile, once the call has started
        self._wake = asyncio.Event()
        self._running_tools: dict[str, list[str]] = {}  # response id → tool names
        self.fillers = 0  # filler clips played this call (the profile's or a slow tool's), for the post-call record

    def begin(self) -> None:
        assert self.call.setup is not None
        self.dog = TurnWatchdog(self.call.setup.budgets)

    # --- events from the call (each wakes the timer: a deadline may have moved) ----------------

    def feed(self, event: str, *args: object) -> object:
        dog = self.dog
        if dog is None:
            return None
        result = getattr(dog, event)(*args, self.call.clock())
        self._wake.set()
        return result

    def playback_idle(self, now: float) -> None:
        """Nothing is left playing (a stop, or the last mark echoed)."""
        self.feed("playback_idle")

    def model_audio(self) -> None:
        outcome = self.feed("model_audio")
        if outcome is not None:
            self.call.metrics.turn_watchdog.labels(outcome="retried" if outcome == "retried" else "answered").inc()

    def tool_started(self, response_id: str, name: str) -> None:
        self._running_tools.setdefault(response_id, []).append(name)
        self.feed("tool_started", response_id)

    def tools_answered(self, response_id: str) -> None:
        self._running_tools.pop(response_id, None)
        self.feed("tools_answered", response_id)

    # --- the timer ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until the watchdog gives up (the call then ends with the apology) or the call ends."""
        while True:
            dog = self.dog
            if dog is not None and self.call.life.in_call:
                for action in dog.due(self.call.clock()):
                    if not await self._act(action):
                        return
            deadline = dog.next_deadline() if dog is not None else None
            delay = POLL_S if deadline is None else min(POLL_S, max(deadline - self.call.clock(), 0.001))
            self._wake.clear()
            # Not asyncio.wait_for: before Python 3.12 it can swallow a cancellation that arrives as
            # the event is set, and this task would outlive its call.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _act(self, action: Action) -> bool:
        """Carry out one action; False when the call must end now (the watchdog gave up)."""
        call, log = self.call, self.call.log
        assert call.setup is not None and self.dog is not None
        if action.kind is Kind.FILLER:
            clip = self._clip(action.reason)
            if clip and not call.tracker.is_playing:
                sent_at = await call.output.play_filler(clip)
                self.dog.filler_sent(sent_at)
                self.fillers += 1
                call.timeline.filler(sent_at)
                call.metrics.fillers.labels(reason="slow_tool" if action.reason == "slow_tool" else "slow_model").inc()
                log.info("turn.filler", reason=action.reason)
                call.trace.turn_event("filler", {"reason": action.reason or "slow_model"})
        elif action.kind is Kind.RETRY:
            log.warning("turn.retry", active_response=call.ledger.active)
            call.trace.turn_event("retry")
            if call.ledger.active is not None:
                call.ledger.drop(call.ledger.active)
                call.link.send(dialects.cancel_response())
            call.events.ask_model()
        elif action.kind is Kind.GIVE_UP:
            call.metrics.turn_watchdog.labels(outcome="failed").inc()
            log.error("turn.gave_up", turn_timeout_s=call.setup.budgets.turn_timeout_s)
            call.life.end(EndReason.UPSTREAM_FAILED)  # the apology and the fallback, as for a lost model
            return False
        elif action.kind is Kind.REPROMPT:
            call.metrics.reprompts.inc()
            log.info("caller.reprompt", count=action.count)
            call.trace.turn_event("reprompt", {"count": action.count})
            call.events.ask_model(call.setup.reprompt_instructions)
        elif action.kind is Kind.GOODBYE:
            log.info("caller.silent", reprompts=self.dog.reprompts)
            call.request_goodbye(EndReason.CALLER_SILENT)
        return True

    def _clip(self, reason: str | None) -> bytes:
        """A slow tool's own progress clip if it declares one, else the profile's filler."""
        setup = self.call.setup
        assert setup is not None
        if reason == "slow_tool":
            for names in self._running_tools.values():
                for name in names:
                    if name in setup.tool_fillers:
                        return setup.tool_fillers[name]
        return setup.filler
