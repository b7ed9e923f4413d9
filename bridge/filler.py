"""The filler clip (issue 16): a short line the bridge plays itself while a slow model or tool keeps
the caller waiting ("One moment.").

It is audio of the bridge's own, never part of the model's conversation: the model is not told,
so nothing it believes it said is false, and a barge-in never truncates or deletes it at the model.
Rendered once per process and path: a 16-bit mono WAV (any rate; resampled to 24 kHz), faded in
and out so it starts and ends without a click, then transcoded to 8 kHz μ-law by the same
transcoder as model audio.
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np
import soxr

from voice_codecs import AudioMode, make_transcoders

from .package_data import data_path
from .settings import ConfigError

DEFAULT_FILLER = "audio/filler_one_moment.wav"  # shipped as package data (fixtures/audio/generate.sh)
MODEL_RATE = 24000
FADE_MS = 15
MAX_FILLER_S = 5.0  # a filler is a short line: longer clips are refused when the profile loads


def default_filler_path() -> Path:
    return data_path(DEFAULT_FILLER)


@functools.lru_cache(maxsize=32)
def render_filler(path: str) -> bytes:
    """The clip at `path` as 8 kHz μ-law, faded; `ConfigError` (one line naming the file) if unusable."""
    try:
        with wave.open(path, "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise ConfigError(f"filler clip {path}: must be a 16-bit mono WAV")
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    except (OSError, EOFError, wave.Error) as exc:
        raise ConfigError(f"filler clip {path}: cannot be read as WAV ({type(exc).__name__}: {exc})") from None
    if rate != MODEL_RATE:
        samples = soxr.resample(samples, rate, MODEL_RATE)
    if not len(samples):
        raise ConfigError(f"filler clip {path}: is empty")
    if len(samples) > MAX_FILLER_S * MODEL_RATE:
        raise ConfigError(f"filler clip {path}: longer than {MAX_FILLER_S:g} s (a filler is a short line)")
    pcm = faded(samples.astype(np.float64))
    _, to_caller = make_transcoders(AudioMode.PCM24K)
    pcm_bytes = np.clip(np.round(pcm), -32768, 32767).astype("<i2").tobytes()
    return to_caller.process(pcm_bytes) + to_caller.flush()


def faded(samples: np.ndarray, rate: int = MODEL_RATE, fade_ms: int = FADE_MS) -> np.ndarray:
    """Raised-cosine fade in and out: no step at either end, so no click before or after it."""
    n = min(len(samples) // 2, rate * fade_ms // 1000)
    if n == 0:
        return samples
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out = samples.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out
