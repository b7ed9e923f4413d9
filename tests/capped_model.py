"""A scripted Realtime model that caps its sessions and bills growing input tokens, and a caller whose
every 20 ms frame says which it is: for loopback rollover tests (issue 18) in either dialect.

Audio is g711 (μ-law passed through by the bridge both ways), so what each side sent can be told
apart byte for byte:

- The caller (`MarkedCaller`, the phone simulator's `Caller`) stamps every frame it sends with its
  index in the call (and, while speaking, the utterance's number): loud bytes while it speaks,
  near-silent ones (never 0xFF) while it listens. A session's appends are decoded back into the
  frame indices it received.
- The model (`CappedModel`, a script for `dialect_upstream.ModelServer`) stamps every frame it speaks
  with (session, response, frame): loud bytes, plus a short pause of its own (near-silent, never
  0xFF) in the middle of each response. The phone pads with 0xFF where nothing played, so in its
  recording a 0xFF run inside a response is a gap the model did not make (`heard_responses`).

Each session: `session.created` (Voice Live with `expires_at` when `announce_expiry`), then
`session.updated` for every `session.update`; an energy VAD on the stamped caller frames
(speech_started / stopped, committed, the user item, its transcription "caller turn N: ..."), an
audio answer to every caller turn and to `response.create` (the first: the greeting), whose
`response.done` bills input tokens as the session's history grows (instructions and seeded text at
4 characters a token, every caller and model frame heard or spoken at 1 token); and at `cap_s`
(call seconds, on the phone's scaled clock) the session ends as the service ends it: `error
session_expired`, then a close. An out-of-band `response.create` (no audio asked, or outside the
conversation) gets a text-only answer: a summary of the caller turns this session heard.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

from dialect_upstream import ModelSession
from websockets import ConnectionClosed

from bridge.devtools.phone.caller import FRAME_BYTES, Caller, CallerPlan

CHARS_PER_TOKEN = 4
VAD_SILENCE_FRAMES = 15  # 300 ms of quiet ends a caller turn
OWN_PAUSE_FRAMES = 5  # the model's own pause inside each response (100 ms)
GREETING_FRAMES = 40
ANSWER_FRAMES = 50
SILENCE = 0xFF  # what the phone plays when nothing is queued; never in a stamped frame

# Stamps: nibbles on a base byte. μ-law 0x00-0x0F and 0x80-0x8F are the loudest codes; 0xF0-0xFE and
# 0x70-0x7E the quietest but one (0xFF, 0x7F are zero).
_LOUD_CALLER, _QUIET_CALLER, _LOUD_MODEL, _QUIET_MODEL = 0x00, 0xF0, 0x80, 0x70


def _nibbles(value: int, count: int, base: int) -> bytes:
    return bytes(base | (value >> (4 * (count - 1 - i)) & 0xF) for i in range(count))


def _value(stamp: bytes, base: int) -> int:
    value = 0
    for byte in stamp:
        if byte & 0xF0 != base:
            raise ValueError(f"not a stamp on {base:#x}: {stamp.hex()}")
        value = value << 4 | byte & 0xF
    return value


def caller_frame(index: int, utterance: int | None) -> bytes:
    """Frame `index` of the call: loud with the utterance's number while speaking, else near-silent."""
    if utterance is None:
        head = _nibbles(index, 4, _QUIET_CALLER) + _nibbles(0, 2, _QUIET_CALLER)
        return head + bytes([0xFE]) * (FRAME_BYTES - len(head))
    head = _nibbles(index, 4, _LOUD_CALLER) + _nibbles(utterance, 2, _LOUD_CALLER)
    return head + bytes([0x05, 0x85]) * ((FRAME_BYTES - len(head)) // 2)


def read_caller_frame(frame: bytes) -> tuple[int, int | None]:
    """(index, utterance or None) of a stamped caller frame."""
    base = _LOUD_CALLER if frame[0] & 0xF0 == _LOUD_CALLER else _QUIET_CALLER
    utterance = _value(frame[4:6], base)
    return _value(frame[:4], base), (utterance if base == _LOUD_CALLER else None)


def model_frame(session: int, response: int, k: int, pause: bool) -> bytes:
    base = _QUIET_MODEL if pause else _LOUD_MODEL
    head = _nibbles(session, 2, base) + _nibbles(response, 3, base) + _nibbles(k, 3, base)
    body = bytes([0x7E]) if pause else bytes([0x8A, 0x0A])
    return head + body * ((FRAME_BYTES - len(head)) // len(body))


def read_model_frame(frame: bytes) -> tuple[int, int, int]:
    """(session, response, frame in the response) of a stamped model frame."""
    base = _QUIET_MODEL if frame[0] & 0xF0 == _QUIET_MODEL else _LOUD_MODEL
    return _value(frame[:2], base), _value(frame[2:5], base), _value(frame[5:8], base)


def response_audio(session: int, response: int, frames: int) -> bytes:
    """A response of `frames` stamped frames with the model's own pause in the middle."""
    pause = range(frames // 2, frames // 2 + OWN_PAUSE_FRAMES)
    return b"".join(model_frame(session, response, k, k in pause) for k in range(frames))


# --- the caller ----------------------------------------------------------------------------------


class MarkedCaller(Caller):
    """The phone's caller, every frame stamped; `utterance_frames` long utterances, numbered from 1."""

    def __init__(self, plan: CallerPlan) -> None:
        super().__init__(plan)
        self.sent = 0  # frames sent so far (the next frame's index)
        self.speech: dict[int, int] = {}  # frame index → utterance number

    def tick(self, agent_audible: bool) -> bytes:
        utterance = self._next + 1
        frame = super().tick(agent_audible)
        index, self.sent = self.sent, self.sent + 1
        if frame != b"\xff" * FRAME_BYTES:  # a frame of an utterance (placeholders are loud)
            self.speech[index] = utterance
            return caller_frame(index, utterance)
        return caller_frame(index, None)


def utterance(seconds: float) -> bytes:
    """A placeholder utterance for `CallerPlan` (loud, so the plan's caller says it; re-stamped)."""
    return b"\x05" * int(seconds * 8000)


# --- the model -----------------------------------------------------------------------------------


@dataclass
class SessionLog:
    """What one model session saw and did."""

    index: int
    opened_at: float  # the call clock (seconds since the model started), as the model counts
    frames: list[int] = field(default_factory=list)  # caller frame indices, in the order received
    frames_at: list[float] = field(default_factory=list)  # time.monotonic() each arrived
    instructions: list[str] = field(default_factory=list)  # of every session.update that had some
    turns_then: list[int] = field(default_factory=list)  # len(CappedModel.turns) when each of those came
    previous_last_frame: int | None = None  # the last caller frame the previous session had when this one's handshake came
    seeded: list[tuple[str, str]] = field(default_factory=list)  # (role, text) of message items created
    responses: list[tuple[int, int]] = field(default_factory=list)  # (response number, input tokens billed)
    expired_at: float | None = None  # the model ended it (the cap)
    closed_at: float | None = None  # the bridge (or the model) closed it
    out_of_band: int = 0


class CappedModel:
    """The model of one call, over every session the bridge opens (the script of a `ModelServer`)."""

    def __init__(self, speed: float, cap_s: float, announce_expiry: bool = False) -> None:
        self.speed = speed
        self.cap_s = cap_s
        self.announce_expiry = announce_expiry
        self.started = time.monotonic()
        self.sessions: list[SessionLog] = []
        self.turns: list[tuple[str, str]] = []  # (role, text) of the conversation, as the model made it
        self.responses = 0  # over the call
        self.expired = 0

    def now(self) -> float:
        """Call seconds since the model started (the phone and the bridge run on the same scale)."""
        return (time.monotonic() - self.started) * self.speed

    async def script(self, s: ModelSession) -> None:
        log = SessionLog(s.index, self.now())
        if self.sessions and s.handshake is not None:
            previous = self.sessions[-1]
            before = [index for index, at in zip(previous.frames, previous.frames_at, strict=True) if at < s.handshake.at]
            log.previous_last_frame = before[-1] if before else None
        self.sessions.append(log)
        cap = asyncio.create_task(self._enforce_cap(s, log))
        state = _SessionState()
        try:
            await s.send("session.created", session=self._session(s, log))
            while True:
                event = await s.next_event(timeout=3600)
                await self._on_event(s, log, state, event)
        except ConnectionClosed:
            pass
        finally:
            log.closed_at = self.now()
            cap.cancel()

    def _session(self, s: ModelSession, log: SessionLog) -> dict[str, Any]:
        session: dict[str, Any] = {"id": f"sess_{s.index}"}
        if s.wire.dialect == "ga":
            session["type"] = "realtime"
        if self.announce_expiry:
            # Unix seconds; the bridge maps what is left of it onto its (scaled) call clock one to one.
            session["expires_at"] = int(time.time() + log.opened_at + self.cap_s - self.now())
        return session

    async def _enforce_cap(self, s: ModelSession, log: SessionLog) -> None:
        await asyncio.sleep(self.cap_s / self.speed)
        log.expired_at = self.now()
        self.expired += 1
        await s.error("session_expired", "Your session hit the maximum duration of the test cap.")
        await asyncio.sleep(1.0 / self.speed)
        await s.ws.close(1000)

    async def _on_event(self, s: ModelSession, log: SessionLog, state: _SessionState, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            instructions = event["session"].get("instructions")
            if instructions:
                log.instructions.append(instructions)
                log.turns_then.append(len(self.turns))
                state.instruction_tokens = len(instructions) // CHARS_PER_TOKEN
            await s.send("session.updated", session=self._session(s, log))
        elif kind == "conversation.item.create" and event["item"].get("type") == "message":
            text = " ".join(str(part.get("text", "")) for part in event["item"].get("content", []))
            log.seeded.append((event["item"]["role"], text))
            state.history_tokens += len(text) // CHARS_PER_TOKEN
        elif kind == "input_audio_buffer.append":
            await self._hear(s, log, state, base64.b64decode(event["audio"]))
        elif kind == "response.create":
            asked = event.get("response") or {}
            modalities = asked.get("output_modalities") or asked.get("modalities") or ["audio"]
            if asked.get("conversation") == "none" or "audio" not in modalities:
                await self._summary(s, log, asked)
            else:
                await self._answer(s, log, state, GREETING_FRAMES if self.responses == 0 else ANSWER_FRAMES)

    async def _hear(self, s: ModelSession, log: SessionLog, state: _SessionState, audio: bytes) -> None:
        if len(audio) % FRAME_BYTES:
            raise AssertionError(f"session {s.index}: an append of {len(audio)} bytes is not whole frames")
        for offset in range(0, len(audio), FRAME_BYTES):
            index, utterance = read_caller_frame(audio[offset : offset + FRAME_BYTES])
            log.frames.append(index)
            log.frames_at.append(time.monotonic())
            state.history_tokens += 1
            if utterance is not None:
                if state.utterance is None:
                    state.start_ms = len(log.frames) * 20
                    await s.send("input_audio_buffer.speech_started", audio_start_ms=state.start_ms, item_id=state.item(s))
                state.utterance, state.quiet = utterance, 0
            elif state.utterance is not None:
                state.quiet += 1
                if state.quiet >= VAD_SILENCE_FRAMES:
                    await self._user_turn(s, state)
                    await self._answer(s, log, state, ANSWER_FRAMES)

    async def _user_turn(self, s: ModelSession, state: _SessionState) -> None:
        item_id = state.item(s)
        await s.send("input_audio_buffer.speech_stopped", audio_end_ms=state.start_ms + 20, item_id=item_id)
        await s.send("input_audio_buffer.committed", previous_item_id=None, item_id=item_id)
        item = {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        await s.send(s.wire.item_added, previous_item_id=None, item=item)
        text = caller_words(state.utterance or 0)
        await s.send("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0, transcript=text)
        self.turns.append(("user", text))
        state.utterance, state.quiet, state.item_id = None, 0, None

    async def _answer(self, s: ModelSession, log: SessionLog, state: _SessionState, frames: int) -> None:
        self.responses += 1
        number = self.responses
        text = model_words(number)
        rid, iid = s.new_id("resp"), s.new_id("item")
        where = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        await s.send("response.created", response={"id": rid, "object": "realtime.response", "status": "in_progress"})
        item = {"id": iid, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await s.send("response.output_item.added", response_id=rid, output_index=0, item=item)
        await s.send(s.wire.item_added, previous_item_id=None, item=item)
        audio = response_audio(s.index, number, frames)
        for offset in range(0, len(audio), 10 * FRAME_BYTES):  # 200 ms deltas, all at once
            await s.send(s.wire.audio_delta, **where, delta=base64.b64encode(audio[offset : offset + 10 * FRAME_BYTES]).decode())
        await s.send(s.wire.transcript_delta, **where, delta=text)
        await s.send(s.wire.audio_done, **where)
        await s.send(s.wire.transcript_done, **where, transcript=text)
        await s.send("response.output_item.done", response_id=rid, output_index=0, item={**item, "status": "completed"})
        billed = state.instruction_tokens + state.history_tokens
        out_text = len(text) // CHARS_PER_TOKEN
        usage = {
            "total_tokens": billed + frames + out_text,
            "input_tokens": billed,
            "output_tokens": frames + out_text,
            "input_token_details": {
                "text_tokens": state.instruction_tokens,
                "audio_tokens": state.history_tokens,
                "cached_tokens": 0,
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": frames},
        }
        await s.send("response.done", response={"id": rid, "object": "realtime.response", "status": "completed", "usage": usage})
        log.responses.append((number, billed))
        self.turns.append(("assistant", text))
        state.history_tokens += frames + out_text

    async def _summary(self, s: ModelSession, log: SessionLog, asked: dict[str, Any]) -> None:
        """An out-of-band text response: the caller's turns this model heard, in a line."""
        log.out_of_band += 1
        rid, iid = s.new_id("resp"), s.new_id("item")
        text = "Summary: " + " ".join(text for role, text in self.turns if role == "user")
        text_done = "response.output_text.done" if s.wire.dialect == "ga" else "response.text.done"
        base = {"id": rid, "object": "realtime.response", "conversation_id": None}
        await s.send("response.created", response={**base, "status": "in_progress"})
        await s.send(text_done, response_id=rid, item_id=iid, output_index=0, content_index=0, text=text)
        content_type = "output_text" if s.wire.dialect == "ga" else "text"
        output = [
            {
                "id": iid,
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": content_type, "text": text}],
            }
        ]
        response = {**base, "status": "completed", "output": output}
        if "metadata" in asked:
            response["metadata"] = asked["metadata"]
        await s.send("response.done", response=response)

    def session_of_frame(self) -> dict[int, set[int]]:
        """Caller frame index → the sessions that received it."""
        found: dict[int, set[int]] = {}
        for log in self.sessions:
            for index in log.frames:
                found.setdefault(index, set()).add(log.index)
        return found


@dataclass
class _SessionState:
    instruction_tokens: int = 0
    history_tokens: int = 0  # seeded text, caller frames heard, model frames spoken
    utterance: int | None = None  # the caller utterance being heard
    quiet: int = 0  # quiet frames since it was last loud
    start_ms: int = 0
    item_id: str | None = None
    _items: int = 0

    def item(self, s: ModelSession) -> str:
        if self.item_id is None:
            self._items += 1
            self.item_id = f"user_{s.index}_{self._items}"
        return self.item_id


def caller_words(utterance: int) -> str:
    return f"Caller turn {utterance}: my parcel code is KX{utterance:03d}, where is it?"


def model_words(response: int) -> str:
    return f"Answer {response}: parcel note AN{response:03d} is on its way."


# --- what the phone heard ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    """One stamped model frame as the phone played it, and the silence the phone played just before it."""

    session: int
    response: int
    k: int
    gap_before_bytes: int
    at_byte: int  # where it began in the phone's recording


def heard_frames(played: bytes) -> list[Heard]:
    """Split the phone's recording into the model frames it played, in order (0xFF: nothing played)."""
    out: list[Heard] = []
    frame = bytearray()
    gap = 0
    start = 0
    gap_before = 0
    for at, byte in enumerate(played):
        if byte == SILENCE:
            gap += 1
            continue
        if not frame:
            start, gap_before = at, gap
        elif gap:
            gap_before = max(gap_before, gap)  # a gap inside a frame counts for the frame
        gap = 0
        frame.append(byte)
        if len(frame) == FRAME_BYTES:
            session, response, k = read_model_frame(bytes(frame))
            out.append(Heard(session, response, k, gap_before, start))
            frame.clear()
    if frame:
        raise AssertionError(f"the phone played {len(frame)} bytes of a frame at the end: a response was cut")
    return out
