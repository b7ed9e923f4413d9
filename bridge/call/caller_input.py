"""What the caller says, on its way to the model (pure): the flood guard, the append batcher and
the caller→model transcoder."""

from __future__ import annotations

from dataclasses import dataclass

from voice_codecs import AudioMode, make_transcoders, mulaw_ms

from ..append_batcher import AppendBatcher
from ..flood_guard import FloodGuard


@dataclass(frozen=True, slots=True)
class CallerAudio:
    audio: bytes  # in the model's format
    frames: int  # Twilio frames it carries
    completed_at: float  # perf_counter when its last frame arrived


class CallerInput:
    def __init__(self, mode: AudioMode, append_ms: int) -> None:
        self.flood_guard = FloodGuard()
        self.batcher = AppendBatcher(append_ms)
        self.to_model, _ = make_transcoders(mode)

    def admit(self, payload: bytes | None, now: float) -> bool:
        """False when frames (media or not) arrive faster than real time allows."""
        return self.flood_guard.admit(mulaw_ms(len(payload)) if payload is not None else 0.0, now)

    def media(self, payload: bytes, received_at: float) -> CallerAudio | None:
        """One Twilio frame in; a batch of model audio out once the batch is full."""
        batch = self.batcher.add(payload, received_at)
        if batch is None:
            return None
        audio = self.to_model.process(batch.audio)
        return CallerAudio(audio, batch.frames, batch.completed_at) if audio else None

    def reset(self) -> None:
        """A new model session: audio held for the old one is dropped."""
        self.to_model.reset()
        self.batcher.clear()
