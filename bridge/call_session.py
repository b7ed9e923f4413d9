"""One phone call: the Twilio stream and the upstream Realtime session, pumped both ways.

The loops here only move data: decoding, accounting and barge-in decisions live in pure modules
(`voice_codecs`, `bridge.playback`, `bridge.barge_in`, `bridge.dialects`, `bridge.turn_timeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
import websockets

from voice_codecs import MODEL_RATE, TWILIO_RATE, make_transcoders

from . import dialects
from . import media_streams as ms
from .append_batcher import TWILIO_FRAME_MS, AppendBatcher
from .barge_in import plan_barge_in
from .call_setup import CallSetup
from .deadlines import PeerDeadlines
from .flood_guard import FloodGuard
from .logs import get_logger
from .outbound import OutboundQueue, Outgoing
from .playback import PROBE_INTERVAL_S, ItemKey, PlaybackTracker
from .realtime_events import (
    AudioDelta,
    BadEvent,
    AudioDone,
    FunctionCallRequested,
    InputTranscriptDone,
    ItemTruncated,
    OutputTranscriptDone,
    ResponseFinished,
    ResponseStarted,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    UpstreamError,
)
from .round_trip import RoundTripEstimator
from .telemetry import Metrics, bounded_label
from .tools import ToolResult
from .tools.registry import TOOL_OUTCOMES
from .turn_timeline import TurnTimeline
from .twilio_stream import CLOSE_INTERNAL, CLOSE_NORMAL, StreamClosed, TwilioStream, close_code_for
from .upstream import UpstreamConnection

log = get_logger("bridge.call")

START_TIMEOUT_S = 10.0
GOODBYE_TIMEOUT_S = 10.0
TWILIO_REST_TIMEOUT_S = 5.0  # a stalled Twilio API must not hold the caller on a dead line
GOODBYE_INSTRUCTIONS = (
    "The call must end now. Say a short, friendly goodbye to the caller in one sentence, in the language "
    "of the conversation, and say nothing else."
)
# A stalled model (issue 13, class 3). Caller audio waits for the model in a queue of at most
# UPSTREAM_QUEUE_AUDIO_EVENTS appends (1 s at the default 20 ms appends); beyond it, audio is
# dropped (`dropped_frames{reason="upstream_stalled"}`). The send and close deadlines towards both
# peers are in bridge/deadlines.py (a send to the model blocked past `upstream_send_s`: the
# connection is cut and the call takes the fallback path, `upstream.stalled`, upstream_failed).
UPSTREAM_QUEUE_AUDIO_EVENTS = 50
UPSTREAM_QUEUE_CONTROL_EVENTS = 256  # cancels, truncations, tool outputs, keypad text: few per turn
# A huge model delta (issue 13, class 8): audio goes to Twilio in frames of at most
# TWILIO_FRAME_BYTES (20 ms of μ-law, Twilio's own frame size), with one mark per slice of at most
# MODEL_SLICE_MS of model audio; between slices the call yields to the event loop, so one delta of
# any size cannot hold up other calls (a slice is well under a millisecond of work).
TWILIO_FRAME_BYTES = 160
MODEL_SLICE_MS = 200
MAX_RECONNECTS = 1  # per call: a second loss in one call is not a passing fault
MAX_SEED_TURNS = 50
# Responses whose bookkeeping is kept: the one playing and the few before it are all a barge-in
# can concern; older ones have long finished playing.
KEPT_RESPONSES = 8
UPSTREAM_FAILURES = (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI, websockets.ConnectionClosed)
# Errors the service sends in normal operation, e.g. when server VAD already cancelled the
# response we also cancel: not worth a warning.
BENIGN_UPSTREAM_ERRORS = {"response_cancel_not_active"}


class CallState(enum.Enum):
    AWAITING_START = "awaiting_start"
    CONNECTING_UPSTREAM = "connecting_upstream"
    IN_CALL = "in_call"
    SAYING_GOODBYE = "saying_goodbye"
    ENDING = "ending"
    ENDED = "ended"


_TRANSITIONS: dict[CallState, set[CallState]] = {
    CallState.AWAITING_START: {CallState.CONNECTING_UPSTREAM, CallState.ENDING},
    CallState.CONNECTING_UPSTREAM: {CallState.IN_CALL, CallState.ENDING},
    CallState.IN_CALL: {CallState.SAYING_GOODBYE, CallState.ENDING},
    CallState.SAYING_GOODBYE: {CallState.ENDING},
    CallState.ENDING: {CallState.ENDED},
    CallState.ENDED: set(),
}


class EndReason(enum.Enum):
    CALLER_HANGUP = "caller_hangup"
    UPSTREAM_CLOSED = "upstream_closed"  # the model's side ended the session cleanly
    UPSTREAM_FAILED = "upstream_failed"  # dropped mid-call
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # never connected
    PROTOCOL_ERROR = "protocol_error"
    UNAUTHORIZED = "unauthorized"
    NO_START = "no_start"
    DRAINED = "drained"  # the process is shutting down
    MAX_DURATION = "max_duration"  # the profile's max_call_seconds
    AGENT_HANGUP = "agent_hangup"  # the model called end_call
    TRANSFERRED = "transferred"  # the model called transfer_call
    INTERNAL_ERROR = "internal_error"
    TWILIO_STALLED = "twilio_stalled"  # Twilio stopped reading: the connection was aborted

    @property
    def upstream_failed(self) -> bool:
        """The model could not be reached or was lost: the caller is owed an apology (and the fallback)."""
        return self in (EndReason.UPSTREAM_UNAVAILABLE, EndReason.UPSTREAM_FAILED)


class StartRefused(Exception):
    """The `start` event is well-formed but not acceptable (bad stream token, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallSession:
    """Owns everything of one call; created when the stream opens, gone when it ends."""

    def __init__(
        self,
        twilio: TwilioStream,
        prepare: Callable[[ms.Start], CallSetup],
        audio_mode: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        log_transcripts: bool = False,
        append_ms: int = TWILIO_FRAME_MS,
        deadlines: PeerDeadlines | None = None,
    ) -> None:
        self.twilio = twilio
        self.deadlines = deadlines or PeerDeadlines()  # sends to and closes of the model (bridge/deadlines.py)
        self.prepare = prepare
        self.audio_mode = audio_mode
        self.metrics = metrics
        self.clock = clock
        self.log_transcripts = log_transcripts
        self.setup: CallSetup | None = None
        self.state = CallState.AWAITING_START
        self.end_reason: EndReason | None = None
        self.call_sid: str | None = None
        self.upstream: UpstreamConnection | None = None
        self.tracker = PlaybackTracker(sample_rate=TWILIO_RATE, network=RoundTripEstimator(on_sample=metrics.twilio_rtt.observe))
        self.timeline = TurnTimeline()
        self.flood_guard = FloodGuard()
        # Labelled children resolved once: these are touched for every frame.
        self._frames_in = metrics.frames.labels(direction="in")
        self._frames_out = metrics.frames.labels(direction="out")
        self._relay_in = metrics.relay.labels(direction="caller_to_model")
        self._relay_out = metrics.relay.labels(direction="model_to_caller")
        self.to_model, self.to_caller = make_transcoders(audio_mode)
        self.batcher = AppendBatcher(append_ms)
        self._model_rate = TWILIO_RATE if audio_mode == "g711" else MODEL_RATE
        self._active_response_id: str | None = None
        self._dropped_responses: set[str] = set()
        self._last_item: ItemKey | None = None
        self._response_items: dict[str, list[ItemKey]] = {}  # audio items of each response, in order
        self._item_response: dict[ItemKey, str] = {}
        self._recent_responses: deque[str] = deque()  # bookkeeping is kept for these only
        self._started_at: float | None = None
        self._greeting_pending = True
        self._goodbye_requested = asyncio.Event()
        self._stop = asyncio.Event()  # set when the call should end now (after a tool's action)
        self._goodbye_reason = EndReason.DRAINED
        self._reconnecting = False
        self._response_seq = 0  # responses started so far
        self._response_seqs: dict[str, int] = {}
        self._finished_seq = 0  # the highest-numbered response that has finished
        self._tool_runs: dict[str, list[tuple[str, asyncio.Task[ToolResult]]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._after_speaking: tuple[str, str | None] | None = None
        self.transfer_to: str | None = None
        self._dtmf_digits = ""
        self._reconnects = 0
        # The conversation in words, to seed a new session if the upstream one is lost.
        self._transcript: deque[tuple[str, str]] = deque(maxlen=MAX_SEED_TURNS)
        self._log = log
        self._outbound = OutboundQueue(UPSTREAM_QUEUE_AUDIO_EVENTS, UPSTREAM_QUEUE_CONTROL_EVENTS)
        self._outbound_ready = asyncio.Event()
        self._send_blocked = False  # a send to the model is under way (still true if cancelled in it)
        twilio.on_stall = metrics.peer_stalls.labels(peer="twilio").inc

    # --- state ---------------------------------------------------------------------------------

    def _move_to(self, state: CallState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"call cannot go from {self.state.value} to {state.value}")
        self.state = state

    def _end(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self.state not in (CallState.ENDING, CallState.ENDED):
            self._move_to(CallState.ENDING)

    def request_goodbye(self, reason: EndReason = EndReason.DRAINED) -> None:
        """Ask the call to end politely: the model says goodbye, the caller hears it, then we close."""
        self._goodbye_reason = reason
        self._goodbye_requested.set()

    # --- the call ------------------------------------------------------------------------------

    async def run(self) -> EndReason:
        try:
            start = await self._await_start()
            if start is None:
                return self.end_reason or EndReason.NO_START
            with structlog.contextvars.bound_contextvars(call_sid=start.call_sid, stream_sid=start.stream_sid):
                assert self.setup is not None
                self._log.info("call.started", audio=self.audio_mode, profile=self.setup.profile_name)
                self.metrics.active_calls.inc()
                try:
                    await self._converse()
                finally:
                    self.metrics.active_calls.dec()
                    assert self._started_at is not None
                    self.metrics.call_duration.observe(self.clock() - self._started_at)
                self._log.info("call.ended", reason=self.end_reason.value if self.end_reason else None)
            return self.end_reason or EndReason.CALLER_HANGUP
        except Exception:
            self._end(EndReason.INTERNAL_ERROR)
            raise
        finally:
            await self._close_both()
            if self.state is not CallState.ENDING:
                self._move_to(CallState.ENDING)
            self._move_to(CallState.ENDED)
            self.metrics.calls.labels(outcome=(self.end_reason or EndReason.INTERNAL_ERROR).value).inc()

    async def _await_start(self) -> ms.Start | None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    event = await self.twilio.receive()
                    if isinstance(event, ms.Start):
                        start = event
                        break
                    if not isinstance(event, ms.Connected):
                        raise ms.ProtocolError("event_before_start", type(event).__name__)
        except TimeoutError:
            await self._reject("no_start_event", EndReason.NO_START)
            return None
        except StreamClosed:
            self._end(EndReason.CALLER_HANGUP)
            return None
        except ms.ProtocolError as exc:
            await self._reject(exc.reason, EndReason.PROTOCOL_ERROR, detail=exc.detail)
            return None
        fmt = start.media_format
        if (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) != ("audio/x-mulaw", 8000, 1):
            await self._reject("unsupported_media_format", EndReason.PROTOCOL_ERROR, detail=str(fmt))
            return None
        try:
            self.setup = self.prepare(start)
        except StartRefused as exc:
            await self._reject(exc.reason, EndReason.UNAUTHORIZED, call_sid=start.call_sid)
            return None
        self.call_sid = start.call_sid
        self.twilio.stream_sid = start.stream_sid
        self._started_at = self.clock()
        self._move_to(CallState.CONNECTING_UPSTREAM)
        return start

    async def _reject(self, reason: str, end: EndReason, **fields: str) -> None:
        """Refuse the stream before anything reaches the upstream."""
        self._log.warning("call.rejected", reason=reason, **fields)
        self.metrics.rejections.labels(reason=reason).inc()
        self._end(end)
        await self.twilio.close(close_code_for(reason), reason)

    async def _converse(self) -> None:
        assert self.setup is not None
        # Twilio is read while the upstream connects: marks, a hangup or bad input are handled at
        # once, and caller audio does not pile up unread (it is dropped until the model is there).
        caller = asyncio.create_task(self._pump_caller(), name="pump_caller")
        connecting = asyncio.ensure_future(self.setup.upstream)
        await asyncio.wait({caller, connecting}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            # The call ended (hangup, bad input) before the model was there.
            connecting.cancel()
            await asyncio.wait({connecting})
            if not connecting.cancelled() and connecting.exception() is None:
                await self._close_quietly(connecting.result())
            await asyncio.gather(caller, return_exceptions=True)
            return
        try:
            self.upstream = connecting.result()
        except UPSTREAM_FAILURES as exc:
            self._log.error("upstream.connect_failed", error=type(exc).__name__, detail=str(exc))
            self._end(EndReason.UPSTREAM_UNAVAILABLE)
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
            await self._push_apology()
            await self.twilio.close(CLOSE_INTERNAL, "upstream_unavailable")
            return
        if self.state is not CallState.CONNECTING_UPSTREAM:  # ended while the result came in
            await asyncio.gather(caller, return_exceptions=True)
            return
        self._move_to(CallState.IN_CALL)
        # Measure the round trip before the greeting starts playing (then only while nothing plays).
        probe = self.tracker.probe_due(self.clock())
        if probe is not None:
            await self.twilio.send_mark(probe)
        tasks = {
            caller,
            asyncio.create_task(self._pump_model(), name="pump_model"),
            asyncio.create_task(self._send_to_model(), name="send_to_model"),
            asyncio.create_task(self._goodbye_when_asked(), name="goodbye"),
            asyncio.create_task(self._stop.wait(), name="stop"),
            asyncio.create_task(self._probe_round_trip(), name="probe_round_trip"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tool_tasks = [t for runs in self._tool_runs.values() for _, t in runs]
            for task in (*tasks, *self._background, *tool_tasks):
                task.cancel()
            await asyncio.gather(*tasks, *self._background, *tool_tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                self._log.error("call.failed", error=repr(task.exception()))
                self._end(EndReason.INTERNAL_ERROR)
        if self.end_reason is EndReason.UPSTREAM_FAILED:
            await self._push_apology()

    async def _push_apology(self) -> None:
        """With Twilio REST, replace the call's TwiML with the apology before the stream closes.

        Otherwise (or if Twilio cannot be reached) the after-stream `<Redirect>` asks for it, and
        only this process remembers the outcome: with REST any replica setup works.
        """
        assert self.call_sid is not None and self.setup is not None
        control = self.setup.call_control
        if control is None:
            return
        fallback = self.setup.fallback_number
        if await self._twilio_rest("apologise", control.apologise(self.call_sid, fallback)):
            self._log.warning("call.fallback", via="rest", dial=bool(fallback))

    async def _twilio_rest(self, action: str, request: Awaitable[None]) -> bool:
        """One Twilio REST request, bounded in time; a failure is logged (the caller decides the fallback)."""
        try:
            async with asyncio.timeout(TWILIO_REST_TIMEOUT_S):
                await request
        except Exception as exc:
            self._log.error("call.control_failed", action=action, error=type(exc).__name__)
            return False
        return True

    # --- caller → model ------------------------------------------------------------------------

    async def _pump_caller(self) -> None:
        """Twilio → model: caller audio, mark echoes, hangup."""
        try:
            while True:
                event = await self.twilio.receive()
                if isinstance(event, ms.Connected | ms.Start):
                    raise ms.ProtocolError("second_start" if isinstance(event, ms.Start) else "late_connected")
                if event.stream_sid != self.twilio.stream_sid:
                    raise ms.ProtocolError("wrong_stream_sid", event.stream_sid)
                now = self.clock()
                audio_ms = len(event.payload) / 8.0 if isinstance(event, ms.Media) else 0.0
                if not self.flood_guard.admit(audio_ms, now):
                    raise ms.ProtocolError("flood", "frames arrive faster than real time")
                if isinstance(event, ms.Media):
                    self._frames_in.inc()
                    if self.state is CallState.SAYING_GOODBYE:
                        continue  # the caller cannot interrupt the goodbye
                    batch = self.batcher.add(event.payload, self.twilio.received_at)
                    if batch is None:
                        continue
                    audio = self.to_model.process(batch.audio)
                    if audio:
                        self._send_upstream(dialects.append_audio(audio), frames=batch.frames, completed_at=batch.completed_at)
                elif isinstance(event, ms.MarkEcho):
                    if self.tracker.mark_echoed(event.name, now):
                        stages = self.timeline.mark_echoed(event.name, now)
                        if stages is not None:
                            self._turn_completed(stages)
                elif isinstance(event, ms.Dtmf):
                    await self._on_dtmf(event.digit)
                elif isinstance(event, ms.Stop):
                    self._end(EndReason.CALLER_HANGUP)
                    return
        except StreamClosed:
            self._end(self._twilio_gone())
        except ms.ProtocolError as exc:
            self._log.warning("twilio.bad_frame", reason=exc.reason, detail=exc.detail)
            self.metrics.rejections.labels(reason=exc.reason).inc()
            self._end(EndReason.PROTOCOL_ERROR)
            await self.twilio.close(close_code_for(exc.reason), exc.reason)

    def _send_upstream(self, event: dict[str, object] | str, frames: int = 0, completed_at: float | None = None) -> bool:
        """Queue `event` for the model, never waiting: the sender task sends it. Dropped, not fatal,
        while the session is not there yet or being replaced, or when the model has stopped
        reading and the queue is full.

        `frames` is how many caller frames the event carries (0: a control event); True if queued.
        """
        if self.upstream is None:
            self.metrics.dropped_frames.labels(reason="upstream_connecting").inc(max(frames, 1))
            return False
        if self._reconnecting:
            self.metrics.dropped_frames.labels(reason="upstream_reconnecting").inc(max(frames, 1))
            return False
        if not self._outbound.offer(Outgoing(event, frames, completed_at)):
            self.metrics.dropped_frames.labels(reason="upstream_stalled").inc(max(frames, 1))
            return False
        self._outbound_ready.set()
        return True

    async def _send_to_model(self) -> None:
        """The one sender to the model: drains the outbound queue, each send with a deadline.

        A send that passes `deadlines.upstream_send_s` means the model stopped reading: the connection
        is aborted and the call ends as upstream_failed (the apology and fallback follow).
        """
        while True:
            item = self._outbound.pop()
            if item is None:
                self._outbound_ready.clear()
                await self._outbound_ready.wait()
                continue
            connection = self.upstream
            assert connection is not None
            self._send_blocked = True
            try:
                async with asyncio.timeout(self.deadlines.upstream_send_s):
                    await connection.send(item.event)
            except TimeoutError:
                dropped = item.frames + self._outbound.clear()
                self._log.error("upstream.stalled", timeout_s=self.deadlines.upstream_send_s, dropped_frames=dropped)
                self.metrics.peer_stalls.labels(peer="upstream").inc()
                self.metrics.dropped_frames.labels(reason="upstream_stalled").inc(dropped)
                connection.abort()
                self._end(EndReason.UPSTREAM_FAILED)
                return
            except websockets.ConnectionClosed:
                # The model pump sees the same closure and decides: reconnect, or end the call.
                self.metrics.dropped_frames.labels(reason="upstream_closed").inc(max(item.frames, 1))
            else:
                if item.completed_at is not None:
                    self._relay_in.observe(time.perf_counter() - item.completed_at)
            self._send_blocked = False

    def _twilio_gone(self) -> EndReason:
        """Why the call ends when the Twilio socket is gone: a hang-up, or our abort of a stalled peer."""
        return EndReason.TWILIO_STALLED if self.twilio.stalled else EndReason.CALLER_HANGUP

    def _turn_completed(self, stages: dict[str, float]) -> None:
        for stage, seconds in stages.items():
            self.metrics.turn_latency.labels(stage=stage).observe(seconds)
        self._log.info(
            "turn.timeline",
            **{f"{stage}_ms": round(seconds * 1000, 1) for stage, seconds in stages.items()},
            **self._network_estimate(),
        )

    def _network_estimate(self) -> dict[str, float | None]:
        """The Twilio round trip and playout delay barge-in accounting uses now, for the logs."""
        network = self.tracker.network
        rtt = network.round_trip_s
        return {
            "twilio_rtt_ms": round(rtt * 1000, 1) if rtt is not None else None,
            "playout_delay_ms": round(network.playout_delay_s * 1000, 1),
        }

    async def _probe_round_trip(self) -> None:
        """While nothing plays, now and then a bare mark: Twilio echoes it at once (one round trip)."""
        while True:
            if self.state is CallState.IN_CALL:
                name = self.tracker.probe_due(self.clock())
                if name is not None:
                    await self.twilio.send_mark(name)
            await asyncio.sleep(PROBE_INTERVAL_S / 2)

    # --- model → caller ------------------------------------------------------------------------

    async def _pump_model(self) -> None:
        """Model → Twilio: audio with marks, barge-in, errors; a lost session is replaced once."""
        assert self.upstream is not None
        while True:
            expired = False
            try:
                async for event in self.upstream.events():
                    if isinstance(event, UpstreamError) and event.code == "session_expired":
                        expired = True
                    await self._on_model_event(event)
                    if expired:
                        break
            except StreamClosed:
                self._end(self._twilio_gone())
                return
            except websockets.ConnectionClosed:
                pass
            if self.end_reason is not None:  # e.g. the sender found the model stalled and cut it
                return
            if not expired and self.upstream.close_code in (1000, 1001):
                self._end(EndReason.UPSTREAM_CLOSED)
                return
            if self._reconnects >= MAX_RECONNECTS or not await self._reconnect(expired):
                self._end(EndReason.UPSTREAM_FAILED)
                return

    async def _reconnect(self, expired: bool) -> bool:
        """Open a new upstream session and tell it the conversation so far."""
        assert self.setup is not None and self.upstream is not None
        self._reconnects += 1
        self._reconnecting = True
        self._log.warning("upstream.reconnecting", reason="session_expired" if expired else "dropped", turns=len(self._transcript))
        old = self.upstream
        self.metrics.dropped_frames.labels(reason="upstream_reconnecting").inc(self._outbound.clear())
        try:
            await self._close_quietly(old)
            # What was playing belonged to the old session: stop it, the new one starts clean.
            if self.tracker.is_playing:
                await self.twilio.send_clear()
                self.tracker.cleared(self.clock())
            self.to_caller.reset()
            self.to_model.reset()
            self.batcher.clear()
            self._active_response_id = None
            connection = await self.setup.reconnect()
            async with asyncio.timeout(self.deadlines.upstream_send_s):  # a new session that does not read fails here
                for role, text in self._transcript:
                    await connection.send(connection.dialect.text_item(role, text))
        except UPSTREAM_FAILURES as exc:
            self._log.error("upstream.reconnect_failed", error=type(exc).__name__, detail=str(exc))
            return False
        finally:
            self._reconnecting = False
        self.upstream = connection
        self._log.info("upstream.reconnected", seeded_turns=len(self._transcript))
        return True

    async def _on_model_event(self, event: ServerEvent) -> None:
        if isinstance(event, AudioDelta):
            if event.response_id in self._dropped_responses:
                self.metrics.dropped_frames.labels(reason="cancelled_response").inc()
                return
            key = (event.item_id, event.content_index)
            self._last_item = key
            if key not in self._item_response:
                self._item_response[key] = event.response_id
                self._response_items.setdefault(event.response_id, []).append(key)
            self.timeline.model_audio(self.clock())
            self.tracker.audio_received(event.item_id, event.content_index, self._model_ms(event.audio))
            received_at = self.upstream.received_at
            if await self._play_delta(event):
                self._relay_out.observe(time.perf_counter() - received_at)
        elif isinstance(event, AudioDone):
            if event.response_id not in self._dropped_responses:
                # The transcoder holds back a few ms; without a flush the word ending is lost.
                await self._play(event.item_id, event.content_index, self.to_caller.flush())
        elif isinstance(event, SpeechStarted):
            if self.state is CallState.IN_CALL:
                await self._barge_in()
        elif isinstance(event, ResponseStarted):
            self._active_response_id = event.response_id
            self._last_item = None  # until its first audio, the new response has nothing to truncate
            self._response_seq += 1
            self._response_seqs[event.response_id] = self._response_seq
            self._remember_response(event.response_id)
        elif isinstance(event, ResponseFinished):
            if event.response_id == self._active_response_id:
                self._active_response_id = None
            self._finished_seq = max(self._finished_seq, self._response_seqs.pop(event.response_id, 0))
            self._log.info("model.response_done", response_id=event.response_id, status=event.status)
            if event.response_id in self._tool_runs:
                self._spawn(self._answer_tools(event.response_id), "answer_tools")
        elif isinstance(event, FunctionCallRequested):
            self._start_tool(event)
        elif isinstance(event, SpeechStopped):
            self.timeline.speech_stopped(self.clock())
            self._log.info("caller.speech_stopped", audio_end_ms=event.audio_end_ms)
        elif isinstance(event, ItemTruncated):
            self._log.info("model.item_truncated", item_id=event.item_id, audio_end_ms=event.audio_end_ms)
        elif isinstance(event, OutputTranscriptDone):
            self._remember("assistant", event.transcript)
        elif isinstance(event, InputTranscriptDone):
            self._remember("user", event.transcript)
        elif isinstance(event, BadEvent):
            # Skipped: one unreadable event must not end a healthy call. Never its content in the log.
            self.metrics.upstream_bad_events.labels(reason=bounded_label(event.reason, dialects.BAD_EVENT_REASONS)).inc()
            self._log.warning("upstream.bad_event", reason=event.reason, event_type=event.wire_type, detail=event.detail)
        elif isinstance(event, UpstreamError):
            self.metrics.upstream_errors.labels(code=bounded_label(event.code or "none", dialects.KNOWN_ERROR_CODES)).inc()
            if event.message.startswith("Audio content of") or "truncat" in event.message.lower():
                self.metrics.truncate_errors.inc()
            level = self._log.info if event.code in BENIGN_UPSTREAM_ERRORS else self._log.warning
            level("upstream.error", code=event.code, error_type=event.error_type, message=event.message)

    def _response_audio_items(self, item: ItemKey) -> list[ItemKey]:
        """The audio items of the response `item` belongs to, in order."""
        response_id = self._item_response.get(item)
        return self._response_items.get(response_id, []) if response_id else []

    def _remember_response(self, response_id: str) -> None:
        """Keep per-response bookkeeping for the last few responses only: a long call stays flat."""
        self._recent_responses.append(response_id)
        while len(self._recent_responses) > KEPT_RESPONSES:
            old = self._recent_responses.popleft()
            self._dropped_responses.discard(old)
            self._response_seqs.pop(old, None)
            for key in self._response_items.pop(old, []):
                self._item_response.pop(key, None)
                self.tracker.forget(*key)

    def _remember(self, role: str, text: str) -> None:
        if not text.strip():
            return
        self._transcript.append((role, text))
        if self.log_transcripts:  # off by default: transcripts are personal data
            self._log.info("transcript", role=role, text=text)

    async def _play_delta(self, event: AudioDelta) -> bool:
        """Transcode and play one delta slice by slice, yielding to the loop between slices: a
        delta of any size costs other calls at most one slice of work. False if it was dropped
        meanwhile (the goodbye, which runs beside this pump, cancelled its response)."""
        audio = event.audio
        bytes_per_sample = 1 if self._model_rate == TWILIO_RATE else 2
        step = self._model_rate * MODEL_SLICE_MS // 1000 * bytes_per_sample
        for offset in range(0, len(audio), step):
            if offset:
                await asyncio.sleep(0)
                if event.response_id in self._dropped_responses:
                    return False
            await self._play(event.item_id, event.content_index, self.to_caller.process(audio[offset : offset + step]))
        return True

    async def _play(self, item_id: str, content_index: int, mulaw: bytes) -> None:
        """Send `mulaw` in Twilio-sized frames, then one mark for all of them."""
        if not mulaw:
            return
        now = self.clock()
        for offset in range(0, len(mulaw), TWILIO_FRAME_BYTES):
            await self.twilio.send_media(mulaw[offset : offset + TWILIO_FRAME_BYTES])
            self._frames_out.inc()
        mark = self.tracker.chunk_sent(item_id, content_index, len(mulaw), now)
        await self.twilio.send_mark(mark)
        self.timeline.media_sent(mark, now)
        if self._greeting_pending:
            self._greeting_pending = False
            assert self._started_at is not None
            self.metrics.first_greeting_audio.observe(now - self._started_at)

    async def _barge_in(self) -> None:
        assert self.upstream is not None
        plan = plan_barge_in(
            self.tracker,
            self._active_response_id,
            self._last_item,
            self.clock(),
            response_items_of=self._response_audio_items,
        )
        if plan.is_noop:
            self._log.info("caller.speech_started", barge_in=False)
            return
        self.metrics.barge_ins.inc()
        self.timeline.abandoned()
        if plan.clear_playback:
            await self.twilio.send_clear()
            self.tracker.cleared(self.clock())
            self.to_caller.reset()
            self._last_item = None
        if plan.cancel_response_id is not None:
            self._dropped_responses.add(plan.cancel_response_id)
            self._active_response_id = None
            self._send_upstream(dialects.cancel_response())
        if plan.truncation is not None:
            t = plan.truncation
            self._send_upstream(dialects.truncate_item(t.item_id, t.content_index, t.audio_end_ms))
            self.metrics.truncations.inc()
        for item_id, _ in plan.deletions:
            self._send_upstream(dialects.delete_item(item_id))
        self._log.info(
            "caller.barge_in",
            cancelled=plan.cancel_response_id,
            truncated_item=plan.truncation.item_id if plan.truncation else None,
            audio_end_ms=plan.truncation.audio_end_ms if plan.truncation else None,
            deleted_items=len(plan.deletions),
            **self._network_estimate(),
        )

    # --- tools ---------------------------------------------------------------------------------

    def _start_tool(self, event: FunctionCallRequested) -> None:
        assert self.setup is not None
        task = asyncio.create_task(
            self.setup.tools.run(event.name, event.arguments, self, allowed=self.setup.tool_names), name=f"tool_{event.name}"
        )
        self._tool_runs.setdefault(event.response_id, []).append((event.call_id, task))
        self._log.info("tool.called", tool=event.name, call_id=event.call_id)

    async def _answer_tools(self, response_id: str) -> None:
        """Every call of the finished response gets its output, then the model may go on."""
        assert self.setup is not None
        for call_id, task in self._tool_runs.pop(response_id, []):
            result = await task
            name = task.get_name().removeprefix("tool_")
            # The tool's name is the model's: only the names of registered tools become label values.
            known = result.outcome != "unknown_tool" and name in self.setup.tools.tools
            self.metrics.tool_calls.labels(
                tool=bounded_label(name, self.setup.tools.tools) if known else "unknown",
                outcome=bounded_label(result.outcome, TOOL_OUTCOMES),
            ).inc()
            self._log.info("tool.answered", tool=name, call_id=call_id, outcome=result.outcome)
            self._send_upstream(dialects.function_call_output(call_id, result.output))
        marker = self._response_seq
        if self._active_response_id is None:  # the caller may have spoken meanwhile: that response answers
            self._send_upstream(dialects.create_response())
        if self._after_speaking is not None:
            action, number = self._after_speaking
            self._after_speaking = None
            await self._until_heard(marker, action)
            await self._act(action, number)

    # CallActions, for the tools:
    def hang_up_after_speaking(self) -> None:
        self._after_speaking = ("hang_up", None)

    def transfer_after_speaking(self, number: str) -> None:
        self._after_speaking = ("transfer", number)

    @property
    def transfer_number(self) -> str | None:
        return self.setup.transfer_number if self.setup else None

    async def _act(self, action: str, number: str | None) -> None:
        """Hang up or transfer through Twilio REST; without REST, by ending the stream (see after-stream)."""
        assert self.call_sid is not None and self.setup is not None
        control = self.setup.call_control
        # If Twilio cannot be reached, closing the stream still ends or transfers the call.
        if action == "transfer" and number:
            self.transfer_to = number
            if control is not None:
                await self._twilio_rest(action, control.transfer(self.call_sid, number, handoff=None))
            self._end(EndReason.TRANSFERRED)
        else:
            if control is not None:
                await self._twilio_rest(action, control.hang_up(self.call_sid))
            self._end(EndReason.AGENT_HANGUP)
        self._log.info("call.agent_action", action=action, via="rest" if control else "stream")
        self._stop.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- keypad ---------------------------------------------------------------------------------

    async def _on_dtmf(self, digit: str) -> None:
        """Keypad digits reach the model as conversation items (never logged: they may be PINs)."""
        assert self.setup is not None
        mode = self.setup.dtmf
        if mode == "off" or self.state is not CallState.IN_CALL or self.upstream is None:
            self._log.info("caller.dtmf_ignored", mode=mode)
            return
        if mode == "collect":
            if digit != "#":
                self._dtmf_digits = (self._dtmf_digits + digit)[-32:]
                return
            text, self._dtmf_digits = f"[The caller typed {self._dtmf_digits or 'nothing'} on the keypad, ending with #]", ""
        else:
            text = f"[The caller pressed {digit} on the keypad]"
        self._send_upstream(self.upstream.dialect.text_item("user", text))
        if self._active_response_id is None:
            self._send_upstream(dialects.create_response())
        self._log.info("caller.dtmf_sent", mode=mode)

    # --- ending politely -----------------------------------------------------------------------

    async def _goodbye_when_asked(self) -> None:
        """When asked to end: stop what is playing, let the model say goodbye, wait until it is heard."""
        try:
            await self._goodbye()
        except StreamClosed:
            self._end(self._twilio_gone())

    async def _goodbye(self) -> None:
        assert self.upstream is not None and self.setup is not None
        max_call_s = self.setup.max_call_s
        if max_call_s is None:
            await self._goodbye_requested.wait()
        while not self._goodbye_requested.is_set():
            assert self._started_at is not None and max_call_s is not None
            remaining = self._started_at + max_call_s - self.clock()
            if remaining <= 0:
                self.request_goodbye(EndReason.MAX_DURATION)
                break
            # Wake up rarely: this runs in every call (and the clock may be a scaled one).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._goodbye_requested.wait(), timeout=min(remaining, 0.25))
        if self.state is not CallState.IN_CALL:
            return
        self._move_to(CallState.SAYING_GOODBYE)
        self._log.info("call.saying_goodbye", reason=self._goodbye_reason.value)
        if self._active_response_id is not None:
            self._dropped_responses.add(self._active_response_id)
            self._send_upstream(dialects.cancel_response())
            self._active_response_id = None
        if self.tracker.is_playing:
            await self.twilio.send_clear()
            self.tracker.cleared(self.clock())
            self.to_caller.reset()
        marker = self._response_seq
        self._send_upstream(dialects.create_response(GOODBYE_INSTRUCTIONS))
        await self._until_heard(marker, "goodbye")
        self._end(self._goodbye_reason)
        self._stop.set()

    async def _until_heard(self, marker: int, what: str) -> None:
        """Wait until a response started after `marker` has finished and its audio has been heard."""
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                while not (self._finished_seq > marker and not self.tracker.is_playing):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            self._log.warning("call.wait_heard_timeout", waiting_for=what)

    # --- helpers -------------------------------------------------------------------------------

    def _model_ms(self, audio: bytes) -> float:
        bytes_per_sample = 1 if self._model_rate == TWILIO_RATE else 2
        return len(audio) / bytes_per_sample * 1000.0 / self._model_rate

    async def _close_quietly(self, connection: UpstreamConnection) -> None:
        """Close the upstream session; if its closing handshake stalls, cut the connection."""
        try:
            async with asyncio.timeout(self.deadlines.upstream_close_s):
                await connection.close()
        except (TimeoutError, OSError):
            self._log.warning("upstream.close_timeout")
            connection.abort()

    async def _close_both(self) -> None:
        """Both closes at once, each bounded: a stalled model must not delay the caller's close.
        Their log events (`twilio.stalled`, `upstream.close_timeout`) are bound to the call."""
        closing = [self.twilio.close(CLOSE_NORMAL)]
        if self.upstream is not None:
            if self._send_blocked:  # the model is not taking what we sent: no closing handshake
                self.upstream.abort()
            closing.append(self._close_quietly(self.upstream))
        ids = {"call_sid": self.call_sid, "stream_sid": self.twilio.stream_sid}
        with structlog.contextvars.bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
            await asyncio.gather(*closing)
