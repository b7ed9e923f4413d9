"""Per-call streaming transcoders between Twilio audio and the model's audio."""

from __future__ import annotations

import numpy as np
import soxr

from .g711 import ulaw_decode, ulaw_encode

TWILIO_RATE = 8000
MODEL_RATE = 24000


class _Resampler:
    """PCM16 streaming resampler on soxr."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        self._in_total = 0
        self._out_total = 0

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        out = self._stream.resample_chunk(samples, last=last)
        self._in_total += len(samples)
        self._out_total += len(out)
        return out

    def reset(self) -> None:
        self._stream.clear()
        self._in_total = 0
        self._out_total = 0

    @property
    def held_back_samples(self) -> int:
        expected = self._in_total * self.out_rate // self.in_rate
        return max(0, expected - self._out_total)


class CallerToModel:
    """μ-law 8 kHz bytes → PCM16 24 kHz bytes."""

    def __init__(self) -> None:
        self._resampler = _Resampler(TWILIO_RATE, MODEL_RATE)

    def process(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        return self._resampler.process(ulaw_decode(chunk)).tobytes()

    def flush(self) -> bytes:
        out = self._resampler.process(np.zeros(0, dtype=np.int16), last=True).tobytes()
        self._resampler.reset()
        return out

    def reset(self) -> None:
        self._resampler.reset()

    @property
    def held_back_samples(self) -> int:
        return self._resampler.held_back_samples


class ModelToCaller:
    """PCM16 24 kHz bytes → μ-law 8 kHz bytes."""

    def __init__(self) -> None:
        self._resampler = _Resampler(MODEL_RATE, TWILIO_RATE)
        self._odd_byte = b""

    def process(self, chunk: bytes) -> bytes:
        data = self._odd_byte + chunk
        usable = len(data) - (len(data) % 2)
        self._odd_byte = data[usable:]
        if not usable:
            return b""
        samples = np.frombuffer(data[:usable], dtype=np.int16)
        return ulaw_encode(self._resampler.process(samples))

    def flush(self) -> bytes:
        self._odd_byte = b""
        out = ulaw_encode(self._resampler.process(np.zeros(0, dtype=np.int16), last=True))
        self._resampler.reset()
        return out

    def reset(self) -> None:
        self._odd_byte = b""
        self._resampler.reset()

    @property
    def held_back_samples(self) -> int:
        return self._resampler.held_back_samples


class Passthrough:
    """G.711 μ-law both ways (VOICE_BRIDGE_AUDIO=g711): nothing to convert."""

    held_back_samples = 0

    def process(self, chunk: bytes) -> bytes:
        return bytes(chunk)

    def flush(self) -> bytes:
        return b""

    def reset(self) -> None:
        pass


def make_transcoders(audio_mode: str) -> tuple[CallerToModel | Passthrough, ModelToCaller | Passthrough]:
    """The (caller→model, model→caller) pair for one call."""
    if audio_mode == "g711":
        return Passthrough(), Passthrough()
    if audio_mode == "pcm24k":
        return CallerToModel(), ModelToCaller()
    raise ValueError(f"unknown audio mode {audio_mode!r} (expected 'pcm24k' or 'g711')")
