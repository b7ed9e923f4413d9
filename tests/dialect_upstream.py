"""A scripted Realtime model on loopback, in either dialect's event names, for whole-call tests.

`ModelServer` (a script on the shared fake Realtime server, bridge/devtools/fake_realtime.py; the
dialects' event names come from bridge/dialects.py) records every opening handshake (path with query, headers, when), can refuse a given
attempt with an HTTP status or hold it for a while before accepting, and runs one script per
accepted connection. A script drives one `ModelSession`: `configure()` (session.created, the
bridge's session.update, session.updated, and the greeting's response.create), `speak()` (a whole
audio response with transcript, in the dialect's names), `listen()` (energy VAD over the appended
caller audio: speech_started/stopped, the input transcription), `wait_heard()` (until the caller
has had time to hear what was sent, counted in appended caller audio, which runs on the phone's
clock). Everything the bridge sends is recorded with its arrival time; errors raised by a script
are kept in `ModelServer.errors` so a test can fail on them instead of losing them in a log.

It also checks client events against each dialect's schema: GA events with the `openai` package's
pydantic types made strict (as tests/test_dialects.py does), Voice Live events with
`voicelive_schema`, plus the Voice Live message items `voicelive_schema` does not list yet
(`MessageItem`, `InputTextContentPart` "input_text", `OutputTextContentPart` "text" of the
2026-07-15 reference).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import voicelive_schema
from openai.types.realtime import RealtimeClientEvent
from pydantic import BaseModel, TypeAdapter
from websockets import ConnectionClosed
from websockets.asyncio.server import ServerConnection

from bridge.devtools.fake_realtime import FakeRealtime, FakeSession, Handshake
from bridge.dialects import GA_WIRE_NAMES, VOICELIVE_WIRE_NAMES, WireNames

MODEL_RATE = 24000
SPEECH_LEVEL = 1000  # PCM16 peak above which a 24 kHz chunk of caller audio counts as speech


@dataclass(frozen=True, slots=True)
class Wire:
    """The server event names that differ between the dialects (bridge/dialects.py holds them)."""

    dialect: str
    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    item_added: str

    @classmethod
    def of(cls, dialect: str, names: WireNames) -> Wire:
        return cls(
            dialect, names.audio_delta, names.audio_done, names.transcript_delta, names.transcript_done, names.item_added
        )


GA_WIRE = Wire.of("ga", GA_WIRE_NAMES)
VOICELIVE_WIRE = Wire.of("voicelive", VOICELIVE_WIRE_NAMES)


class ModelSession:
    """One accepted upstream connection as its script sees it."""

    def __init__(self, ws: ServerConnection, wire: Wire, handshake: Handshake, index: int) -> None:
        self.ws = ws
        self.wire = wire
        self.handshake = handshake
        self.index = index
        self.accepted_at = time.monotonic()
        self.received: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.sent: list[dict[str, Any]] = []
        self.appended_ms = 0.0  # caller audio received so far, in audio time
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self._ids = 0
        self._previous_item: str | None = None

    # --- plumbing ------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self.index}_{self._ids}"

    async def send(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "event_id": self.new_id("event"), **fields}
        self.sent.append(event)
        await self.ws.send(json.dumps(event))

    async def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        event = json.loads(raw)
        self.received.append(event)
        self.received_at.append(time.monotonic())
        if event.get("type") == "input_audio_buffer.append":
            self.appended_ms += len(base64.b64decode(event["audio"])) / 2 / MODEL_RATE * 1000
        return event

    async def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next client event of type `kind` (others are recorded and skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event(timeout)
                if event.get("type") == kind:
                    return event

    def kinds(self) -> list[str]:
        return [event["type"] for event in self.received]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.received if event["type"] == kind]

    def first_at(self, kind: str) -> float:
        return next(at for event, at in zip(self.received, self.received_at, strict=True) if event["type"] == kind)

    # --- the model's side of a conversation ----------------------------------------------------

    async def configure(self, greet: bool = True) -> None:
        """session.created → (session.update) → session.updated; then the greeting's response.create."""
        session = {"type": "realtime", "id": self.new_id("sess")}
        await self.send("session.created", session=session)
        await self.expect("session.update")
        await self.send("session.updated", session=session)
        if greet:
            await self.expect("response.create")

    async def speak(self, pcm: bytes, transcript: str, first_audio_delay_s: float = 0.0, delta_ms: int = 100) -> str:
        """A whole audio response (24 kHz PCM16) in this dialect's event names; returns the item id."""
        response_id, item_id = self.new_id("resp"), self.new_id("item")
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send(
            "response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"}
        )
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await self.send("response.output_item.added", response_id=response_id, output_index=0, item=item)
        await self.send(self.wire.item_added, previous_item_id=self._previous_item, item=item)
        self._previous_item = item_id
        if first_audio_delay_s:
            await asyncio.sleep(first_audio_delay_s)
        step = MODEL_RATE * 2 * delta_ms // 1000
        for offset in range(0, len(pcm), step):
            delta = base64.b64encode(pcm[offset : offset + step]).decode()
            await self.send(self.wire.audio_delta, **where, delta=delta)
        await self.send(self.wire.transcript_delta, **where, delta=transcript)
        await self.send(self.wire.audio_done, **where)
        await self.send(self.wire.transcript_done, **where, transcript=transcript)
        await self.send(
            "response.output_item.done", response_id=response_id, output_index=0, item={**item, "status": "completed"}
        )
        await self.send(
            "response.done", response={"id": response_id, "object": "realtime.response", "status": "completed"}
        )
        return item_id

    async def listen(self, transcript: str, silence_ms: float = 600.0, timeout: float = 30.0) -> str:
        """Wait for the caller to speak and stop (energy VAD on the appended audio), announce it as
        the service does, and transcribe it as `transcript`; returns the user item id."""
        item_id = self.new_id("item")
        started_ms: float | None = None
        quiet_since_ms: float | None = None
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event(timeout)
                if event.get("type") != "input_audio_buffer.append":
                    continue
                chunk = np.frombuffer(base64.b64decode(event["audio"]), dtype="<i2")
                loud = chunk.size > 0 and int(np.abs(chunk.astype(np.int32)).max()) > SPEECH_LEVEL
                if started_ms is None:
                    if loud:
                        started_ms = self.appended_ms
                        await self.send(
                            "input_audio_buffer.speech_started", audio_start_ms=int(started_ms), item_id=item_id
                        )
                    continue
                if loud:
                    quiet_since_ms = None
                elif quiet_since_ms is None:
                    quiet_since_ms = self.appended_ms
                elif self.appended_ms - quiet_since_ms >= silence_ms:
                    break
        await self.send("input_audio_buffer.speech_stopped", audio_end_ms=int(quiet_since_ms or 0), item_id=item_id)
        await self.send("input_audio_buffer.committed", previous_item_id=self._previous_item, item_id=item_id)
        user_item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.send(self.wire.item_added, previous_item_id=self._previous_item, item=user_item)
        self._previous_item = item_id
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round((quiet_since_ms or 0) - started_ms) / 1000},
        )
        return item_id

    async def wait_heard(self, audio_s: float, timeout: float = 30.0) -> None:
        """Until `audio_s` more seconds of caller audio have arrived: the phone's clock has moved on that far."""
        target = self.appended_ms + audio_s * 1000
        async with asyncio.timeout(timeout):
            while self.appended_ms < target:
                await self.next_event(timeout)

    async def answer_out_of_band(self, request: dict[str, Any], text: str, status: str = "completed") -> str:
        """Answer an out-of-band text response (`response.create` with conversation "none" / commit
        false) as the service does: its metadata echoed, text events, no conversation item; returns its id."""
        response_id, item_id = self.new_id("resp"), self.new_id("item")
        metadata = request.get("response", {}).get("metadata")
        head = {"id": response_id, "object": "realtime.response", "metadata": metadata}
        part_type = "output_text" if self.wire.dialect == "ga" else "text"
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send("response.created", response={**head, "status": "in_progress", "output": []})
        await self.send("response.output_item.added", response_id=response_id, output_index=0, item=item)
        text_done = (GA_WIRE_NAMES if self.wire.dialect == "ga" else VOICELIVE_WIRE_NAMES).text_done
        assert text_done is not None
        if text:
            await self.send(text_done.removesuffix(".done") + ".delta", **where, delta=text)
            await self.send(text_done, **where, text=text)
        done_item = {**item, "status": "completed", "content": [{"type": part_type, "text": text}] if text else []}
        await self.send("response.output_item.done", response_id=response_id, output_index=0, item=done_item)
        await self.send("response.done", response={**head, "status": status, "output": [done_item]})
        return response_id

    async def error(self, code: str, message: str, error_type: str = "invalid_request_error") -> None:
        await self.send(
            "error", error={"type": error_type, "code": code, "message": message, "param": None, "event_id": None}
        )

    async def drop(self) -> None:
        """The connection is lost: no close frame, the TCP connection just goes."""
        self.ws.transport.abort()


