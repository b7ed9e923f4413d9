"""Hot-path audio codecs for the bridge: G.711 and streaming 8 kHz ↔ 24 kHz transcoding.

Pure and synchronous: no I/O, no asyncio, no logging. Installed under the import name
`voice_codecs` (the folder is `codecs/`, which would shadow the standard library).
"""

from .g711 import ulaw_decode, ulaw_encode
from .transcoder import (
    MODEL_RATE,
    TWILIO_RATE,
    CallerToModel,
    ModelToCaller,
    Passthrough,
    make_transcoders,
)

__all__ = [
    "MODEL_RATE",
    "TWILIO_RATE",
    "CallerToModel",
    "ModelToCaller",
    "Passthrough",
    "make_transcoders",
    "ulaw_decode",
    "ulaw_encode",
]
