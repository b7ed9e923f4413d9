"""The bridge's own vocabulary for what the upstream model says, whatever its dialect.

`bridge.dialects` turns each dialect's wire events into these; nothing past it sees wire names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionReady:
    """`session.created` or `session.updated`."""

    updated: bool


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str
    content_index: int


@dataclass(frozen=True, slots=True)
class OutputTranscriptDone:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    status: str


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class UpstreamError:
    code: str
    message: str
    error_type: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event the bridge has no use for (kept so it can be counted and logged by type)."""

    wire_type: str


ServerEvent = (
    SessionReady
    | SpeechStarted
    | SpeechStopped
    | ResponseStarted
    | OutputItemAdded
    | AudioDelta
    | AudioDone
    | OutputTranscriptDone
    | ResponseFinished
    | ItemTruncated
    | UpstreamError
    | Ignored
)
