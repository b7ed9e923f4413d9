"""One phone call: the Twilio stream and the upstream Realtime session, pumped both ways.

The session starts the call, runs its loops and ends it; the loops only move data between the
parts that decide: the start handshake (`start`), caller input and output (`caller_input`,
`caller_output`), the response ledger and barge-in plan (`ledger`, `bridge.barge_in`), the model
link (`upstream_link`), tools (`tool_runs`), the keypad (`keypad`) and ending politely (`ending`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
import websockets

from voice_codecs import TWILIO_RATE, AudioMode

from .. import dialects, media_streams as ms
from ..append_batcher import TWILIO_FRAME_MS
from ..deadlines import PeerDeadlines
from ..logs import get_logger
from ..model_usage import ModelUsage, UsagePolicy
from ..playback import PlaybackTracker
from ..round_trip import RoundTripEstimator
from ..telemetry import Metrics
from ..tracing import NO_TRACE, NoTrace
from ..turn_timeline import TurnTimeline
from ..twilio_stream import CLOSE_INTERNAL, CLOSE_NORMAL, StreamClosed, close_code_for
from .caller_input import CallerInput
from .caller_output import CallerOutput
from .ending import Ending
from .keypad import Keypad
from .ledger import ResponseLedger
from .model_events import ModelEvents
from .ports import TwilioPort
from .setup import CallSetup, observers
from .start import StartHandshake
from .state import CallState, EndReason, Lifecycle
from .switching import SessionSwitcher
from .tool_runs import ToolActions, ToolRuns
from .transcript import HeardTranscript
from .turn_guard import TurnGuard
from .upstream_link import UPSTREAM_FAILURES, UpstreamLink

log = get_logger("bridge.call")


class CallSession:
    """Owns everything of one call; created when the stream opens, gone when it ends."""

    def __init__(
        self,
        twilio: TwilioPort,
        prepare: Callable[[ms.Start], CallSetup],
        audio_mode: AudioMode | str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        log_transcripts: bool = False,
        append_ms: int = TWILIO_FRAME_MS,
        deadlines: PeerDeadlines | None = None,
    ) -> None:
        self.twilio = twilio
        self.audio_mode = AudioMode(audio_mode)
        self.metrics = metrics
        self.clock = clock
        self.log_transcripts = log_transcripts
        self.life = Lifecycle()
        self.setup: CallSetup | None = None
        self.call_sid: str | None = None
        self._started_at = 0.0
        self.log = log
        self._handshake = StartHandshake(twilio, prepare, self.life, metrics, log)
        self.tracker = PlaybackTracker(sample_rate=TWILIO_RATE, network=RoundTripEstimator(on_sample=metrics.twilio_rtt.observe))
        self.timeline = TurnTimeline()
        self.ledger = ResponseLedger()
        self.transcript = HeardTranscript()
        self.switcher = SessionSwitcher(self)
        self.input = CallerInput(self.audio_mode, append_ms)
        first_audio = metrics.first_greeting_audio
        self.output = CallerOutput(
            twilio, self.audio_mode, self.tracker, self.timeline, clock, metrics.frames.labels(direction="out"),
            lambda now: first_audio.observe(now - self._started_at),
        )
        self.link = UpstreamLink(metrics, deadlines or PeerDeadlines(), log)
        self.events = ModelEvents(self)
        self.ending = Ending(self.life, self.ledger, self.tracker, self.output, self.link, self.events.ask_model, clock, log)
        self.turns = TurnGuard(self)  # issue 16: fillers, retries, reprompts
        self.output.on_idle = self.turns.playback_idle
        self._frames_in = metrics.frames.labels(direction="in")
        self.tools: ToolRuns | None = None
        self.keypad = Keypad("off")
        self.trace: NoTrace = NO_TRACE  # issue 17: the call's trace and usage, set in `_start` (setup.observers)
        self.usage = ModelUsage(metrics, log, UsagePolicy())
        twilio.on_stall = metrics.peer_stalls.labels(peer="twilio").inc

    @property
    def state(self) -> CallState:
        return self.life.state

    @property
    def end_reason(self) -> EndReason | None:
        return self.life.end_reason

    @property
    def transfer_to(self) -> str | None:
        return self.ending.transfer_to

    def request_goodbye(self, reason: EndReason = EndReason.DRAINED) -> None:
        """Ask the call to end politely: the model says goodbye, the caller hears it, then we close."""
        self.ending.request(reason)

    @property
    def duration_s(self) -> float:
        """Since the stream started (0 before)."""
        return self.clock() - self._started_at if self._started_at else 0.0

    def twilio_gone(self) -> EndReason:
        """Why the call ends when the Twilio socket is gone: a hang-up, or our abort of a stalled peer."""
        return EndReason.TWILIO_STALLED if self.twilio.stalled else EndReason.CALLER_HANGUP

    # --- the call ------------------------------------------------------------------------------

    async def run(self) -> EndReason:
        try:
            if not await self._start():
                return self.life.end_reason or EndReason.NO_START
            assert self.setup is not None
            ids = {"call_sid": self.call_sid, "stream_sid": self.twilio.stream_sid, **self.trace.log_ids()}
            with structlog.contextvars.bound_contextvars(**ids):
                self.log.info("call.started", audio=self.audio_mode.value, profile=self.setup.profile_name)
                self.metrics.active_calls.inc()
                try:
                    await self._converse()
                finally:
                    self.metrics.active_calls.dec()
                    self.metrics.call_duration.observe(self.clock() - self._started_at)
                self.log.info("call.ended", reason=self.end_reason.value if self.end_reason else None, **self.usage.call_ended())
            return self.life.end_reason or EndReason.CALLER_HANGUP
        except Exception:
            self.life.end(EndReason.INTERNAL_ERROR)
            raise
        finally:
            await self._close_both()
            self.life.finish()
            self.metrics.calls.labels(outcome=(self.life.end_reason or EndReason.INTERNAL_ERROR).value).inc()
            self.trace.end((self.life.end_reason or EndReason.INTERNAL_ERROR).value, self.usage.summary())

    async def _start(self) -> bool:
        started = await self._handshake.run()
        if started is None:
            return False
        self.setup, start = started.setup, started.start
        self.call_sid = start.call_sid
        self.twilio.stream_sid = start.stream_sid
        self._started_at = self.clock()
        actions = ToolActions(start.call_sid, self.setup.transfer_number)
        self.trace, self.usage = observers(self.setup, start, self.audio_mode.value, self.metrics, self.log)
        self.tools = ToolRuns(self.setup.tools, self.setup.tool_names, actions, self.metrics, self.log, self.trace.tool_finished)
        self.keypad = Keypad(self.setup.dtmf)
        self.ending.begin(self.setup, start.call_sid, self._started_at)
        self.switcher.begin()
        self.turns.begin()
        self.life.move_to(CallState.CONNECTING_UPSTREAM)
        return True

    async def _converse(self) -> None:
        assert self.setup is not None
        # Twilio is read while the upstream connects: marks, a hangup or bad input are handled at
        # once, and caller audio does not pile up unread (it is dropped until the model is there).
        caller = asyncio.create_task(self._pump_caller(), name="pump_caller")
        if not await self._connect(caller):
            return
        self.life.move_to(CallState.IN_CALL)
        self.turns.feed("greeting_requested")
        # Measure the round trip before the greeting starts playing (then only while nothing plays).
        probe = self.tracker.probe_due(self.clock())
        if probe is not None:
            await self.twilio.send_mark(probe)
        tasks = {
            caller,
            asyncio.create_task(self._pump_model(), name="pump_model"),
            asyncio.create_task(self._send_to_model(), name="send_to_model"),
            asyncio.create_task(self._goodbye(), name="goodbye"),
            asyncio.create_task(self.ending.stop_requested.wait(), name="stop"),
            asyncio.create_task(self.output.probe_round_trip(lambda: self.life.in_call), name="probe_round_trip"),
            asyncio.create_task(self._roll_over(), name="roll_over"),
            asyncio.create_task(self.turns.run(), name="turn_watchdog"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            others = (*self.events.background, *self.switcher.background, *(self.tools.tasks() if self.tools else ()))
            for task in (*tasks, *others):
                task.cancel()
            await asyncio.gather(*tasks, *others, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                self.log.error("call.failed", error=repr(task.exception()))
                self.life.end(EndReason.INTERNAL_ERROR)
        if self.life.end_reason is EndReason.UPSTREAM_FAILED:
            await self.ending.push_apology()

    async def _connect(self, caller: asyncio.Task[None]) -> bool:
        """Wait for the model session while the caller is read; False if the call ended meanwhile."""
        assert self.setup is not None
        connecting = asyncio.ensure_future(self.setup.upstream)
        connect_started_ns = time.time_ns()
        await asyncio.wait({caller, connecting}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            # The call ended (hangup, bad input) before the model was there.
            connecting.cancel()
            await asyncio.wait({connecting})
            if not connecting.cancelled() and connecting.exception() is None:
                await self.link.close_quietly(connecting.result())
            await asyncio.gather(caller, return_exceptions=True)
            return False
        try:
            self.link.connection = connecting.result()
        except UPSTREAM_FAILURES as exc:
            self.trace.connected(connect_started_ns, reconnect=False, outcome=type(exc).__name__)
            self.log.error("upstream.connect_failed", error=type(exc).__name__, detail=str(exc))
            self.life.end(EndReason.UPSTREAM_UNAVAILABLE)
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
            await self.ending.push_apology()
            await self.twilio.close(CLOSE_INTERNAL, "upstream_unavailable")
            return False
        self.trace.connected(connect_started_ns, reconnect=False, outcome="ok")
        if self.life.state is not CallState.CONNECTING_UPSTREAM:  # ended while the result came in
            await asyncio.gather(caller, return_exceptions=True)
            return False
        return True

    # --- caller → model ------------------------------------------------------------------------

    async def _pump_caller(self) -> None:
        """Twilio → model: caller audio, mark echoes, keypad, hangup."""
        try:
            while not await self._on_twilio_event(await self.twilio.receive()):
                pass
        except StreamClosed:
            self.life.end(self.twilio_gone())
        except ms.ProtocolError as exc:
            self.log.warning("twilio.bad_frame", reason=exc.reason, detail=exc.detail)
            self.metrics.rejections.labels(reason=exc.reason).inc()
            self.life.end(EndReason.PROTOCOL_ERROR)
            await self.twilio.close(close_code_for(exc.reason), exc.reason)

    async def _on_twilio_event(self, event: ms.TwilioEvent) -> bool:
        """Handle one event from Twilio; True when the caller hung up."""
        if isinstance(event, ms.Connected | ms.Start):
            raise ms.ProtocolError("second_start" if isinstance(event, ms.Start) else "late_connected")
        if event.stream_sid != self.twilio.stream_sid:
            raise ms.ProtocolError("wrong_stream_sid", event.stream_sid)
        now = self.clock()
        if not self.input.admit(event.payload if isinstance(event, ms.Media) else None, now):
            raise ms.ProtocolError("flood", "frames arrive faster than real time")
        if isinstance(event, ms.Media):
            self._frames_in.inc()
            self.tracker.media_received(event.timestamp_ms, now)
            if self.life.state is CallState.SAYING_GOODBYE:
                return False  # the caller cannot interrupt the goodbye
            batch = self.input.media(event.payload, self.twilio.received_at)
            if batch is not None:
                self.link.send(dialects.append_audio(batch.audio), frames=batch.frames, completed_at=batch.completed_at)
        elif isinstance(event, ms.MarkEcho):
            self.events.mark_echo(event.name, now)
        elif isinstance(event, ms.Dtmf):
            self._on_dtmf(event.digit)
        elif isinstance(event, ms.Stop):
            self.life.end(EndReason.CALLER_HANGUP)
            return True
        return False

    async def _goodbye(self) -> None:
        try:
            await self.ending.when_asked()
        except StreamClosed:
            self.life.end(self.twilio_gone())

    async def _roll_over(self) -> None:
        await self.switcher.run()
        await asyncio.Event().wait()  # no planned rollover: nothing to do, until the call ends

    async def _send_to_model(self) -> None:
        await self.link.run_sender()
        self.life.end(EndReason.UPSTREAM_FAILED)  # the model stopped reading: cut, apology and fallback

    def _on_dtmf(self, digit: str) -> None:
        """Keypad digits reach the model as conversation items (never logged: they may be PINs)."""
        connection = self.link.connection
        if self.keypad.mode == "off" or not self.life.in_call or connection is None:
            self.log.info("caller.dtmf_ignored", mode=self.keypad.mode)
            return
        text = self.keypad.press(digit)
        if text is None:
            return
        self.link.send(connection.dialect.text_item("user", text))
        self.respond_unless_active()
        self.turns.feed("keypad")
        self.log.info("caller.dtmf_sent", mode=self.keypad.mode)

    def respond_unless_active(self) -> None:
        """Ask the model to answer, unless a response is already under way (it answers then)."""
        if self.ledger.active is None:
            self.events.ask_model()

    # --- model → caller ------------------------------------------------------------------------

    async def _pump_model(self) -> None:
        """Model → Twilio: its events, one by one; a lost session is replaced (`switching.py`), a
        planned rollover's old session left for the new one."""
        while True:
            connection = self.link.connection
            assert connection is not None
            expired = False
            try:
                async for event in connection.events():
                    if self.link.connection is not connection:
                        break  # rolled over: what the old session still says is not heard
                    expired = dialects.is_session_expired(event)
                    await self.events.handle(event)
                    if expired:
                        break
            except StreamClosed:
                self.life.end(self.twilio_gone())
                return
            except websockets.ConnectionClosed:
                pass
            if self.life.end_reason is not None:  # e.g. the sender found the model stalled and cut it
                return
            if self.link.connection is not connection:
                continue
            if not expired and dialects.is_clean_close(connection.close_code):
                self.life.end(EndReason.UPSTREAM_CLOSED)
                return
            if not await self.switcher.replace_lost(expired):
                self.life.end(EndReason.UPSTREAM_FAILED)
                return

    async def _close_both(self) -> None:
        """Both closes at once, each bounded: a stalled model must not delay the caller's close.
        Their log events (`twilio.stalled`, `upstream.close_timeout`) are bound to the call."""
        ids = {"call_sid": self.call_sid, "stream_sid": self.twilio.stream_sid}
        with structlog.contextvars.bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
            await asyncio.gather(self.twilio.close(CLOSE_NORMAL), self.link.close())
