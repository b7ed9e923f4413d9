"""What the simulated caller says, and when (pure: decided per 20 ms tick)."""

from __future__ import annotations

import enum
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from voice_codecs import ulaw_encode

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
MULAW_SILENCE = b"\xff" * FRAME_BYTES


def load_caller_audio(path: Path) -> bytes:
    """A 16-bit WAV at any rate → 8 kHz μ-law, as the phone network would carry it."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: caller audio must be a 16-bit WAV")
        channels, rate = wav.getnchannels(), wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != 8000:
        samples = soxr.resample(samples, rate, 8000)
    return ulaw_encode(samples)


@dataclass(frozen=True, slots=True)
class CallerPlan:
    utterances: tuple[bytes, ...] = ()  # μ-law 8 kHz, said in turn
    pause_s: float = 0.8  # how long the agent must be quiet before the caller answers
    barge_in_after_s: float | None = None  # speak this far into an answer instead of waiting
    hangup_after_s: float = 1.5  # quiet after the last answer before hanging up
    max_call_s: float = 60.0
    keypad: tuple[tuple[float, str], ...] = ()  # (seconds into the call, digit) pressed on the phone


class CallerState(enum.Enum):
    LISTENING = "listening"
    SPEAKING = "speaking"
    HUNG_UP = "hung_up"


class Caller:
    """Listens until the agent goes quiet, then says the next utterance; hangs up at the end."""

    def __init__(self, plan: CallerPlan) -> None:
        self.plan = plan
        self.state = CallerState.LISTENING
        self._next = 0
        self._offset = 0
        self._heard_agent = False
        self._agent_talk_ms = 0
        self._quiet_ms = 0
        self._elapsed_ms = 0
        self._pressed = 0

    def tick(self, agent_audible: bool) -> bytes:
        """One 20 ms step: given whether the agent was heard in it, the caller's next frame."""
        self._elapsed_ms += FRAME_MS
        if self.state is CallerState.HUNG_UP:
            return MULAW_SILENCE
        if self._elapsed_ms >= self.plan.max_call_s * 1000:
            self.state = CallerState.HUNG_UP
            return MULAW_SILENCE
        if self.state is CallerState.LISTENING:
            self._listen(agent_audible)
        if self.state is CallerState.SPEAKING:
            utterance = self.plan.utterances[self._next]
            frame = utterance[self._offset : self._offset + FRAME_BYTES]
            self._offset += FRAME_BYTES
            if self._offset >= len(utterance):
                self._next += 1
                self._offset = 0
                self._heard_agent = False
                self._agent_talk_ms = 0
                self._quiet_ms = 0
                self.state = CallerState.LISTENING
            return frame.ljust(FRAME_BYTES, b"\xff")
        return MULAW_SILENCE

    def keys_due(self) -> list[str]:
        """Digits whose time has come since the last tick (call after `tick`)."""
        keypad = sorted(self.plan.keypad)
        due = []
        while self._pressed < len(keypad) and keypad[self._pressed][0] * 1000 <= self._elapsed_ms:
            due.append(keypad[self._pressed][1])
            self._pressed += 1
        return due

    def _listen(self, agent_audible: bool) -> None:
        more_to_say = self._next < len(self.plan.utterances)
        if agent_audible:
            self._heard_agent = True
            self._agent_talk_ms += FRAME_MS
            self._quiet_ms = 0
            barge_in = self.plan.barge_in_after_s
            if more_to_say and barge_in is not None and self._agent_talk_ms >= barge_in * 1000:
                self.state = CallerState.SPEAKING
            return
        self._quiet_ms += FRAME_MS
        if not self._heard_agent:
            return
        if more_to_say and self._quiet_ms >= self.plan.pause_s * 1000:
            self.state = CallerState.SPEAKING
        elif not more_to_say and self._quiet_ms >= self.plan.hangup_after_s * 1000:
            self.state = CallerState.HUNG_UP
