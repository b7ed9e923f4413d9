"""Where the upstream dialects differ: session shape and server event names.

Only the GA Realtime dialect exists so far (the embedded local agent speaks it). Voice Live's
beta-shaped events and flat `session.update` belong here too when they come, as another
`Dialect`, so the call session never sees a wire name.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Protocol

from .realtime_events import (
    AudioDelta,
    AudioDone,
    Ignored,
    ItemTruncated,
    OutputItemAdded,
    OutputTranscriptDone,
    ResponseFinished,
    ResponseStarted,
    ServerEvent,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    UpstreamError,
)


class UpstreamProtocolError(ValueError):
    """A server event that does not have the shape its type promises."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What the bridge asks of the model for one call, independent of dialect."""

    instructions: str
    voice: str
    audio_mode: str  # "pcm24k" or "g711"


class Dialect(Protocol):
    name: str

    def session_update(self, config: SessionConfig) -> dict[str, Any]: ...

    def parse(self, message: dict[str, Any]) -> ServerEvent: ...


# Client events that have the same shape in every dialect.


def append_audio(audio: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode("ascii")}


def create_response() -> dict[str, Any]:
    return {"type": "response.create"}


def cancel_response() -> dict[str, Any]:
    return {"type": "response.cancel"}


def truncate_item(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": audio_end_ms,
    }


def _str(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"{message.get('type')}: {name} must be a string")
    return value


def _int(message: dict[str, Any], name: str, default: int | None = None) -> int:
    value = message.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UpstreamProtocolError(f"{message.get('type')}: {name} must be an integer")
    return value


def _audio(message: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(_str(message, "delta"), validate=True)
    except binascii.Error:
        raise UpstreamProtocolError(f"{message.get('type')}: delta is not base64") from None


class GADialect:
    """The GA Realtime protocol (OpenAI, Azure OpenAI `/openai/v1/realtime`, the local agent)."""

    name = "ga"

    def session_update(self, config: SessionConfig) -> dict[str, Any]:
        audio_format: dict[str, Any] = (
            {"type": "audio/pcmu"} if config.audio_mode == "g711" else {"type": "audio/pcm", "rate": 24000}
        )
        return {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": config.instructions,
                "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": audio_format, "turn_detection": {"type": "server_vad"}},
                    "output": {"format": audio_format, "voice": config.voice},
                },
            },
        }

    def parse(self, message: dict[str, Any]) -> ServerEvent:
        kind = message.get("type")
        if not isinstance(kind, str):
            raise UpstreamProtocolError("event without a type")
        if kind in ("session.created", "session.updated"):
            return SessionReady(updated=kind == "session.updated")
        if kind == "input_audio_buffer.speech_started":
            return SpeechStarted(item_id=_str(message, "item_id"), audio_start_ms=_int(message, "audio_start_ms", 0))
        if kind == "input_audio_buffer.speech_stopped":
            return SpeechStopped(item_id=_str(message, "item_id"), audio_end_ms=_int(message, "audio_end_ms", 0))
        if kind == "response.created":
            return ResponseStarted(response_id=_str(_dict(message, "response"), "id"))
        if kind == "response.output_item.added":
            item = _dict(message, "item")
            return OutputItemAdded(
                response_id=_str(message, "response_id"), item_id=_str(item, "id"), item_type=str(item.get("type"))
            )
        if kind == "response.output_audio.delta":
            return AudioDelta(
                response_id=_str(message, "response_id"),
                item_id=_str(message, "item_id"),
                content_index=_int(message, "content_index", 0),
                audio=_audio(message),
            )
        if kind == "response.output_audio.done":
            return AudioDone(
                response_id=_str(message, "response_id"),
                item_id=_str(message, "item_id"),
                content_index=_int(message, "content_index", 0),
            )
        if kind == "response.output_audio_transcript.done":
            return OutputTranscriptDone(item_id=_str(message, "item_id"), transcript=str(message.get("transcript", "")))
        if kind == "response.done":
            response = _dict(message, "response")
            return ResponseFinished(response_id=_str(response, "id"), status=str(response.get("status", "")))
        if kind == "conversation.item.truncated":
            return ItemTruncated(
                item_id=_str(message, "item_id"),
                content_index=_int(message, "content_index", 0),
                audio_end_ms=_int(message, "audio_end_ms"),
            )
        if kind == "error":
            error = _dict(message, "error")
            return UpstreamError(
                code=str(error.get("code") or ""),
                message=str(error.get("message") or ""),
                error_type=str(error.get("type") or ""),
            )
        return Ignored(wire_type=kind)


def _dict(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"{message.get('type')}: {name} must be an object")
    return value


def dialect_for(upstream: str) -> Dialect:
    if upstream in ("local", "openai", "azure-openai"):
        return GADialect()
    raise ValueError(f"no dialect for upstream {upstream!r}")
