"""The local agent's WebSocket server: GA Realtime events in, recorded speech out."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection

from voice_codecs import ulaw_decode

from ...logs import get_logger
from ..fake_realtime import FakeRealtime, FakeSession
from .clips import Clip, ClipLibrary, clips_dir
from .conversation import AgentConversation, RealtimeRequestError, new_id
from .vad import EnergyVad

log = get_logger("bridge.agent")

DELTA_MS = 100
# A real service generates audio faster than it plays; so does this one, so that the bridge sees
# whole responses arrive while the caller is still hearing the start (what makes barge-in hard).
DEFAULT_PACE = 4.0
PCM = {"type": "audio/pcm", "rate": 24000}


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": new_id("event"), **fields})


@dataclass(slots=True)
class _ActiveResponse:
    id: str
    item_id: str
    task: asyncio.Task[None]


class AgentConnection:
    """One Realtime session of the local agent."""

    def __init__(
        self, ws: ServerConnection, clips: ClipLibrary, pace: float, on_caller_turn: Callable[[], None] | None = None, answer_delay_s: float = 0.0
    ) -> None:
        self._ws = ws
        self._answer_delay_s = answer_delay_s  # issue 16: a model slow to start (not the greeting or goodbye)
        self._responses = 0
        self._on_caller_turn = on_caller_turn  # told of each caller turn the agent detected (speech stopped)
        self._pace = pace
        self._clips = clips
        self._conversation = AgentConversation(clips)
        self._session: dict[str, Any] = {
            "type": "realtime",
            "id": new_id("sess"),
            "model": "local-agent",
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {"format": dict(PCM), "turn_detection": {"type": "server_vad"}},
                "output": {"format": dict(PCM), "voice": "alloy"},
            },
        }
        self._vad = EnergyVad(sample_rate=24000)
        self._input_ms = 0.0
        self._speech_item_id: str | None = None
        self._active: _ActiveResponse | None = None

    @property
    def _input_format(self) -> str:
        return str(self._session["audio"]["input"]["format"].get("type", "audio/pcm"))

    @property
    def _output_format(self) -> str:
        return str(self._session["audio"]["output"]["format"].get("type", "audio/pcm"))

    async def run(self) -> None:
        await self._ws.send(_event("session.created", session=self._session))
        try:
            async for raw in self._ws:
                await self._on_message(raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            await self._stop_response(send_done=False)

    async def _error(self, code: str, message: str, param: str | None = None) -> None:
        error = {"type": "invalid_request_error", "code": code, "message": message, "param": param, "event_id": None}
        await self._ws.send(_event("error", error=error))

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ValueError
        except ValueError:
            await self._error("invalid_json", "The message is not a JSON object.")
            return
        kind = message.get("type")
        try:
            if kind == "session.update":
                await self._on_session_update(message)
            elif kind == "input_audio_buffer.append":
                await self._on_append(message)
            elif kind == "response.create":
                await self._on_response_create(message)
            elif kind == "response.cancel":
                await self._on_response_cancel()
            elif kind == "conversation.item.truncate":
                item = self._conversation.truncate(
                    message.get("item_id"), message.get("content_index"), message.get("audio_end_ms")
                )
                await self._ws.send(
                    _event(
                        "conversation.item.truncated",
                        item_id=item.id,
                        content_index=0,
                        audio_end_ms=int(item.audio_ms),
                    )
                )
            elif kind == "conversation.item.delete":
                item_id = message.get("item_id")
                if not isinstance(item_id, str) or self._conversation.items.pop(item_id, None) is None:
                    raise RealtimeRequestError("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
                await self._ws.send(_event("conversation.item.deleted", item_id=item_id))
            else:
                raise RealtimeRequestError("invalid_value", f"Invalid value: '{kind}'. Unknown client event type.", "type")
        except RealtimeRequestError as exc:
            await self._error(exc.code, exc.message, exc.param)

    async def _on_session_update(self, message: dict[str, Any]) -> None:
        session = message.get("session")
        if not isinstance(session, dict):
            raise RealtimeRequestError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        for key in ("instructions", "output_modalities"):
            if key in session:
                self._session[key] = session[key]
        audio = session.get("audio") or {}
        for direction in ("input", "output"):
            fmt = (audio.get(direction) or {}).get("format")
            if fmt is not None:
                if not isinstance(fmt, dict) or fmt.get("type") not in ("audio/pcm", "audio/pcmu"):
                    raise RealtimeRequestError(
                        "invalid_value", f"Unsupported audio format: {fmt!r}", f"session.audio.{direction}.format"
                    )
                self._session["audio"][direction]["format"] = fmt
        voice = (audio.get("output") or {}).get("voice")
        if isinstance(voice, str):
            self._session["audio"]["output"]["voice"] = voice
        self._vad = EnergyVad(sample_rate=8000 if self._input_format == "audio/pcmu" else 24000)
        await self._ws.send(_event("session.updated", session=self._session))

    async def _on_append(self, message: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(str(message.get("audio", "")), validate=True)
        except binascii.Error:
            raise RealtimeRequestError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio.", "audio") from None
        if self._input_format == "audio/pcmu":
            samples, rate = ulaw_decode(audio), 8000
        else:
            samples, rate = np.frombuffer(audio[: len(audio) - len(audio) % 2], dtype="<i2"), 24000
        self._input_ms += len(samples) * 1000.0 / rate
        for event in self._vad.feed(samples):
            if event.started:
                await self._on_speech_started(event.at_ms)
            else:
                await self._on_speech_stopped(event.at_ms)

    async def _on_speech_started(self, at_ms: int) -> None:
        self._speech_item_id = new_id("item")
        await self._ws.send(
            _event("input_audio_buffer.speech_started", audio_start_ms=at_ms, item_id=self._speech_item_id)
        )
        # Server VAD interrupts the response in progress (turn_detection.interrupt_response).
        await self._stop_response(send_done=True, reason="turn_detected")

    async def _on_speech_stopped(self, at_ms: int) -> None:
        item = self._conversation.add_item("user", self._speech_item_id)
        if self._on_caller_turn is not None:
            self._on_caller_turn()
        await self._ws.send(_event("input_audio_buffer.speech_stopped", audio_end_ms=at_ms, item_id=item.id))
        await self._ws.send(_event("input_audio_buffer.committed", item_id=item.id, previous_item_id=None))
        await self._ws.send(
            _event(
                "conversation.item.added",
                previous_item_id=None,
                item={"id": item.id, "type": "message", "role": "user", "status": "completed", "content": []},
            )
        )
        if self._active is None:
            self._start_response()

    async def _on_response_create(self, message: dict[str, Any]) -> None:
        if self._active is not None:
            raise RealtimeRequestError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active.id}.",
            )
        # A stand-in for a model following instructions: asked for a goodbye, it says its goodbye clip.
        instructions = str((message.get("response") or {}).get("instructions") or "")
        self._start_response(goodbye="goodbye" in instructions.lower())

    async def _on_response_cancel(self) -> None:
        if self._active is None:
            raise RealtimeRequestError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        await self._stop_response(send_done=True, reason="client_cancelled")

    def _start_response(self, goodbye: bool = False) -> None:
        response_id = new_id("resp")
        item = self._conversation.add_item("assistant")
        clip = self._clips.goodbye if goodbye else self._conversation.next_clip()
        self._responses += 1
        delay = self._answer_delay_s if self._responses > 1 and not goodbye else 0.0
        task = asyncio.create_task(self._stream_response(response_id, item.id, clip, delay), name=f"agent_{response_id}")
        self._active = _ActiveResponse(response_id, item.id, task)

    async def _stop_response(self, send_done: bool, reason: str = "client_cancelled") -> None:
        active, self._active = self._active, None
        if active is None:
            return
        active.task.cancel()
        await asyncio.gather(active.task, return_exceptions=True)
        if send_done:
            await self._ws.send(
                _event(
                    "response.done",
                    response={
                        "id": active.id,
                        "object": "realtime.response",
                        "status": "cancelled",
                        "status_details": {"type": "cancelled", "reason": reason},
                        "output": [{"id": active.item_id, "type": "message", "role": "assistant"}],
                    },
                )
            )

    async def _stream_response(self, response_id: str, item_id: str, clip: Clip, delay_s: float = 0.0) -> None:
        item = self._conversation.items[item_id]
        audio = clip.audio(self._output_format)
        ulaw = self._output_format == "audio/pcmu"
        bytes_per_ms = 8 if ulaw else 48
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        message_item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        send = self._ws.send
        await send(_event("response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}))
        await send(_event("response.output_item.added", response_id=response_id, output_index=0, item=message_item))
        await send(_event("conversation.item.added", previous_item_id=None, item=message_item))
        await send(_event("response.content_part.added", **where, part={"type": "audio", "transcript": ""}))
        if delay_s:
            await asyncio.sleep(delay_s)  # "thinking": the response is under way, its audio is late
        step = DELTA_MS * bytes_per_ms
        for offset in range(0, len(audio), step):
            chunk = audio[offset : offset + step]
            await send(_event("response.output_audio.delta", **where, delta=base64.b64encode(chunk).decode("ascii")))
            item.audio_ms += len(chunk) / bytes_per_ms
            await asyncio.sleep(len(chunk) / bytes_per_ms / 1000.0 / self._pace)
        done_item = {**message_item, "status": "completed", "content": [{"type": "output_audio", "transcript": clip.text}]}
        await send(_event("response.output_audio.done", **where))
        await send(_event("response.output_audio_transcript.done", **where, transcript=clip.text))
        await send(_event("response.content_part.done", **where, part={"type": "audio", "transcript": clip.text}))
        await send(_event("response.output_item.done", response_id=response_id, output_index=0, item=done_item))
        await send(_event("conversation.item.done", previous_item_id=None, item=done_item))
        if self._active is not None and self._active.id == response_id:
            self._active = None
        await send(_event("response.done", response={"id": response_id, "object": "realtime.response", "status": "completed", "output": [done_item]}))


class LocalAgent:
    """Runs the agent on loopback, as a script on the shared fake Realtime server; `url` is what the
    bridge connects to. Each session's state is its own `AgentConnection`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, clips: str | Path | None = None, pace: float = DEFAULT_PACE) -> None:
        self.pace = pace
        self.answer_delay_s = 0.0  # issue 16: answers start this late (`agent --answer-delay-ms`, `demo --answer-delay-ms`)
        self.clips = ClipLibrary.load(clips_dir(str(clips) if clips else None))
        # A long-running server: handshakes and sessions are counted, not kept.
        self._fake = FakeRealtime(self._session, host=host, port=port, record=False, max_size=16 * 1024 * 1024, compression=None)
        self.open_sessions = 0
        self.sessions_opened = 0
        self.caller_turns_heard = 0  # caller turns detected, over every session (what `demo` reports)

    @property
    def host(self) -> str:
        return self._fake.host

    @property
    def port(self) -> int:
        return self._fake.port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    async def start(self) -> None:
        await self._fake.start()
        log.info("agent.listening", url=self.url, pace=self.pace)

    async def stop(self) -> None:
        await self._fake.aclose()

    def _caller_turn(self) -> None:
        self.caller_turns_heard += 1

    async def _session(self, session: FakeSession) -> None:
        self.open_sessions += 1
        self.sessions_opened += 1
        try:
            await AgentConnection(
                session.ws, self.clips, self.pace, on_caller_turn=self._caller_turn, answer_delay_s=self.answer_delay_s
            ).run()
        finally:
            self.open_sessions -= 1
