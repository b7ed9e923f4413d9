"""Ending a call politely: a goodbye asked for (drain, max duration) or an action a tool asked for
(hang up, transfer) once the model's words are heard, and the apology when the model is lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from structlog.stdlib import BoundLogger

from .. import dialects
from ..playback import PlaybackTracker
from .caller_output import CallerOutput
from .ledger import ResponseLedger
from .setup import CallSetup
from .state import CallState, EndReason, Lifecycle
from .tool_runs import Pending, PendingAction
from .upstream_link import UpstreamLink

GOODBYE_TIMEOUT_S = 10.0
TWILIO_REST_TIMEOUT_S = 5.0  # a stalled Twilio API must not hold the caller on a dead line
GOODBYE_INSTRUCTIONS = (
    "The call must end now. Say a short, friendly goodbye to the caller in one sentence, in the language "
    "of the conversation, and say nothing else."
)
MAX_DURATION_POLL_S = 0.25  # wake up rarely: this runs in every call (and the clock may be a scaled one)


class Ending:
    def __init__(
        self,
        life: Lifecycle,
        ledger: ResponseLedger,
        tracker: PlaybackTracker,
        output: CallerOutput,
        link: UpstreamLink,
        ask_model: Callable[[str | None], None],
        clock: Callable[[], float],
        log: BoundLogger,
    ) -> None:
        self.life = life
        self.ledger = ledger
        self.tracker = tracker
        self.output = output
        self.link = link
        self.ask_model = ask_model  # `ModelEvents.ask_model`: response.create, once held truncates are sent
        self.clock = clock
        self.log = log
        self.stop_requested = asyncio.Event()  # set when the call should end now
        self.transfer_to: str | None = None
        self._goodbye_requested = asyncio.Event()
        self._goodbye_reason = EndReason.DRAINED
        self._setup: CallSetup | None = None
        self._call_sid = ""
        self._started_at = 0.0

    def begin(self, setup: CallSetup, call_sid: str, started_at: float) -> None:
        self._setup, self._call_sid, self._started_at = setup, call_sid, started_at

    def request(self, reason: EndReason) -> None:
        """Ask the call to end politely: the model says goodbye, the caller hears it, then we close."""
        self._goodbye_reason = reason
        self._goodbye_requested.set()

    # --- the goodbye ---------------------------------------------------------------------------

    async def when_asked(self) -> None:
        """When asked (or at max duration): stop what is playing, let the model say goodbye, wait until heard."""
        assert self._setup is not None
        await self._until_asked(self._setup.max_call_s)
        if not self.life.in_call:
            return
        self.life.move_to(CallState.SAYING_GOODBYE)
        self.log.info("call.saying_goodbye", reason=self._goodbye_reason.value)
        if self.ledger.active is not None:
            self.ledger.drop(self.ledger.active)
            self.link.send(dialects.cancel_response())
        await self.output.stop(generating=False)  # its response was cancelled above: only what plays is cleared
        self.ledger.playback_stopped()
        marker = self.ledger.marker()
        self.ask_model(GOODBYE_INSTRUCTIONS)
        await self.until_heard(marker, "goodbye")
        self.life.end(self._goodbye_reason)
        self.stop_requested.set()

    async def _until_asked(self, max_call_s: float | None) -> None:
        if max_call_s is None:
            await self._goodbye_requested.wait()
            return
        while not self._goodbye_requested.is_set():
            remaining = self._started_at + max_call_s - self.clock()
            if remaining <= 0:
                self.request(EndReason.MAX_DURATION)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._goodbye_requested.wait(), timeout=min(remaining, MAX_DURATION_POLL_S))

    async def until_heard(self, marker: int, what: str) -> None:
        """Wait until a response started after `marker` has finished and its audio has been heard."""
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                while not (self.ledger.finished_since(marker) and not self.tracker.is_playing):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            self.log.warning("call.wait_heard_timeout", waiting_for=what)

    # --- actions and the apology ---------------------------------------------------------------

    async def act(self, pending: Pending) -> None:
        """Hang up or transfer through Twilio REST; without REST, by ending the stream (see after-stream)."""
        assert self._setup is not None
        control = self._setup.call_control
        # If Twilio cannot be reached, closing the stream still ends or transfers the call.
        if pending.action is PendingAction.TRANSFER and pending.number:
            self.transfer_to = pending.number
            if control is not None:
                await self.twilio_rest("transfer", control.transfer(self._call_sid, pending.number, handoff=None))
            self.life.end(EndReason.TRANSFERRED)
        else:
            if control is not None:
                await self.twilio_rest("hang_up", control.hang_up(self._call_sid))
            self.life.end(EndReason.AGENT_HANGUP)
        self.log.info("call.agent_action", action=pending.action.value, via="rest" if control else "stream")
        self.stop_requested.set()

    async def push_apology(self) -> None:
        """With Twilio REST, replace the call's TwiML with the apology before the stream closes.

        Otherwise (or if Twilio cannot be reached) the after-stream `<Redirect>` asks for it, and
        only this process remembers the outcome: with REST any replica setup works.
        """
        assert self._setup is not None
        control = self._setup.call_control
        if control is None:
            return
        fallback = self._setup.fallback_number
        if await self.twilio_rest("apologise", control.apologise(self._call_sid, fallback)):
            self.log.warning("call.fallback", via="rest", dial=bool(fallback))

    async def twilio_rest(self, action: str, request: Awaitable[None]) -> bool:
        """One Twilio REST request, bounded in time; a failure is logged (the caller decides the fallback)."""
        try:
            async with asyncio.timeout(TWILIO_REST_TIMEOUT_S):
                await request
        except Exception as exc:  # noqa: BLE001 - any failure of Twilio's API: logged, the stream's end is the fallback
            self.log.error("call.control_failed", action=action, error=type(exc).__name__)
            return False
        return True
