"""The two audio lanes of the inspector, on the call's timeline (pure: a `Recording` in, arrays out).

- caller: caller.wav, each `media` frame from Twilio placed where it arrived; frames that arrive
  back to back play back to back (a 100 ms jump re-anchors on the arrival time);
- agent as heard: to_caller.wav, each run of `media` frames to Twilio placed where Twilio played
  it: ending at its mark's echo when the mark came back (Twilio echoes a mark once the audio
  before it has played), otherwise after what played before and no earlier than it was sent;
  a `clear` silences what was queued after it, as Twilio discards it.

Both lanes are 8 kHz μ-law bytes (the wire format, 0xFF is silence): the page plays them with
WebAudio and draws them from min/max per bucket (`waveform`), so an hour-long call stays light.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

from voice_codecs import TWILIO_RATE, ulaw_decode

from ...recording_format import IN, OUT, TWILIO, RecordedEvent, Recording, is_audio_ref
from ..replay.compare import heard_chunks

SILENCE = 0xFF
REANCHOR_S = 0.1  # caller frames this far from their arrival time are placed at it again
BUCKET_SAMPLES = 80  # 10 ms at 8 kHz: the finest waveform the page draws


@dataclass(slots=True)
class PlacedChunk:
    """One run of media frames to Twilio, where it played on the timeline."""

    first: RecordedEvent
    start: float
    end: float  # cut short by a clear
    samples: int  # as sent
    heard: bool  # its mark came back before a clear (compare.heard_chunks)


@dataclass(slots=True)
class Lanes:
    samples: int  # timeline length, 8 kHz
    caller: np.ndarray | None = None  # uint8 μ-law, None without audio
    heard: np.ndarray | None = None
    chunks: list[PlacedChunk] = field(default_factory=list)


def _frame_audio(recording: Recording, event: RecordedEvent) -> tuple[bytes | None, int]:
    payload = (event.msg or {}).get("media", {}).get("payload")
    if not is_audio_ref(payload):
        return None, 0
    return recording.audio(payload), int(payload.get("samples", 0))


def _put(lane: np.ndarray | None, at: int, audio: bytes | None) -> None:
    if lane is None or audio is None or at >= len(lane):
        return
    data = np.frombuffer(audio, dtype=np.uint8)[: len(lane) - at]
    lane[at : at + len(data)] = data


def _caller_lane(recording: Recording, lane: np.ndarray | None) -> None:
    cursor = 0
    for event in recording.of(TWILIO):
        if event.direction != IN or event.kind != "media":
            continue
        audio, samples = _frame_audio(recording, event)
        arrived = int(event.t * TWILIO_RATE)
        at = cursor if abs(arrived - samples - cursor) < REANCHOR_S * TWILIO_RATE else max(0, arrived - samples)
        _put(lane, at, audio)
        cursor = at + samples


def _echo_times(recording: Recording) -> tuple[dict[int, float], list[float]]:
    """For each media run (by its first event's id): when the mark after it came back; and the clears."""
    echoes: dict[str, float] = {}
    clears: list[float] = []
    for event in recording.of(TWILIO):
        if event.kind == "mark" and event.direction == IN and event.msg is not None:
            echoes.setdefault(str(event.msg.get("mark", {}).get("name")), event.t)
        elif event.kind == "clear" and event.direction == OUT:
            clears.append(event.t)
    run_echo: dict[int, float] = {}
    last_media: RecordedEvent | None = None
    for event in recording.of(TWILIO):
        if event.direction != OUT:
            continue
        if event.kind == "media" and last_media is None:
            last_media = event
        elif event.kind == "mark" and last_media is not None and event.msg is not None:
            name = str(event.msg.get("mark", {}).get("name"))
            if name in echoes:
                run_echo[id(last_media)] = echoes[name]
            last_media = None
        elif event.kind != "media":
            last_media = None
    return run_echo, clears


def _heard_lane(recording: Recording, lane: np.ndarray | None) -> list[PlacedChunk]:
    run_echo, clears = _echo_times(recording)
    placed: list[PlacedChunk] = []
    play_end = last_sent = 0.0
    for run, heard in heard_chunks(recording):
        parts = [_frame_audio(recording, event) for event in run]
        samples = sum(n for _, n in parts)
        sent = run[0].t
        # A clear since the previous run emptied Twilio's buffer: nothing queued plays after it.
        play_end = min([play_end, *(c for c in clears if last_sent <= c < sent)])
        last_sent = sent
        echo = run_echo.get(id(run[0]))
        start = max(sent, echo - samples / TWILIO_RATE) if echo is not None else max(sent, play_end)
        end = start + samples / TWILIO_RATE
        cut = next((c for c in clears if sent <= c < end), None)
        if cut is not None and echo is None:
            end = max(start, cut)
        placed.append(PlacedChunk(run[0], start, end, samples, heard))
        if all(audio is not None for audio, _ in parts):
            audio = b"".join(a for a, _ in parts if a is not None)
            _put(lane, int(start * TWILIO_RATE), audio[: int(round((end - start) * TWILIO_RATE))])
        play_end = end
    return placed


def build_lanes(recording: Recording, duration_s: float) -> Lanes:
    has_audio = "caller.wav" in recording.tracks and "to_caller.wav" in recording.tracks
    samples = int(duration_s * TWILIO_RATE) + 1
    lanes = Lanes(samples)
    if has_audio:
        lanes.caller = np.full(samples, SILENCE, dtype=np.uint8)
        lanes.heard = np.full(samples, SILENCE, dtype=np.uint8)
    _caller_lane(recording, lanes.caller)
    lanes.chunks = _heard_lane(recording, lanes.heard)
    return lanes


def waveform(lane: np.ndarray) -> str:
    """min/max per 10 ms bucket as int8 pairs (the decoded sample's high byte), base64."""
    pcm = ulaw_decode(lane.tobytes())
    pad = (-len(pcm)) % BUCKET_SAMPLES
    buckets = np.concatenate([pcm, np.zeros(pad, dtype=pcm.dtype)]).reshape(-1, BUCKET_SAMPLES)
    pairs = np.stack([buckets.min(axis=1), buckets.max(axis=1)], axis=1).astype(np.int32) >> 8
    return base64.b64encode(np.clip(pairs, -128, 127).astype(np.int8).tobytes()).decode("ascii")


def audio_b64(lane: np.ndarray) -> str:
    return base64.b64encode(lane.tobytes()).decode("ascii")
