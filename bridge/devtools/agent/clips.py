"""The recorded speech the local agent answers with."""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from voice_codecs import ulaw_encode

from ...package_data import AGENT_CLIPS_INDEX, data_path

CLIPS_RATE = 24000


@dataclass(frozen=True, slots=True)
class Clip:
    name: str
    text: str
    pcm24k: bytes  # PCM16 little-endian, 24 kHz mono

    def audio(self, audio_format: str) -> bytes:
        """The clip in the session's output format: `audio/pcm` (24 kHz) or `audio/pcmu`."""
        if audio_format == "audio/pcmu":
            samples = np.frombuffer(self.pcm24k, dtype=np.int16)
            return ulaw_encode(soxr.resample(samples, CLIPS_RATE, 8000))
        return self.pcm24k


@dataclass(frozen=True, slots=True)
class ClipLibrary:
    greeting: Clip
    answers: tuple[Clip, ...]
    goodbye: Clip

    @classmethod
    def load(cls, folder: Path) -> ClipLibrary:
        index_path = folder / "clips.json"
        if not index_path.is_file():
            raise FileNotFoundError(
                f"local agent clips not found: {index_path} is missing (set VOICE_BRIDGE_AGENT_CLIPS to a "
                "folder with clips.json and its WAV files)"
            )
        index = json.loads(index_path.read_text())

        def clip(entry: dict[str, str]) -> Clip:
            return Clip(entry["file"], entry["text"], _read_wav_24k(folder / entry["file"]))

        return cls(
            greeting=clip(index["greeting"]),
            answers=tuple(clip(e) for e in index["answers"]),
            goodbye=clip(index["goodbye"]),
        )


def clips_dir(configured: str | None = None) -> Path:
    """The configured folder (`VOICE_BRIDGE_AGENT_CLIPS`), else the clips shipped with the package (fixtures/audio)."""
    if configured:
        return Path(configured)
    return data_path(AGENT_CLIPS_INDEX).parent


def _read_wav_24k(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: clips must be 16-bit mono WAV")
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if rate != CLIPS_RATE:
        samples = soxr.resample(samples, rate, CLIPS_RATE)
    return samples.astype("<i2").tobytes()
