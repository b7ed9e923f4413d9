"""How much caller audio one `input_audio_buffer.append` may carry (`VOICE_BRIDGE_APPEND_MS`).

Shared by the settings (which refuse a bad value at start-up) and the append batcher (which
gathers the frames), so that the settings need not import the hot path.
"""

from __future__ import annotations

from voice_codecs import TWILIO_FRAME_MS

MAX_APPEND_MS = 200


def check_append_ms(append_ms: int) -> None:
    """ValueError unless `append_ms` is whole Twilio frames within the allowed range."""
    if append_ms < TWILIO_FRAME_MS or append_ms > MAX_APPEND_MS or append_ms % TWILIO_FRAME_MS:
        raise ValueError(
            f"must be a multiple of {TWILIO_FRAME_MS} ms (Twilio's frame) from {TWILIO_FRAME_MS} to {MAX_APPEND_MS} ms"
        )
