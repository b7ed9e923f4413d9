"""The one audio-mode type: which audio the model speaks and hears, and the byte arithmetic of it.

Twilio always carries 8 kHz μ-law, one byte per sample. The model side is either 24 kHz PCM16
(`pcm24k`, transcoded here) or the same μ-law passed through (`g711`).
"""

from __future__ import annotations

import enum

TWILIO_RATE = 8000
MODEL_RATE = 24000
MULAW_BYTES_PER_MS = TWILIO_RATE // 1000  # 8 kHz μ-law: one byte per sample
TWILIO_FRAME_MS = 20  # the audio in one Twilio media message


def mulaw_ms(n_bytes: int) -> float:
    """Milliseconds of 8 kHz μ-law audio in `n_bytes`."""
    return n_bytes / MULAW_BYTES_PER_MS


class AudioMode(enum.StrEnum):
    PCM24K = "pcm24k"
    G711 = "g711"

    @property
    def model_rate(self) -> int:
        """Samples per second of the audio exchanged with the model."""
        return TWILIO_RATE if self is AudioMode.G711 else MODEL_RATE

    @property
    def model_sample_bytes(self) -> int:
        return 1 if self is AudioMode.G711 else 2

    def model_ms(self, n_bytes: int) -> float:
        """Milliseconds of model-side audio in `n_bytes`."""
        return n_bytes / self.model_sample_bytes * 1000.0 / self.model_rate

    def model_bytes(self, ms: int) -> int:
        """Bytes of model-side audio in `ms` milliseconds."""
        return self.model_rate * ms // 1000 * self.model_sample_bytes


AUDIO_MODES = tuple(mode.value for mode in AudioMode)
