"""A caller who says exactly what a recorded caller said (pure: decided per 20 ms tick).

Frame for frame the recorded Twilio `media` payloads, keypad digits after the same frame they
followed in the recording, and a hangup after the last frame if the recorded caller hung up. If
the bridge ended the recorded call instead, the caller stays on the line with silence (at most
`linger_frames`) until the bridge ends this one too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...recording_format import CALLER, IN, TWILIO, Recording, is_audio_ref
from .caller import FRAME_BYTES, MULAW_SILENCE, CallerState

LINGER_S = 30.0


@dataclass(frozen=True, slots=True)
class RecordedCallerScript:
    frames: tuple[bytes, ...]  # μ-law payloads, one per tick
    keys_after: tuple[tuple[int, str], ...] = ()  # (frames sent before it, digit)
    hangs_up: bool = True  # after the last frame; otherwise wait for the bridge to end the call

    @classmethod
    def from_recording(cls, recording: Recording) -> RecordedCallerScript:
        frames: list[bytes] = []
        keys: list[tuple[int, str]] = []
        hangs_up = False
        for event in recording.of(TWILIO):
            if event.direction == "close":
                hangs_up = event.fields.get("by") == "twilio"
                break
            if event.direction != IN or event.msg is None:
                continue
            kind = event.msg.get("event")
            if kind == "media":
                payload = event.msg.get("media", {}).get("payload")
                frames.append(recording.audio_or_silence(payload, CALLER) if is_audio_ref(payload) else MULAW_SILENCE)
            elif kind == "dtmf":
                keys.append((len(frames), str(event.msg.get("dtmf", {}).get("digit", ""))))
            elif kind == "stop":
                hangs_up = True
                break
        return cls(tuple(frames), tuple(keys), hangs_up)


class RecordedCaller:
    """Plays a `RecordedCallerScript` through the phone simulator (see `place_call(caller=...)`)."""

    def __init__(self, script: RecordedCallerScript, linger_frames: int = int(LINGER_S * 50)) -> None:
        self.script = script
        self.linger_frames = linger_frames
        self.state = CallerState.LISTENING
        self._sent = 0
        self._keys = list(script.keys_after)

    def tick(self, agent_audible: bool) -> bytes:
        if self.state is CallerState.HUNG_UP:
            return MULAW_SILENCE
        frames: Sequence[bytes] = self.script.frames
        if self._sent < len(frames):
            frame = frames[self._sent]
            self.state = CallerState.SPEAKING
        else:
            frame = MULAW_SILENCE[:FRAME_BYTES]
            self.state = CallerState.LISTENING
        self._sent += 1
        last = len(frames) if self.script.hangs_up else len(frames) + self.linger_frames
        if self._sent >= last:
            self.state = CallerState.HUNG_UP
        return frame

    def keys_due(self) -> list[str]:
        due = []
        while self._keys and self._keys[0][0] <= self._sent:
            due.append(self._keys.pop(0)[1])
        return due
