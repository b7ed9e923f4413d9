"""The model's events, as the call acts on them: its audio played to the caller, barge-in when the
caller speaks over it, responses and tool calls booked, transcripts kept, errors counted.

This is the model-facing half of `CallSession` (it is handed the session's parts, not its loops).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .. import dialects
from ..barge_in import plan_barge_in
from ..realtime_events import (
    AudioDelta,
    AudioDone,
    BadEvent,
    FunctionCallRequested,
    InputTranscriptDone,
    ItemTruncated,
    OutOfBandFinished,
    OutOfBandStarted,
    OutputTranscriptDone,
    ResponseFinished,
    ResponseStarted,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    TextDone,
    UpstreamError,
)
from ..telemetry import bounded_label
from .transcript import hear
from .truncation import Truncator

if TYPE_CHECKING:
    from .session import CallSession


class ModelEvents:
    def __init__(self, call: CallSession) -> None:
        self.call = call
        self.background: set[asyncio.Task[None]] = set()
        self.barge_ins = 0  # this call's, for the post-call record
        self._relay_out = call.metrics.relay.labels(direction="model_to_caller")
        self.truncator = Truncator(call)

    async def handle(self, event: ServerEvent) -> None:
        if isinstance(event, OutOfBandStarted | OutOfBandFinished | TextDone):
            self.call.switcher.out_of_band(event)  # the bridge's own errand (a summary): never a turn
            return
        if self.truncator.holding and isinstance(event, SpeechStopped | FunctionCallRequested):
            self.truncator.flush("event")  # the model may be asked to answer soon: it must know what was heard first
        self.call.switcher.observe(event)
        hear(self.call.transcript, event, self.call.audio_mode.model_ms)
        if isinstance(event, AudioDelta):
            await self._audio(event)
        elif isinstance(event, AudioDone):
            if not self.call.ledger.is_dropped(event.response_id):
                await self.call.output.finish_item(event.item_id, event.content_index)
        elif isinstance(event, SpeechStarted):
            if self.call.life.in_call:
                self.call.turns.feed("caller_speech_started")
                await self.barge_in()
        elif isinstance(event, ResponseStarted):
            self.call.trace.response_started()
            self.call.turns.feed("response_started")
            for key in self.call.ledger.started(event.response_id):
                self.call.tracker.forget(*key)
        elif isinstance(event, ResponseFinished):
            self._response_finished(event)
        elif isinstance(event, FunctionCallRequested):
            assert self.call.tools is not None
            self.call.trace.tool_started(event.call_id, event.name)
            self.call.tools.start(event)
            self.call.turns.tool_started(event.response_id, event.name)
        else:
            self._note(event)

    def _note(self, event: ServerEvent) -> None:
        """Events that only inform: logged, counted, remembered."""
        call, log = self.call, self.call.log
        if isinstance(event, SpeechStopped):
            call.timeline.speech_stopped(call.clock())
            call.trace.turn_started("caller")
            if call.life.in_call:
                call.turns.feed("caller_turn_ended")
            log.info("caller.speech_stopped", audio_end_ms=event.audio_end_ms)
        elif isinstance(event, ItemTruncated):
            log.info("model.item_truncated", item_id=event.item_id, audio_end_ms=event.audio_end_ms)
        elif isinstance(event, OutputTranscriptDone):
            self._log_transcript("assistant", event.transcript)
        elif isinstance(event, InputTranscriptDone):
            self._log_transcript("user", event.transcript)
        elif isinstance(event, BadEvent):
            # Skipped: one unreadable event must not end a healthy call. Never its content in the log.
            call.metrics.upstream_bad_events.labels(reason=bounded_label(event.reason, dialects.BAD_EVENT_REASONS)).inc()
            log.warning("upstream.bad_event", reason=event.reason, event_type=event.wire_type, detail=event.detail)
        elif isinstance(event, UpstreamError):
            call.metrics.upstream_errors.labels(code=bounded_label(event.code or "none", dialects.KNOWN_ERROR_CODES)).inc()
            if dialects.is_truncate_error(event):
                call.metrics.truncate_errors.inc()
            level = log.info if dialects.is_benign_error(event) else log.warning
            level("upstream.error", code=event.code, error_type=event.error_type, message=event.message)
        else:
            call.usage.note(event)  # warnings, rate limits, events not acted on (bridge/model_usage.py)

    async def _audio(self, event: AudioDelta) -> None:
        call = self.call
        if not call.ledger.audio(event.response_id, (event.item_id, event.content_index)):
            call.metrics.dropped_frames.labels(reason="cancelled_response").inc()
            return
        call.timeline.model_audio(call.clock())
        call.turns.model_audio()
        call.tracker.audio_received(event.item_id, event.content_index, call.audio_mode.model_ms(len(event.audio)))
        connection = call.link.connection
        received_at = connection.received_at if connection is not None else time.perf_counter()
        played = await call.output.play_model_audio(
            event.item_id, event.content_index, event.audio, lambda: not call.ledger.is_dropped(event.response_id)
        )
        if played:
            self._relay_out.observe(time.perf_counter() - received_at)

    def _response_finished(self, event: ResponseFinished) -> None:
        call = self.call
        call.ledger.finished(event.response_id)
        call.turns.feed("response_done")
        call.log.info("model.response_done", response_id=event.response_id, status=event.status)
        call.usage.response_finished(event)  # tokens, cost, a failure's reason (bridge/model_usage.py)
        if call.tools is not None and call.tools.called_in(event.response_id):
            self._spawn(self._answer_tools(event.response_id), "answer_tools")

    def _log_transcript(self, role: str, text: str) -> None:
        if text.strip() and self.call.log_transcripts:
            self.call.log.info("transcript", role=role, text=text)  # off by default: personal data

    async def barge_in(self) -> None:
        call = self.call
        ledger = call.ledger
        plan = plan_barge_in(call.tracker, ledger.active, ledger.last_item, call.clock(), ledger.items_of_response_of)
        if plan.is_noop:
            call.log.info("caller.speech_started", barge_in=False)
            return
        call.metrics.barge_ins.inc()
        self.barge_ins += 1
        call.timeline.abandoned()
        if plan.clear_playback:
            await call.output.stop(generating=call.ledger.active is not None)
            call.ledger.playback_stopped()
        if plan.cancel_response_id is not None:
            call.ledger.drop(plan.cancel_response_id)
            call.link.send(dialects.cancel_response())
        # The truncate and deletions go now, or once the clear's echo has placed the clear
        # (bridge/call/truncation.py).
        deadline = self.truncator.submit(plan)
        if deadline is not None:
            self.background.add(deadline)
            deadline.add_done_callback(self.background.discard)

    def ask_model(self, instructions: str | None = None) -> None:
        """`response.create`: the model answers now, so it is first told what the caller heard of
        the answers they interrupted (the truncates held for their clear's echo go at once)."""
        if self.truncator.holding:
            self.truncator.flush("event")
        self.call.link.send(dialects.create_response(instructions))

    async def _answer_tools(self, response_id: str) -> None:
        """Every call of the finished response gets its output, then the model may go on."""
        call = self.call
        assert call.tools is not None
        await call.tools.answer(response_id, call.link.send)
        marker = call.ledger.marker()
        call.respond_unless_active()  # the caller may have spoken meanwhile: that response answers
        call.turns.tools_answered(response_id)
        pending = call.tools.actions.take()
        if pending is not None:
            await call.ending.until_heard(marker, pending.action.value)
            await call.ending.act(pending)

    def mark_echo(self, name: str, now: float) -> None:
        """Twilio echoed mark `name`. One of ours confirms playback: the turn's stages once its answer
        is first heard, the turn's end (trace) once nothing is left playing. Any other (an old
        epoch's) may be the echo that places the last clear, which a held truncate waits for."""
        call = self.call
        if not call.tracker.mark_echoed(name, now):
            self.truncator.echoed()
            return
        stages = call.timeline.mark_echoed(name, now)
        if stages is not None:
            self.turn_completed(stages)
        if not call.tracker.is_playing:
            call.turns.feed("playback_idle")
            call.trace.playback_idle(response_active=call.ledger.active is not None)

    def turn_completed(self, stages: dict[str, float]) -> None:
        for stage, seconds in stages.items():
            self.call.metrics.turn_latency.labels(stage=stage).observe(seconds)
        self.call.trace.turn_stages(stages)
        filler_s = self.call.timeline.last_filler_s
        self.call.log.info(
            "turn.timeline",
            **{f"{stage}_ms": round(seconds * 1000, 1) for stage, seconds in stages.items()},
            filler=filler_s is not None,  # issue 16: whether a filler played in this turn, and when
            filler_ms=round(filler_s * 1000, 1) if filler_s is not None else None,
            **self.network_estimate(),
        )

    def network_estimate(self) -> dict[str, float | None]:
        """The Twilio round trip and playout delay barge-in accounting uses now, for the logs."""
        network = self.call.tracker.network
        rtt = network.round_trip_s
        return {
            "twilio_rtt_ms": round(rtt * 1000, 1) if rtt is not None else None,
            "playout_delay_ms": round(network.playout_delay_s * 1000, 1),
        }

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
