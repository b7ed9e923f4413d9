"""Moving a call to a new model session: the shell around `rollover.py`'s planner.

- `replace_lost()`: the session dropped or expired. A new one is opened (the first at once, further
  ones after a backoff, at most `max_replacements` per call), told the call so far (`seed.py`) and
  the call goes on; what was playing stops (it belonged to the old session).
- `run()`: planned rollover. When the planner says one is due, the next session is opened and
  configured in the background while the call goes on; at a quiet moment the current session is
  asked for a summary out of band (`summary.py`; at most SUMMARY_DEADLINE_S, else the transcript's),
  then, quiet again (or at the hard deadline, logged as forced), the link switches at once: the
  seed goes first, then the last caller audio, then whatever the caller says next; the old session
  is closed. If the next session cannot be opened the old one goes on, and the planner tries again
  later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..deadlines import poll_until
from ..realtime_events import (
    OutOfBandFinished,
    OutOfBandStarted,
    ResponseFinished,
    ServerEvent,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    TextDone,
)
from ..telemetry import bounded_label
from .ports import ModelPort
from .rollover import ROLLOVER_REASONS, RolloverPlanner, is_quiet, replacement_delay
from .seed import Seed, build_seed
from .summary import MAX_OUTPUT_TOKENS, PURPOSE, ModelSummary, SummaryOutcome, summary_instructions
from .upstream_link import UPSTREAM_FAILURES, Event

if TYPE_CHECKING:
    from .session import CallSession

REFUSALS_FINAL = frozenset({"auth", "not_found"})  # a replacement refused like this will not pass: stop trying
WATCH_POLL_S = 0.25  # how often the watcher looks at the clock (it may be a scaled one)
QUIET_POLL_S = 0.01  # while waiting for a quiet moment
OPEN_TIMEOUT_S = 15.0  # opening the next session in the background


class SessionSwitcher:
    def __init__(self, call: CallSession, wall_clock: Callable[[], float] = time.time) -> None:
        self.call = call
        self.wall_clock = wall_clock
        self.planner: RolloverPlanner | None = None
        self.caller_speaking = False
        self.replacements = 0  # unplanned, this call
        self.rollovers = 0  # planned, this call
        self.forced = 0  # planned rollovers made without a quiet moment
        self.background: set[asyncio.Task[None]] = set()  # old sessions closing
        self.summary = ModelSummary("")

    def begin(self) -> None:
        assert self.call.setup is not None
        self.planner = RolloverPlanner(self.call.setup.rollover, self.call.clock())
        self.summary = ModelSummary(self.call.setup.upstream_name)

    def observe(self, event: ServerEvent) -> None:
        """Model events that move the planner or tell whether the caller is speaking."""
        if isinstance(event, SpeechStarted):
            self.caller_speaking = True
        elif isinstance(event, SpeechStopped):
            self.caller_speaking = False
        elif self.planner is None:
            return
        elif isinstance(event, SessionReady) and event.expires_at is not None:
            self.planner.expires_at(event.expires_at, self.wall_clock(), self.call.clock())
        elif isinstance(event, ResponseFinished):
            self.planner.response_finished(event.input_tokens, self.call.clock())

    def out_of_band(self, event: OutOfBandStarted | OutOfBandFinished | TextDone) -> None:
        """The events of a response the bridge asked for out of band: the summary's, never a turn."""
        call = self.call
        if isinstance(event, OutOfBandStarted):
            ours = self.summary.started(event.response_id, event.purpose)
        elif isinstance(event, TextDone):
            ours = self.summary.text_done(event.response_id, event.text)
        else:
            done = event.finished
            ours = self.summary.finished(done.response_id, event.purpose, done.status, done.reason, event.text)
            call.usage.response_finished(done)  # its tokens are billed like any response's
            if call.ledger.active == done.response_id:  # its response.created came untagged: not a turn after all
                call.ledger.finished(done.response_id)
                call.turns.feed("response_done")
        if not ours and not isinstance(event, TextDone):
            call.log.info("model.out_of_band_ignored", purpose=getattr(event, "purpose", None))

    def seed(self, summary: str | None = None) -> Seed:
        """What a new session is told: the model's `summary` if there is one, else the transcript's."""
        call = self.call
        assert call.setup is not None
        tools = call.tools.history.newest_first() if call.tools is not None else []
        return build_seed(call.setup.session_config.instructions, call.transcript.turns(), summary=summary, tools=tools)

    def _told(self, outcome: SummaryOutcome, seed: Seed) -> None:
        """A new session was seeded: whose summary it got, and why not the model's."""
        call = self.call
        call.metrics.rollover_summaries.labels(source="model" if outcome.text is not None else "transcript").inc()
        (call.log.info if outcome.reason in ("ok", "unplanned", "not_supported") else call.log.warning)(
            "rollover.summary",
            source=outcome.source,
            reason=outcome.reason,
            waited_ms=round(outcome.waited_s * 1000),
            words=len(outcome.text.split()) if outcome.text is not None else None,
            tool_calls=seed.tool_calls,
        )

    def _seed_events(self, connection: ModelPort, seed: Seed) -> Iterable[Event]:
        yield connection.dialect.instructions_update(seed.instructions)
        for role, text in seed.turns:
            yield connection.dialect.text_item(role, text)

    # --- unplanned ---------------------------------------------------------------------------

    async def replace_lost(self, expired: bool) -> bool:
        """A new session for a lost one; False when the call's replacements are used up."""
        call = self.call
        assert call.setup is not None
        while self.replacements < call.setup.rollover.max_replacements:
            delay = replacement_delay(self.replacements)
            self.replacements += 1
            call.log.warning(
                "upstream.reconnecting",
                reason="session_expired" if expired else "dropped",
                attempt=self.replacements,
                delay_s=delay,
                turns=len(call.transcript),
            )
            if delay:
                await self._wait(delay)
            replaced = await self._replace_once()
            if replaced is not None:
                return replaced
        return False

    async def _wait(self, seconds: float) -> None:
        """Wait on the call's clock (a replayed call's runs faster than the loop's)."""
        await poll_until(self.call.clock, self.call.clock() + seconds)

    async def _replace_once(self) -> bool | None:
        """True: replaced; None: failed, worth another try; False: refused for good."""
        call = self.call
        assert call.setup is not None
        seed = self.seed()
        try:
            async with call.link.replacing(), call.trace.connecting(reconnect=True):
                # What was playing belonged to the old session: stop it, the new one starts clean.
                call.ledger.session_replaced()  # the old session generates nothing any more
                await call.output.stop(generating=False)
                call.input.reset()
                call.link.connection = await call.link.open_seeded(
                    call.setup.reconnect, lambda connection: self._seed_events(connection, seed)
                )
        except UPSTREAM_FAILURES as exc:
            final = getattr(exc, "reason", None) in REFUSALS_FINAL
            call.metrics.session_replacements.labels(result="refused" if final else "failed").inc()
            call.log.error("upstream.reconnect_failed", error=type(exc).__name__, detail=str(exc), final=final)
            return False if final else None
        self.caller_speaking = False
        self.summary.session_started()
        self._told(SummaryOutcome("unplanned"), seed)
        if self.planner is not None:
            self.planner.session_started(call.clock())
        call.metrics.session_replacements.labels(result="ok").inc()
        call.log.info("upstream.reconnected", seeded_turns=len(seed.turns), summarized_turns=seed.summarized)
        return True

    # --- planned -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The planned-rollover watcher; runs for the whole call."""
        call = self.call
        assert call.setup is not None and self.planner is not None
        if not call.setup.rollover.planned:
            return
        while True:
            now = call.clock()
            due = self.planner.due(now)
            if due is None or not call.life.in_call:
                await asyncio.sleep(min(max(self.planner.next_check(now) - now, 0.0), WATCH_POLL_S) or WATCH_POLL_S)
                continue
            await self._roll_over(due.reason, due.deadline)

    async def _roll_over(self, reason: str, deadline: float) -> None:
        call = self.call
        assert call.setup is not None and self.planner is not None
        old = call.link.connection
        call.log.info("upstream.rollover_started", reason=reason)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S), call.trace.connecting(reconnect=True):
                new = await call.setup.reconnect()
        except (*UPSTREAM_FAILURES, TimeoutError) as exc:
            call.log.warning("upstream.rollover_failed", reason=reason, error=type(exc).__name__, detail=str(exc))
            self.planner.failed(call.clock())
            call.metrics.session_rollover_failures.labels(reason=bounded_label(reason, ROLLOVER_REASONS)).inc()
            return
        quiet = await self._until_quiet(deadline)
        summary = SummaryOutcome("no_quiet_moment")
        if quiet and old is not None and call.link.connection is old:
            summary = await self._ask_summary(old, deadline)
            quiet = await self._until_quiet(deadline)  # the caller or the model may have spoken meanwhile
        if call.link.connection is not old or old is None or not call.life.in_call:  # lost meanwhile, or ending
            await call.link.close_quietly(new)
            return
        seed = self.seed(summary.text)
        call.link.switch(new, self._seed_events(new, seed))
        self._told(summary, seed)
        self.rollovers += 1
        self.forced += not quiet
        call.metrics.session_rollovers.labels(
            reason=bounded_label(reason, ROLLOVER_REASONS), quiet="true" if quiet else "false"
        ).inc()
        self.caller_speaking = False
        self.summary.session_started()
        self.planner.session_started(call.clock())
        (call.log.info if quiet else call.log.warning)(
            "upstream.rolled_over", reason=reason, quiet=quiet, seeded_turns=len(seed.turns), summarized_turns=seed.summarized
        )
        closing = asyncio.create_task(call.link.close_quietly(old), name="close_old_session")  # bounded by its deadline
        self.background.add(closing)
        closing.add_done_callback(self.background.discard)

    async def _ask_summary(self, current: ModelPort, deadline: float) -> SummaryOutcome:
        """The current session's summary of the call, out of band, within SUMMARY_DEADLINE_S (and
        the rollover's hard deadline); the reason for the transcript's if it cannot be had."""
        call = self.call
        refused = self.summary.ask(call.clock(), model_busy=self._model_busy())
        if refused is not None:
            return refused
        request = current.dialect.out_of_band_text(summary_instructions(), PURPOSE, MAX_OUTPUT_TOKENS)
        if not call.link.send(request):
            return self.summary.not_sent()
        while (outcome := self.summary.outcome(call.clock(), until=deadline)) is None:
            if call.link.connection is not current or not call.life.in_call:
                return SummaryOutcome("failed")  # the session was lost meanwhile: the caller comes first
            await asyncio.sleep(QUIET_POLL_S)
        return outcome

    async def _until_quiet(self, deadline: float) -> bool:
        """Wait for a quiet moment; False if the deadline came first (switch anyway)."""
        return await poll_until(
            self.call.clock, deadline, lambda: is_quiet(self._model_busy(), self.caller_speaking), QUIET_POLL_S
        )

    def _model_busy(self) -> bool:
        call = self.call
        tools_running = bool(call.tools and call.tools.tasks())
        return call.ledger.active is not None or call.tracker.is_playing or tools_running or not call.life.in_call
