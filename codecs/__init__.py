"""Hot-path audio codecs for the bridge: G.711 and streaming 8 kHz ↔ 24 kHz transcoding.

Pure and synchronous: no I/O, no asyncio, no logging. Installed under the import name
`voice_codecs` (the folder is `codecs/`, which would shadow the standard library).
"""

from .audio_mode import AUDIO_MODES, MODEL_RATE, MULAW_BYTES_PER_MS, TWILIO_FRAME_MS, TWILIO_RATE, AudioMode, mulaw_ms
from .fir import DEFAULT_SPEC, LowpassSpec, lowpass_taps
from .g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from .resample import Downsampler, Upsampler
from .transcoder import (
    CallerToModel,
    ModelToCaller,
    Passthrough,
    make_transcoders,
)

__all__ = [
    "AUDIO_MODES",
    "MULAW_BYTES_PER_MS",
    "AudioMode",
    "mulaw_ms",
    "DEFAULT_SPEC",
    "MODEL_RATE",
    "TWILIO_FRAME_MS",
    "TWILIO_RATE",
    "CallerToModel",
    "Downsampler",
    "LowpassSpec",
    "ModelToCaller",
    "Passthrough",
    "Upsampler",
    "alaw_decode",
    "alaw_encode",
    "lowpass_taps",
    "make_transcoders",
    "ulaw_decode",
    "ulaw_encode",
]