Script = Callable[[ModelSession], Awaitable[None]]


async def idle(session: ModelSession) -> None:
    """Configure and then just listen until the bridge closes the session."""
    await session.configure()


class ModelServer:
    """Serves scripts[i] on the i-th accepted connection (the last script for any later ones).

    `statuses[i]` answers the i-th handshake attempt: None accepts it, a number refuses it with
    that HTTP status. `handshake_delay_s` holds every accepted upgrade that long before answering.
    The server is the shared fake Realtime shell (bridge/devtools/fake_realtime.py); this class is
    its script and keeps each session's `ModelSession`.
    """

    def __init__(
        self,
        wire: Wire,
        scripts: Sequence[Script] = (idle,),
        statuses: Sequence[int | None] = (),
        handshake_delay_s: float = 0.0,
    ) -> None:
        self.wire = wire
        self.scripts = list(scripts)
        self.statuses = list(statuses)
        self.sessions: list[ModelSession] = []
        self.errors: list[BaseException] = []
        # A session the bridge left open would hold the exit up (its close handshake cannot finish
        # while the bridge reads nothing): the shell cuts every connection still open.
        self._fake = FakeRealtime(
            self._run,
            answer=self._status,
            refusal_text="refused (attempt {attempt})\n",
            handshake_delay_s=handshake_delay_s,
            abort_open_on_close=True,
            max_size=None,
        )

    @property
    def handshakes(self) -> list[Handshake]:
        return self._fake.handshakes

    @property
    def handshake_delay_s(self) -> float:
        return self._fake.handshake_delay_s

    @handshake_delay_s.setter
    def handshake_delay_s(self, seconds: float) -> None:
        self._fake.handshake_delay_s = seconds

    @property
    def port(self) -> int:
        return self._fake.port

    @property
    def origin(self) -> str:
        """What an endpoint setting would say."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path_and_query: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path_and_query}"

    async def __aenter__(self) -> ModelServer:
        await self._fake.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._fake.aclose()

    def _status(self, attempt: int) -> int | None:
        return self.statuses[attempt] if attempt < len(self.statuses) else None

    async def _run(self, fake: FakeSession) -> None:
        ws = fake.ws
        session = ModelSession(ws, self.wire, fake.handshake, fake.index)
        self.sessions.append(session)
        script = self.scripts[min(session.index, len(self.scripts) - 1)]
        try:
            await script(session)
            # Keep recording what the bridge sends until it closes the session.
            while True:
                await session.next_event(timeout=3600)
        except ConnectionClosed:
            pass  # the bridge (or the script) ended the session
        except Exception as exc:  # noqa: BLE001 - kept for the test to fail on
            self.errors.append(exc)
        finally:
            await ws.wait_closed()
            session.closed_at = time.monotonic()
            session.close_code = ws.close_code


# --- what the bridge sends, checked against each dialect's schema -----------------------------

_GA_CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)


def _extra_keys(value: Any, path: str = "$") -> list[str]:
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{key}" for key in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += _extra_keys(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += _extra_keys(item, f"{path}[{index}]")
    return found


def ga_problems(event: dict[str, Any]) -> list[str]:
    """A GA client event checked with the openai types, strictly (no undeclared keys, nothing coerced)."""
    try:
        model = _GA_CLIENT_EVENT.validate_python(event)
    except ValueError as exc:
        return [str(exc)]
    problems = [f"undeclared key {key}" for key in _extra_keys(model)]
    if model.model_dump(mode="json", exclude_unset=True) != event:
        problems.append("the typed event differs from what was sent")
    return problems


_STRING = {"type": "string"}
# Voice Live 2026-07-15: MessageItem (discriminated by role) with MessageContentPart[] content:
# InputTextContentPart "input_text" {text}, OutputTextContentPart "text" {text}.
_VOICELIVE_CONTENT = {
    "type": "object",
    "discriminator": "type",
    "mapping": {
        "input_text": {"properties": {"type": _STRING, "text": _STRING}, "required": ["type", "text"]},
        "text": {"properties": {"type": _STRING, "text": _STRING}, "required": ["type", "text"]},
    },
}
_VOICELIVE_MESSAGE_CREATE = {
    "type": "object",
    "properties": {
        "type": {"enum": ["conversation.item.create"]},
        "event_id": _STRING,
        "previous_item_id": _STRING,
        "item": {
            "type": "object",
            "properties": {
                "type": {"enum": ["message"]},
                "id": _STRING,
                "role": {"enum": ["system", "user", "assistant"]},
                "content": {"type": "array", "items": _VOICELIVE_CONTENT},
                "status": {"enum": ["completed", "incomplete"]},
            },
            "required": ["type", "role", "content"],
        },
    },
    "required": ["type", "item"],
}
_CONTENT_FOR_ROLE = {
    "voicelive": {"user": "input_text", "assistant": "text"},
    "ga": {"user": "input_text", "assistant": "output_text"},
}


def voicelive_problems(event: dict[str, Any]) -> list[str]:
    item = event.get("item")
    if event.get("type") == "conversation.item.create" and isinstance(item, dict) and item.get("type") == "message":
        return voicelive_schema._check(event, _VOICELIVE_MESSAGE_CREATE, "$")
    return voicelive_schema.problems(event)


def client_event_problems(wire: Wire, event: dict[str, Any]) -> list[str]:
    problems = ga_problems(event) if wire.dialect == "ga" else voicelive_problems(event)
    item = event.get("item")
    if event.get("type") == "conversation.item.create" and isinstance(item, dict) and item.get("type") == "message":
        wanted = _CONTENT_FOR_ROLE[wire.dialect].get(item.get("role", ""))
        if [part.get("type") for part in item.get("content", [])] != [wanted]:
            problems.append(f"a {item.get('role')} message item must carry one {wanted!r} part: {item}")
    return problems


def seeded_turns(session: ModelSession) -> list[tuple[str, str]]:
    """The (role, text) of the message items the bridge created in this session, in order."""
    return [
        (event["item"]["role"], event["item"]["content"][0]["text"])
        for event in session.events("conversation.item.create")
        if event["item"].get("type") == "message"
    ]
